import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { backupCommand, restoreCommand } from '../../src/cli/backup.js';
import { loadConfig } from '../../src/config.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, MANAGEMENT_KEY, call, startTestPortal, tempDir } from '../support/harness.js';
import { killHard, spawnPortal } from '../support/spawn.js';

const cliConfig = (dataDir: string) => loadConfig({ dotenv: false, env: { DATA_DIR: dataDir, ADMIN_TOKEN: ADMIN } });

/** What an operator compares: every key with its owner and state, everyone's usage, the pool. */
async function picture(url: string): Promise<unknown> {
  const keys = (await call(url, 'GET', '/admin/keys?per_page=500', { token: ADMIN })).body.keys
    .map((k: Record<string, unknown>) => [k.key_id, k.email, k.status, k.label, k.daily_limit, (k.totals as { requests: number }).requests]);
  const users = (await call(url, 'GET', '/api/all-users-stats', { token: ADMIN })).body;
  const pool = (await call(url, 'GET', '/api/key-pool-status')).body;
  return { keys, users: users.users.map((u: Record<string, unknown>) => [u.email, u.total_requests, u.total_tokens, u.key_count]), summary: users.summary, pool };
}

describe('backup and restore', () => {
  it('backs up while usage is being ingested, and restores into a fresh portal with the same keys and stats', async () => {
    // The portal runs as `npm start` would, in a process of its own; the backup command finds it by its lock.
    const fake = await FakeCliproxy.start({ reloadDelayMs: 5 });
    const dataDir = await tempDir('kp-backup-src-');
    const keep = await tempDir('kp-backup-');
    const portal = await spawnPortal(dataDir, { CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY, POOL_SIZE: '40', USAGE_SOURCE: 'subscribe' });
    try {
      const keys: string[] = [];
      for (let i = 0; i < 6; i++) keys.push((await call(portal.url, 'POST', '/api/register-key', { body: { email: `b${i}@x.cn`, label: `笔记本 ${i}` } })).body.key);
      await call(portal.url, 'POST', '/admin/keys', { token: ADMIN, body: { label: 'trial', daily_limit: 5 } });
      // Records stream in (the subscription counts them as they come) while the backup is taken.
      let n = 0;
      const traffic = setInterval(() => { for (const k of keys) fake.recordUsage({ apiKey: k, alias: 'fake-chat', input: 10 + (n++ % 7), output: 5, failed: false }); }, 2);
      await new Promise((r) => setTimeout(r, 300));
      const out1 = path.join(keep, 'during.kpbackup');
      const lines: string[] = [];
      try {
        assert.equal(await backupCommand(cliConfig(dataDir), out1, (s) => lines.push(s)), 0);
      } finally {
        clearInterval(traffic);
      }
      assert.match(lines.join('\n'), /asking it for the backup/);
      assert.equal(statSync(out1).mode & 0o777, 0o600);

      // A backup taken mid-ingestion is one moment: its per-request rows and its rollups agree.
      const db = new Database(out1, { readonly: true });
      const events = db.prepare('SELECT count(*) AS n, sum(tokens) AS t FROM events').get() as { n: number; t: number };
      const totals = db.prepare('SELECT sum(requests) AS n, sum(tokens) AS t FROM usage_total').get() as { n: number; t: number };
      const days = db.prepare('SELECT sum(requests) AS n FROM usage_day').get() as { n: number };
      db.close();
      assert.ok(events.n > 0, 'records were counted before the backup');
      assert.deepEqual([totals.n, totals.t, days.n], [events.n, events.t, events.n]);

      // Quiet now: a second backup, restored into a fresh directory, gives the same picture.
      await new Promise((r) => setTimeout(r, 300));
      const out2 = path.join(keep, 'quiet.kpbackup');
      assert.equal(await backupCommand(cliConfig(dataDir), out2, () => undefined), 0);
      const before = await picture(portal.url);
      const fresh = path.join(keep, 'restored');
      assert.equal(await restoreCommand(cliConfig(fresh), out2, false, () => undefined), 0);
      await assert.rejects(restoreCommand(cliConfig(fresh), out2, false, () => undefined), /already holds portal data/);
      const b = await startTestPortal({ dataDir: fresh });
      try {
        assert.deepEqual(await picture(b.url), before);
        assert.equal((await call(b.url, 'GET', '/usage', { token: keys[0] })).status, 200, 'a holder’s key works on the restored portal');
        assert.equal(statSync(path.join(fresh, 'usage.db')).mode & 0o777, 0o600);
      } finally {
        await b.stop();
      }
    } finally {
      await killHard(portal.child);
      await fake.stop();
      await rm(keep, { recursive: true, force: true });
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('backs up a stopped portal’s directory itself, and refuses what is not a backup', async () => {
    const a = await startTestPortal();
    const dataDir = a.dataDir;
    const keep = await tempDir('kp-backup-');
    try {
      await call(a.url, 'POST', '/api/register-key', { body: { email: 'stopped@x.cn' } });
      await a.portal.stop();
      const out = path.join(keep, 'stopped.kpbackup');
      assert.equal(await backupCommand(cliConfig(dataDir), out, () => undefined), 0);
      const fresh = path.join(keep, 'fresh');
      assert.equal(await restoreCommand(cliConfig(fresh), out, false, () => undefined), 0);
      const b = await startTestPortal({ dataDir: fresh });
      try {
        assert.equal((await call(b.url, 'GET', '/admin/keys', { token: ADMIN })).body.keys[0].email, 'stopped@x.cn');
      } finally {
        await b.stop();
      }
      await assert.rejects(restoreCommand(cliConfig(path.join(keep, 'x')), path.join(dataDir, 'key_pool.json'), false, () => undefined), /cannot be opened|not a key-portal backup|damaged/);
    } finally {
      await a.fake.stop();
      await rm(keep, { recursive: true, force: true });
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
