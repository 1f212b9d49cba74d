import path from 'node:path';
import axios from 'axios';
import { ManagementClient } from '../cliproxy/management.js';
import { systemClock } from '../clock.js';
import type { Config } from '../config.js';
import { Reconciler } from '../keys/reconciler.js';
import { newSecret, SENTINEL_PREFIX } from '../keys/format.js';
import { silentLogger } from '../log.js';
import { AuditLog } from '../store/audit.js';
import { KeysStore } from '../store/keys-store.js';
import { DataDirLock } from '../store/lock.js';
import { runningPortal } from './running-portal.js';
import { fileSecret } from '../store/secrets.js';
import { mkdir } from 'node:fs/promises';

export interface GenerateOptions {
  config: Config;
  count?: number;
  preload: boolean;
  print: (line: string) => void;
}

/**
 * Mints keys into the pool. When a portal runs on the data directory it asks that portal
 * (POST /admin/pool) instead of touching its files; otherwise it takes the directory's lock and
 * writes the files itself. Returns the exit code.
 */
export async function generateKeys(o: GenerateOptions): Promise<number> {
  const { config, print } = o;
  const count = o.count ?? config.POOL_SIZE;
  if (!Number.isInteger(count) || count < 1 || count > 100_000) {
    throw new Error('--count must be a whole number from 1 to 100000');
  }
  const running = await runningPortal(config, 'generate keys');
  if (running) return viaRunningPortal(o, count, running);

  await mkdir(config.DATA_DIR, { recursive: true, mode: 0o700 });
  const lock = DataDirLock.acquire(config.DATA_DIR);
  try {
    const log = silentLogger();
    const store = await KeysStore.open(config.DATA_DIR, config.KEY_PREFIX, log);
    const ids = store.mint(count);
    if (o.preload) await store.setPreload(true);
    await store.checkpoint();
    const audit = new AuditLog(config.DATA_DIR, systemClock);
    await audit.record('admin', 'pool.generate', undefined, { count, via: 'cli' });
    await audit.close();
    print(`Generated ${ids.length} keys (${config.KEY_PREFIX}${ids[0]} … ${config.KEY_PREFIX}${ids.at(-1)})`);
    print(`Saved to ${path.relative(process.cwd(), store.poolFile) || store.poolFile}`);
    if (o.preload || config.PRELOAD_POOL) {
      const client = new ManagementClient({ baseUrl: config.CLIPROXY_URL, managementKey: config.CLIPROXY_MANAGEMENT_KEY, log, clock: systemClock });
      if (!client.configured) {
        print('Not pushed to CLIProxyAPI: CLIPROXY_MANAGEMENT_KEY is not set (the portal pushes them when it starts)');
      } else {
        const sentinel = (await fileSecret(config.DATA_DIR, '.sentinel', () => SENTINEL_PREFIX + newSecret())).value;
        const reconciler = new Reconciler({ store, client, sentinel, log, clock: systemClock, preloadPool: () => true });
        const r = await reconciler.run();
        if (r.ok) print(`Found ${r.foreign} keys of others in CLIProxyAPI; pushed ${r.added.length}, removed ${r.removed.length}`);
        else print(`Not pushed to CLIProxyAPI: ${r.error} (the portal pushes them when it starts)`);
      }
    }
    printPool(print, store.poolStatus());
    await store.close();
    return 0;
  } finally {
    lock.release();
  }
}

async function viaRunningPortal(o: GenerateOptions, count: number, running: { url: string; port: number; token: string }): Promise<number> {
  const { config, print } = o;
  print(`A portal is running on this data directory (port ${running.port}); asking it to generate the keys`);
  const res = await axios.post(`${running.url}/admin/pool`, { count, preload: o.preload || undefined }, {
    headers: { Authorization: `Bearer ${running.token}` }, validateStatus: () => true, proxy: false, timeout: 60_000,
  });
  if (res.status !== 201) {
    const msg = res.data?.error?.message ?? `HTTP ${res.status}`;
    throw new Error(`the running portal refused: ${msg}`);
  }
  const d = res.data as { minted: number; first_id: string; last_id: string; pool: Record<string, number>; push: { ok: boolean; added: number; error: string | null } | null };
  print(`Generated ${d.minted} keys (${config.KEY_PREFIX}${d.first_id} … ${config.KEY_PREFIX}${d.last_id})`);
  if (d.push) print(d.push.ok ? `Pushed ${d.push.added} keys to CLIProxyAPI` : `Not pushed to CLIProxyAPI yet: ${d.push.error}`);
  printPool(print, d.pool as never);
  return 0;
}

function printPool(print: (s: string) => void, p: { total: number; unused: number; assigned: number; retired: number }): void {
  print(`Pool: total ${p.total}, unused ${p.unused}, assigned ${p.assigned}, retired ${p.retired}`);
}
