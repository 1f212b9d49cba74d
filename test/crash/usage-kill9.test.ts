import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, MANAGEMENT_KEY, call, tempDir } from '../support/harness.js';
import { killHard, spawnPortal } from '../support/spawn.js';

/**
 * kill -9 of the portal during steady traffic, several times, then a clean start. CLIProxyAPI hands a
 * record out once (a pop or a push), so a record in flight at the instant of the kill — handed out but
 * not yet on the portal's disk — cannot be recovered by anyone. The test proves everything else:
 * nothing is counted twice, and every missing record left CLIProxyAPI within 100 ms of a kill.
 */
for (const mode of ['queue', 'subscribe'] as const) {
  describe(`usage through kill -9 (${mode})`, () => {
    it('counts every record once and loses none outside the instant of a kill', async (t) => {
      const fake = await FakeCliproxy.start({ apiKeys: ['sk-ops'], reloadDelayMs: 5 });
      fake.retentionSeconds = 3600;
      const dataDir = await tempDir(`kp-usage-crash-${mode}-`);
      const env = { CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY, USAGE_SOURCE: mode, USAGE_CRON: '* * * * * *', POOL_SIZE: '10',
        USAGE_CHECKPOINT_CRON: '* * * * * *' }; // checkpoints every second, so kills land in and around them
      const kills: number[] = [];
      try {
        let portal = await spawnPortal(dataDir, env);
        const key = (await call(portal.url, 'POST', '/api/register-key', { body: { email: 'steady@x.cn' } })).body.key as string;
        let stop = false;
        const traffic = (async () => {
          while (!stop) {
            const res = await fetch(`${fake.url}/v1/chat/completions`, {
              method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }, body: '{"model":"fake-chat"}',
            }).catch(() => null);
            await res?.text();
            await new Promise((r) => setTimeout(r, 3));
          }
        })();
        for (let round = 0; round < 4; round++) {
          await new Promise((r) => setTimeout(r, 700 + Math.random() * 1300));
          kills.push(Date.now());
          await killHard(portal.child);
          await new Promise((r) => setTimeout(r, 200));
          portal = await spawnPortal(dataDir, env);
        }
        stop = true;
        await traffic;
        await new Promise((r) => setTimeout(r, 300));
        assert.equal((await call(portal.url, 'POST', '/api/sync-usage', { token: ADMIN })).status, 200);
        const counted = (await call(portal.url, 'GET', '/api/user-stats/steady%40x.cn', { token: ADMIN })).body.totals.requests as number;
        await killHard(portal.child);

        const ids = readdirSync(path.join(dataDir, 'usage')).filter((f) => f.startsWith('events-')).flatMap((f) =>
          readFileSync(path.join(dataDir, 'usage', f), 'utf8').split('\n').filter(Boolean).map((l) => (JSON.parse(l) as { rid: string }).rid));
        assert.equal(new Set(ids).size, ids.length, 'no record is in the log twice');
        const produced = fake.produced.filter((r) => r.api_key === key).map((r) => r.request_id as string);
        assert.equal(counted, ids.length, 'the stats count exactly what the log holds');
        const saved = JSON.parse(readFileSync(path.join(dataDir, 'usage.json'), 'utf8')) as { generation: number; units: Record<string, string> };
        assert.ok(saved.generation >= 3, `checkpoints ran between the kills (${saved.generation})`);
        for (const name of Object.values(saved.units)) assert.ok(readFileSync(path.join(dataDir, 'usage', 'agg', name)).length > 4, `${name} is whole`);
        const onDisk = new Set(ids);
        const missing = produced.filter((id) => !onDisk.has(id));
        for (const id of missing) {
          const out = fake.handedOut.get(id);
          assert.ok(out !== undefined && kills.some((k) => out >= k - 100 && out <= k + 1000),
            `record ${id} went missing outside a kill window (handed out ${out ? new Date(out).toISOString() : 'never'})`);
        }
        t.diagnostic(`${mode}: ${produced.length} sent, ${counted} counted, ${missing.length} lost in flight at ${kills.length} kills`);
        assert.ok(produced.length > 300, `steady traffic (${produced.length})`);
      } finally {
        await fake.stop();
        await rm(dataDir, { recursive: true, force: true });
      }
    });
  });
}
