import { rm } from 'node:fs/promises';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, MANAGEMENT_KEY, call, tempDir, waitFor } from '../support/harness.js';
import { killHard, spawnPortal } from '../support/spawn.js';
import { fmt, percentile, printRows } from './util.js';

/**
 * Enforcement lag: from CLIProxyAPI handing out the record that reaches a key's daily limit to the
 * key gone from CLIProxyAPI's list. The portal runs as `npm start` would (a child process, its own
 * schedules); the fake applies key changes after 5 ms. Baseline, same run: the queue source on its
 * default 5-second schedule.
 */
async function lag(mode: 'subscribe' | 'queue', keys: number): Promise<number[]> {
  const fake = await FakeCliproxy.start({ apiKeys: ['sk-ops'], reloadDelayMs: 5 });
  const dir = await tempDir(`kp-bench-quota-${mode}-`);
  const portal = await spawnPortal(dir, { CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY, USAGE_SOURCE: mode, POOL_SIZE: String(keys + 20) });
  try {
    const samples: number[] = [];
    for (let i = 0; i < keys; i++) {
      const { key } = (await call(portal.url, 'POST', '/admin/keys', { token: ADMIN, body: { label: `lag ${i}`, daily_limit: 3 } })).body as { key: string };
      await waitFor(() => fake.live.has(key), 'the key to go live');
      for (let n = 0; n < 2; n++) fake.recordUsage({ apiKey: key, alias: 'fake-chat', input: 10, output: 5, failed: false });
      await new Promise((r) => setTimeout(r, mode === 'queue' ? 5500 : 50));
      if (!fake.live.has(key)) throw new Error('suspended before the limit was reached');
      const t0 = performance.now();
      fake.recordUsage({ apiKey: key, alias: 'fake-chat', input: 10, output: 5, failed: false });
      while (fake.live.has(key)) await new Promise((r) => setImmediate(r));
      samples.push(performance.now() - t0);
    }
    return samples.sort((a, b) => a - b);
  } finally {
    await killHard(portal.child);
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

export async function benchQuota(): Promise<void> {
  const push = await lag('subscribe', 60);
  const poll = await lag('queue', 6);
  printRows('Enforcement lag (record reaching daily_limit handed out → key gone from the fake CLIProxyAPI)', [
    { name: `subscribe, ${push.length} keys: p99`, value: `${fmt(percentile(push, 99), 1)} ms`, target: '≤ 2,000 ms',
      baseline: `p50 ${fmt(percentile(push, 50), 1)} ms; queue every 5 s (${poll.length} keys): p50 ${fmt(percentile(poll, 50))} ms, p99 ${fmt(percentile(poll, 99))} ms`,
      ratio: `${fmt(percentile(poll, 50) / percentile(push, 50), 0)}× faster at p50` },
  ]);
}
