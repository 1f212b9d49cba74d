import { fork } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cp, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { keyIdOf } from '../../src/keys/format.js';
import { silentLogger } from '../../src/log.js';
import { KeysStore } from '../../src/store/keys-store.js';
import { dayNum, hourNum, openUsageDb, zeroCounts } from '../../src/store/usage-schema.js';
import { UsageWriter } from '../../src/store/usage-writer.js';
import { Zone } from '../../src/time/zone.js';
import { hash32 } from '../../src/usage/record.js';
import { Browser } from '../support/browser-client.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { tempDir } from '../support/harness.js';
import { START_FLAGS } from './memory.js';
import { seedDataDir } from './registrations.js';
import { fmt, mb, percentile, printRows } from './util.js';

const USERS = 10_000;
const KEYS_PER_USER = 3;
const DAYS = 90;
const MODELS = ['claude-sonnet-4-5', 'gpt-5-codex', 'gemini-2.5-pro'];
const HOURS_PER_DAY = 3; // hours with traffic per key, model and day, for the HOURLY_RETENTION_DAYS kept
const LOGGED_KEYS = 300; // keys with raw rows (the request log): 100 a day for 90 days each
const TZ = 'Asia/Shanghai';

/** A deterministic generator, so every run measures the same data. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32);
}

/**
 * usage.db as a busy portal would have it after 90 days: rollups for every key × day × model,
 * hours for 14 days, totals, and raw rows (the request log) for some keys — written through the
 * portal's own writer.
 */
async function seedUsage(dir: string): Promise<{ loggedKey: string }> {
  const store = await KeysStore.open(dir, 'usr_pool_', silentLogger());
  const ids: string[] = [];
  for (const [k, r] of store.entries()) if (r.email) ids.push(keyIdOf(store.prefix, k));
  await store.close();
  const zone = new Zone(TZ);
  const db = openUsageDb(path.join(dir, 'usage.db'));
  db.pragma('synchronous = OFF'); // seeding only
  const w = new UsageWriter(db);
  const rand = rng(42);
  const now = Date.now();
  const totals = new Map(ids.map((id) => [id, zeroCounts()]));
  for (let d = DAYS - 1; d >= 0; d--) {
    const at = now - d * 86_400_000;
    const day = zone.day(at);
    w.transaction(() => {
      for (const id of ids) {
        for (const model of MODELS) {
          const requests = 1 + Math.floor(rand() * 120);
          const input = requests * Math.floor(2000 + rand() * 30_000);
          const output = requests * Math.floor(100 + rand() * 2000);
          const reasoning = rand() < 0.3 ? Math.floor(output * rand() * 0.5) : 0;
          const cached = Math.floor(input * rand() * 0.7);
          const c = { requests, failed: rand() < 0.1 ? 1 + Math.floor(rand() * 3) : 0, tokens: input + output, input, output, reasoning, cached };
          w.addRollup('day', id, 0, dayNum(day), model, c);
          const t = totals.get(id)!;
          for (const f of Object.keys(c) as (keyof typeof c)[]) t[f] += c[f];
          if (d < 14) {
            for (let h = 0; h < HOURS_PER_DAY; h++) {
              const part = (v: number) => (h === 0 ? v - Math.floor(v / HOURS_PER_DAY) * (HOURS_PER_DAY - 1) : Math.floor(v / HOURS_PER_DAY));
              w.addRollup('hour', id, 0, hourNum(`${day}T${String((h * 7 + 9) % 24).padStart(2, '0')}`), model,
                Object.fromEntries(Object.entries(c).map(([k, v]) => [k, part(v)])) as typeof c);
            }
          }
        }
      }
      for (const id of ids.slice(0, LOGGED_KEYS)) {
        for (let i = 0; i < 100; i++) {
          const ts = zone.startOfDay(day) + Math.floor(rand() * 86_400_000);
          w.addRawRow({ k: id, x: 0, ts, h: hash32(`${id}|${ts}|${i}`), day: dayNum(day), hour: hourNum(zone.hour(ts)), model: MODELS[i % 3]!, alias: null,
            endpoint: 'POST /v1/messages', failed: 0, status: 200, tokens: 3000, input: 2500, output: 500, reasoning: 0, cached: 1000, latency: 900, ttft: 200,
            rid: (i * 7919 + d).toString(16).padStart(8, '0'), ip: '10.0.0.8', ua: 'claude-cli/2.0.14 (external, cli)' });
        }
      }
    });
  }
  w.transaction(() => { for (const [id, c] of totals) w.addTotals(id, 0, c, now - DAYS * 86_400_000, now - Math.floor(rand() * 86_400_000)); });
  db.pragma('wal_checkpoint(TRUNCATE)');
  db.close();
  return { loggedKey: ids[7]! };
}

interface Child { url: string; startMs: number; wallMs: number; settledMs: number; keys: number; ask<T>(cmd: string, extra?: object): Promise<T>; stop(): Promise<void> }

