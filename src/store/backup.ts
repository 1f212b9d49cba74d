import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import Database from 'better-sqlite3';
import { writeFileAtomic } from './atomic-file.js';

/**
 * A backup is one SQLite file: usage.db as SQLite's online backup API copied it, plus two tables —
 * the other data files as they were at the same moment (`kp_backup_files`) and what the backup holds
 * (`kp_backup_meta`), which restore checks. One file, consistent, readable with any SQLite tool.
 */
export const BACKUP_FORMAT = 'key-portal-backup-1';

/** Data files a backup carries besides usage.db; sessions are left out (a restore signs everyone out). */
export const BACKED_UP = ['key_pool.json', 'user_keys.json', 'audit.jsonl', 'registration_requests.json', 'prices.json', '.admin-token', '.session-secret', '.sentinel'];

export interface BackupSource {
  /** usage.db copied into `dest` (online backup). */
  usage(dest: string): Promise<void>;
  /** The key files at one moment. */
  keyFiles(): Promise<Record<string, string>>;
  dataDir: string;
  meta: Record<string, unknown>;
}

/** Writes a backup to `out` (through a temporary file beside it: a backup is whole or absent). */
export async function writeBackup(src: BackupSource, out: string): Promise<Record<string, unknown>> {
  const tmp = `${out}.${process.pid}.tmp`;
  await rm(tmp, { force: true });
  try {
    await src.usage(tmp);
    const files: Record<string, Buffer> = {};
    for (const [name, text] of Object.entries(await src.keyFiles())) files[name] = Buffer.from(text);
    for (const name of BACKED_UP) {
      if (files[name]) continue;
      const file = path.join(src.dataDir, name);
      if (existsSync(file)) files[name] = await readFile(file);
    }
    const db = new Database(tmp);
    try {
      const meta = { format: BACKUP_FORMAT, created_at: new Date().toISOString(), files: Object.keys(files).sort(), ...src.meta };
      db.exec('CREATE TABLE kp_backup_files (name TEXT PRIMARY KEY, content BLOB NOT NULL); CREATE TABLE kp_backup_meta (json TEXT NOT NULL)');
      const put = db.prepare('INSERT INTO kp_backup_files (name, content) VALUES (?, ?)');
      db.transaction(() => {
        for (const [name, content] of Object.entries(files)) put.run(name, content);
        db.prepare('INSERT INTO kp_backup_meta (json) VALUES (?)').run(JSON.stringify(meta));
      })();
      db.pragma('journal_mode = DELETE');
      db.close();
      await chmod(tmp, 0o600);
      await rename(tmp, out);
      return meta;
    } finally {
      if (db.open) db.close();
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

export class BadBackup extends Error {}

/** What a backup file holds, after checking it is one (integrity and format). */
export function readBackupMeta(file: string): Record<string, unknown> {
  let db: Database.Database;
  try { db = new Database(file, { readonly: true, fileMustExist: true }); } catch (err) { throw new BadBackup(`${file} cannot be opened: ${(err as Error).message}`); }
  try {
    let ok: unknown;
    try { ok = db.pragma('integrity_check', { simple: true }); } catch (err) { throw new BadBackup(`${file} is not a key-portal backup (${(err as Error).message})`); }
    if (ok !== 'ok') throw new BadBackup(`${file} is damaged (integrity_check: ${String(ok)})`);
    let row: { json: string } | undefined;
    try { row = db.prepare('SELECT json FROM kp_backup_meta').get() as { json: string } | undefined; } catch { row = undefined; }
    const meta = row ? JSON.parse(row.json) as Record<string, unknown> : null;
    if (!meta || meta.format !== BACKUP_FORMAT) throw new BadBackup(`${file} is not a key-portal backup`);
    return meta;
  } finally {
    db.close();
  }
}

/**
 * Restores a backup into `dataDir`, which must hold no portal data (or, with `force`, has what it
 * holds moved to `pre-restore-<time>/` first). The caller holds the directory's lock.
 */
export async function restoreBackup(file: string, dataDir: string, o: { force: boolean }): Promise<{ meta: Record<string, unknown>; movedTo: string | null }> {
  const meta = readBackupMeta(file);
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const present = ['usage.db', 'keys.journal', ...BACKED_UP].filter((n) => existsSync(path.join(dataDir, n)));
  let movedTo: string | null = null;
  if (present.length) {
    if (!o.force) throw new BadBackup(`${dataDir} already holds portal data (${present.join(', ')}); restore into an empty directory, or add --force to move it aside first`);
    movedTo = path.join(dataDir, `pre-restore-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    await mkdir(movedTo, { mode: 0o700 });
    for (const n of [...present, 'usage.db-wal', 'usage.db-shm', 'sessions.json']) {
      if (existsSync(path.join(dataDir, n))) await rename(path.join(dataDir, n), path.join(movedTo, n));
    }
  }
  const src = new Database(file, { readonly: true, fileMustExist: true });
  const usage = path.join(dataDir, 'usage.db');
  try {
    for (const row of src.prepare('SELECT name, content FROM kp_backup_files').all() as { name: string; content: Buffer }[]) {
      if (!BACKED_UP.includes(row.name)) throw new BadBackup(`${file} holds an unexpected file "${row.name}"`);
      await writeFileAtomic(path.join(dataDir, row.name), row.content);
    }
    await src.backup(`${usage}.restore.tmp`);
  } finally {
    src.close();
  }
  const db = new Database(`${usage}.restore.tmp`);
  db.exec('DROP TABLE kp_backup_files; DROP TABLE kp_backup_meta');
  db.close();
  await chmod(`${usage}.restore.tmp`, 0o600);
  await rename(`${usage}.restore.tmp`, usage);
  return { meta, movedTo };
}
