import { fork } from 'node:child_process';
import { cp, readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { systemClock } from '../../src/clock.js';
import { keyIdOf } from '../../src/keys/format.js';
import { silentLogger } from '../../src/log.js';
import { KeysStore } from '../../src/store/keys-store.js';
import { Ingestor } from '../../src/usage/ingest.js';
import { UsageLedger } from '../../src/usage/ledger.js';
import { Browser } from '../support/browser-client.js';
import { spawnFake, tempDir } from '../support/harness.js';
import { START_FLAGS } from './memory.js';
import { seedDataDir } from './registrations.js';
import { fmt, mb, percentile, printRows } from './util.js';

const USERS = 10_000;
const KEYS_PER_USER = 3;
const DAYS = 90;
const MODELS = ['claude-sonnet-4-5', 'gpt-5-codex', 'gemini-2.5-pro'];
const HOURS_PER_DAY = 3; // hours with traffic per key, model and day, for the HOURLY_RETENTION_DAYS kept
const TZ = 'Asia/Shanghai';

/** A deterministic generator, so every run measures the same data. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32);
}

/**
 * Aggregates for every key × day × model, written by the portal's own checkpoint code: the data
 * directory a busy portal would have after 90 days.
 */
async function seedUsage(dir: string): Promise<void> {
  const store = await KeysStore.open(dir, 'usr_pool_', silentLogger());
  const ids: string[] = [];
  for (const [k, r] of store.entries()) if (r.email) ids.push(keyIdOf(store.prefix, k));
  const ledger = new UsageLedger(TZ, 14);
  const ingestor = await Ingestor.open({ dataDir: dir, store, ledger, log: silentLogger(), clock: systemClock });
  const rand = rng(42);
  const now = Date.now();
  for (let d = DAYS - 1; d >= 0; d--) {
    const at = now - d * 86_400_000;
    const { day } = ledger.dayHour(at);
    for (const id of ids) {
      for (const model of MODELS) {
        const requests = 1 + Math.floor(rand() * 120);
        const input = requests * Math.floor(2000 + rand() * 30_000);
        const output = requests * Math.floor(100 + rand() * 2000);
        const reasoning = rand() < 0.3 ? Math.floor(output * rand() * 0.5) : 0;
        const cached = Math.floor(input * rand() * 0.7);
        const c = { requests, failed: rand() < 0.1 ? 1 + Math.floor(rand() * 3) : 0, tokens: input + output, input, output, reasoning, cached };
        ledger.addCounts(id, false, day, null, model, c, at);
        if (d < 14) {
          for (let h = 0; h < HOURS_PER_DAY; h++) {
            const part = (v: number) => (h === 0 ? v - Math.floor(v / HOURS_PER_DAY) * (HOURS_PER_DAY - 1) : Math.floor(v / HOURS_PER_DAY));
            ledger.addHourCounts(id, day, (h * 7 + 9) % 24, model, Object.fromEntries(Object.entries(c).map(([k, v]) => [k, part(v)])));
          }
        }
      }
    }
    await ingestor.checkpoint(); // writes this day's file and freezes the day, as the running portal does
  }
  await ingestor.close();
  await store.close();
}

interface Child { url: string; startMs: number; wallMs: number; keys: number; rows: number; ask<T>(cmd: string, extra?: object): Promise<T>; stop(): Promise<void> }

async function startChild(dataDir: string, fakeUrl: string): Promise<Child> {
  const script = fileURLToPath(new URL('./stats-child.js', import.meta.url));
  const t0 = performance.now();
  const p = fork(script, [dataDir, fakeUrl], { execArgv: ['--expose-gc', ...START_FLAGS], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const first = await new Promise<{ url: string; startMs: number; keys: number; rows: number }>((resolve, reject) => {
    p.once('message', (m) => resolve(m as never));
    p.once('exit', (code) => reject(new Error(`stats child exited ${code}`)));
  });
  const wallMs = performance.now() - t0;
  return {
    ...first, wallMs,
    ask: <T>(cmd: string, extra = {}) => new Promise<T>((resolve) => { p.once('message', (m) => resolve(m as T)); p.send({ cmd, ...extra }); }),
    stop: () => new Promise<void>((resolve) => { p.once('exit', () => resolve()); p.send({ cmd: 'stop' }); }),
  };
}

async function timeRequests(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    times.push(performance.now() - t);
  }
  return times.sort((a, b) => a - b);
}

const pct = (sorted: number[]) => `p50 ${fmt(percentile(sorted, 50), 1)} ms, p99 ${fmt(percentile(sorted, 99), 1)} ms`;

async function dirSize(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) total += (await stat(path.join(e.parentPath, e.name))).size;
  return total;
}

/**
 * The leaderboard, the admin page, start-up and memory with 10k users, 30k keys and 90 days × 3
 * models of aggregates. Baseline, in the same run: the same portal and keys with no usage at all.
 */
export async function benchStats(): Promise<void> {
  const dir = await tempDir('kp-bench-stats-');
  const bare = await tempDir('kp-bench-stats0-');
  const fake = await spawnFake({ FAKE_API_KEYS: 'sk-ops'});
  try {
    await seedDataDir(dir, USERS, 100, KEYS_PER_USER);
    await cp(dir, bare, { recursive: true });
    const g0 = performance.now();
    await seedUsage(dir);
    const seedS = (performance.now() - g0) / 1000;
    const usageBytes = await dirSize(path.join(dir, 'usage'));

    const base = await startChild(bare, fake.url);
    const healthz = await timeRequests(300, () => fetch(`${base.url}/healthz`).then((r) => r.text()));
    const baseBoard = await timeRequests(300, () => fetch(`${base.url}/api/all-users-stats`, { headers: { Authorization: 'Bearer bench-admin-token-0123456789' } }).then((r) => r.text()));
    const baseMem = await base.ask<{ rss: number }>('memory');
    await base.stop();

    const full = await startChild(dir, fake.url);
    const auth = { Authorization: 'Bearer bench-admin-token-0123456789' };
    let size = 0;
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
    const cold = await timeRequests(30, () => fetch(`${full.url}/api/user-stats/seed777%40bench.example?days=90`, { headers: auth }).then((r) => r.text()));
    let csvBytes = 0;
    const csv = await timeRequests(2, () => fetch(`${full.url}/api/usage.csv?days=90`, { headers: auth }).then(async (r) => { csvBytes = (await r.arrayBuffer()).byteLength; }));
    const mem = await full.ask<{ rss: number; heapUsed: number; arrayBuffers: number }>('memory');
    await full.stop();

    printRows(`Statistics at scale: ${fmt(USERS)} users, ${fmt(full.keys)} keys, ${DAYS} days × ${MODELS.length} models (${fmt(USERS * KEYS_PER_USER * DAYS * MODELS.length)} day rows, ${fmt(full.rows)} of them in memory; hours for 14 days × ${HOURS_PER_DAY}/day), TIMEZONE ${TZ}`, [
      { name: 'seeding the data (not a target)', value: `${fmt(seedS, 1)} s`, baseline: `${mb(usageBytes)} of aggregate files` },
      { name: 'GET /api/all-users-stats, warm (sequential)', value: `${fmt(percentile(board, 99), 1)} ms`, target: 'p99 ≤ 20 ms', baseline: `${pct(board)}; ${mb(size)} body; same route with no usage ${pct(baseBoard)}; /healthz ${pct(healthz)}` },
      { name: 'leaderboard computed with the cache expired', value: `${fmt(percentile(fresh, 99), 1)} ms`, baseline: pct(fresh) },
      { name: 'GET /admin/users (page 1 of the leaderboard)', value: `${fmt(percentile(page, 99), 1)} ms`, target: '≤ 100 ms', baseline: pct(page) },
      { name: 'GET /admin/users/:email (30-day charts)', value: `${fmt(percentile(person, 99), 1)} ms`, baseline: pct(person) },
      { name: 'GET /api/user-stats/:email?days=90 (58 days read from disk)', value: `${fmt(percentile(cold, 99), 1)} ms`, baseline: pct(cold) },
      { name: 'GET /api/usage.csv?days=90, everyone', value: `${fmt(csv[1]! / 1000, 1)} s`, baseline: `${mb(csvBytes)}` },
      { name: 'start-up until ready (process spawn → listening)', value: `${fmt(full.wallMs / 1000, 2)} s`, baseline: `${fmt(base.wallMs / 1000, 2)} s with the same keys and no usage (startPortal ${fmt(full.startMs)} vs ${fmt(base.startMs)} ms)`, ratio: `${fmt(full.wallMs / base.wallMs, 2)}×` },
      { name: 'resident memory after start-up and the requests above, GC', value: mb(mem.rss), target: '≤ 300 MB', baseline: `${mb(baseMem.rss)} with no usage; heap ${mb(mem.heapUsed)}, array buffers ${mb(mem.arrayBuffers)}`, ratio: `${fmt(mem.rss / baseMem.rss, 2)}×` },
    ]);
  } finally {
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
    await rm(bare, { recursive: true, force: true });
  }
}
