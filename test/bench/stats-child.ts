// Child of the statistics benchmark: starts the real portal on a prepared data directory, says how
// long that took, then answers the parent's requests for its memory and for uncached leaderboards.
import { loadConfig } from '../../src/config.js';
import { startPortal } from '../../src/main.js';
import { silentLogger } from '../../src/log.js';

const [dataDir, cliproxyUrl] = process.argv.slice(2);
const t0 = performance.now();
const portal = await startPortal(loadConfig({ dotenv: false, env: {
  DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', CLIPROXY_URL: cliproxyUrl, CLIPROXY_MANAGEMENT_KEY: 'test-management-key',
  ADMIN_TOKEN: 'bench-admin-token-0123456789', POOL_SIZE: '1', LOG_FILE: '', TIMEZONE: 'Asia/Shanghai', USAGE_SOURCE: 'queue' } }),
{ log: silentLogger(), announce: () => undefined });
await portal.ready;
const startMs = performance.now() - t0;
process.send!({ startMs });
// Settled: the start-up jobs done, and the passes CLIProxyAPI's reload messages set off after them
// (a pass reads all 30k keys) over, so "warm" figures measure requests, not start-up work.
await Promise.all(['usage', 'quota-sweep', 'usage-retention'].map((j) => portal.jobs.runNow(j)));
await new Promise((r) => setTimeout(r, 4000));
await portal.reconciler.idle();
const settledMs = performance.now() - t0;
const gc = (globalThis as { gc?: () => void }).gc;

process.on('message', async (msg: { cmd: string; n?: number }) => {
  if (msg.cmd === 'memory') {
    for (let i = 0; i < 3; i++) { gc?.(); await new Promise((r) => setTimeout(r, 50)); }
    const m = process.memoryUsage();
    process.send!({ rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers });
  } else if (msg.cmd === 'fresh') {
    // The leaderboard computed from scratch each time (what a request costs when the cache has expired).
    const times: number[] = [];
    for (let i = 0; i < (msg.n ?? 50); i++) {
      portal.stats.invalidate();
      const t = performance.now();
      portal.stats.allUsers();
      times.push(performance.now() - t);
    }
    process.send!({ times });
  } else if (msg.cmd === 'stop') {
    await portal.stop();
    process.exit(0);
  }
});
process.send!({ url: portal.url, settledMs, keys: portal.store.keyCount() });
