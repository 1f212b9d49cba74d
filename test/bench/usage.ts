import { open, rm } from 'node:fs/promises';
import path from 'node:path';
import { systemClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import { KeysStore } from '../../src/store/keys-store.js';
import { Ingestor } from '../../src/usage/ingest.js';
import { UsageLedger } from '../../src/usage/ledger.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, call, startTestPortal, tempDir, waitFor } from '../support/harness.js';
import { fmt, percentile, printRows } from './util.js';

/** `n` records in CLIProxyAPI v7.2.140's shape, as the JSON text they arrive as (the fake builds them). */
async function records(keys: string[], n: number): Promise<string[]> {
  const fake = await FakeCliproxy.start();
  try {
    const t0 = Date.now() - 3_600_000;
    for (let i = 0; i < n; i++) {
      fake.recordUsage({ apiKey: keys[i % keys.length]!, alias: ['fake-chat', 'fake-pro', 'fake-mini'][i % 3]!, input: 40 + (i % 50), output: 10 + (i % 30), failed: i % 97 === 0, at: t0 + i });
    }
    return fake.queue.map((q) => q.json);
  } finally {
    await fake.stop();
  }
}

/**
 * Ingestion through the whole pipeline (parse → key id → append + fsync per batch of 500 → count),
 * against the bare baseline of parsing the same records and appending them to a file, same batches.
 */
async function benchIngestion(): Promise<void> {
  const dir = await tempDir('kp-bench-ingest-');
  try {
    const store = await KeysStore.open(dir, 'usr_pool_', silentLogger());
    store.mint(1000);
    const keys: string[] = [];
    for (let i = 0; i < 1000; i++) keys.push(store.assignNext({ email: `u${i}@b.example`, label: '', issued_by: 'self', daily_limit: 0, daily_token_limit: 0, now: new Date() }).key);
    await store.close();
    const n = 200_000;
    const batch = 500;
    const raw = await records(keys, n);

    const ledger = new UsageLedger('Asia/Shanghai');
    const ingestor = await Ingestor.open({ dataDir: dir, store, ledger, log: silentLogger(), clock: systemClock });
    let t0 = performance.now();
    for (let i = 0; i < n; i += batch) await ingestor.ingest(raw.slice(i, i + batch).map((s) => JSON.parse(s)));
    const pipeline = n / ((performance.now() - t0) / 1000);
    await ingestor.close();

    const fh = await open(path.join(dir, 'baseline.jsonl'), 'a');
    t0 = performance.now();
    for (let i = 0; i < n; i += batch) {
      const parsed = raw.slice(i, i + batch).map((s) => JSON.parse(s));
      await fh.write(parsed.map((r) => JSON.stringify(r)).join('\n') + '\n');
      await fh.datasync();
    }
    const baseline = n / ((performance.now() - t0) / 1000);
    await fh.close();
    printRows(`Usage ingestion (${fmt(n)} v7 records, 1,000 keys, 3 models, batches of ${batch}, fsync per batch)`, [
      { name: 'records per second, whole pipeline', value: fmt(pipeline), target: '≥ 30,000/s', baseline: `${fmt(baseline)}/s parse + append`, ratio: `${fmt(pipeline / baseline, 2)}×` },
    ]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Push freshness: from the fake publishing a record over RESP to the request visible in /api/user-stats. */
async function benchFreshness(): Promise<void> {
  const t = await startTestPortal({ env: { USAGE_SOURCE: 'subscribe', LOG_LEVEL: 'warn' } });
  try {
    await waitFor(() => t.portal.usage.status().subscribed, 'subscription');
    const { key } = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'fresh@b.example' } })).body;
    const samples: number[] = [];
    for (let i = 1; i <= 200; i++) {
      const t0 = performance.now();
      t.fake.recordUsage({ apiKey: key, alias: 'fake-chat', input: 10, output: 5, failed: false });
      for (;;) {
        const n = (await call(t.url, 'GET', '/api/user-stats/fresh%40b.example?days=1', { token: ADMIN })).body.totals.requests;
        if (n >= i) break;
      }
      samples.push(performance.now() - t0);
    }
    samples.sort((a, b) => a - b);
    printRows('Freshness in subscribe mode (publish → visible in /api/user-stats, 200 records, polled back to back)', [
      { name: 'p50', value: `${fmt(percentile(samples, 50), 1)} ms` },
      { name: 'p99', value: `${fmt(percentile(samples, 99), 1)} ms`, target: '≤ 1,000 ms', baseline: 'the original tool: up to 5,000 ms (its cache)' },
    ]);
  } finally {
    await t.stop();
  }
}

export async function benchUsage(): Promise<void> {
  await benchIngestion();
  await benchFreshness();
}
