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

  /** The calendar day and hour of an instant. Called for every ingested record, so memoised. */
  dayHour(ms: number): { day: string; hour: string } {
    const m = this.memo;
    if (ms >= m.from && ms < m.to) return { day: m.day, hour: m.hour };
    const t = this.at(ms);
    const day = t.toFormat('yyyy-MM-dd');
    const hour = `${day}T${t.toFormat('HH')}`;
    // Offsets and their changes are whole quarter hours in every zone, so local quarter hours are UTC
    // quarter hours, and every instant of this one has the same day and hour.
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

  /** The calendar day `n` days after `day` (negative: before). */
  addDays(day: string, n: number): string {
    return DateTime.fromISO(day, { zone: this.zone }).plus({ days: n }).toFormat('yyyy-MM-dd');
  }

  /** Calendar days from `from` to `to`, both included, oldest first. */
  daysBetween(from: string, to: string): string[] {
    const out: string[] = [];
    for (let d = from; d <= to && out.length <= 3700; d = this.addDays(d, 1)) out.push(d);
    return out;
  }

  /** Hours from the hour of `fromMs` to the hour of `toMs`, both included, oldest first (each once). */
  hoursBetween(fromMs: number, toMs: number): string[] {
    const out: string[] = [];
    let t = this.at(fromMs).startOf('hour');
    const end = this.at(toMs).startOf('hour').toMillis();
    while (t.toMillis() <= end && out.length <= 24 * 400) {
      const h = this.hour(t.toMillis());
      if (out.at(-1) !== h) out.push(h);
      t = t.plus({ hours: 1 });
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
