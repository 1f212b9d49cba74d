// Child of the memory benchmark: starts the real portal on a data directory and reports its RSS.
import { loadConfig } from '../../src/config.js';
import { startPortal } from '../../src/main.js';
import { silentLogger } from '../../src/log.js';

const [dataDir, cliproxyUrl, gateway] = process.argv.slice(2);
const portal = await startPortal(loadConfig({ dotenv: false, env: {
  DATA_DIR: dataDir, PORT: '0', HOST: '127.0.0.1', CLIPROXY_URL: cliproxyUrl, CLIPROXY_MANAGEMENT_KEY: 'test-management-key',
  ADMIN_TOKEN: 'bench-admin-token-0123456789', POOL_SIZE: '1', LOG_FILE: '', REGISTER_RATE_LIMIT: '0',
  ...(gateway === 'gateway' ? { GATEWAY_PORT: '0' } : {}) } }), { log: silentLogger(), announce: () => undefined });
await portal.ready;
// One registration first, so the memory of a portal that has written its files is what is measured.
await fetch(`${portal.url}/api/register-key`, { method: 'POST', headers: { 'Content-Type': 'application/json' },
  body: JSON.stringify({ email: 'memory-probe@bench.example' }) }).then((r) => r.text());
// Then settled, as the statistics benchmark does: a usage pull and a quota sweep done, and the key pass
// the registration's reload message set off over (it holds CLIProxyAPI's whole list of 50k keys while
// it runs), so the figure is the portal's memory at rest, not a job's.
await Promise.all(['usage', 'quota-sweep'].map((j) => portal.jobs.runNow(j)));
await new Promise((r) => setTimeout(r, 1000));
await portal.reconciler.idle();
for (let i = 0; i < 3; i++) { (globalThis as { gc?: () => void }).gc?.(); await new Promise((r) => setTimeout(r, 50)); }
if (portal.gateway) {
  // The gateway's thread has its copy of every key once a request has made it catch up.
  const r = await fetch(`http://127.0.0.1:${portal.gateway.port}/v1/models`, { headers: { Authorization: 'Bearer nobody' } });
  await r.text();
}
const m = process.memoryUsage();
process.stdout.write(JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, keys: portal.store.keyCount(), pool: portal.store.poolStatus() }) + '\n');
await portal.stop();
process.exit(0);
