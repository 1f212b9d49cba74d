import { FIELDS, FrozenBlock, NF, OpenBlock, frozen, type Block } from './blocks.js';
import type { StoredEvent } from './record.js';

/**
 * Usage aggregates per key: totals, per day × model and per hour × model, with days and hours in
 * TIMEZONE. Ingestion feeds it (after each event is on disk); the stats queries read it; the
 * Ingestor checkpoints it. A request is a record that did not fail; failed attempts are counted
 * apart and carry no tokens.
 *
 * Layout, chosen for 30k keys × 90 days × a few models in little memory: each key id gets a slot
 * (an index); totals are columns indexed by slot; each day is one Block of rows per (slot, model),
 * varint-packed once the day is frozen (~15 bytes a row); hours are Blocks too, kept for
 * HOURLY_RETENTION_DAYS. Each day (with its hours) is checkpointed as one file, rewritten only when
 * it changed.
 */
export interface Counts { requests: number; failed: number; tokens: number; input: number; output: number; reasoning: number; cached: number }

export const zero = (): Counts => ({ requests: 0, failed: 0, tokens: 0, input: 0, output: 0, reasoning: 0, cached: 0 });

const TOT = NF + 1; // per slot: the fields, then last_used (NaN = never)
const FAILED_ONCE: readonly number[] = [0, 1, 0, 0, 0, 0, 0];
/** Days kept in memory (the 30-day charts and a margin); older ones are read from disk when asked. */
const HOT_DAYS = 32;
/** Days of hours kept in memory (the 48-hour chart spans up to three calendar days). */
const HOT_HOUR_DAYS = 3;
const MAGIC = 0x3141504b; // 'KPA1'

/** What usage.json records about the ledger besides the day files. */
export interface LedgerIndex { keys: string[]; unmanaged: number[]; models: string[] }

export class UsageLedger {
  private readonly slotOf = new Map<string, number>();
  private readonly ids: string[] = [];
  private totalsCol = new Float64Array(1024 * TOT);
  private unmanagedCol = new Uint8Array(1024);
  private readonly models: string[] = [];
  private readonly modelOf = new Map<string, number>();
  private readonly days = new Map<string, Block>();                     // 'YYYY-MM-DD' → rows
  private readonly hours = new Map<string, Map<number, Block>>();        // 'YYYY-MM-DD' → hour 0–23 → rows
  /** Units ('d:DAY' = a day's rows, 'h:DAY' = its hours) changed since the last checkpoint. */
  private readonly dirty = new Set<string>();
  /** Units that exist only in their checkpoint file (older than the charts look back). */
  private readonly coldDays = new Set<string>();
  private readonly coldHours = new Set<string>();
  /** Hour units dropped by retention since the last checkpoint (their files go). */
  private readonly removed = new Set<string>();
  /** Reads a unit's checkpoint file; set by the Ingestor, which knows the file names. */
  loader: ((unit: string) => Promise<Uint8Array | null>) | null = null;
  private readonly fmt: Intl.DateTimeFormat;
  private readonly fullFmt: Intl.DateTimeFormat;
  private memo = { from: 0, to: -1, day: '', hour: '' };

  constructor(readonly timeZone: string, private readonly hourlyRetentionDays = 14) {
    this.fullFmt = new Intl.DateTimeFormat('en-CA', {
      timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23',
    });
    this.fmt = new Intl.DateTimeFormat('en-CA', {
      timeZone, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', hourCycle: 'h23',
    });
  }

  /** 'YYYY-MM-DD' and 'YYYY-MM-DDTHH' of an instant in the ledger's zone. */
  dayHour(at: number): { day: string; hour: string } {
    const m = this.memo;
    if (at >= m.from && at < m.to) return { day: m.day, hour: m.hour };
    const p = Object.fromEntries(this.fullFmt.formatToParts(at).map((x) => [x.type, x.value]));
    const day = `${p.year}-${p.month}-${p.day}`;
    const hour = `${day}T${p.hour}`;
    // Every record in the same local quarter hour has the same day and hour (zone offsets and their
    // changes are whole quarter hours), so ingesting a burst formats the date once.
    const from = at - ((+p.minute! % 15) * 60 + +p.second!) * 1000 - (((at % 1000) + 1000) % 1000);
    this.memo = { from, to: from + 900_000, day, hour };
    return { day, hour };
  }

