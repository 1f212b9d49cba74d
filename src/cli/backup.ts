import { createWriteStream, existsSync } from 'node:fs';
import { chmod, mkdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import Database from 'better-sqlite3';
import type { Config } from '../config.js';
import { silentLogger } from '../log.js';
import { readBackupMeta, restoreBackup, writeBackup } from '../store/backup.js';
import { KeysStore } from '../store/keys-store.js';
import { DataDirLock, readLock } from '../store/lock.js';
import { runningPortal } from './running-portal.js';

/**
 * `key-portal backup --out FILE`: a consistent copy of the data directory in one file. With a portal
 * running on it, the portal makes the copy (POST /admin/backup) while it keeps serving; otherwise
 * this takes the directory's lock and copies the files itself.
 */
export async function backupCommand(config: Config, out: string, print: (s: string) => void): Promise<number> {
  const target = path.resolve(out);
  const running = await runningPortal(config, 'back it up');
  if (running) {
    print(`A portal is running on this data directory (port ${running.port}); asking it for the backup`);
    const res = await fetch(`${running.url}/admin/backup`, { method: 'POST', headers: { Authorization: `Bearer ${running.token}`, Accept: 'application/octet-stream' } });
    if (res.status !== 200 || !res.body) throw new Error(`the portal answered ${res.status}: ${(await res.text()).slice(0, 300)}`);
    const tmp = `${target}.${process.pid}.tmp`;
    try {
      await pipeline(res.body, createWriteStream(tmp, { mode: 0o600 }));
      readBackupMeta(tmp); // whole and readable before it takes the name
      await rename(tmp, target);
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  } else {
    if (!existsSync(path.join(config.DATA_DIR, 'key_pool.json'))) throw new Error(`${config.DATA_DIR} holds no portal data`);
    const lock = DataDirLock.acquire(config.DATA_DIR);
    try {
      const store = await KeysStore.open(config.DATA_DIR, config.KEY_PREFIX, silentLogger());
      try {
        await writeBackup({
          dataDir: config.DATA_DIR,
          keyFiles: () => store.snapshot(),
          usage: async (dest) => {
            const file = path.join(config.DATA_DIR, 'usage.db');
            if (!existsSync(file)) { new Database(dest).close(); return; }
            const db = new Database(file, { readonly: true });
            try { await db.backup(dest); } finally { db.close(); }
          },
          meta: { keys: store.keyCount(), users: store.userCount(), pool: store.poolStatus(), via: 'files' },
        }, target);
      } finally {
        await store.close();
      }
    } finally {
      lock.release();
    }
  }
  await chmod(target, 0o600);
  const meta = readBackupMeta(target);
  print(`Backed up to ${target}: ${(meta.files as string[]).length} files and usage.db (${String(meta.keys)} keys, ${String(meta.users)} people)`);
  return 0;
}

/** `key-portal restore --from FILE`: into a data directory no portal is running on. */
export async function restoreCommand(config: Config, from: string, force: boolean, print: (s: string) => void): Promise<number> {
  const running = readLock(config.DATA_DIR);
  if (running?.port) throw new Error(`a portal is running on ${config.DATA_DIR} (port ${running.port}); stop it first`);
  await mkdir(config.DATA_DIR, { recursive: true, mode: 0o700 });
  const lock = DataDirLock.acquire(config.DATA_DIR);
  try {
    const { meta, movedTo } = await restoreBackup(path.resolve(from), config.DATA_DIR, { force });
    if (movedTo) print(`What ${config.DATA_DIR} held is now in ${movedTo}`);
    print(`Restored the backup of ${String(meta.created_at)} into ${config.DATA_DIR} (${String(meta.keys)} keys, ${String(meta.users)} people); start the portal`);
    return 0;
  } finally {
    lock.release();
  }
}
