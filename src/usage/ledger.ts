import type { StoredEvent } from './record.js';

/**
 * Usage aggregates per key: totals, per day × model and per hour × model, with days and hours in
 * TIMEZONE. Ingestion feeds it (after each event is on disk); the stats queries read it; usage.json
 * checkpoints it. A request is a record that did not fail; failed attempts are counted apart and
 * carry no tokens.
 */
export interface Counts { requests: number; failed: number; tokens: number; input: number; output: number; reasoning: number; cached: number }

interface KeyUsage {
  total: Counts;
  last_used: number | null;
  unmanaged: boolean;
  days: Map<string, Map<string, Counts>>;   // 'YYYY-MM-DD' → model → counts
  hours: Map<string, Map<string, Counts>>;  // 'YYYY-MM-DDTHH' → model → counts
}

export const zero = (): Counts => ({ requests: 0, failed: 0, tokens: 0, input: 0, output: 0, reasoning: 0, cached: 0 });

export class UsageLedger {
  private readonly keys = new Map<string, KeyUsage>();
  private readonly fmt: Intl.DateTimeFormat;
  private readonly fullFmt: Intl.DateTimeFormat;

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
    const p = Object.fromEntries(this.fmt.formatToParts(at).map((x) => [x.type, x.value]));
    const day = `${p.year}-${p.month}-${p.day}`;
    return { day, hour: `${day}T${p.hour}` };
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

  /** The zone's offset from UTC at an instant, in ms. */
  private offsetAt(at: number): number {
    const p = Object.fromEntries(this.fullFmt.formatToParts(at).map((x) => [x.type, x.value]));
    return Date.UTC(+p.year!, +p.month! - 1, +p.day!, +p.hour!, +p.minute!, +p.second!) - Math.floor(at / 1000) * 1000;
  }

  add(e: StoredEvent): void {
    let u = this.keys.get(e.k);
    if (!u) this.keys.set(e.k, (u = { total: zero(), last_used: null, unmanaged: e.x === 1, days: new Map(), hours: new Map() }));
    const { day, hour } = this.dayHour(e.t);
    for (const c of [u.total, bucket(u.days, day, e.m), bucket(u.hours, hour, e.m)]) {
      if (e.f) { c.failed++; continue; }
      c.requests++;
      c.tokens += e.tok;
      c.input += e.in;
      c.output += e.out;
      c.reasoning += e.rea;
      c.cached += e.cac;
    }
    if (!e.f && (u.last_used === null || e.t > u.last_used)) u.last_used = e.t;
  }

  totals(keyId: string): Counts & { last_used: number | null } {
    const u = this.keys.get(keyId);
    return u ? { ...u.total, last_used: u.last_used } : { ...zero(), last_used: null };
  }

  /** One key's counts on the calendar day of `now`. */
  today(keyId: string, now: number): Counts {
    return sum(this.keys.get(keyId)?.days.get(this.dayHour(now).day)?.values());
  }

  /** Ids of keys seen in usage that the portal does not manage (the `unmanaged` bucket). */
  unmanagedIds(): string[] {
    return [...this.keys].filter(([, u]) => u.unmanaged).map(([id]) => id);
  }

  /** Several keys over the last `days` days (ending today) and the last 48 hours. */
  series(keyIds: string[], days: number, now: number): {
    by_day: ({ day: string } & Counts)[]; by_hour: ({ hour: string } & Counts)[]; by_model: ({ model: string } & Counts)[];
  } {
    const dayKeys: string[] = [];
    for (let i = days - 1; i >= 0; i--) dayKeys.push(this.dayHour(now - i * 86_400_000).day);
    const hourKeys: string[] = [];
    for (let i = 47; i >= 0; i--) hourKeys.push(this.dayHour(now - i * 3_600_000).hour);
    const models = new Map<string, Counts>();
    const by_day = dayKeys.map((day) => {
      const c = zero();
      for (const id of keyIds) {
        for (const [model, m] of this.keys.get(id)?.days.get(day) ?? []) {
          addTo(c, m);
          addTo(models.get(model) ?? models.set(model, zero()).get(model)!, m);
        }
      }
      return { day, ...c };
    });
    const by_hour = hourKeys.map((hour) => {
      const c = zero();
      for (const id of keyIds) addTo(c, sum(this.keys.get(id)?.hours.get(hour)?.values()));
      return { hour, ...c };
    });
    const by_model = [...models].map(([model, c]) => ({ model, ...c })).sort((a, b) => b.tokens - a.tokens);
    return { by_day, by_hour, by_model };
  }

  /** Every (day, model) bucket of one key within the last `days` days, oldest first (CSV export). */
  *dayRows(keyId: string, days: number, now: number): IterableIterator<{ day: string; model: string } & Counts> {
    const first = this.dayHour(now - (days - 1) * 86_400_000).day;
    const u = this.keys.get(keyId);
    if (!u) return;
    for (const day of [...u.days.keys()].filter((d) => d >= first).sort()) {
      for (const [model, c] of u.days.get(day)!) yield { day, model, ...c };
    }
  }

  /** Drops hourly buckets older than HOURLY_RETENTION_DAYS (daily ones are kept). */
  pruneHours(now: number): void {
    const oldest = this.dayHour(now - this.hourlyRetentionDays * 86_400_000).hour;
    for (const u of this.keys.values()) for (const h of u.hours.keys()) if (h < oldest) u.hours.delete(h);
  }

  private static entry(u: KeyUsage): unknown {
    const maps = (m: Map<string, Map<string, Counts>>) => Object.fromEntries([...m].map(([k, v]) => [k, Object.fromEntries(v)]));
    return { total: u.total, last_used: u.last_used, unmanaged: u.unmanaged, days: maps(u.days), hours: maps(u.hours) };
  }

  /** One line of JSON per key ([id, aggregates]): checkpoints stream these, never one huge string. */
  *entryLines(): IterableIterator<string> {
    for (const [id, u] of this.keys) yield JSON.stringify([id, UsageLedger.entry(u)]) + '\n';
  }

  toJSON(): unknown {
    return Object.fromEntries([...this.keys].map(([id, u]) => [id, UsageLedger.entry(u)]));
  }

  /** Restores one key's aggregates from an entry line (or a toJSON() value). */
  loadEntry(id: string, raw: any): void {
    const maps = (o: Record<string, Record<string, Counts>>) =>
      new Map(Object.entries(o ?? {}).map(([k, v]) => [k, new Map(Object.entries(v).map(([m, c]) => [m, { ...zero(), ...c }]))]));
    this.keys.set(id, { total: { ...zero(), ...raw.total }, last_used: raw.last_used ?? null, unmanaged: !!raw.unmanaged, days: maps(raw.days), hours: maps(raw.hours) });
  }

  load(data: unknown): void {
    this.keys.clear();
    for (const [id, raw] of Object.entries((data ?? {}) as Record<string, unknown>)) this.loadEntry(id, raw);
  }
}

function bucket(map: Map<string, Map<string, Counts>>, slot: string, model: string): Counts {
  let m = map.get(slot);
  if (!m) map.set(slot, (m = new Map()));
  let c = m.get(model);
  if (!c) m.set(model, (c = zero()));
  return c;
}

function addTo(into: Counts, c: Counts): void {
  for (const k of Object.keys(into) as (keyof Counts)[]) into[k] += c[k];
}

function sum(items: Iterable<Counts> | undefined): Counts {
  const c = zero();
  for (const x of items ?? []) addTo(c, x);
  return c;
}