  /** The instant the calendar day after `now` begins in the ledger's zone (daily limits reset then). */
  nextDayStart(now: number): number {
    const [y, m, d] = this.dayHour(now).day.split('-').map(Number) as [number, number, number];
    const wall = Date.UTC(y, m - 1, d + 1); // midnight of the next day, read as if the zone were UTC
    // Shift by the zone's offset at that moment; a second pass settles a DST change in between.
    let t = wall - this.offsetAt(wall);
    t = wall - this.offsetAt(t);
    return t;
  }

  /** The zone's offset at an instant as '+08:00'. */
  offsetLabel(at: number): string {
    const m = Math.round(this.offsetAt(at) / 60_000);
    const a = Math.abs(m);
    return `${m < 0 ? '-' : '+'}${String(Math.floor(a / 60)).padStart(2, '0')}:${String(a % 60).padStart(2, '0')}`;
  }

  /** An instant as 'YYYY-MM-DDTHH:MM' on the zone's wall clock (for datetime-local fields). */
  wallClock(at: number): string {
    return new Date(at + this.offsetAt(at)).toISOString().slice(0, 16);
  }

  /** The zone's offset from UTC at an instant, in ms. */
  private offsetAt(at: number): number {
    const p = Object.fromEntries(this.fullFmt.formatToParts(at).map((x) => [x.type, x.value]));
    return Date.UTC(+p.year!, +p.month! - 1, +p.day!, +p.hour!, +p.minute!, +p.second!) - Math.floor(at / 1000) * 1000;
  }

  private slot(id: string, unmanaged: boolean): number {
    let s = this.slotOf.get(id);
    if (s !== undefined) return s;
    s = this.ids.length;
    this.ids.push(id);
    this.slotOf.set(id, s);
    if (s >= this.unmanagedCol.length) {
      const t = new Float64Array(this.totalsCol.length * 2);
      t.set(this.totalsCol);
      this.totalsCol = t;
      const u = new Uint8Array(this.unmanagedCol.length * 2);
      u.set(this.unmanagedCol);
      this.unmanagedCol = u;
    }
    this.totalsCol[s * TOT + NF] = NaN;
    this.unmanagedCol[s] = unmanaged ? 1 : 0;
    return s;
  }

  private model(name: string): number {
    let m = this.modelOf.get(name);
    if (m === undefined) { m = this.models.length; this.models.push(name); this.modelOf.set(name, m); }
    return m;
  }

  /** The day's block, open for writing (a frozen day is thawed). */
  private openDay(day: string): OpenBlock {
    if (this.coldDays.has(day)) throw new Error(`usage of ${day} is on disk only: warm() it before adding`);
    this.dirty.add(`d:${day}`);
    const b = this.days.get(day);
    if (b instanceof OpenBlock) return b;
    const open = b ? (b as FrozenBlock).thaw() : new OpenBlock();
    this.days.set(day, open);
    return open;
  }

  private openHour(day: string, hour: number): OpenBlock {
    if (this.coldHours.has(day)) throw new Error(`hourly usage of ${day} is on disk only: warm() it before adding`);
    this.dirty.add(`h:${day}`);
    let hs = this.hours.get(day);
    if (!hs) this.hours.set(day, (hs = new Map()));
    const b = hs.get(hour);
    if (b instanceof OpenBlock) return b;
    const open = b ? (b as FrozenBlock).thaw() : new OpenBlock();
    hs.set(hour, open);
    return open;
  }

  add(e: StoredEvent): void {
    const { day, hour } = this.dayHour(e.t);
    // A failed attempt is counted as failed and nothing else (no tokens, no last use).
    const v = e.f ? FAILED_ONCE : [1, 0, e.tok, e.in, e.out, e.rea, e.cac];
    this.put(this.slot(e.k, e.x === 1), this.model(e.m), day, this.keepsHours(e.t) ? Number(hour.slice(11)) : null, v, e.f ? null : e.t);
    if (e.t > this.latest) this.latest = e.t;
  }

