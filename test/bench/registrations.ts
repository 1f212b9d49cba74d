import { rm } from 'node:fs/promises';
import path from 'node:path';
import { readFileSync } from 'node:fs';
import { silentLogger } from '../../src/log.js';
import { writeFileAtomic } from '../../src/store/atomic-file.js';
import { KeysStore } from '../../src/store/keys-store.js';
import { call, spawnFake, startTestPortal, tempDir } from '../support/harness.js';
import { fmt, percentile, printRows } from './util.js';

/** A data directory with `users` people holding one key each, and `spare` unused keys. */
export async function seedDataDir(dir: string, users: number, spare: number, keysPerUser = 1): Promise<void> {
  const store = await KeysStore.open(dir, 'usr_pool_', silentLogger());
  store.mint(users * keysPerUser + spare);
  const now = new Date();
  for (let i = 0; i < users; i++) {
    for (let k = 0; k < keysPerUser; k++) {
      store.assignNext({ email: `seed${i}@bench.example`, name: `Seed ${i}`, label: `k${k}`, issued_by: 'self',
        daily_limit: 0, daily_token_limit: 0, now });
    }
  }
  for (const [key] of store.entries()) store.updateKey(key, { status: 'active' });
  await store.close();
}

/**
 * Durable registrations per second with 10k existing users: the real portal in-process, real
 * HTTP on loopback, the fake CLIProxyAPI receiving every key. Baseline, measured in the same run:
 * what one registration costs when it writes both files on its own (no group commit).
 */
export async function benchRegistrations(): Promise<void> {
  const existing = 10_000;
  const total = 4000;
  const concurrency = 64;
  const dir = await tempDir('kp-bench-reg-');
  await seedDataDir(dir, existing, total + 100);
  const fake = await spawnFake({ FAKE_API_KEYS: 'sk-ops' });
  const t = await startTestPortal({ cliproxyUrl: fake.url, dataDir: dir, env: { LOG_LEVEL: 'warn', POOL_SIZE: '1' } });
  try {
    const latencies: number[] = [];
    let next = 0;
    const writesBefore = t.portal.store.writes;
    const started = performance.now();
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < total) {
        const i = next++;
        const t0 = performance.now();
        const res = await call(t.url, 'POST', '/api/register-key', { body: { email: `new${i}@bench.example`, name: `New ${i}` } });
        if (res.status !== 201) throw new Error(`registration answered ${res.status}: ${res.text}`);
        latencies.push(performance.now() - t0);
      }
    }));
    const seconds = (performance.now() - started) / 1000;
    const rate = total / seconds;
    const writes = t.portal.store.writes - writesBefore;
    latencies.sort((a, b) => a - b);

    // Baseline: both files written durably once per registration, as a store without group commit would.
    const poolText = readFileSync(path.join(dir, 'key_pool.json'));
    const usersText = readFileSync(path.join(dir, 'user_keys.json'));
    const scratch = await tempDir('kp-bench-base-');
    const n = 40;
    const b0 = performance.now();
    for (let i = 0; i < n; i++) {
      // Each single-write registration also has to serialise the whole file: parse+stringify stands in for it.
      await writeFileAtomic(path.join(scratch, 'key_pool.json'), JSON.stringify(JSON.parse(poolText.toString())));
      await writeFileAtomic(path.join(scratch, 'user_keys.json'), JSON.stringify(JSON.parse(usersText.toString())));
    }
    const baseRate = n / ((performance.now() - b0) / 1000);
    await rm(scratch, { recursive: true, force: true });

    printRows(`Durable registrations (${fmt(existing)} existing users, ${fmt(total)} new, ${concurrency} concurrent clients over HTTP)`, [
      { name: 'registrations per second', value: fmt(rate), target: '≥ 500/s', baseline: `${fmt(baseRate)}/s one write per registration`, ratio: `${fmt(rate / baseRate, 1)}×` },
      { name: 'latency p50', value: `${fmt(percentile(latencies, 50), 1)} ms` },
      { name: 'latency p99', value: `${fmt(percentile(latencies, 99), 1)} ms` },
      { name: 'file writes per registration', value: fmt(writes / total, 3) },
      { name: 'management calls to CLIProxyAPI', value: fmt(t.portal.cliproxy.callsSent) },
    ]);
  } finally {
    await t.stop();
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  }
}
