import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT_DIR } from '../../src/app.js';
import { silentLogger } from '../../src/log.js';
import { KeysStore } from '../../src/store/keys-store.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { MANAGEMENT_KEY, call, tempDir } from '../support/harness.js';
import { killHard, spawnPortal } from '../support/spawn.js';
import { designInvariantViolations, strictInvariantViolations } from '../support/invariants.js';
import { seeded } from '../support/random.js';

describe('kill -9 in the middle of a registration storm', () => {
  let fake: FakeCliproxy;
  let dataDir: string;
  before(async () => {
    fake = await FakeCliproxy.start({ apiKeys: ['sk-ops'] });
    dataDir = await tempDir('kp-crash-');
  });
  after(async () => {
    await fake.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('leaves parseable files, intact invariants, and every answered key on disk, round after round', async (t) => {
    const rnd = seeded('kill -9 in a registration storm');
    const answered = new Map<string, string>(); // key → email, for every 201
    const revoked = new Set<string>();            // keys whose revocation was answered 200
    const revoking = new Set<string>();           // revocations sent (the kill may have eaten the answer)
    const rounds = 6;
    for (let round = 0; round < rounds; round++) {
      const { child, url } = await spawnPortal(dataDir, {
        CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY, POOL_SIZE: '6000', CLIPROXY_WRITE_GAP_MS: '5', // the fake has no reload race
      });
      let stop = false;
      let n = 0;
      const roundKeys: string[] = [];
      const worker = async (w: number) => {
        while (!stop) {
          try {
            if (roundKeys.length > 4 && n % 5 === 4) {
              const key = roundKeys.splice(Math.floor(rnd.next() * roundKeys.length), 1)[0]!;
              n++;
              revoking.add(key);
              const res = await call(url, 'POST', '/api/revoke-key', { body: { key } });
              if (res.status === 200) revoked.add(key);
            } else {
              const email = `r${round}-w${w}-${n++}@crash.example`;
              const res = await call(url, 'POST', '/api/register-key', { body: { email } });
              if (res.status === 201) { answered.set(res.body.key, email); roundKeys.push(res.body.key); }
            }
          } catch {
            return; // the portal is gone
          }
        }
      };
      const workers = Array.from({ length: 12 }, (_, w) => worker(w));
      // Up to 2.5 s, so some kills land in the middle of a once-a-second checkpoint.
      const killAfter = 150 + Math.floor(rnd.next() * 2350);
      await new Promise((r) => setTimeout(r, killAfter));
      await killHard(child);
      stop = true;
      await Promise.all(workers);

      // The files as the crash left them: parseable, and the design's invariants hold.
      assert.deepEqual(designInvariantViolations(dataDir), [], `round ${round}: raw files after kill at ${killAfter} ms`);
      // Reopened (the store repairs what a crash between its two files left), everything agrees.
      const store = await KeysStore.open(dataDir, 'usr_pool_', silentLogger());
      assert.deepEqual(strictInvariantViolations(dataDir), [], `round ${round}: after reopening`);
      for (const [key, email] of answered) {
        const record = store.getKey(key);
        assert.ok(record, `round ${round}: an answered key is on disk`);
        assert.equal(record.email, email);
        if (revoked.has(key)) assert.equal(record.status, 'revoked', 'an answered revocation is on disk');
        else if (!revoking.has(key)) assert.ok(store.getUser(email)?.api_keys.includes(key), 'an answered key is still its holder’s');
      }
      await store.close();
    }
    t.diagnostic(`${rounds} kills; ${answered.size} registrations and ${revoked.size} revocations answered before them`);
    assert.ok(answered.size > rounds * 10, `the storms were real: ${answered.size} keys answered, ${revoked.size} revoked`);

    // A clean start on the same directory serves and keeps every answered key.
    const { child, url } = await spawnPortal(dataDir, { CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY });
    try {
      const status = (await call(url, 'GET', '/api/key-pool-status')).body;
      assert.equal(status.total, status.unused + status.assigned + status.retired);
      assert.ok(status.assigned >= answered.size - revoked.size);
    } finally {
      await killHard(child);
    }
  });

  it('refuses a second portal on the same data directory with a clear message', async () => {
    const first = await spawnPortal(dataDir, { CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY });
    try {
      const second = spawn(process.execPath, [path.join(ROOT_DIR, 'bin/key-portal'), 'start'], {
        env: { PATH: process.env.PATH, PORT: '0', HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_FILE: '', CLIPROXY_URL: fake.url },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      second.stderr!.on('data', (d) => { stderr += d; });
      const code = await new Promise<number | null>((resolve) => second.on('exit', resolve));
      assert.equal(code, 1);
      assert.match(stderr, new RegExp(`in use by key-portal process ${first.child.pid}`));
    } finally {
      await killHard(first.child);
    }
  });
});