  /** Adds a row of values (in FIELDS order) to a day, optionally its hour, and the slot's totals. */
  private put(s: number, m: number, day: string, hour: number | null, v: readonly number[], lastUsed: number | null): void {
    const d = this.openDay(day).row(s, m);
    const h = hour === null ? null : this.openHour(day, hour).row(s, m);
    const o = s * TOT;
    for (let f = 0; f < NF; f++) {
      d[f]! += v[f]!;
      if (h) h[f]! += v[f]!;
      this.totalsCol[o + f]! += v[f]!;
    }
    this.noteLastUsed(o, lastUsed);
  }

  /** Whether a record at `t` still gets hourly buckets (pruneHours() trims the edge by whole days). */
  private keepsHours(t: number): boolean {
    return t >= Math.max(this.latest, t) - (this.hourlyRetentionDays + 1) * 86_400_000;
  }

  /** Loads from disk the units that records of these events will be added to. */
  async warmFor(events: readonly StoredEvent[]): Promise<void> {
    if (!this.coldDays.size && !this.coldHours.size) return;
    for (const e of events) {
      const { day } = this.dayHour(e.t);
      if (this.coldDays.has(day)) await this.warm(`d:${day}`);
      if (this.coldHours.has(day) && this.keepsHours(e.t)) await this.warm(`h:${day}`);
    }
  }

  private async warm(unit: string): Promise<void> {
    const bytes = await this.loader?.(unit);
    if (!bytes) throw new Error(`usage aggregates ${unit} could not be read`);
    (unit.startsWith('d:') ? this.coldDays : this.coldHours).delete(unit.slice(2));
    this.loadUnit(unit, bytes);
  }

  /** Marks a unit as present on disk only (at start, for days older than the charts look back). */
  registerCold(unit: string): void {
    (unit.startsWith('d:') ? this.coldDays : this.coldHours).add(unit.slice(2));
  }

  /** Whether a unit is kept in memory: days the 30-day charts show, hours the 48-hour chart shows. */
  isHot(unit: string, now: number): boolean {
    const from = this.dayHour(now - (unit.startsWith('d:') ? HOT_DAYS : HOT_HOUR_DAYS) * 86_400_000).day;
    return unit.slice(2) >= from;
  }

  /** After a checkpoint: units outside the hot windows leave memory (their files are current). */
  cool(now: number): void {
    for (const day of [...this.days.keys()]) {
      if (!this.dirty.has(`d:${day}`) && !this.isHot(`d:${day}`, now)) { this.days.delete(day); this.coldDays.add(day); }
    }
    for (const day of [...this.hours.keys()]) {
      if (!this.dirty.has(`h:${day}`) && !this.isHot(`h:${day}`, now)) { this.hours.delete(day); this.coldHours.add(day); }
    }
  }

  /**
   * Calls fn with each day's block (undefined if that day has no usage), reading days that are on
   * disk only one at a time, so a 90-day export never holds 90 days in memory.
   */
  async eachDay(days: readonly string[], fn: (day: string, block: Block | undefined) => void): Promise<void> {
    for (const day of days) fn(day, this.days.get(day) ?? (this.coldDays.has(day) ? await this.readCold(`d:${day}`) as Block | undefined : undefined));
  }

  private async eachHourDay(days: readonly string[], fn: (day: string, hours: Map<number, Block> | undefined) => void): Promise<void> {
    for (const day of days) fn(day, this.hours.get(day) ?? (this.coldHours.has(day) ? await this.readCold(`h:${day}`) as Map<number, Block> | undefined : undefined));
  }

