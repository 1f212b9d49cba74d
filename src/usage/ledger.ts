/**
 * Usage aggregates per key: totals, per day × model and per hour × model, with days and hours in
 * TIMEZONE. Ingestion (the usage sources) feeds it; the stats queries read it.
 */
export interface UsageEvent { key_id: string; model: string; at: number; tokens: number; failed: boolean }
export interface Counts { requests: number; failed: number; tokens: number }

interface KeyUsage {
  total: Counts;
  last_used: number | null;
  days: Map<string, Map<string, Counts>>;   // 'YYYY-MM-DD' → model → counts
  hours: Map<string, Map<string, Counts>>;  // 'YYYY-MM-DDTHH' → model → counts
}

const zero = (): Counts => ({ requests: 0, failed: 0, tokens: 0 });

export class UsageLedger {
  private readonly keys = new Map<string, KeyUsage>();
  private readonly fmt: Intl.DateTimeFormat;

  constructor(readonly timeZone: string) {
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

  add(e: UsageEvent): void {
    let u = this.keys.get(e.key_id);
    if (!u) this.keys.set(e.key_id, (u = { total: zero(), last_used: null, days: new Map(), hours: new Map() }));
    const { day, hour } = this.dayHour(e.at);
    for (const c of [u.total, bucket(u.days, day, e.model), bucket(u.hours, hour, e.model)]) {
      if (e.failed) c.failed++; else { c.requests++; c.tokens += e.tokens; }
    }
    if (!e.failed && (u.last_used === null || e.at > u.last_used)) u.last_used = e.at;
  }

  totals(keyId: string): Counts & { last_used: number | null } {
    const u = this.keys.get(keyId);
    return u ? { ...u.total, last_used: u.last_used } : { ...zero(), last_used: null };
  }

  /** One key's counts on the calendar day of `now`. */
  today(keyId: string, now: number): Counts {
    return sum(this.keys.get(keyId)?.days.get(this.dayHour(now).day)?.values());
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
}

function bucket(map: Map<string, Map<string, Counts>>, slot: string, model: string): Counts {
  let m = map.get(slot);
  if (!m) map.set(slot, (m = new Map()));
  let c = m.get(model);
  if (!c) m.set(model, (c = zero()));
  return c;
}

function addTo(into: Counts, c: Counts): void {
  into.requests += c.requests;
  into.failed += c.failed;
  into.tokens += c.tokens;
}

function sum(items: Iterable<Counts> | undefined): Counts {
  const c = zero();
  for (const x of items ?? []) addTo(c, x);
  return c;
}
