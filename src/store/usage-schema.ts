import { closeSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';

/**
 * data/usage.db — SQLite in WAL mode with synchronous=FULL: a transaction is on disk (the WAL
 * fsync'd) when COMMIT returns.
 *
 *   usage_keys   key id ('0042', or 'h…' for keys the portal does not manage) → a small integer
 *   usage_names  interned strings: models, aliases, endpoints, user agents
 *   usage_models the names that are models (for the model filters)
 *   events       one row per usage record CLIProxyAPI handed out: when the attempt started (ms, UTC),
 *                key, model, alias, endpoint, failed, status, the token split, latency, time to first
 *                byte, request id, client address and user agent. Never the key, never `source`.
 *                UNIQUE (k, ts, h) — h is a 32-bit hash of what identifies the attempt (request id,
 *                CLIProxyAPI's nanosecond timestamp, credential index, model, outcome; the detail
 *                fingerprint for the first generation) — makes a replayed record harmless, and is
 *                also the index a key's request log is read from.
 *   usage_day    rollup per key × calendar day (in TIMEZONE) × model: requests (records that did not
 *                fail), failed, tokens, input, output, reasoning, cached
 *   usage_hour   the same per hour, kept HOURLY_RETENTION_DAYS
 *   usage_total  per key: the same sums over all time, first and last use
 *   usage_meta   schema version, the zone the rollups are in, source watermarks
 *
 * Rollups change in the same transaction as the rows that feed them, so they always agree; raw rows
 * are pruned after USAGE_EVENTS_RETENTION_DAYS, rollups never.
 */
export const SCHEMA_VERSION = 1;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS usage_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_keys (id INTEGER PRIMARY KEY, key_id TEXT NOT NULL UNIQUE, managed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS usage_names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY,
  k INTEGER NOT NULL, ts INTEGER NOT NULL, h INTEGER NOT NULL,
  model INTEGER NOT NULL, alias INTEGER, endpoint INTEGER,
  failed INTEGER NOT NULL, status INTEGER,
  tokens INTEGER NOT NULL, input INTEGER NOT NULL, output INTEGER NOT NULL, reasoning INTEGER NOT NULL, cached INTEGER NOT NULL,
  latency_ms INTEGER, ttft_ms INTEGER, request_id TEXT, client_ip TEXT, user_agent INTEGER,
  UNIQUE (k, ts, h)
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE TABLE IF NOT EXISTS usage_day (
  k INTEGER NOT NULL, day INTEGER NOT NULL, m INTEGER NOT NULL,
  requests INTEGER NOT NULL, failed INTEGER NOT NULL, tokens INTEGER NOT NULL,
  input INTEGER NOT NULL, output INTEGER NOT NULL, reasoning INTEGER NOT NULL, cached INTEGER NOT NULL,
  PRIMARY KEY (k, day, m)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_day_day ON usage_day (day, k);
CREATE TABLE IF NOT EXISTS usage_hour (
  k INTEGER NOT NULL, hour INTEGER NOT NULL, m INTEGER NOT NULL,
  requests INTEGER NOT NULL, failed INTEGER NOT NULL, tokens INTEGER NOT NULL,
  input INTEGER NOT NULL, output INTEGER NOT NULL, reasoning INTEGER NOT NULL, cached INTEGER NOT NULL,
  PRIMARY KEY (k, hour, m)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS usage_hour_hour ON usage_hour (hour);
CREATE TABLE IF NOT EXISTS usage_models (m INTEGER PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS usage_total (
  k INTEGER PRIMARY KEY,
  requests INTEGER NOT NULL, failed INTEGER NOT NULL, tokens INTEGER NOT NULL,
  input INTEGER NOT NULL, output INTEGER NOT NULL, reasoning INTEGER NOT NULL, cached INTEGER NOT NULL,
  first_used INTEGER, last_used INTEGER
);
`;

/** The columns every rollup has, in order. */
export const COUNT_FIELDS = ['requests', 'failed', 'tokens', 'input', 'output', 'reasoning', 'cached'] as const;
export type CountField = typeof COUNT_FIELDS[number];
export type Counts = Record<CountField, number>;
export const zeroCounts = (): Counts => ({ requests: 0, failed: 0, tokens: 0, input: 0, output: 0, reasoning: 0, cached: 0 });

/** 'YYYY-MM-DD' ↔ 20261123, 'YYYY-MM-DDTHH' ↔ 2026112314: how days and hours are stored. */
export const dayNum = (day: string): number => Number(day.slice(0, 4) + day.slice(5, 7) + day.slice(8, 10));
export const hourNum = (hour: string): number => dayNum(hour) * 100 + Number(hour.slice(11, 13));
export const dayText = (n: number): string => { const s = String(n); return `${s.slice(0, 4)}-${s.slice(4, 6)}-${s.slice(6, 8)}`; };
export const hourText = (n: number): string => `${dayText(Math.floor(n / 100))}T${String(n % 100).padStart(2, '0')}`;

/**
 * Opens usage.db (created 0600 when missing) with the portal's settings and its schema. The writer
 * owns the only write connection; readers open with `query_only` (a connection opened with SQLite's
 * read-only flag could not create the WAL index a reader needs after a clean close removed it).
 */
export function openUsageDb(file: string, o: { reader?: boolean; cacheMb?: number } = {}): Database.Database {
  if (!o.reader) closeSync(openSync(file, 'a', 0o600)); // mode 0600 from the first byte
  const db = new Database(file, { fileMustExist: o.reader ?? false });
  db.pragma('busy_timeout = 5000');
  db.pragma(`cache_size = -${(o.cacheMb ?? 16) * 1024}`);
  if (o.reader) {
    db.pragma('query_only = ON');
    return db;
  }
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > SCHEMA_VERSION) {
    db.close();
    throw new Error(`${file} was written by a newer key-portal (schema ${version}); upgrade the portal or restore an older backup`);
  }
  db.exec(SCHEMA);
  db.pragma(`user_version = ${SCHEMA_VERSION}`);
  return db;
}