  /** A unit read from disk for one query, not kept. A checkpoint may have just replaced its file. */
  private async readCold(unit: string): Promise<Block | Map<number, Block> | undefined> {
    for (let attempt = 0; ; attempt++) {
      const day = unit.slice(2);
      const hot = unit.startsWith('d:') ? this.days.get(day) : this.hours.get(day);
      if (hot) return hot;
      const cold = unit.startsWith('d:') ? this.coldDays : this.coldHours;
      if (!cold.has(day)) return undefined;
      try {
        const bytes = await this.loader?.(unit);
        return bytes ? decodeUnit(unit, bytes) : undefined;
      } catch (err) {
        if (attempt >= 2 || (err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
  }

  /** The newest record time seen: hours older than the retention window below it are not kept. */
  private latest = 0;

  private oldestHour(now: number): string {
    return this.dayHour(now - this.hourlyRetentionDays * 86_400_000).hour;
  }

  private rowTotals(s: number | undefined): Counts & { last_used: number | null } {
    if (s === undefined) return { ...zero(), last_used: null };
    const o = s * TOT;
    const t = this.totalsCol;
    const last = t[o + NF]!;
    return {
      requests: t[o]!, failed: t[o + 1]!, tokens: t[o + 2]!, input: t[o + 3]!, output: t[o + 4]!, reasoning: t[o + 5]!, cached: t[o + 6]!,
      last_used: Number.isNaN(last) ? null : last,
    };
  }

  totals(keyId: string): Counts & { last_used: number | null } {
    return this.rowTotals(this.slotOf.get(keyId));
  }

  /** The slot of a key id, or -1 if it has no usage yet. */
  slotIndex(keyId: string): number { return this.slotOf.get(keyId) ?? -1; }

  get slotCount(): number { return this.ids.length; }

  /** Requests, tokens and last use (NaN = never) of a slot, without building an object (the leaderboard's inner loop). */
  slotTotals(slot: number, out: Float64Array): void {
    const o = slot * TOT;
    out[0] = this.totalsCol[o]!;
    out[1] = this.totalsCol[o + 2]!;
    out[2] = this.totalsCol[o + NF]!;
  }

  /** One key's counts on the calendar day of `now`. */
  today(keyId: string, now: number): Counts {
    const c = zero();
    const s = this.slotOf.get(keyId);
    if (s !== undefined) this.days.get(this.dayHour(now).day)?.forSlot(s, (_m, r) => addRow(c, r));
    return c;
  }

  /** Every key with usage on the calendar day of `now`, with its counts for the day. */
  todayByKey(now: number, fn: (keyId: string, c: Counts, unmanaged: boolean) => void): void {
    const b = this.days.get(this.dayHour(now).day);
    if (!b) return;
    let slot = -1;
    let c = zero();
    b.forEach((s, _m, r) => {
      if (s !== slot) {
        if (slot >= 0) fn(this.ids[slot]!, c, this.unmanagedCol[slot] === 1);
        slot = s;
        c = zero();
      }
      addRow(c, r);
    });
    if (slot >= 0) fn(this.ids[slot]!, c, this.unmanagedCol[slot] === 1);
  }

  /** Ids of keys seen in usage that the portal does not manage (the `unmanaged` bucket). */
  unmanagedIds(): string[] {
    return this.ids.filter((_id, s) => this.unmanagedCol[s] === 1);
  }

  /** Several keys over the last `days` days (ending today) and the last 48 hours. */
  async series(keyIds: string[], days: number, now: number): Promise<{
    by_day: ({ day: string } & Counts)[]; by_hour: ({ hour: string } & Counts)[]; by_model: ({ model: string } & Counts)[];
  }> {
    const slots = keyIds.map((id) => this.slotOf.get(id)).filter((s): s is number => s !== undefined);
    const dayKeys: string[] = [];
    for (let i = days - 1; i >= 0; i--) dayKeys.push(this.dayHour(now - i * 86_400_000).day);
    const hourKeys: string[] = [];
    for (let i = 47; i >= 0; i--) hourKeys.push(this.dayHour(now - i * 3_600_000).hour);
    const models = new Map<number, Counts>();
    const by_day: ({ day: string } & Counts)[] = [];
    await this.eachDay([...new Set(dayKeys)], (day, b) => {
      const c = zero();
      for (const s of b ? slots : []) {
        b!.forSlot(s, (m, r) => {
          addRow(c, r);
          addRow(models.get(m) ?? models.set(m, zero()).get(m)!, r);
        });
      }
      by_day.push({ day, ...c });
    });
    const hourBlocks = new Map<string, Block>();
    await this.eachHourDay([...new Set(hourKeys.map((h) => h.slice(0, 10)))], (day, hs) => {
      for (const [h, b] of hs ?? []) hourBlocks.set(`${day}T${String(h).padStart(2, '0')}`, b);
    });
    const by_hour = [...new Set(hourKeys)].map((hour) => {
      const c = zero();
      const b = hourBlocks.get(hour);
      for (const s of b ? slots : []) b!.forSlot(s, (_m, r) => addRow(c, r));
      return { hour, ...c };
    });
    const by_model = [...models].map(([m, c]) => ({ model: this.models[m]!, ...c })).sort((a, b) => b.tokens - a.tokens);
    return { by_day, by_hour, by_model };
  }

  /** The days with usage from `days` days ago to today, oldest first (for exports). */
  daysWithin(days: number, now: number): string[] {
    const first = this.dayHour(now - (days - 1) * 86_400_000).day;
    return [...new Set([...this.days.keys(), ...this.coldDays])].filter((d) => d >= first).sort();
  }

  /** Calls fn for each model row of the given key ids in one day's block (exports). */
  rowsOf(block: Block | undefined, keyIds: readonly string[], fn: (keyId: string, model: string, c: Counts) => void): void {
    if (!block) return;
    for (const id of keyIds) {
      const s = this.slotOf.get(id);
      if (s !== undefined) block.forSlot(s, (m, r) => { const c = zero(); addRow(c, r); fn(id, this.models[m]!, c); });
    }
  }

  /** Drops the hourly buckets of days older than HOURLY_RETENTION_DAYS (daily ones are kept). */
  pruneHours(now: number): void {
    const oldest = this.dayHour(Math.max(now, this.latest) - this.hourlyRetentionDays * 86_400_000).day;
    for (const day of [...this.hours.keys(), ...this.coldHours]) {
      if (day >= oldest) continue;
      this.hours.delete(day);
      this.coldHours.delete(day);
      this.dirty.delete(`h:${day}`);
      this.removed.add(`h:${day}`);
    }
  }

  // ---- checkpoints --------------------------------------------------------------------------

  /** Units changed since the last markClean(). */
  dirtyUnits(): string[] { return [...this.dirty].sort(); }

  /** Hour units retention dropped since the last call (their files can go). */
  takeRemoved(): string[] {
    const out = [...this.removed];
    this.removed.clear();
    return out;
  }

  /** Every unit, in memory or on disk only. */
  allUnits(): string[] {
    return [...this.days.keys(), ...this.coldDays].map((d) => `d:${d}`).concat([...this.hours.keys(), ...this.coldHours].map((d) => `h:${d}`)).sort();
  }

  /**
   * A unit's file: magic, then a day's block, or the count of hours and each hour with its block.
   * Encoding freezes the blocks (compact in memory) unless `keepOpen` (today, still being written).
   */
  encodeUnit(unit: string, keepOpen: boolean): Uint8Array[] {
    const head = new Uint8Array(4);
    new DataView(head.buffer).setUint32(0, MAGIC, true);
    const day = unit.slice(2);
    if (unit.startsWith('d:')) {
      const b = this.days.get(day);
      const f = b ? frozen(b) : new OpenBlock().freeze();
      if (b && !keepOpen) this.days.set(day, f);
      return [head, f.encode()];
    }
    const hs = this.hours.get(day) ?? new Map<number, Block>();
    const parts: Uint8Array[] = [head, Uint8Array.of(hs.size)];
    for (const [h, b] of [...hs].sort((x, y) => x[0] - y[0])) {
      const f = frozen(b);
      if (!keepOpen) hs.set(h, f);
      parts.push(Uint8Array.of(h), f.encode());
    }
    return parts;
  }

  loadUnit(unit: string, buf: Uint8Array): void {
    const day = unit.slice(2);
    const decoded = decodeUnit(unit, buf);
    if (decoded instanceof Map) this.hours.set(day, decoded); else this.days.set(day, decoded);
  }

  markClean(units: Iterable<string>): void { for (const u of units) this.dirty.delete(u); }

  index(): LedgerIndex {
    const unmanaged: number[] = [];
    for (let s = 0; s < this.ids.length; s++) if (this.unmanagedCol[s]) unmanaged.push(s);
    return { keys: [...this.ids], unmanaged, models: [...this.models] };
  }

  /** Totals of every slot (fields, then last_used), little-endian doubles. */
  encodeTotals(): Uint8Array {
    return new Uint8Array(this.totalsCol.buffer.slice(0, this.ids.length * TOT * 8));
  }

  /** Restores slots, models and totals; day files are loaded after this with loadDay(). */
  restore(index: LedgerIndex, totals: Uint8Array): void {
    if (totals.length !== index.keys.length * TOT * 8) throw new Error('usage totals do not match the key table');
    const unmanaged = new Set(index.unmanaged);
    index.keys.forEach((id, s) => this.slot(id, unmanaged.has(s)));
    const copy = new Uint8Array(totals); // aligned copy
    this.totalsCol.set(new Float64Array(copy.buffer, 0, index.keys.length * TOT));
    for (const m of index.models) this.model(m);
    for (let s = 0; s < this.ids.length; s++) {
      const last = this.totalsCol[s * TOT + NF]!;
      if (!Number.isNaN(last) && last > this.latest) this.latest = last;
    }
  }

  /**
   * Adds counts already aggregated elsewhere: to the day (and the hour, 0–23, unless null) and to
   * the key's totals. Reading old checkpoints and seeding benchmarks use it; records go through add().
   */
  addCounts(id: string, unmanaged: boolean, day: string, hour: number | null, model: string, c: Partial<Counts>, lastUsed: number | null): void {
    this.put(this.slot(id, unmanaged), this.model(model), day, hour, FIELDS.map((f) => Number(c[f] ?? 0)), lastUsed);
  }

  /** Adds counts to one hour only (the day and the totals already hold them). */
  addHourCounts(id: string, day: string, hour: number, model: string, c: Partial<Counts>): void {
    const r = this.openHour(day, hour).row(this.slot(id, false), this.model(model));
    FIELDS.forEach((f, i) => { r[i]! += Number(c[f] ?? 0); });
  }

  private noteLastUsed(o: number, at: number | null): void {
    if (at === null) return;
    const last = this.totalsCol[o + NF]!;
    if (Number.isNaN(last) || at > last) this.totalsCol[o + NF] = at;
    if (at > this.latest) this.latest = at;
  }

  /**
   * Loads one key from a checkpoint written before the columnar layout ({total, last_used,
   * unmanaged, days: {day: {model: counts}}, hours: {'dayTHH': {model: counts}}}). The totals are
   * the sum of the days (older versions kept them in step).
   */
  loadLegacyEntry(id: string, raw: any): void {
    const last = typeof raw.last_used === 'number' ? raw.last_used : null;
    for (const [day, models] of Object.entries(raw.days ?? {})) {
      for (const [model, c] of Object.entries(models as Record<string, Partial<Counts>>)) this.addCounts(id, !!raw.unmanaged, day, null, model, c, last);
    }
    this.slot(id, !!raw.unmanaged);
    for (const [hour, models] of Object.entries(raw.hours ?? {})) {
      for (const [model, c] of Object.entries(models as Record<string, Partial<Counts>>)) this.addHourCounts(id, hour.slice(0, 10), Number(hour.slice(11)), model, c);
    }
  }

  /** Rows held, open and frozen (for the bench and the admin status). */
  get rowCount(): number {
    let n = 0;
    for (const b of this.days.values()) n += b.size;
    return n;
  }
}

function addRow(into: Counts, r: ArrayLike<number>): void {
  into.requests += r[0]!;
  into.failed += r[1]!;
  into.tokens += r[2]!;
  into.input += r[3]!;
  into.output += r[4]!;
  into.reasoning += r[5]!;
  into.cached += r[6]!;
}

function decodeUnit(unit: string, buf: Uint8Array): FrozenBlock | Map<number, Block> {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  if (buf.length < 5 || v.getUint32(0, true) !== MAGIC) throw new Error(`usage aggregates ${unit} are not in a known format`);
  if (unit.startsWith('d:')) return FrozenBlock.decode(buf, 4).block;
  const hs = new Map<number, Block>();
  let p = 5;
  for (let i = 0; i < buf[4]!; i++) {
    const r = FrozenBlock.decode(buf, p + 1);
    hs.set(buf[p]!, r.block);
    p = r.next;
  }
  return hs;
}
