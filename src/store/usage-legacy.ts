import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { createHash } from 'node:crypto';
import path from 'node:path';
import type { Logger } from '../log.js';
import { COUNT_FIELDS, type Counts, dayNum, hourNum, openUsageDb, zeroCounts } from './usage-schema.js';
import { UsageWriter, type UsageRow } from './usage-writer.js';
import { hash32 } from '../usage/record.js';
import type { Zone } from '../time/zone.js';

/**
 * The one-time import of usage kept by key-portal 0.1.0: data/usage.json naming binary aggregates in
 * data/usage/agg/ (or, older, JSON aggregates), and the event log data/usage/events-*.jsonl, whose
 * lines after the saved cursor were not yet in the aggregates.
 *
 * Everything goes into usage.db in one transaction: the aggregates into the rollups, every logged
 * event as a raw row (the request log), the events after the cursor into the rollups too. Then the
 * totals are checked against the old ones; if they differ, nothing is kept and the start stops.
 * The old files are moved to data/usage.legacy/, never deleted. usage.db remembers the import, so a
 * crash between the commit and the move does not import twice.
 */

/** A line of events-*.jsonl as 0.1.0 wrote it. */
interface OldEvent { k: string; x?: 1; m: string; a?: string; t: number; tok: number; in: number; out: number; rea: number; cac: number; f?: 1; lat?: number; rid?: string; fp?: string }
interface OldFile {
  version?: string; cursor?: { file: string; offset: number } | null; index?: { keys: string[]; unmanaged: number[]; models: string[] };
  totals?: string; units?: Record<string, string>; ledger?: Record<string, OldEntry>; aggregates?: string;
}
interface OldEntry { last_used?: number; unmanaged?: boolean; days?: Record<string, Record<string, Partial<Counts>>>; hours?: Record<string, Record<string, Partial<Counts>>> }

export interface LegacyImport { events: number; tail: number; keys: number; rollupRows: number; movedTo: string }

const MAGIC = 0x3141504b; // 'KPA1'
const NF = 7; // requests, failed, tokens, input, output, reasoning, cached (COUNT_FIELDS' order)

export function importLegacyUsage(dataDir: string, zone: Zone, log: Logger): LegacyImport | null {
  const jsonFile = path.join(dataDir, 'usage.json');
  const oldDir = path.join(dataDir, 'usage');
  if (!existsSync(jsonFile) && !existsSync(oldDir)) return null;
  const text = existsSync(jsonFile) ? readFileSync(jsonFile, 'utf8') : '{}';
  const stamp = createHash('sha256').update(text).digest('hex').slice(0, 16);
  const db = openUsageDb(path.join(dataDir, 'usage.db'));
  try {
    const writer = new UsageWriter(db);
    let report: LegacyImport | null = null;
    if (writer.meta('legacy_import') !== stamp) {
      const old = JSON.parse(text) as OldFile;
      report = writer.transaction(() => {
        const r = load(writer, old, oldDir, zone);
        check(db, r.expected);
        writer.setMeta('legacy_import', stamp);
        return r.report;
      });
    }
    const movedTo = moveAside(dataDir);
    if (report) {
      report.movedTo = movedTo;
      log.info({ module: 'usage', ...report }, 'imported the usage data of key-portal 0.1.0 into usage.db; the old files were moved aside');
    }
    return report;
  } finally {
    db.close();
  }
}

