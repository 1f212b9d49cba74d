import { readFileSync, unlinkSync, writeFileSync, openSync, closeSync, writeSync, fsyncSync } from 'node:fs';
import path from 'node:path';

export interface LockInfo { pid: number; port: number | null; host: string | null; started_at: string }

export class DataDirLocked extends Error {
  override name = 'DataDirLocked';
  constructor(readonly dir: string, readonly holder: LockInfo) {
    super(`The data directory ${dir} is in use by key-portal process ${holder.pid}` +
      (holder.port ? ` (port ${holder.port})` : '') +
      `. Stop that process first, or use another DATA_DIR. If no such process runs, delete ${path.join(dir, '.lock')}.`);
  }
}

/**
 * Whether `pid` is a running portal. Where /proc exists, a zombie (killed, not yet reaped) is dead,
 * and a live pid that is not a node process is another program that reused the number after a crash.
 */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/^\d+ \(.*\) Z/.test(stat)) return false;
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('node');
  } catch {
    return true; // no /proc here: trust kill(pid, 0)
  }
}

/** The lock's holder if a live process holds it, else null. */
export function readLock(dir: string): LockInfo | null {
  try {
    const info = JSON.parse(readFileSync(path.join(dir, '.lock'), 'utf8')) as LockInfo;
    return Number.isInteger(info.pid) && info.pid !== process.pid && alive(info.pid) ? info : null;
  } catch {
    return null;
  }
}

/**
 * One process owns a data directory at a time: `data/.lock` holds its pid and port. A lock left by
 * a process that no longer runs (kill -9) is taken over.
 */
export class DataDirLock {
  private constructor(readonly file: string, private info: LockInfo) {}

  static acquire(dir: string): DataDirLock {
    const file = path.join(dir, '.lock');
    const info: LockInfo = { pid: process.pid, port: null, host: null, started_at: new Date().toISOString() };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        const fd = openSync(file, 'wx', 0o600);
        writeSync(fd, JSON.stringify(info));
        fsyncSync(fd);
        closeSync(fd);
        return new DataDirLock(file, info);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const holder = readLock(dir);
        if (holder) throw new DataDirLocked(dir, holder);
        try { unlinkSync(file); } catch { /* another starter removed it first */ }
      }
    }
    throw new Error(`could not take the lock ${file}`);
  }

  /** Records where the server listens, so the CLI can find it. */
  setAddress(host: string, port: number): void {
    this.info = { ...this.info, host, port };
    writeFileSync(this.file, JSON.stringify(this.info), { mode: 0o600 });
  }

  release(): void {
    try {
      const now = JSON.parse(readFileSync(this.file, 'utf8')) as LockInfo;
      if (now.pid === process.pid) unlinkSync(this.file);
    } catch { /* already gone */ }
  }
}