async function startChild(dataDir: string, fakeUrl: string): Promise<Child> {
  const script = fileURLToPath(new URL('./stats-child.js', import.meta.url));
  const t0 = performance.now();
  const p = fork(script, [dataDir, fakeUrl], { execArgv: ['--expose-gc', ...START_FLAGS], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const next = <T>() => new Promise<T>((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`stats child exited ${code}`));
    p.once('exit', onExit);
    p.once('message', (m) => { p.off('exit', onExit); resolve(m as T); });
  });
  // First when it is listening (start-up), then once its start-up work has settled.
  const { startMs } = await next<{ startMs: number }>();
  const wallMs = performance.now() - t0;
  const settled = await next<{ url: string; settledMs: number; keys: number }>();
  return {
    ...settled, startMs, wallMs,
    ask: <T>(cmd: string, extra = {}) => new Promise<T>((resolve) => { p.once('message', (m) => resolve(m as T)); p.send({ cmd, ...extra }); }),
    stop: () => new Promise<void>((resolve) => { p.once('exit', () => resolve()); p.send({ cmd: 'stop' }); }),
  };
}

/** n sequential requests, timed each, after `warm` untimed ones (sorted, in ms). */
async function timeRequests(n: number, fn: () => Promise<unknown>, warm = Math.min(50, n)): Promise<number[]> {
  for (let i = 0; i < warm; i++) await fn();
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b);
}

const pct = (sorted: number[]) => `p50 ${fmt(percentile(sorted, 50), 1)} ms, p99 ${fmt(percentile(sorted, 99), 1)} ms`;

/**
 * The leaderboard, the admin page, start-up and memory with 10k users, 30k keys and 90 days × 3
 * models of aggregates. Baseline, in the same run: the same portal and keys with no usage at all.
 */
