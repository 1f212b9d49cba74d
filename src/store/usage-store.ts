import { statSync } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import type { Logger } from '../log.js';
import { COUNT_FIELDS, type Counts, dayNum, dayText, hourNum, hourText, openUsageDb, zeroCounts } from './usage-schema.js';
import type { WorkerReply, WorkerRequest } from './usage-worker.js';
import type { KeyDelta, UsageRow, WriteResult } from './usage-writer.js';

export type { Counts, UsageRow, WriteResult, KeyDelta };

/** usage.db cannot be written (full or read-only disk, I/O error): nothing of the batch was stored. */
export class UsageStorageError extends Error {
  override name = 'UsageStorageError';
  constructor(message: string, readonly code: string) { super(message); }
}

export interface KeyTotals extends Counts { first_used: number | null; last_used: number | null; unmanaged: boolean }

export interface RequestRow {
  id: number; at: number; key_id: string; model: string; alias: string | null; endpoint: string | null;
  failed: boolean; status: number | null; tokens: number; input: number; output: number; reasoning: number; cached: number;
  latency_ms: number | null; ttft_ms: number | null; request_id: string | null; client_ip: string | null; user_agent: string | null;
}

export interface RequestFilter {
  /** Whose requests: these key ids, or everyone's (null). */
  keyIds: string[] | null;
  model?: string;
  failed?: boolean;
  /** Attempt start, ms: from (inclusive) and to (exclusive). */
  from?: number;
  to?: number;
  /** Rows older than this row (the cursor of the previous page). */
  before?: { at: number; id: number };
  limit: number;
}

/** Omit<> for each member of a union. */
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;

const sumCols = COUNT_FIELDS.map((f) => `sum(${f}) AS ${f}`).join(', ');
/** One key's requests (that did not fail), failures and tokens from the raw rows in [from, to). */
const SINCE = `SELECT sum(1 - failed) AS requests, sum(failed) AS failed, sum(CASE failed WHEN 0 THEN tokens ELSE 0 END) AS tokens
  FROM events WHERE k = ? AND ts >= ? AND ts < ?`;
type SinceRow = { requests: number | null; tokens: number | null; failed: number | null };
const sinceCounts = (r: SinceRow | undefined) => ({ requests: r?.requests ?? 0, tokens: r?.tokens ?? 0, failed: r?.failed ?? 0 });

/** What a daily limit reads of usage: keys' counts on a day, and one key's since a moment. */
export interface DailyCounts {
  day(keyIds: readonly string[], day: string): Counts;
  since(keyId: string, from: number, to?: number): { requests: number; tokens: number; failed: number };
}

/**
 * DailyCounts on a read-only connection of its own, for a thread other than the one UsageStore
 * lives on (the gateway's): each call is one indexed lookup, with no cache of key ids to keep.
 */
export class DailyCountsReader implements DailyCounts {
  private readonly db: Database.Database;
  private readonly q;

  constructor(file: string) {
    this.db = openUsageDb(file, { reader: true, cacheMb: 2 });
    this.q = {
      day: this.db.prepare(`SELECT ${sumCols} FROM usage_day WHERE k IN (SELECT id FROM usage_keys WHERE key_id IN (SELECT value FROM json_each(?))) AND day = ?`),
      keyRef: this.db.prepare('SELECT id FROM usage_keys WHERE key_id = ?').pluck(),
      since: this.db.prepare(SINCE),
    };
  }

  day(keyIds: readonly string[], day: string): Counts {
    return pick(this.q.day.get(JSON.stringify(keyIds), dayNum(day)) as Counts);
  }

  since(keyId: string, from: number, to = Number.MAX_SAFE_INTEGER): { requests: number; tokens: number; failed: number } {
    const k = this.q.keyRef.get(keyId) as number | undefined;
    return sinceCounts(k === undefined ? undefined : this.q.since.get(k, from, to) as SinceRow);
  }

  close(): void { this.db.close(); }
}

/**
 * usage.db for the rest of the portal. Writes go to the writer thread (usage-worker.ts), one batch
 * at a time, each a transaction that is on disk when write() resolves. Reads run here on a
 * read-only connection: WAL lets them run beside the writer, and every one of them is an index
 * range (key, day), (day), (key, time) or (time), so none takes more than milliseconds.
 * Per-key totals (the leaderboard) are also kept in memory, loaded at open and updated from each
 * committed batch.
 */