function load(writer: UsageWriter, old: OldFile, oldDir: string, zone: Zone): { report: LegacyImport; expected: Map<string, Counts> } {
  const expected = new Map<string, Counts>();
  let rollupRows = 0;
  const addExpected = (id: string, c: Counts) => {
    const e = expected.get(id) ?? expected.set(id, zeroCounts()).get(id)!;
    for (const f of COUNT_FIELDS) e[f] += c[f];
  };
  if (old.index && old.totals) {
    const { keys, unmanaged, models } = old.index;
    const isUnmanaged = new Set(unmanaged);
    const x = (slot: number): 0 | 1 => (isUnmanaged.has(slot) ? 1 : 0);
    const aggDir = path.join(oldDir, 'agg');
    const totals = readFileSync(path.join(aggDir, path.basename(old.totals)));
    if (totals.length !== keys.length * (NF + 1) * 8) throw new Error('usage/agg totals do not match usage.json; the import stopped and nothing was changed');
    keys.forEach((id, slot) => {
      const c = zeroCounts();
      COUNT_FIELDS.forEach((f, i) => { c[f] = totals.readDoubleLE((slot * (NF + 1) + i) * 8); });
      const last = totals.readDoubleLE((slot * (NF + 1) + NF) * 8);
      writer.addTotals(id, x(slot), c, null, Number.isNaN(last) ? null : last);
      addExpected(id, c);
    });
    for (const [unit, name] of Object.entries(old.units ?? {})) {
      if (!/^[dh]:\d{4}-\d{2}-\d{2}$/.test(unit)) continue;
      const buf = readFileSync(path.join(aggDir, path.basename(name)));
      if (buf.length < 5 || buf.readUInt32LE(0) !== MAGIC) throw new Error(`usage/agg/${name} is not in a known format; the import stopped and nothing was changed`);
      const day = unit.slice(2);
      if (unit[0] === 'd') {
        decodeBlock(buf, 4, (slot, m, c) => { writer.addRollup('day', keys[slot]!, x(slot), dayNum(day), models[m]!, c); rollupRows++; });
      } else {
        let p = 5;
        for (let i = 0; i < buf[4]!; i++) {
          const hour = buf[p]!;
          p = decodeBlock(buf, p + 1, (slot, m, c) => {
            writer.addRollup('hour', keys[slot]!, x(slot), hourNum(`${day}T${String(hour).padStart(2, '0')}`), models[m]!, c);
            rollupRows++;
          });
        }
      }
    }
  } else {
    // Versions before 0.1.0's binary aggregates: one JSON entry per key, inline (1.0) or as lines (1.1).
    const entries: [string, OldEntry][] = old.ledger ? Object.entries(old.ledger)
      : old.aggregates ? readFileSync(path.join(oldDir, path.basename(old.aggregates)), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as [string, OldEntry])
        : [];
    for (const [id, e] of entries) {
      const x: 0 | 1 = e.unmanaged ? 1 : 0;
      const total = zeroCounts();
      for (const [day, ms] of Object.entries(e.days ?? {})) {
        for (const [model, raw] of Object.entries(ms)) {
          const c = counts(raw);
          writer.addRollup('day', id, x, dayNum(day), model, c);
          for (const f of COUNT_FIELDS) total[f] += c[f];
          rollupRows++;
        }
      }
      for (const [hour, ms] of Object.entries(e.hours ?? {})) {
        for (const [model, raw] of Object.entries(ms)) { writer.addRollup('hour', id, x, hourNum(hour), model, counts(raw)); rollupRows++; }
      }
      writer.addTotals(id, x, total, null, typeof e.last_used === 'number' ? e.last_used : null);
      addExpected(id, total);
    }
  }
  // Every logged event becomes a raw row; those after the cursor were never in the aggregates.
  let events = 0;
  let tail = 0;
  const files = existsSync(oldDir) ? readdirSync(oldDir).filter((f) => /^events-\d{4}-\d{2}-\d{2}\.jsonl$/.test(f)).sort() : [];
  for (const f of files) {
    const buf = readFileSync(path.join(oldDir, f));
    const cursor = old.cursor;
    const after = !cursor?.file || f > cursor.file ? 0 : f === cursor.file ? cursor.offset : Infinity;
    let start = 0;
    while (start < buf.length) {
      const nl = buf.indexOf(10, start);
      if (nl < 0) break; // a line torn by a crash was never counted
      let e: OldEvent | null = null;
      try { e = JSON.parse(buf.subarray(start, nl).toString('utf8')) as OldEvent; } catch { /* a damaged line was never counted */ }
      if (e && typeof e.t === 'number') {
        const row = toRow(e, zone);
        if (start >= after) {
          const w = writer.writeRows([row]);
          tail += w.inserted;
          for (const k of w.keys) addExpected(k.k, k);
        } else if (writer.addRawRow(row)) {
          events++;
        }
      }
      start = nl + 1;
    }
  }
  return { report: { events: events + tail, tail, keys: expected.size, rollupRows, movedTo: '' }, expected };
}

