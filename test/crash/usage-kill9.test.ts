import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { POP_SIZE } from '../../src/cliproxy/usage-queue.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, MANAGEMENT_KEY, call, tempDir } from '../support/harness.js';
import { seeded } from '../support/random.js';
import { killHard, spawnPortal } from '../support/spawn.js';

const KILLS = 10;

/**
 * kill -9 of the portal during steady traffic, ten times, then a clean start, counted by request id
 * against the fake's record of what it handed out. CLIProxyAPI hands a record out once (a pop or a
 * push), so what was handed out but not yet committed when the portal died is gone for everyone:
 * - queue: at most the one pop in flight at each kill (≤ POP_SIZE records, popped together);
 * - subscribe: only records pushed into the dying socket, in the instant around the kill.
 * Everything else is counted exactly once, and the statistics equal the rows on disk.
 */
for (const mode of ['queue', 'subscribe'] as const) {
  describe(`usage through kill -9 (${mode})`, () => {
    it(`loses only what CLIProxyAPI handed out at the instant of each of ${KILLS} kills, and counts nothing twice`, async (t) => {
      const rnd = seeded(`usage kill -9 (${mode})`);
      const fake = await FakeCliproxy.start({ apiKeys: ['sk-ops'], reloadDelayMs: 5 });
      fake.retentionSeconds = 3600;
      const dataDir = await tempDir(`kp-usage-crash-${mode}-`);
      const env = { CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY, USAGE_SOURCE: mode, USAGE_CRON: '* * * * * *', POOL_SIZE: '10' };
      const kills: number[] = [];
      // The traffic ends with the test, whichever way it ends (a failed step must not leave it running).
      let stop = false;
      let flows: Promise<void>[] = [];
      let portal: Awaited<ReturnType<typeof spawnPortal>> | null = null;
      try {
        portal = await spawnPortal(dataDir, env);
        const reg = (await call(portal.url, 'POST', '/api/register-key', { body: { email: 'steady@x.cn' } })).body as { key: string; key_id: string };
        const traffic = async () => {
          while (!stop) {
            const res = await fetch(`${fake.url}/v1/chat/completions`, {
              method: 'POST', headers: { Authorization: `Bearer ${reg.key}`, 'Content-Type': 'application/json' }, body: '{"model":"fake-chat"}',
            }).catch(() => null);
            await res?.text();
            await new Promise((r) => setTimeout(r, 2));
          }
        };
        flows = [traffic(), traffic()];
        for (let round = 0; round < KILLS; round++) {
          await new Promise((r) => setTimeout(r, rnd.between(300, 1500)));
          kills.push(Date.now());
          await killHard(portal.child);
          await new Promise((r) => setTimeout(r, rnd.between(50, 300)));
          portal = await spawnPortal(dataDir, env);
        }
        stop = true;
        await Promise.all(flows);
        assert.equal((await call(portal.url, 'POST', '/api/sync-usage', { token: ADMIN })).status, 200);
        const counted = (await call(portal.url, 'GET', '/api/user-stats/steady%40x.cn', { token: ADMIN })).body.totals.requests as number;
        await killHard(portal.child);

        const db = new Database(path.join(dataDir, 'usage.db'), { readonly: true });
        const ids = (db.prepare(`SELECT e.request_id FROM events e JOIN usage_keys k ON k.id = e.k WHERE k.key_id = ?`).pluck().all(reg.key_id) as string[]);
        const daySum = db.prepare(`SELECT sum(d.requests) FROM usage_day d JOIN usage_keys k ON k.id = d.k WHERE k.key_id = ?`).pluck().get(reg.key_id) as number;
        db.close();
        assert.equal(new Set(ids).size, ids.length, 'no record is stored twice');
        assert.equal(counted, ids.length, 'the statistics count exactly the stored rows');
        assert.equal(daySum, ids.length, 'the daily rollups agree with the rows');

        const produced = fake.produced.filter((r) => r.api_key === reg.key).map((r) => r.request_id as string);
        const stored = new Set(ids);
        const missing = produced.filter((id) => !stored.has(id));
        const lostAt = new Map<number, number[]>(); // kill → the hand-outs (pops or pushes) of the records lost at it
        for (const id of missing) {
          const out = fake.handedOut.get(id);
          assert.ok(out !== undefined, `record ${id} was never handed out, yet is missing`);
          const kill = kills.find((k) => out.at >= k - 1000 && out.at <= k + 500);
          assert.ok(kill !== undefined, `record ${id} went missing away from any kill (handed out ${new Date(out.at).toISOString()})`);
          lostAt.set(kill, [...(lostAt.get(kill) ?? []), out.batch]);
        }
        for (const [kill, outs] of lostAt) {
          if (mode === 'queue') {
            assert.equal(new Set(outs).size, 1, `records lost at the kill of ${new Date(kill).toISOString()} come from one pop`);
            assert.ok(outs.length <= POP_SIZE, `at most one pop (${outs.length})`);
          }
        }
        t.diagnostic(`${mode}: ${produced.length} sent, ${counted} counted, lost per kill: ${kills.map((k) => lostAt.get(k)?.length ?? 0).join(' ')}`);
        assert.ok(produced.length > 300, `steady traffic (${produced.length})`);
      } finally {
        stop = true;
        await Promise.all(flows);
        if (portal) await killHard(portal.child);
        await fake.stop();
        await rm(dataDir, { recursive: true, force: true });
      }
    });
  });
}