export class UsageStore implements DailyCounts {
  readonly file: string;
  private worker: Worker | null = null;
  private readonly waiting = new Map<number, { resolve: (v: any) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private closed = false;
  private readonly keyRefs = new Map<string, number>();
  private readonly keyIds = new Map<number, { id: string; unmanaged: boolean }>();
  private readonly names = new Map<number, string>();
  private readonly nameRefs = new Map<string, number>();
  private readonly totalsById = new Map<string, KeyTotals>();
  private readonly q;
  /** Grows with every committed batch that stored something: readers cache what they derive from it. */
  version = 0;

  private constructor(private readonly db: Database.Database, file: string, private readonly log: Logger) {
    this.file = file;
    const inKeys = 'k IN (SELECT value FROM json_each(?))';
    this.q = {
      keyRef: db.prepare('SELECT id FROM usage_keys WHERE key_id = ?').pluck(),
      keyById: db.prepare('SELECT key_id, managed FROM usage_keys WHERE id = ?'),
      nameById: db.prepare('SELECT name FROM usage_names WHERE id = ?').pluck(),
      nameRef: db.prepare('SELECT id FROM usage_names WHERE name = ?').pluck(),
      totals: db.prepare(`SELECT k.key_id, k.managed, t.* FROM usage_total t JOIN usage_keys k ON k.id = t.k`),
      day: db.prepare(`SELECT ${sumCols} FROM usage_day WHERE ${inKeys} AND day = ?`),
      dayByKey: db.prepare(`SELECT k, ${sumCols} FROM usage_day WHERE day = ? GROUP BY k`),
      byDay: db.prepare(`SELECT day, m, ${sumCols} FROM usage_day WHERE ${inKeys} AND day BETWEEN ? AND ? GROUP BY day, m ORDER BY day`),
      byDayModel: db.prepare(`SELECT day, m, ${sumCols} FROM usage_day WHERE ${inKeys} AND day BETWEEN ? AND ? AND m = ? GROUP BY day ORDER BY day`),
      byHour: db.prepare(`SELECT hour, m, ${sumCols} FROM usage_hour WHERE ${inKeys} AND hour BETWEEN ? AND ? GROUP BY hour, m ORDER BY hour`),
      byHourModel: db.prepare(`SELECT hour, m, ${sumCols} FROM usage_hour WHERE ${inKeys} AND hour BETWEEN ? AND ? AND m = ? GROUP BY hour ORDER BY hour`),
      // Separate statements for "these keys" and "everyone": an `? IS NULL OR …` would scan every row.
      byKeyDay: db.prepare(`SELECT k, day, m, ${COUNT_FIELDS.join(', ')} FROM usage_day WHERE ${inKeys} AND day = ? ORDER BY k, m`),
      allKeysDay: db.prepare(`SELECT k, day, m, ${COUNT_FIELDS.join(', ')} FROM usage_day WHERE day = ? ORDER BY k, m`),
      modelTotals: db.prepare(`SELECT k, m, ${sumCols} FROM usage_day WHERE ${inKeys} GROUP BY k, m`),
      since: db.prepare(SINCE),
      models: db.prepare(`SELECT DISTINCT n.name FROM usage_day d JOIN usage_names n ON n.id = d.m WHERE d.${inKeys} ORDER BY n.name`).pluck(),
      allModels: db.prepare('SELECT n.name FROM usage_models u JOIN usage_names n ON n.id = u.m ORDER BY n.name').pluck(),
      events: db.prepare('SELECT count(*) FROM events').pluck(),
      oldestEvent: db.prepare('SELECT min(ts) FROM events').pluck(),
    };
    for (const r of this.q.totals.all() as ({ key_id: string; managed: number; k: number } & Counts & { first_used: number | null; last_used: number | null })[]) {
      this.keyRefs.set(r.key_id, r.k);
      this.keyIds.set(r.k, { id: r.key_id, unmanaged: !r.managed });
      this.totalsById.set(r.key_id, keyTotals(r, r.first_used, r.last_used, !r.managed));
    }
  }

  /** Opens usage.db (creating it), its writer thread and the read connection. */
  static async open(dataDir: string, log: Logger): Promise<UsageStore> {
    const file = path.join(dataDir, 'usage.db');
    openUsageDb(file).close(); // creates the file and schema before the reader opens it read-only
    const store = new UsageStore(openUsageDb(file, { reader: true, cacheMb: 32 }), file, log);
    await store.request({ op: 'meta', name: 'opened_at', value: new Date().toISOString() });
    return store;
  }

  // ---- the writer thread -----------------------------------------------------------------------

  private startWorker(): Worker {
    const worker = new Worker(new URL('./usage-worker.js', import.meta.url), { workerData: { file: this.file } });
    worker.on('message', (m: WorkerReply) => {
      const w = this.waiting.get(m.id);
      if (!w) return;
      this.waiting.delete(m.id);
      if (m.ok) w.resolve(m.result);
      else w.reject(new UsageStorageError(`usage.db: ${m.error.message}`, m.error.code));
    });
    const fail = (err: Error) => {
      if (this.worker !== worker) return;
      this.worker = null;
      for (const w of this.waiting.values()) w.reject(new UsageStorageError(`the usage writer stopped: ${err.message}`, 'WRITER_STOPPED'));
      this.waiting.clear();
    };
    worker.on('error', (err) => { this.log.error({ module: 'usage', err }, 'the usage writer failed; starting it again'); fail(err); });
    worker.on('exit', (code) => fail(new Error(`exit ${code}`)));
    return worker;
  }

  private request<T>(m: WithoutId<WorkerRequest>): Promise<T> {
    if (this.closed) return Promise.reject(new UsageStorageError('the usage store is closed', 'CLOSED'));
    this.worker ??= this.startWorker();
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.worker!.postMessage({ ...m, id } as WorkerRequest);
    });
  }

  /** Writes a batch in one transaction; resolves once it is on disk, rejects (storing nothing) if it cannot be. */
  async write(rows: UsageRow[]): Promise<WriteResult> {
    const result = await this.request<WriteResult>({ op: 'write', rows });
    for (const d of result.keys) {
      const t = this.totalsById.get(d.k) ?? keyTotals(undefined, null, null, d.x === 1);
      for (const f of COUNT_FIELDS) t[f] += d[f];
      t.first_used = t.first_used === null ? d.first : Math.min(t.first_used, d.first);
      t.last_used = t.last_used === null ? d.last : Math.max(t.last_used, d.last);
      this.totalsById.set(d.k, t);
    }
    if (result.inserted || result.keys.length) this.version++;
    return result;
  }

  /** Retention: raw rows before `eventsBefore` (ms), hourly rollups before `hoursBefore` ('YYYY-MM-DDTHH'). */
  prune(eventsBefore: number | null, hoursBefore: string | null): Promise<{ events: number; hours: number }> {
    return this.request({ op: 'prune', eventsBefore, hoursBefore: hoursBefore === null ? null : hourNum(hoursBefore) });
  }

  meta(name: string, value?: string): Promise<string | null> { return this.request({ op: 'meta', name, value }); }

  /** An online backup of usage.db into `dest` (SQLite's backup API: a consistent copy while ingestion goes on). */
  async backupTo(dest: string): Promise<void> {
    await this.db.backup(dest);
  }

  /** Finishes what was sent, checkpoints the WAL and ends the writer thread; reads end too. */
  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.worker) await this.request({ op: 'close' }).catch((err) => this.log.warn({ module: 'usage', err }, 'usage.db did not close cleanly'));
    } finally {
      this.closed = true;
      await this.worker?.terminate();
      this.worker = null;
      this.db.close();
    }
  }

  // ---- reads ------------------------------------------------------------------------------------

  private refOf(keyId: string): number | undefined {
    let k = this.keyRefs.get(keyId);
    if (k === undefined) {
      k = this.q.keyRef.get(keyId) as number | undefined;
      if (k !== undefined) this.keyRefs.set(keyId, k);
    }
    return k;
  }

  private idOf(k: number): { id: string; unmanaged: boolean } {
    let v = this.keyIds.get(k);
    if (!v) {
      const r = this.q.keyById.get(k) as { key_id: string; managed: number } | undefined;
      v = { id: r?.key_id ?? String(k), unmanaged: r ? !r.managed : true };
      this.keyIds.set(k, v);
    }
    return v;
  }

  private name(id: number | null): string | null {
    if (id === null) return null;
    let n = this.names.get(id);
    if (n === undefined) {
      n = (this.q.nameById.get(id) as string | undefined) ?? '?';
      this.names.set(id, n);
    }
    return n;
  }

  private nameRef(name: string): number | undefined {
    let id = this.nameRefs.get(name);
    if (id === undefined) {
      id = this.q.nameRef.get(name) as number | undefined;
      if (id !== undefined) this.nameRefs.set(name, id);
    }
    return id;
  }

  private refs(keyIds: readonly string[]): string {
    return JSON.stringify(keyIds.map((id) => this.refOf(id)).filter((k) => k !== undefined));
  }

  /** A key's totals over all time (zeros when it was never used). */
  totals(keyId: string): KeyTotals {
    return this.totalsById.get(keyId) ?? keyTotals(undefined, null, null, false);
  }

  /**
   * A key's totals as the live object (updated in place by every batch), or undefined before its
   * first use: the leaderboard holds these to read 30k keys without looking each one up.
   */
  liveTotals(keyId: string): Readonly<KeyTotals> | undefined { return this.totalsById.get(keyId); }

  /** Keys with usage (grows when a key is first used). */
  get keysUsed(): number { return this.totalsById.size; }

  /** Ids of keys seen in usage that the portal does not manage. */
  unmanagedIds(): string[] {
    return [...this.totalsById].filter(([, t]) => t.unmanaged).map(([id]) => id);
  }

  /** Several keys' counts on one calendar day. */
  day(keyIds: readonly string[], day: string): Counts {
    return pick(this.q.day.get(this.refs(keyIds), dayNum(day)) as Counts);
  }

  /** Every key used on a calendar day, with its counts. */
  dayByKey(day: string): { key_id: string; unmanaged: boolean; counts: Counts }[] {
    return (this.q.dayByKey.all(dayNum(day)) as ({ k: number } & Counts)[]).map((r) => {
      const { id, unmanaged } = this.idOf(r.k);
      return { key_id: id, unmanaged, counts: pick(r) };
    });
  }

  /** Several keys by day and model, from `from` to `to` (days, both included); one model if given. */
  byDay(keyIds: readonly string[], from: string, to: string, model?: string): { day: string; model: string; counts: Counts }[] {
    const m = model === undefined ? undefined : this.nameRef(model);
    if (model !== undefined && m === undefined) return [];
    const rows = (m === undefined
      ? this.q.byDay.all(this.refs(keyIds), dayNum(from), dayNum(to))
      : this.q.byDayModel.all(this.refs(keyIds), dayNum(from), dayNum(to), m)) as ({ day: number; m: number } & Counts)[];
    return rows.map((r) => ({ day: dayText(r.day), model: this.name(r.m)!, counts: pick(r) }));
  }

  /** The same by hour ('YYYY-MM-DDTHH', both included); hours are kept HOURLY_RETENTION_DAYS. */
  byHour(keyIds: readonly string[], from: string, to: string, model?: string): { hour: string; model: string; counts: Counts }[] {
    const m = model === undefined ? undefined : this.nameRef(model);
    if (model !== undefined && m === undefined) return [];
    const rows = (m === undefined
      ? this.q.byHour.all(this.refs(keyIds), hourNum(from), hourNum(to))
      : this.q.byHourModel.all(this.refs(keyIds), hourNum(from), hourNum(to), m)) as ({ hour: number; m: number } & Counts)[];
    return rows.map((r) => ({ hour: hourText(r.hour), model: this.name(r.m)!, counts: pick(r) }));
  }

  /** Each (key, model) row of one day, for these keys or every key (null); for exports and today's usage. */
  rowsOfDay(day: string, keyIds: readonly string[] | null): { key_id: string; unmanaged: boolean; model: string; counts: Counts }[] {
    const rows = keyIds === null ? this.q.allKeysDay.all(dayNum(day)) : this.q.byKeyDay.all(this.refs(keyIds), dayNum(day));
    return (rows as ({ k: number; m: number } & Counts)[]).map((r) => {
      const { id, unmanaged } = this.idOf(r.k);
      return { key_id: id, unmanaged, model: this.name(r.m)!, counts: pick(r) };
    });
  }

  /**
   * Several keys' counts over all time, per key and model, summed from the daily rollups: an index
   * range (key) per key, so the cost of a page of people reads their rows and no one else's.
   */
  modelTotals(keyIds: readonly string[]): { key_id: string; model: string; counts: Counts }[] {
    return (this.q.modelTotals.all(this.refs(keyIds)) as ({ k: number; m: number } & Counts)[])
      .map((r) => ({ key_id: this.idOf(r.k).id, model: this.name(r.m)!, counts: pick(r) }));
  }

  /** One key's requests (that did not fail) and tokens from the raw rows in [from, to): quota after a reset. */
  since(keyId: string, from: number, to = Number.MAX_SAFE_INTEGER): { requests: number; tokens: number; failed: number } {
    const k = this.refOf(keyId);
    return sinceCounts(k === undefined ? undefined : this.q.since.get(k, from, to) as SinceRow);
  }

  /** Model names with usage, for these keys or everyone's. */
  models(keyIds: readonly string[] | null): string[] {
    return (keyIds === null ? this.q.allModels.all() : this.q.models.all(this.refs(keyIds))) as string[];
  }

  /**
   * The request log, newest first: one page of raw rows matching the filter. For a set of keys each
   * key's rows are read in index order and merged, so a page costs `limit` rows per key, never a
   * sort of everything in the range.
   */
  requests(f: RequestFilter): RequestRow[] {
    const m = f.model === undefined ? null : this.nameRef(f.model);
    if (f.model !== undefined && m === undefined) return [];
    const where: string[] = [];
    const args: unknown[] = [];
    if (m !== null && m !== undefined) { where.push('model = ?'); args.push(m); }
    if (f.failed !== undefined) { where.push('failed = ?'); args.push(f.failed ? 1 : 0); }
    if (f.from !== undefined) { where.push('ts >= ?'); args.push(f.from); }
    if (f.to !== undefined) { where.push('ts < ?'); args.push(f.to); }
    if (f.before) { where.push('(ts < ? OR (ts = ? AND id < ?))'); args.push(f.before.at, f.before.at, f.before.id); }
    const cols = 'id, k, ts, model, alias, endpoint, failed, status, tokens, input, output, reasoning, cached, latency_ms, ttft_ms, request_id, client_ip, user_agent';
    const run = (extra: string[], extraArgs: unknown[]) => {
      const sql = `SELECT ${cols} FROM events ${[...extra, ...where].length ? 'WHERE ' + [...extra, ...where].join(' AND ') : ''} ORDER BY ts DESC, id DESC LIMIT ?`;
      return this.db.prepare(sql).all(...extraArgs, ...args, f.limit) as EventDbRow[];
    };
    let rows: EventDbRow[];
    if (f.keyIds === null) {
      rows = run([], []);
    } else {
      rows = [];
      for (const id of f.keyIds) {
        const k = this.refOf(id);
        if (k !== undefined) rows.push(...run(['k = ?'], [k]));
      }
      rows.sort((a, b) => b.ts - a.ts || b.id - a.id);
      rows.length = Math.min(rows.length, f.limit);
    }
    return rows.map((r) => ({
      id: r.id, at: r.ts, key_id: this.idOf(r.k).id, model: this.name(r.model)!, alias: this.name(r.alias), endpoint: this.name(r.endpoint),
      failed: r.failed === 1, status: r.status, tokens: r.tokens, input: r.input, output: r.output, reasoning: r.reasoning, cached: r.cached,
      latency_ms: r.latency_ms, ttft_ms: r.ttft_ms, request_id: r.request_id, client_ip: r.client_ip, user_agent: this.name(r.user_agent),
    }));
  }

  /** Raw rows held, the oldest one's time, and the database's size on disk (with its WAL). */
  size(): { events: number; oldest: number | null; bytes: number } {
    const bytes = [this.file, `${this.file}-wal`].reduce((n, f) => { try { return n + statSync(f).size; } catch { return n; } }, 0);
    return { events: this.q.events.get() as number, oldest: (this.q.oldestEvent.get() as number | null) ?? null, bytes };
  }
}

interface EventDbRow {
  id: number; k: number; ts: number; model: number; alias: number | null; endpoint: number | null; failed: number; status: number | null;
  tokens: number; input: number; output: number; reasoning: number; cached: number; latency_ms: number | null; ttft_ms: number | null;
  request_id: string | null; client_ip: string | null; user_agent: number | null;
}

/**
 * Every KeyTotals is made here, one literal with every field a number (or null): they all share one
 * shape, so the leaderboard's pass over 30k of them stays a fast, monomorphic read.
 */
function keyTotals(r: Partial<Counts> | undefined, first: number | null, last: number | null, unmanaged: boolean): KeyTotals {
  return {
    requests: Number(r?.requests ?? 0), failed: Number(r?.failed ?? 0), tokens: Number(r?.tokens ?? 0), input: Number(r?.input ?? 0),
    output: Number(r?.output ?? 0), reasoning: Number(r?.reasoning ?? 0), cached: Number(r?.cached ?? 0),
    first_used: first, last_used: last, unmanaged,
  };
}

function pick(r: Partial<Counts> | undefined): Counts {
  const c = zeroCounts();
  if (r) for (const f of COUNT_FIELDS) c[f] = Number(r[f] ?? 0);
  return c;
}
