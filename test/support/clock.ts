import type { Clock } from '../../src/clock.js';

/** A clock tests set by hand. */
export class ManualClock implements Clock {
  constructor(private t: number = Date.now()) {}
  now(): number { return this.t; }
  set(t: number | Date): void { this.t = typeof t === 'number' ? t : t.getTime(); }
  advance(ms: number): void { this.t += ms; }
}
