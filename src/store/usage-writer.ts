import type Database from 'better-sqlite3';
import { COUNT_FIELDS, type Counts, zeroCounts } from './usage-schema.js';

/**
 * One usage record as it is written: the key id (never the key), the instant and the calendar day
 * and hour it falls on in TIMEZONE (worked out by the ingestor, which owns the zone), and what
 * CLIProxyAPI said about the attempt. Never `source` (an upstream credential).
 */
export interface UsageRow {
  /** Key id ('0042'), or a hash id for a key the portal does not manage ('' when proxy auth was off). */
  k: string;
  /** 1 when the key is not one of the portal's. */
  x: 0 | 1;
  /** When the upstream attempt started, ms since the epoch (UTC). */
  ts: number;
  /** 32-bit identity of the attempt within (key, ts): see usage-schema.ts. */
  h: number;
  /** Calendar day and hour in TIMEZONE as numbers: 20261123, 2026112314. */
  day: number;
  hour: number;
  model: string;
  alias: string | null;
  endpoint: string | null;
  failed: 0 | 1;
  status: number | null;
  tokens: number;
  input: number;
  output: number;
  reasoning: number;
  cached: number;
  latency: number | null;
  ttft: number | null;
  rid: string | null;
  ip: string | null;
  ua: string | null;
}

/** What one committed batch changed, per key (the totals cache and quota enforcement read it). */
export interface KeyDelta extends Counts { k: string; x: 0 | 1; last: number; first: number }
export interface WriteResult {
  inserted: number;
  /** Positions in the batch of rows already stored (replays): skipped, counted nowhere. */
  duplicateRows: number[];
  keys: KeyDelta[];
}

/**
 * The only code that writes usage.db. Synchronous (better-sqlite3): it runs in the writer thread,
 * and directly in the start-up import, tests and benchmarks. A batch is one transaction: its rows,
 * and the rollups they feed, commit together or not at all.
 */
export class UsageWriter {
  private readonly keyIds = new Map<string, number>();
  private readonly nameIds = new Map<string, number>();
  private readonly models = new Set<number>();
  private readonly s;

  constructor(private readonly db: Database.Database) {
    const upsert = (table: string, unit: string) => db.prepare(
      `INSERT INTO ${table} (k, ${unit}, m, ${COUNT_FIELDS.join(', ')}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (k, ${unit}, m) DO UPDATE SET ${COUNT_FIELDS.map((f) => `${f} = ${f} + excluded.${f}`).join(', ')}`);
    this.s = {
      // A replay meets the unique (k, ts, h) and is skipped; any other constraint failing is an error.
      insertEvent: db.prepare(`INSERT INTO events (k, ts, h, model, alias, endpoint, failed, status, tokens, input, output, reasoning, cached,
        latency_ms, ttft_ms, request_id, client_ip, user_agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (k, ts, h) DO NOTHING`),
      day: upsert('usage_day', 'day'),
      hour: upsert('usage_hour', 'hour'),
      total: db.prepare(`INSERT INTO usage_total (k, ${COUNT_FIELDS.join(', ')}, first_used, last_used) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (k) DO UPDATE SET ${COUNT_FIELDS.map((f) => `${f} = ${f} + excluded.${f}`).join(', ')},
        first_used = min(coalesce(first_used, excluded.first_used), coalesce(excluded.first_used, first_used)),
        last_used = max(coalesce(last_used, excluded.last_used), coalesce(excluded.last_used, last_used))`),
      keyInsert: db.prepare('INSERT OR IGNORE INTO usage_keys (key_id, managed) VALUES (?, ?)'),
      keySelect: db.prepare('SELECT id FROM usage_keys WHERE key_id = ?').pluck(),
      nameInsert: db.prepare('INSERT OR IGNORE INTO usage_names (name) VALUES (?)'),
      modelInsert: db.prepare('INSERT OR IGNORE INTO usage_models (m) VALUES (?)'),
      nameSelect: db.prepare('SELECT id FROM usage_names WHERE name = ?').pluck(),
      metaGet: db.prepare('SELECT value FROM usage_meta WHERE name = ?').pluck(),
      metaSet: db.prepare('INSERT INTO usage_meta (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value'),
      pruneEvents: db.prepare('DELETE FROM events WHERE id IN (SELECT id FROM events WHERE ts < ? ORDER BY ts LIMIT ?)'),
      pruneHours: db.prepare('DELETE FROM usage_hour WHERE (k, hour, m) IN (SELECT k, hour, m FROM usage_hour WHERE hour < ? LIMIT ?)'),
    };
  }

  private keyId(id: string, unmanaged: 0 | 1): number {
    let n = this.keyIds.get(id);
    if (n === undefined) {
      this.s.keyInsert.run(id, unmanaged ? 0 : 1);
      n = this.s.keySelect.get(id) as number;
      this.keyIds.set(id, n);
    }
    return n;
  }

  /** A model's name id, recorded as a model the first time it is seen. */
  private modelId(name: string): number {
    const m = this.nameId(name)!;
    if (!this.models.has(m)) {
      this.s.modelInsert.run(m);
      this.models.add(m);
    }
    return m;
  }

