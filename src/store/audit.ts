import { open, type FileHandle } from 'node:fs/promises';
import { constants } from 'node:fs';
import path from 'node:path';
import type { Clock } from '../clock.js';
import { writeAll } from './atomic-file.js';

export type AuditActor = 'admin' | 'system' | 'anonymous' | `user:${string}`;

export interface AuditEntry {
  at: string;
  actor: AuditActor;
  action: string;
  key_id?: string;
  details?: Record<string, unknown>;
}

export interface AuditPageOptions {
  offset: number;
  limit: number;
  match?: (e: AuditEntry) => boolean;
  /** Ends the reading (newest first) at the first entry for which it is true; that entry is not returned. */
  stop?: (e: AuditEntry) => boolean;
}

/**
 * data/audit.jsonl: one line per administrative or security-relevant action. Lines hold key ids,
 * never keys. Appends are queued and written together; each append resolves once its line is
 * written (and synced to disk).
 */
export class AuditLog {
  readonly file: string;
  private fh: FileHandle | null = null;
  private pending: { line: string; done: (err?: Error) => void }[] = [];
  private writing: Promise<void> | null = null;

  constructor(dataDir: string, private readonly clock: Clock) {
    this.file = path.join(dataDir, 'audit.jsonl');
  }

  record(actor: AuditActor, action: string, keyId?: string, details?: Record<string, unknown>): Promise<void> {
    const entry: AuditEntry = { at: new Date(this.clock.now()).toISOString(), actor, action };
    if (keyId) entry.key_id = keyId;
    if (details && Object.keys(details).length) entry.details = details;
    return new Promise((resolve, reject) => {
      this.pending.push({ line: JSON.stringify(entry) + '\n', done: (err) => (err ? reject(err) : resolve()) });
      this.writing ??= this.drain();
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.pending.length) {
        const batch = this.pending;
        this.pending = [];
        try {
          await this.append(batch.map((b) => b.line).join(''));
          for (const b of batch) b.done();
        } catch (err) {
          for (const b of batch) b.done(err as Error);
        }
      }
    } finally {
      this.writing = null;
    }
  }

  /** Bytes in the file that end with a whole line; a failed append is cut back to it before the next. */
  private size: number | null = null;

  private async append(text: string): Promise<void> {
    if (!this.fh) {
      this.fh = await open(this.file, 'a+', 0o600);
      this.size = (await this.fh.stat()).size;
    }
    const before = this.size!;
    try {
      // 'a+' appends at the end whatever the position: cut a torn tail off first, so lines stay whole.
      if ((await this.fh.stat()).size !== before) await this.fh.truncate(before);
      await writeAll(this.fh, text);
      await this.fh.datasync();
      this.size = before + Buffer.byteLength(text);
    } catch (err) {
      await this.fh.truncate(before).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Entries newest first, `offset` matching entries skipped, at most `limit` returned; `more` says
   * whether older matching entries exist. Reads the file backwards in chunks, so the newest page of
   * a long log costs a few kilobytes, not the whole file. Reading ends at the first entry `stop` says
   * is too old (the log is in time order), so "everything today" costs today's entries only.
   */
  async page(o: AuditPageOptions): Promise<{ entries: AuditEntry[]; more: boolean }> {
    while (this.writing) await this.writing;
    let fh: FileHandle;
    try { fh = await open(this.file, constants.O_RDONLY); } catch { return { entries: [], more: false }; }
    try {
      const entries: AuditEntry[] = [];
      let skipped = 0;
      let pos = (await fh.stat()).size;
      let carry = Buffer.alloc(0);
      let stopped = false;
      const take = (line: Buffer): boolean => { // true when the page is full and one more exists, or at `stop`
        if (!line.length) return false;
        let e: AuditEntry;
        try { e = JSON.parse(line.toString('utf8')) as AuditEntry; } catch { return false; }
        if (o.stop?.(e)) return (stopped = true);
        if (o.match && !o.match(e)) return false;
        if (skipped < o.offset) { skipped++; return false; }
        if (entries.length === o.limit) return true;
        entries.push(e);
        return false;
      };
      while (pos > 0) {
        const size = Math.min(65_536, pos);
        pos -= size;
        const chunk = Buffer.alloc(size);
        await fh.read(chunk, 0, size, pos);
        let buf = Buffer.concat([chunk, carry]);
        let end = buf.length;
        for (let i = buf.length - 1; i >= 0; i--) {
          if (buf[i] !== 10) continue;
          if (take(buf.subarray(i + 1, end))) return { entries, more: !stopped };
          end = i;
        }
        carry = buf.subarray(0, end);
        buf = carry;
      }
      if (take(carry)) return { entries, more: !stopped };
      return { entries, more: false };
    } finally {
      await fh.close();
    }
  }

  /** Settles once every line recorded so far is on disk (or has failed). */
  async flushed(): Promise<void> {
    while (this.writing) await this.writing;
  }

  async close(): Promise<void> {
    await this.flushed();
    await this.fh?.close();
    this.fh = null;
  }
}
