import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, MANAGEMENT_KEY, call, waitFor } from '../support/harness.js';
import { killHard, spawnPortal } from '../support/spawn.js';
import { Tmpfs } from '../support/tmpfs.js';

/**
 * usage.db on a real tmpfs that fills up while records arrive. Nothing counted is lost; records that
 * arrive while nothing can be written are held (the subscription steps aside, so CLIProxyAPI keeps
 * them in its queue) and stored when space returns — also across a clean stop while the disk is full.
 */
describe('usage on a disk that fills up', { skip: !Tmpfs.available() && 'needs root to mount a tmpfs' }, () => {
  it('holds what cannot be written, stores it when space returns, and loses nothing across a stop on a full disk', async (t) => {
    const fs = Tmpfs.mount(6 * 1024);
    const fake = await FakeCliproxy.start({ apiKeys: ['sk-ops'], reloadDelayMs: 5 });
    fake.retentionSeconds = 3600;
    const env = { CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY, USAGE_SOURCE: 'subscribe', USAGE_CRON: '* * * * * *', POOL_SIZE: '20' };
    let portal = await spawnPortal(fs.dir, env);
    let stop = false;
    let traffic: Promise<void> = Promise.resolve();
    try {
      const { key, key_id: id } = (await call(portal.url, 'POST', '/api/register-key', { body: { email: 'disk@x.cn' } })).body as { key: string; key_id: string };
      let sent = 0;
      traffic = (async () => {
        while (!stop) {
          const res = await fetch(`${fake.url}/v1/chat/completions`, {
            method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }, body: '{"model":"fake-chat"}',
          }).catch(() => null);
          if (res?.status === 200) sent++;
          await res?.text();
          await new Promise((r) => setTimeout(r, 3));
        }
      })();
      const counted = async () => (await call(portal.url, 'GET', '/api/user-stats/disk%40x.cn', { token: ADMIN })).body.totals.requests as number;
      await waitFor(async () => (await counted()) > 50, 'usage to flow', 10_000);
      const countedBefore = await counted();

      // The disk fills up.
      const marks: [string, number][] = [['fill1', Date.now()]];
      fs.fill();
      await waitFor(async () => (await call(portal.url, 'GET', '/healthz', { token: ADMIN })).body.usage.storage_error !== null, 'the storage error to show', 10_000);
      const during = (await call(portal.url, 'GET', '/api/user-stats/disk%40x.cn', { token: ADMIN }));
      assert.equal(during.status, 200, 'reads go on while nothing can be written');
      assert.ok(during.body.totals.requests >= countedBefore, 'nothing counted is lost');
      await waitFor(() => fake.subscribers.size === 0, 'the subscription to step aside (records wait in CLIProxyAPI’s queue)', 5000);
      await new Promise((r) => setTimeout(r, 1000));
      assert.ok(fake.queue.length > 0, 'records wait in the queue');

      // Space returns: everything is stored, by itself.
      marks.push(['free1', Date.now()]);
      fs.free();
      await waitFor(async () => (await call(portal.url, 'GET', '/healthz', { token: ADMIN })).body.usage.storage_error === null, 'recovery', 20_000);
      await waitFor(() => fake.subscribers.size === 1, 'the subscription back', 5000);

      // Full again, and a clean stop while it is: what is held goes to a file, and the next start stores it.
      marks.push(['fill2', Date.now()]);
      fs.fill();
      await waitFor(async () => (await call(portal.url, 'GET', '/healthz', { token: ADMIN })).body.usage.storage_error !== null, 'the second storage error', 10_000);
      stop = true;
      await traffic;
      marks.push(['term', Date.now()]);
      portal.child.kill('SIGTERM');
      await new Promise<void>((r) => portal.child.once('exit', () => r()));
      const spilled = readdirSync(os.tmpdir()).filter((f) => f.startsWith('key-portal-usage-held-'));
      fs.free();
      portal = await spawnPortal(fs.dir, env);
      await call(portal.url, 'POST', '/api/sync-usage', { token: ADMIN });
      await waitFor(async () => (await counted()) === sent, `every one of the ${sent} requests to count`, 10_000).catch(async (err) => {
        const db = new Database(path.join(fs.dir, 'usage.db'), { readonly: true });
        const stored = new Set(db.prepare('SELECT request_id FROM events').pluck().all());
        db.close();
        const missing = fake.produced.filter((r) => r.api_key === key && !stored.has(r.request_id)).map((r) => `${r.request_id} handed out at ${fake.handedOut.get(r.request_id as string)?.at}`);
        t.diagnostic(`counted ${await counted()}; missing ${missing.join(', ')}; moments ${JSON.stringify(marks)}`);
        throw err;
      });
      await killHard(portal.child);

      const db = new Database(path.join(fs.dir, 'usage.db'), { readonly: true });
      const ids = db.prepare('SELECT e.request_id FROM events e JOIN usage_keys k ON k.id = e.k WHERE k.key_id = ?').pluck().all(id) as string[];
      db.close();
      const produced = fake.produced.filter((r) => r.api_key === key).map((r) => r.request_id as string);
      assert.equal(new Set(ids).size, ids.length, 'none stored twice');
      assert.deepEqual([...ids].sort(), [...produced].sort(), 'every record CLIProxyAPI handed out is stored');
      assert.equal(readdirSync(os.tmpdir()).filter((f) => f.startsWith('key-portal-usage-held-')).length, 0, 'held files were taken in');
      t.diagnostic(`${sent} requests, ${ids.length} stored; held in a file at the stop on a full disk: ${spilled.length ? 'yes' : 'no'}`);
    } finally {
      stop = true;
      await traffic;
      await killHard(portal.child);
      await fake.stop();
      fs.unmount();
    }
  });
});