  private nameId(name: string | null): number | null {
    if (name === null) return null;
    let n = this.nameIds.get(name);
    if (n === undefined) {
      this.s.nameInsert.run(name);
      n = this.s.nameSelect.get(name) as number;
      this.nameIds.set(name, n);
    }
    return n;
  }

  /**
   * Writes a batch in one transaction: rows already stored (a replay) are skipped, and only new rows
   * feed the rollups. A failure (a full disk) rolls everything back and throws; nothing is half-written.
   */
  write(rows: readonly UsageRow[]): WriteResult {
    return this.transaction(() => this.writeRows(rows));
  }

  /** write() without its transaction, for a caller that holds one (the import of 0.1.0 data). */
  writeRows(rows: readonly UsageRow[]): WriteResult {
    const days = new Map<string, { k: number; unit: number; m: number; c: Counts }>();
    const hours = new Map<string, { k: number; unit: number; m: number; c: Counts }>();
    const keys = new Map<string, KeyDelta & { n: number }>();
    let inserted = 0;
    const duplicateRows: number[] = [];
    for (let i = 0; i < rows.length; i++) {
      const r = rows[i]!;
      const k = this.keyId(r.k, r.x);
      const m = this.modelId(r.model);
      if (!this.insertRaw(k, m, r)) { duplicateRows.push(i); continue; }
      inserted++;
      const add = (into: Counts) => {
        if (r.failed) { into.failed++; return; }
        into.requests++;
        into.tokens += r.tokens;
        into.input += r.input;
        into.output += r.output;
        into.reasoning += r.reasoning;
        into.cached += r.cached;
      };
      const d = `${k}:${r.day}:${m}`;
      add((days.get(d) ?? days.set(d, { k, unit: r.day, m, c: zeroCounts() }).get(d)!).c);
      const h = `${k}:${r.hour}:${m}`;
      add((hours.get(h) ?? hours.set(h, { k, unit: r.hour, m, c: zeroCounts() }).get(h)!).c);
      let delta = keys.get(r.k);
      if (!delta) keys.set(r.k, (delta = { k: r.k, x: r.x, n: k, ...zeroCounts(), first: r.ts, last: r.ts }));
      add(delta);
      if (r.ts > delta.last) delta.last = r.ts;
      if (r.ts < delta.first) delta.first = r.ts;
    }
    for (const { k, unit, m, c } of days.values()) this.s.day.run(k, unit, m, ...COUNT_FIELDS.map((f) => c[f]));
    for (const { k, unit, m, c } of hours.values()) this.s.hour.run(k, unit, m, ...COUNT_FIELDS.map((f) => c[f]));
    for (const d of keys.values()) this.s.total.run(d.n, ...COUNT_FIELDS.map((f) => d[f]), d.first, d.last);
    return { inserted, duplicateRows, keys: [...keys.values()].map(({ n: _n, ...d }) => d) };
  }

  private insertRaw(k: number, m: number, r: UsageRow): boolean {
    return this.s.insertEvent.run(k, r.ts, r.h, m, this.nameId(r.alias), this.nameId(r.endpoint), r.failed, r.status,
      r.tokens, r.input, r.output, r.reasoning, r.cached, r.latency, r.ttft, r.rid, r.ip, this.nameId(r.ua)).changes === 1;
  }

  /** Adds counts already aggregated elsewhere to a rollup (the import of 0.1.0 data, benchmark seeding). */
  addRollup(unit: 'day' | 'hour', keyId: string, unmanaged: 0 | 1, at: number, model: string, c: Counts): void {
    (unit === 'day' ? this.s.day : this.s.hour).run(this.keyId(keyId, unmanaged), at, this.modelId(model), ...COUNT_FIELDS.map((f) => c[f]));
  }

  /** Adds to a key's totals over all time. */
  addTotals(keyId: string, unmanaged: 0 | 1, c: Counts, firstUsed: number | null, lastUsed: number | null): void {
    this.s.total.run(this.keyId(keyId, unmanaged), ...COUNT_FIELDS.map((f) => c[f]), firstUsed, lastUsed);
  }

  /** Stores a raw row without feeding the rollups (its counts are already in them); false if it was there. */
  addRawRow(r: UsageRow): boolean {
    return this.insertRaw(this.keyId(r.k, r.x), this.modelId(r.model), r);
  }

  /** Runs `fn` in one transaction (all or nothing). The id caches may name rows a rollback removed: dropped then. */
  transaction<T>(fn: () => T): T {
    try {
      return this.db.transaction(fn).immediate();
    } catch (err) {
      this.keyIds.clear();
      this.nameIds.clear();
      this.models.clear();
      throw err;
    }
  }

  /** Deletes at most `limit` raw rows older than `beforeMs`; returns how many. Rollups stay. */
  pruneEvents(beforeMs: number, limit: number): number {
    return this.s.pruneEvents.run(beforeMs, limit).changes;
  }

  /** Deletes at most `limit` hourly rollup rows before `beforeHour` (a stored hour number). */
  pruneHours(beforeHour: number, limit: number): number {
    return this.s.pruneHours.run(beforeHour, limit).changes;
  }

  meta(name: string): string | undefined { return this.s.metaGet.get(name) as string | undefined; }
  setMeta(name: string, value: string): void { this.s.metaSet.run(name, value); }
}