export async function benchStats(): Promise<void> {
  // KP_BENCH_SEEDED=<dir>: seed once into <dir> and start from a copy of it on later runs (seeding takes minutes).
  const cache = process.env.KP_BENCH_SEEDED;
  const dir = await tempDir('kp-bench-stats-');
  const bare = await tempDir('kp-bench-stats0-');
  let fake: FakeCliproxy | null = null;
  try {
    let seedS = 0;
    let loggedKey: string;
    if (cache && existsSync(path.join(cache, 'seeded.json'))) {
      await cp(cache, dir, { recursive: true });
      loggedKey = (JSON.parse(readFileSync(path.join(cache, 'seeded.json'), 'utf8')) as { loggedKey: string }).loggedKey;
    } else {
      await seedDataDir(dir, USERS, 100, KEYS_PER_USER);
      const g0 = performance.now();
      loggedKey = (await seedUsage(dir)).loggedKey;
      seedS = (performance.now() - g0) / 1000;
      if (cache) {
        await cp(dir, cache, { recursive: true });
        writeFileSync(path.join(cache, 'seeded.json'), JSON.stringify({ loggedKey }));
      }
    }
    // CLIProxyAPI already holds the issued keys, as in steady state (otherwise each start-up pass
    // adds 30k keys one PATCH at a time, each after the last one's reload: minutes).
    const seeded = await KeysStore.open(dir, 'usr_pool_', silentLogger());
    const live = [...seeded.entries()].filter(([, r]) => r.status === 'active').map(([k]) => k);
    await seeded.close();
    fake = await FakeCliproxy.start({ apiKeys: ['sk-ops', ...live], reloadDelayMs: 5 });
    await cp(dir, bare, { recursive: true });
    await rm(path.join(bare, 'usage.db'), { force: true });
    const usageBytes = (await stat(path.join(dir, 'usage.db'))).size;

    const base = await startChild(bare, fake.url);
    const healthz = await timeRequests(300, () => fetch(`${base.url}/healthz`).then((r) => r.text()));
    const baseBoard = await timeRequests(300, () => fetch(`${base.url}/api/all-users-stats`, { headers: { Authorization: 'Bearer bench-admin-token-0123456789' } }).then((r) => r.text()));
    const baseMem = await base.ask<{ rss: number }>('memory');
    await base.stop();

    const full = await startChild(dir, fake.url);
    const auth = { Authorization: 'Bearer bench-admin-token-0123456789' };
    let size = 0;
    const cold = await timeRequests(1, () => fetch(`${full.url}/api/all-users-stats`, { headers: auth }).then((r) => r.arrayBuffer()), 0);
    const board = await timeRequests(500, () => fetch(`${full.url}/api/all-users-stats`, { headers: auth }).then(async (r) => { size = (await r.arrayBuffer()).byteLength; }));
    const fresh = (await full.ask<{ times: number[] }>('fresh', { n: 60 })).times.sort((a, b) => a - b);
    const browser = new Browser(full.url);
    await browser.get('/admin');
    await browser.post('/admin/sign-in', { token: 'bench-admin-token-0123456789' });
    const page = await timeRequests(60, async () => {
      const r = await browser.get('/admin/users');
      if (r.status !== 200) throw new Error(`/admin/users answered ${r.status}`);
    });
    const person = await timeRequests(60, () => browser.get(`/admin/users/${encodeURIComponent('seed4242@bench.example')}`));
    const person90 = await timeRequests(200, () => fetch(`${full.url}/api/user-stats/seed${Math.floor(Math.random() * USERS)}%40bench.example?days=90`, { headers: auth }).then((r) => r.text()));
    const from = new Date(Date.now() - 89 * 86_400_000).toISOString().slice(0, 10);
    let logRows = 0;
    const log = await timeRequests(200, () => fetch(`${full.url}/api/requests?key_id=${loggedKey}&from=${from}&limit=100`, { headers: auth })
      .then(async (r) => { logRows = ((await r.json()) as { requests: unknown[] }).requests.length; }));
    const logPage5 = await timeRequests(50, async () => {
      let next: string | null = null;
      for (let p = 0; p < 5; p++) {
        const body = (await fetch(`${full.url}/api/requests?key_id=${loggedKey}&from=${from}&limit=100${next ? `&before=${next}` : ''}`, { headers: auth }).then((r) => r.json())) as { next: string | null };
        next = body.next;
      }
    });
    let csvBytes = 0;
    const csv = await timeRequests(2, () => fetch(`${full.url}/api/usage.csv?days=90`, { headers: auth }).then(async (r) => { csvBytes = (await r.arrayBuffer()).byteLength; }), 0);
    const mem = await full.ask<{ rss: number; heapUsed: number; arrayBuffers: number }>('memory');
    await full.stop();

    printRows(`Statistics at scale: ${fmt(USERS)} users, ${fmt(full.keys)} keys, ${DAYS} days × ${MODELS.length} models (${fmt(USERS * KEYS_PER_USER * DAYS * MODELS.length)} day rows; hours for 14 days × ${HOURS_PER_DAY}/day; ${fmt(LOGGED_KEYS * DAYS * 100)} raw rows), TIMEZONE ${TZ}`, [
      { name: 'seeding usage.db (not a target)', value: `${fmt(seedS, 1)} s`, baseline: `${mb(usageBytes)} usage.db` },
      { name: 'GET /api/all-users-stats, warm (sequential)', value: `${fmt(percentile(board, 99), 1)} ms`, target: 'p99 ≤ 10 ms', baseline: `${pct(board)} after 50 untimed; the first request after start-up ${fmt(cold[0]!, 1)} ms (builds it); ${mb(size)} body; same route with no usage ${pct(baseBoard)}; /healthz ${pct(healthz)}; 0.1.0: p99 8.6–11.9 ms` },
      { name: 'leaderboard computed with the cache expired', value: `${fmt(percentile(fresh, 99), 1)} ms`, baseline: `${pct(fresh)}; 0.1.0: p99 15–16 ms` },
      { name: 'GET /api/user-stats/:email?days=90, random people', value: `${fmt(percentile(person90, 99), 1)} ms`, target: 'p99 ≤ 10 ms', baseline: `${pct(person90)}; 0.1.0: p50 54 ms, p99 217–245 ms` },
      { name: 'GET /api/requests: 100 rows of one key, 90-day window', value: `${fmt(percentile(log, 99), 1)} ms`, target: '≤ 20 ms', baseline: `${pct(log)} (${logRows} rows); five pages in a row ${pct(logPage5)}; 0.1.0: not queryable` },
      { name: 'GET /admin/users (page 1 of the leaderboard)', value: `${fmt(percentile(page, 99), 1)} ms`, target: '≤ 100 ms', baseline: `${pct(page)}; 0.1.0: p99 11–15 ms` },
      { name: 'GET /admin/users/:email (30-day charts)', value: `${fmt(percentile(person, 99), 1)} ms`, baseline: pct(person) },
      { name: 'GET /api/usage.csv?days=90, everyone', value: `${fmt(csv[1]! / 1000, 1)} s`, baseline: `${mb(csvBytes)}; 0.1.0: 22 s for 697 MB` },
      { name: 'start-up until ready (process spawn → listening)', value: `${fmt(full.wallMs / 1000, 2)} s`, target: '≤ 2 s', baseline: `${fmt(base.wallMs / 1000, 2)} s with the same keys and no usage (startPortal ${fmt(full.startMs)} vs ${fmt(base.startMs)} ms; start-up work settled ${fmt(full.settledMs / 1000, 1)} s after spawn, before the figures above); 0.1.0: 0.88–0.90 s`, ratio: `${fmt(full.wallMs / base.wallMs, 2)}×` },
      { name: 'resident memory after start-up and the requests above, GC', value: mb(mem.rss), target: '≤ 250 MB', baseline: `${mb(baseMem.rss)} with no usage; heap ${mb(mem.heapUsed)}, array buffers ${mb(mem.arrayBuffers)}; 0.1.0: 212–242 MB`, ratio: `${fmt(mem.rss / baseMem.rss, 2)}×` },
    ]);
  } finally {
    await fake?.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(bare, { recursive: true, force: true });
  }
}
