import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { KeysStore } from '../../src/store/keys-store.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, MANAGEMENT_KEY, call, waitFor } from '../support/harness.js';
import { designInvariantViolations, strictInvariantViolations } from '../support/invariants.js';
import { seeded } from '../support/random.js';
import { killHard, spawnPortal } from '../support/spawn.js';
import { Tmpfs } from '../support/tmpfs.js';

/**
 * A registration storm on a 6 MiB tmpfs that fills up, then is remounted read-only, then recovers —
 * with the log file on the same disk. Every 201 survives a restart, no key is ever held by two
 * people, the files parse, nothing is answered 500, reads and /healthz keep answering, and the
 * portal writes again by itself when the disk does.
 */
describe('keys on a disk that fills up or turns read-only', { skip: !Tmpfs.available() && 'needs root to mount a tmpfs' }, () => {
  it('answers 503 and changes nothing while it cannot write, loses no answered key, and recovers by itself', async (t) => {
    const rnd = seeded('keys on a full disk');
    const fs = Tmpfs.mount(6144);
    const fake = await FakeCliproxy.start({ apiKeys: ['sk-ops'], reloadDelayMs: 5 });
    const env = { CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY, POOL_SIZE: '4000', USAGE_SOURCE: 'queue' };
    let portal = await spawnPortal(fs.dir, env);
    const answered = new Map<string, string>(); // key → email, for every 201
    const statuses = new Map<number, number>();
    let slowest = 0;
    let stop = false;
    let flows: Promise<unknown>[] = [];
    try {
      let n = 0;
      const worker = async (w: number) => {
        while (!stop) {
          const email = `w${w}-${n++}@disk.example`;
          const res = await call(portal.url, 'POST', '/api/register-key', { body: { email } }).catch(() => null);
          if (!res) { await new Promise((r) => setTimeout(r, 50)); continue; }
          statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          if (res.status === 201) answered.set(res.body.key, email);
          else assert.equal(res.status, 503, `a write that cannot be made is a 503, not ${res.status}: ${res.text.slice(0, 200)}`);
          if (res.status === 503) assert.equal(res.body.error.code, 'storage_unavailable');
          await new Promise((r) => setTimeout(r, 20)); // a storm, not a flood: the pool must last the test
        }
      };
      const probe = async () => { // reads and /healthz keep answering, promptly
        while (!stop) {
          const t0 = performance.now();
          const r = await call(portal.url, 'GET', '/api/key-pool-status');
          assert.equal(r.status, 200);
          await call(portal.url, 'GET', '/healthz');
          slowest = Math.max(slowest, performance.now() - t0);
          await new Promise((r) => setTimeout(r, 50));
        }
      };
      flows = [...Array.from({ length: 6 }, (_, w) => worker(w)), probe()];
      const healthz = async () => (await call(portal.url, 'GET', '/healthz', { token: ADMIN })).body as { status: string; reasons: { code: string }[] };

      await new Promise((r) => setTimeout(r, rnd.between(300, 800)));
      fs.fill();
      await waitFor(async () => (await healthz()).reasons.some((r) => r.code === 'keys_storage' || r.code === 'keys_checkpoint'), 'the full disk to show in /healthz', 10_000);
      await new Promise((r) => setTimeout(r, 1500));
      const during = statuses.get(503) ?? 0;
      assert.ok(during > 0, 'registrations were refused while the disk was full');
      fs.free();
      await waitFor(async () => (await healthz()).status === 'ok', 'recovery from the full disk', 15_000).catch(async (err) => { t.diagnostic(JSON.stringify((await healthz()).reasons)); throw err; });
      const before = answered.size;
      await waitFor(() => answered.size > before, 'registrations to work again', 5000);

      // Read-only: nothing new can be created or renamed in the directory (files already open still take writes).
      const lock = (flag: '+i' | '-i') => execFileSync('chattr', [flag, fs.dir, ...readdirSync(fs.dir).map((f) => `${fs.dir}/${f}`)]);
      lock('+i');
      try {
        await waitFor(async () => (await healthz()).reasons.some((r) => r.code === 'keys_checkpoint'), 'the read-only directory to show', 10_000);
        await new Promise((r) => setTimeout(r, 1000));
      } finally {
        lock('-i');
      }
      await waitFor(async () => (await healthz()).status === 'ok', 'recovery from the read-only directory', 15_000).catch(async (err) => { t.diagnostic(JSON.stringify((await healthz()).reasons)); throw err; });
      const again = answered.size;
      await waitFor(() => answered.size > again, 'registrations to work again', 5000);
      stop = true;
      await Promise.all(flows);
      await killHard(portal.child);

      assert.deepEqual(readdirSync(fs.dir).filter((f) => f.endsWith('.tmp')), [], 'no temp file is left behind');
      assert.deepEqual(designInvariantViolations(fs.dir), [], 'the files parse and keep the invariants');
      const store = await KeysStore.open(fs.dir, 'usr_pool_', silentLogger());
      assert.deepEqual(strictInvariantViolations(fs.dir), []);
      const holders = new Map<string, string>();
      for (const [key, email] of answered) {
        assert.equal(store.getKey(key)?.email, email, 'every answered key is on disk, held by the one it was given to');
        assert.ok(!holders.has(key), 'no key was given to two people');
        holders.set(key, email);
      }
      await store.close();
      portal = await spawnPortal(fs.dir, env);
      const status = (await call(portal.url, 'GET', '/api/key-pool-status')).body;
      assert.equal(status.assigned, answered.size, 'assigned keys are exactly the answered ones');
      t.diagnostic(`${answered.size} registrations answered, ${statuses.get(503) ?? 0} refused with 503; slowest read ${slowest.toFixed(0)} ms`);
      assert.ok(slowest < 2000, `reads kept answering (slowest ${slowest.toFixed(0)} ms)`);
    } finally {
      stop = true;
      await killHard(portal.child);
      await Promise.race([Promise.allSettled(flows), new Promise((r) => setTimeout(r, 5000))]);
      await fake.stop();
      fs.unmount();
    }
  });
});
