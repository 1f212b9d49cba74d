import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Zone } from '../../src/time/zone.js';

const H = 3_600_000;
const iso = (ms: number) => new Date(ms).toISOString();

/**
 * Each case: a zone, a day, when that day starts (UTC), how long it is, and the offsets at its start
 * and at its end — worked out by hand from the zone's rules, not from the code under test.
 */
const cases: [zone: string, day: string, startsUtc: string, hours: number, offsets: [string, string], why: string][] = [
  ['Asia/Shanghai', '2026-11-23', '2026-11-22T16:00:00.000Z', 24, ['+08:00', '+08:00'], 'no daylight saving'],
  ['Asia/Kolkata', '2026-11-23', '2026-11-22T18:30:00.000Z', 24, ['+05:30', '+05:30'], 'a half-hour offset'],
  ['Asia/Kathmandu', '2026-11-23', '2026-11-22T18:15:00.000Z', 24, ['+05:45', '+05:45'], 'a quarter-hour offset'],
  ['America/Santiago', '2026-09-05', '2026-09-05T04:00:00.000Z', 24, ['-04:00', '-04:00'], 'the day before DST starts at midnight'],
  ['America/Santiago', '2026-09-06', '2026-09-06T04:00:00.000Z', 23, ['-03:00', '-03:00'], 'midnight does not exist: the day starts at 01:00'],
  ['America/Santiago', '2026-04-04', '2026-04-04T03:00:00.000Z', 25, ['-03:00', '-04:00'], '23:00-24:00 happens twice'],
  ['America/Havana', '2026-03-08', '2026-03-08T05:00:00.000Z', 23, ['-04:00', '-04:00'], 'DST starts at midnight: the day starts at 01:00'],
  ['America/Havana', '2026-11-01', '2026-11-01T04:00:00.000Z', 25, ['-04:00', '-05:00'], 'DST ends at 01:00: the day starts at the first of two midnights'],
  ['Asia/Beirut', '2026-03-29', '2026-03-28T22:00:00.000Z', 23, ['+03:00', '+03:00'], 'DST starts at midnight: the day starts at 01:00'],
  ['Asia/Beirut', '2026-10-24', '2026-10-23T21:00:00.000Z', 25, ['+03:00', '+02:00'], 'DST ends at midnight: the next day starts at the second 00:00'],
  ['Europe/London', '2026-03-29', '2026-03-29T00:00:00.000Z', 23, ['+00:00', '+01:00'], 'clocks go forward at 01:00'],
  ['Europe/London', '2026-10-25', '2026-10-24T23:00:00.000Z', 25, ['+01:00', '+00:00'], 'clocks go back at 02:00'],
];

describe('time zones', () => {
  for (const [name, day, startsUtc, hours, [offStart, offEnd], why] of cases) {
    it(`${name} ${day}: ${why}`, () => {
      const z = new Zone(name);
      const start = z.startOfDay(day);
      assert.equal(iso(start), startsUtc, 'the day starts');
      const next = z.nextDayStart(start);
      assert.equal((next - start) / H, hours, 'the day lasts');
      assert.equal(z.nextDayStart(next - 1), next, 'the last instant of the day resets at the same moment');
      assert.equal(z.day(start), day);
      assert.equal(z.day(start - 1), z.addDays(day, -1), 'the instant before belongs to the day before');
      assert.equal(z.day(next - 1), day);
      assert.equal(z.day(next), z.addDays(day, 1));
      assert.equal(z.dayStart(start + hours * H / 2), start);
      assert.equal(z.offsetLabel(start), offStart);
      assert.equal(z.offsetLabel(next - 1), offEnd);
      // Every hour of the day once, in order, and each one's start lies inside the day.
      const hs = z.hoursBetween(start, next - 1);
      assert.equal(new Set(hs).size, hs.length);
      assert.ok(hs.every((h) => h.startsWith(day)));
      assert.equal(hs.length, Math.min(24, hours), 'a repeated hour is one hour of the chart');
      // The day-and-hour memo never hands out a stale day across the boundary.
      for (let t = start - 2 * H; t < next + 2 * H; t += 7 * 60_000) assert.equal(z.day(t), new Zone(name).day(t));
    });
  }

  it('a limit reached late on 2026-09-05 in Santiago lifts once, at the start of 2026-09-06', () => {
    const z = new Zone('America/Santiago');
    const lateEvening = Date.parse('2026-09-06T02:30:00Z'); // 22:30 on the 5th, -04:00
    const lift = z.nextDayStart(lateEvening);
    assert.equal(iso(lift), '2026-09-06T04:00:00.000Z'); // 01:00 on the 6th, -03:00
    assert.ok(lift > lateEvening);
    assert.equal(z.day(lift), '2026-09-06');
    assert.equal(z.nextDayStart(lift), Date.parse('2026-09-07T03:00:00Z'), 'and the next reset is a normal midnight');
  });

  it('reads wall-clock times typed into forms, and refuses one that a change skips', () => {
    const z = new Zone('Europe/London');
    assert.equal(iso(z.parseWallClock('2026-07-01T09:30')!), '2026-07-01T08:30:00.000Z');
    assert.equal(iso(z.parseWallClock('2026-12-01T09:30')!), '2026-12-01T09:30:00.000Z');
    assert.equal(z.parseWallClock('2026-03-29T01:30'), null, 'there is no 01:30 that night');
    assert.equal(z.parseWallClock('2026-02-30T10:00'), null);
    assert.equal(z.wallClock(Date.parse('2026-07-01T08:30:00Z')), '2026-07-01T09:30');
    assert.equal(z.format(Date.parse('2026-07-01T08:30:00Z')), '2026-07-01 09:30 +01:00');
  });

  it('walks calendar days, not 24-hour steps', () => {
    const z = new Zone('Europe/London');
    assert.deepEqual(z.daysBetween('2026-03-28', '2026-03-30'), ['2026-03-28', '2026-03-29', '2026-03-30']);
    assert.equal(z.addDays('2026-10-25', 1), '2026-10-26');
    assert.equal(z.addDays('2026-03-01', -1), '2026-02-28');
    assert.ok(!Zone.isValid('Mars/Olympus_Mons') && Zone.isValid('Asia/Kathmandu'));
    assert.ok(Zone.isDay('2026-02-28') && !Zone.isDay('2026-02-30') && !Zone.isDay('2026-2-3'));
  });
});
