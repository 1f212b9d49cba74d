import { DateTime, IANAZone } from 'luxon';

/**
 * All calendar arithmetic of the portal, in one IANA zone (TIMEZONE), on Luxon: the day and hour a
 * usage record belongs to, when "today" starts and ends (daily limits reset then), how an instant
 * is shown, and how a wall-clock time typed into a form is read. Usage rollups, quotas and pages all
 * use this one module, so they never disagree about what "today" is.
 *
 * Days are 'YYYY-MM-DD' on the zone's calendar, hours 'YYYY-MM-DDTHH'. Where daylight saving starts
 * at midnight (America/Santiago, America/Havana, Asia/Beirut…) a day begins at 01:00; where it ends,
 * an hour happens twice and both are that hour. Both come from Luxon, never from hand-made offsets.
 */
export class Zone {
  readonly name: string;
  private readonly zone: IANAZone;
  /** The day and hour of the last instant asked for, valid for the whole local quarter hour around it. */
  private memo = { from: 0, to: -1, day: '', hour: '' };
  /** The zone's offset (minutes) by UTC quarter hour: asked of Luxon (Intl) once per quarter hour. */
  private readonly offsets = new Map<number, number>();

  constructor(name: string) {
    const zone = IANAZone.create(name);
    if (!zone.isValid) throw new Error(`unknown time zone ${name}`);
    this.zone = zone;
    this.name = zone.name;
  }

  static isValid(name: string): boolean {
    return IANAZone.isValidZone(name);
  }

  private at(ms: number): DateTime {
    return DateTime.fromMillis(ms, { zone: this.zone });
  }

  /**
   * The zone's offset from UTC at an instant, in minutes. Offsets and their changes are whole quarter
   * hours in every zone, so one answer holds for a whole UTC quarter hour.
   */
  private offsetMinutes(ms: number): number {
    const q = Math.floor(ms / 900_000);
    let off = this.offsets.get(q);
    if (off === undefined) {
      if (this.offsets.size > 20_000) this.offsets.clear();
      off = this.zone.offset(q * 900_000);
      this.offsets.set(q, off);
    }
    return off;
  }

  /** The calendar day and hour of an instant. Called for every ingested record and chart point, so cheap. */
  dayHour(ms: number): { day: string; hour: string } {
    const m = this.memo;
    if (ms >= m.from && ms < m.to) return { day: m.day, hour: m.hour };
    const local = new Date(ms + this.offsetMinutes(ms) * 60_000);
    const day = ymd(local);
    const hour = `${day}T${String(local.getUTCHours()).padStart(2, '0')}`;
    const from = ms - (((ms % 900_000) + 900_000) % 900_000);
    this.memo = { from, to: from + 900_000, day, hour };
    return { day, hour };
  }

  day(ms: number): string { return this.dayHour(ms).day; }
  hour(ms: number): string { return this.dayHour(ms).hour; }

  /**
   * The first instant of a calendar day: 01:00 where daylight saving starts at midnight, and the
   * first of two midnights where clocks go back to 00:00 (Luxon alone would take the second one,
   * and the hour between would belong to a day that had not started).
   */
  startOfDay(day: string): number {
    const start = DateTime.fromISO(day, { zone: this.zone }).startOf('day').toMillis();
    const before = this.at(start - 1);
    if (before.toFormat('yyyy-MM-dd') !== day) return start;
    return start - 1 - (((before.hour * 60 + before.minute) * 60 + before.second) * 1000 + before.millisecond);
  }

  /** The first instant of an hour 'YYYY-MM-DDTHH' (the earlier one when the hour repeats). */
  startOfHour(hour: string): number {
    return DateTime.fromISO(`${hour}:00`, { zone: this.zone }).toMillis();
  }

  /** The first instant of the day after the one `ms` falls in: daily limits reset then. */
  nextDayStart(ms: number): number {
    return this.startOfDay(this.addDays(this.day(ms), 1));
  }

  /** The first instant of the day `ms` falls in. */
  dayStart(ms: number): number {
    return this.startOfDay(this.day(ms));
  }

  /** The calendar day `n` days after `day` (negative: before). Calendar arithmetic needs no zone. */
  addDays(day: string, n: number): string {
    return ymd(new Date(Date.UTC(+day.slice(0, 4), +day.slice(5, 7) - 1, +day.slice(8, 10) + n)));
  }

  /** Calendar days from `from` to `to`, both included, oldest first. */
  daysBetween(from: string, to: string): string[] {
    const out: string[] = [];
    const t = new Date(Date.UTC(+from.slice(0, 4), +from.slice(5, 7) - 1, +from.slice(8, 10)));
    for (let d = ymd(t); d <= to && out.length <= 3700; t.setUTCDate(t.getUTCDate() + 1), d = ymd(t)) out.push(d);
    return out;
  }

  /** Hours from the hour of `fromMs` to the hour of `toMs`, both included, oldest first (each once). */
  hoursBetween(fromMs: number, toMs: number): string[] {
    const out: string[] = [];
    const last = this.hour(toMs);
    // Every hour starts on a UTC quarter hour: step through them and keep each new hour once.
    for (let t = fromMs - (((fromMs % 900_000) + 900_000) % 900_000); t <= toMs + 900_000 && out.length <= 24 * 400; t += 900_000) {
      const h = this.hour(t);
      if (out.at(-1) !== h && (out.length || t + 900_000 > fromMs)) out.push(h);
      if (h === last) break;
    }
    return out;
  }

  /** The zone's offset at an instant, as '+08:00'. */
  offsetLabel(ms: number): string {
    return this.at(ms).toFormat('ZZ');
  }

  /** An instant on the zone's wall clock as 'YYYY-MM-DDTHH:mm' (what a datetime-local field holds). */
  wallClock(ms: number): string {
    return this.at(ms).toFormat("yyyy-MM-dd'T'HH:mm");
  }

  /** An instant as people read it: '2026-11-23 14:05 +08:00'. */
  format(ms: number): string {
    return this.at(ms).toFormat('yyyy-MM-dd HH:mm ZZ');
  }

  /** An instant to the second, for lists of single events: '2026-11-23 14:05:09 +08:00'. */
  formatSeconds(ms: number): string {
    return this.at(ms).toFormat('yyyy-MM-dd HH:mm:ss ZZ');
  }

  /**
   * A wall-clock time typed in this zone ('YYYY-MM-DDTHH:mm') as an instant; null when it does not
   * exist (skipped by a daylight-saving change) or is not a date-time.
   */
  parseWallClock(text: string): number | null {
    if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/.test(text)) return null;
    const t = DateTime.fromISO(text, { zone: this.zone });
    if (!t.isValid || t.toFormat("yyyy-MM-dd'T'HH:mm") !== text) return null;
    return t.toMillis();
  }

  /** Whether 'YYYY-MM-DD' is a real calendar day. */
  static isDay(text: string): boolean {
    return /^\d{4}-\d{2}-\d{2}$/.test(text) && DateTime.fromISO(text, { zone: 'UTC' }).isValid;
  }
}

/** 'YYYY-MM-DD' of a Date's UTC fields. */
function ymd(d: Date): string {
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, '0')}-${String(d.getUTCDate()).padStart(2, '0')}`;
}
