import { rm, stat } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { systemClock } from '../../src/clock.js';
import { silentLogger } from '../../src/log.js';
import { KeysStore } from '../../src/store/keys-store.js';
import { UsageStore } from '../../src/store/usage-store.js';
import { Zone } from '../../src/time/zone.js';
import { Ingestor } from '../../src/usage/ingest.js';
import { localTimestamp } from '../support/fake-cliproxy.js';
import { ADMIN, call, startTestPortal, tempDir, waitFor } from '../support/harness.js';
import { fmt, mb, percentile, printRows } from './util.js';

const MODELS = ['claude-sonnet-4-5', 'gpt-5-codex', 'gemini-2.5-pro'];

/** Record `i` of a synthetic stream, as the JSON text CLIProxyAPI v7.2.140 sends (CLIPROXY.md §5.5). */
function recordText(key: string, i: number, at: number): string {
  const input = 400 + (i % 5000);
  const output = 20 + (i % 700);
  const failed = i % 97 === 0;
  return JSON.stringify({
    timestamp: localTimestamp(at, 480), latency_ms: 700 + (i % 900), ttft_ms: 90 + (i % 200), source: 'upstream-dummy-key', auth_index: '3c9d0a1be4f27a55',
    client_ip: `10.0.${(i >> 8) & 255}.${i & 255}`, x_forwarded_for: '', user_agent: ['claude-cli/2.0.14 (external, cli)', 'codex_cli_rs/0.46.0', 'GeminiCLI/0.9.0'][i % 3],
    tokens: { input_tokens: input, output_tokens: output, reasoning_tokens: 0, cached_tokens: i % 4 ? 0 : 300, total_tokens: failed ? 0 : input + output },
    failed, generate: true, fail: failed ? { status_code: 500, body: 'upstream failed' } : { status_code: 200, body: '' }, accounting_version: 2,
    token_breakdown: { schema_version: 2, quality: 'complete', total_tokens: failed ? 0 : input + output,
      input: { total_tokens: input, uncached_tokens: input, cache_read_tokens: 0, cache_write_tokens: 0 },
      output: { total_tokens: output, non_reasoning_tokens: output, reasoning_tokens: 0 }, unclassified_tokens: 0 },
    provider: 'openai-compatible-fake', executor_type: 'OpenAICompatExecutor', model: MODELS[i % 3], alias: MODELS[i % 3],
    endpoint: 'POST /v1/chat/completions', auth_type: 'apikey', api_key: key, request_id: (i >>> 0).toString(16).padStart(8, '0'),
    reasoning_effort: '', service_tier: 'auto',
  });
}

/**
 * Ingestion through the whole pipeline: JSON text → parse → key id, day and hour in TIMEZONE → the
 * writer thread → one transaction per batch (rows + three rollups), fsync'd. Records go in as the
 * subscription hands them over, one at a time, without waiting. Baseline, same run and same rows:
 * parsing and inserting them with a plain prepared INSERT, one transaction per 500, no rollups.
 */
async function benchIngestion(): Promise<number> {
  const dir = await tempDir('kp-bench-ingest-');
  try {
    const keys = await KeysStore.open(dir, 'usr_pool_', silentLogger());
    keys.mint(1000);
    const issued: string[] = [];
    for (let i = 0; i < 1000; i++) issued.push(keys.assignNext({ email: `u${i}@b.example`, label: '', issued_by: 'self', daily_limit: 0, daily_token_limit: 0, now: new Date() }).key);
    await keys.commit();
    const n = 1_000_000;
    const t0 = Date.now() - 30 * 86_400_000;
    const text = (i: number) => recordText(issued[i % issued.length]!, i, t0 + i * 2500); // a month of traffic

    const store = await UsageStore.open(dir, silentLogger());
    const ingestor = new Ingestor({ dataDir: dir, store, keys, zone: new Zone('Asia/Shanghai'), log: silentLogger(), clock: systemClock });
    let start = performance.now();
    for (let i = 0; i < n; i += 1000) {
      for (let j = i; j < i + 1000; j++) ingestor.push([JSON.parse(text(j))]);
      // Bounded memory: while 20,000 records wait for the writer, yield to it (a socket's backlog would wait in the kernel).
      while (ingestor.held > 20_000) await new Promise((r) => setTimeout(r, 1));
    }
    await ingestor.settled();
    const pipeline = n / ((performance.now() - start) / 1000);
    await ingestor.close();
    await store.close(); // checkpoints the WAL into the file
    const bytes = (await stat(store.file)).size;
    const byTable = new Database(store.file, { readonly: true }).prepare('SELECT name, sum(pgsize) AS b FROM dbstat GROUP BY name ORDER BY b DESC').all() as { name: string; b: number }[];
    const share = (names: RegExp) => byTable.filter((t) => names.test(t.name)).reduce((n, t) => n + t.b, 0);
    await keys.close();

    const base = new Database(path.join(dir, 'baseline.db'));
    base.pragma('journal_mode = WAL');
    base.pragma('synchronous = FULL');
    base.exec('CREATE TABLE r (id INTEGER PRIMARY KEY, key TEXT, ts INTEGER, model TEXT, tokens INTEGER, input INTEGER, output INTEGER, failed INTEGER, rid TEXT)');
    const insert = base.prepare('INSERT INTO r (key, ts, model, tokens, input, output, failed, rid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    const m = 200_000;
    start = performance.now();
    for (let i = 0; i < m; i += 500) {
      const rows = Array.from({ length: 500 }, (_, j) => JSON.parse(text(i + j)));
      base.transaction(() => {
        for (const r of rows) insert.run(r.api_key, Date.parse(r.timestamp), r.model, r.tokens.total_tokens, r.tokens.input_tokens, r.tokens.output_tokens, r.failed ? 1 : 0, r.request_id);
      })();
    }
    const baseline = m / ((performance.now() - start) / 1000);
    base.close();
    printRows(`Usage ingestion (${fmt(n)} v7 records, 1,000 keys, 3 models, 30 days, pushed one at a time)`, [
      { name: 'records per second, whole pipeline', value: fmt(pipeline), target: '≥ 30,000/s', baseline: `${fmt(baseline)}/s parse + plain INSERT, 500 a transaction, main thread; 0.1.0 (event log + ledger): 112,730/s`, ratio: `${fmt(pipeline / baseline, 2)}×` },
      { name: 'usage.db bytes per million records', value: mb(bytes / (n / 1e6)),
        baseline: `raw rows ${mb(share(/^events$/))}, their two indexes ${mb(share(/^(sqlite_autoindex_events_1|events_ts)$/))}, hourly rollups (kept 14 days) ${mb(share(/^usage_hour/))}, daily rollups and totals ${mb(share(/^usage_(day|total)/))}` },
    ]);
    return bytes;
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
    printRows('Freshness in subscribe mode (publish → committed and visible in /api/user-stats, 200 records, polled back to back)', [
      { name: 'p50', value: `${fmt(percentile(samples, 50), 1)} ms` },
      { name: 'p99', value: `${fmt(percentile(samples, 99), 1)} ms`, target: '≤ 1,000 ms', baseline: '0.1.0: p99 14.9 ms; the original tool: up to 5,000 ms (its cache)' },
    ]);
  } finally {
    await t.stop();
  }
}

export async function benchUsage(): Promise<void> {
  await benchIngestion();
  await benchFreshness();
}