/** The totals must equal the old ones (plus the events after the cursor), and every key's days must add up to them. */
function check(db: ReturnType<typeof openUsageDb>, expected: Map<string, Counts>): void {
  const total = db.prepare(`SELECT ${COUNT_FIELDS.join(', ')} FROM usage_total t JOIN usage_keys k ON k.id = t.k WHERE k.key_id = ?`);
  const days = db.prepare(`SELECT ${COUNT_FIELDS.map((f) => `sum(${f}) AS ${f}`).join(', ')} FROM usage_day d JOIN usage_keys k ON k.id = d.k WHERE k.key_id = ?`);
  for (const [id, want] of expected) {
    const got = total.get(id) as Counts | undefined;
    const sum = days.get(id) as Counts;
    for (const f of COUNT_FIELDS) {
      if ((got?.[f] ?? 0) !== want[f] || (sum[f] ?? 0) !== want[f]) {
        throw new Error(`importing the usage of key ${id} gave ${f} = ${got?.[f] ?? 0} (days: ${sum[f] ?? 0}), not ${want[f]}; ` +
          'the import stopped and nothing was changed. Please report this with data/usage.json.');
      }
    }
  }
}

function moveAside(dataDir: string): string {
  const dest = path.join(dataDir, 'usage.legacy');
  mkdirSync(dest, { recursive: true, mode: 0o700 });
  for (const name of ['usage.json', 'usage']) {
    const from = path.join(dataDir, name);
    if (!existsSync(from)) continue;
    let to = path.join(dest, name);
    for (let i = 2; existsSync(to); i++) to = path.join(dest, `${name}.${i}`);
    renameSync(from, to);
  }
  return dest;
}

function counts(raw: Partial<Counts>): Counts {
  const c = zeroCounts();
  for (const f of COUNT_FIELDS) c[f] = Number(raw[f] ?? 0);
  return c;
}

function toRow(e: OldEvent, zone: Zone): UsageRow {
  const { day, hour } = zone.dayHour(e.t);
  return {
    k: e.k, x: e.x ? 1 : 0, ts: e.t, h: hash32(e.fp ? `fp|${e.fp}` : `${e.rid ?? ''}|${e.t}|${e.m}|${e.f ? 1 : 0}|${e.tok}`),
    day: dayNum(day), hour: hourNum(hour), model: e.m, alias: e.a ?? null, endpoint: null, failed: e.f ? 1 : 0, status: null,
    tokens: e.tok, input: e.in, output: e.out, reasoning: e.rea, cached: e.cac, latency: e.lat ?? null, ttft: null, rid: e.rid ?? null, ip: null, ua: null,
  };
}

/** Walks one block of 0.1.0's aggregate files: (slot, model, counts) per row. Returns the position after it. */
function decodeBlock(buf: Buffer, pos: number, fn: (slot: number, model: number, c: Counts) => void): number {
  const n = buf.readUInt32LE(pos);
  const len = buf.readUInt32LE(pos + 4);
  const slotsAt = pos + 8;
  const offsetsAt = slotsAt + 4 * n;
  const dataAt = offsetsAt + 4 * (n + 1) + 4;
  if (dataAt + len > buf.length) throw new Error('an aggregate block of usage/agg is truncated; the import stopped and nothing was changed');
  let p = dataAt;
  const uint = (): number => {
    let v = 0;
    let mul = 1;
    for (;;) {
      const b = buf[p++]!;
      v += (b & 127) * mul;
      if (b < 128) return v;
      mul *= 128;
    }
  };
  for (let i = 0; i < n; i++) {
    const slot = buf.readUInt32LE(slotsAt + 4 * i);
    const end = dataAt + buf.readUInt32LE(offsetsAt + 4 * (i + 1));
    while (p < end) {
      const model = uint();
      const v = Array.from({ length: NF }, uint);
      const z = v[2]!; // tokens were stored as a zigzag difference from input + output
      v[2] = v[3]! + v[4]! + (z % 2 === 0 ? z / 2 : -(z + 1) / 2);
      const c = zeroCounts();
      COUNT_FIELDS.forEach((f, j) => { c[f] = v[j]!; });
      fn(slot, model, c);
    }
  }
  return dataAt + len;
}
