import { EventEmitter } from 'node:events';
import { closeSync, fsyncSync, openSync, readdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import type { Clock } from '../clock.js';
import { hashId, keyIdOf, keyIndex } from '../keys/format.js';
import type { Logger } from '../log.js';
import type { KeysStore } from '../store/keys-store.js';
import { UsageStorageError, type UsageRow, type UsageStore, type WriteResult } from '../store/usage-store.js';
import type { Zone } from '../time/zone.js';
import { toUsageRow } from './record.js';

export interface IngestorDeps {
  dataDir: string;
  store: UsageStore;
  keys: KeysStore;
  zone: Zone;
  log: Logger;
  clock: Clock;
  /** First wait before retrying a batch the store refused (doubles up to 15 s). */
  retryMs?: number;
}

/** A caller of accept(): its rows are pending[start, start + rows). */
interface Waiter { start: number; rows: number; resolve: (n: number) => void; reject: (e: Error) => void }

/** Where a batch that could not be written at stop is kept: the data directory, else the system's temp directory. */
const heldPrefix = (dataDir: string, dir: string) =>
  dir === dataDir ? 'usage-held-' : `key-portal-usage-held-${createHash('sha256').update(dataDir).digest('hex').slice(0, 12)}-`;
let heldFiles = 0;
const heldName = (dataDir: string, dir: string, ms: number) => `${heldPrefix(dataDir, dir)}${ms}${String(++heldFiles).padStart(4, '0')}.jsonl`;
const heldPattern = (dataDir: string, dir: string) => new RegExp(`^${heldPrefix(dataDir, dir)}\\d+\\.jsonl$`);

/**
 * The ingestion pipeline: raw records from any source → rows (key ids, no secrets, day and hour in
 * TIMEZONE) → usage.db. Group commit: while one batch is being written, everything that arrives
 * waits, and goes as the next batch; so a record is committed within one write of arriving, whatever
 * else the portal does (the writer is a thread of its own).
 *
 * When usage.db cannot be written (a full or read-only disk), the batch is kept and retried with
 * back-off; 'storage' events tell the sources to stop taking records from CLIProxyAPI meanwhile
 * (they wait in its queue). At stop, a batch that still cannot be written goes to a file
 * (usage-held-*.jsonl in the data directory, else the system's temp directory), imported at the next
 * start: a record handed out by CLIProxyAPI is never dropped by the portal.
 */
export class Ingestor extends EventEmitter {
  private pending: UsageRow[] = [];
  private waiters: Waiter[] = [];
  private writing: Promise<void> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retryMs: number;
  private closed = false;
  /** Told the ids of managed keys whose successful usage was just committed (quota enforcement). */
  onCounted: ((keyIds: Set<string>) => void) | null = null;
  /** Newest attempt time counted, when the last batch committed, records stored by this process. */
  lastRecordAt: number | null = null;
  lastCommitAt: number | null = null;
  total = 0;
  /** Why usage.db is not being written right now (null when it is). */
  storageError: string | null = null;

  constructor(private readonly d: IngestorDeps) {
    super();
    this.retryMs = d.retryMs ?? 1000;
  }

  /** Imports batches an earlier run could not write before it stopped (a replay of one is harmless). */
  async recoverHeld(): Promise<number> {
    let n = 0;
    for (const dir of [this.d.dataDir, os.tmpdir()]) {
      const pattern = heldPattern(this.d.dataDir, dir);
      for (const name of readdirSync(dir).filter((f) => pattern.test(f)).sort()) {
        const file = path.join(dir, name);
        const rows = readFileSync(file, 'utf8').split('\n').filter(Boolean).flatMap((l) => { try { return [JSON.parse(l) as UsageRow]; } catch { return []; } });
        n += (await this.d.store.write(rows)).inserted;
        unlinkSync(file);
        this.d.log.info({ module: 'usage', file, rows: rows.length }, 'stored usage records held by an earlier run');
      }
    }
    return n;
  }

  /** Maps a client key to the id stored with its usage; keys the portal does not own get a hash id. */
  private resolve = (apiKey: string): { id: string; managed: boolean } => {
    const { keys } = this.d;
    if (!apiKey) return { id: '', managed: false };
    if (keyIndex(keys.prefix, apiKey) !== null && keys.getKey(apiKey)) return { id: keyIdOf(keys.prefix, apiKey), managed: true };
    return { id: hashId(apiKey), managed: false };
  };

  private toRows(raws: readonly unknown[]): UsageRow[] {
    const now = this.d.clock.now();
    const rows: UsageRow[] = [];
    for (const raw of raws) {
      const row = toUsageRow(raw, this.resolve, this.d.zone, now);
      if (row) rows.push(row);
    }
    return rows;
  }

  /** Takes records without waiting (the subscription: its socket must never wait on the disk). */
  push(raws: readonly unknown[]): void {
    const rows = this.toRows(raws);
    if (!rows.length) return;
    if (this.closed) { this.spill(rows); return; } // a record already in flight when the source stopped
    this.pending.push(...rows);
    this.kick();
  }

  /** Takes records and resolves with how many were new usage records once they are committed. */
  accept(raws: readonly unknown[]): Promise<number> {
    const rows = this.toRows(raws);
    if (!rows.length) return Promise.resolve(0);
    if (this.closed) { // taken from CLIProxyAPI as the portal stopped: kept for the next start
      const file = this.spill(rows);
      return Promise.reject(new UsageStorageError(`usage ingestion has stopped; the records were kept in ${file}`, 'HELD'));
    }
    return new Promise((resolve, reject) => {
      this.waiters.push({ start: this.pending.length, rows: rows.length, resolve, reject });
      this.pending.push(...rows);
      this.kick();
    });
  }

  /** Resolves once everything taken so far is committed (or held after a failure). */
  async settled(): Promise<void> {
    while (this.writing) await this.writing;
  }

  private kick(): void {
    if (this.writing || this.retryTimer || !this.pending.length) return;
    this.writing = this.flush().finally(() => {
      this.writing = null;
      if (!this.retryTimer) this.kick();
    });
  }

  private async flush(): Promise<void> {
    const rows = this.pending;
    const waiters = this.waiters;
    this.pending = [];
    this.waiters = [];
    let result: WriteResult;
    try {
      result = await this.d.store.write(rows);
    } catch (err) {
      // Nothing of the batch was stored: it goes back in front, and is tried again after a pause.
      for (const w of this.waiters) w.start += rows.length;
      this.pending = rows.concat(this.pending);
      this.waiters = waiters.concat(this.waiters);
      this.onStorageFailure(err as Error);
      return;
    }
    this.onStored(rows, waiters, result);
  }

  private onStored(rows: UsageRow[], waiters: Waiter[], result: WriteResult): void {
    this.lastCommitAt = this.d.clock.now();
    this.total += result.inserted;
    for (const r of rows) if (this.lastRecordAt === null || r.ts > this.lastRecordAt) this.lastRecordAt = r.ts;
    if (this.storageError) {
      this.storageError = null;
      this.retryMs = this.d.retryMs ?? 1000;
      this.d.log.info({ module: 'usage' }, 'usage.db is writable again');
      this.emit('storage', true);
    }
    // Each waiter learns how many of its rows were new (replays are not).
    const dup = new Set(result.duplicateRows);
    for (const w of waiters) {
      let mine = 0;
      for (let r = w.start; r < w.start + w.rows; r++) if (!dup.has(r)) mine++;
      w.resolve(mine);
    }
    const counted = new Set<string>();
    for (const k of result.keys) if (!k.x && k.requests > 0) counted.add(k.k);
    if (counted.size) this.onCounted?.(counted);
  }

  private onStorageFailure(err: Error): void {
    const message = `usage records cannot be stored: ${err.message}`;
    if (this.storageError !== message) {
      this.d.log.error({ module: 'usage', err, held: this.pending.length }, 'writing usage.db failed; records are held and written when it can be');
    }
    const first = this.storageError === null;
    this.storageError = message;
    if (first) this.emit('storage', false);
    if (this.closed) return;
    this.retryTimer = setTimeout(() => { this.retryTimer = null; this.kick(); }, this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, 15_000);
  }

  /** Records waiting to be written (held through a storage failure, or arriving now). */
  get held(): number { return this.pending.length; }

  /**
   * Stops taking records, writes what is waiting one last time, and puts what still cannot be
   * written in a file for the next start.
   */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
    await this.settled();
    if (this.pending.length) {
      const rows = this.pending;
      const waiters = this.waiters;
      this.pending = [];
      this.waiters = [];
      try {
        this.onStored(rows, waiters, await this.d.store.write(rows));
      } catch (err) {
        const file = this.spill(rows);
        for (const w of waiters) w.reject(new UsageStorageError(`stopped before these records could be stored; they were kept in ${file}`, 'HELD'));
      }
    }
  }

  private spill(rows: UsageRow[]): string {
    const text = rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
    for (const dir of [this.d.dataDir, os.tmpdir()]) {
      const file = path.join(dir, heldName(this.d.dataDir, dir, Date.now()));
      try {
        const fd = openSync(file, 'wx', 0o600);
        try {
          writeFileSync(fd, text); // loops over short writes; throws if it cannot finish
          fsyncSync(fd);
        } finally {
          closeSync(fd);
        }
        const level = dir === this.d.dataDir ? 'warn' : 'error';
        this.d.log[level]({ module: 'usage', file, rows: rows.length }, 'usage.db could not be written: these usage records are kept and stored at the next start');
        return file;
      } catch {
        try { unlinkSync(file); } catch { /* nothing was created */ }
      }
    }
    this.d.log.fatal({ module: 'usage', rows: rows.length }, 'usage records could not be stored anywhere and are lost');
    return '(nowhere)';
  }
}
