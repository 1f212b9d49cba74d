/** Time, passed in so tests can move it (midnight resets, bans, backoff). */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A clock tests set by hand. */
export class ManualClock implements Clock {
  constructor(private t: number = Date.now()) {}
  now(): number { return this.t; }
  set(t: number | Date): void { this.t = typeof t === 'number' ? t : t.getTime(); }
  advance(ms: number): void { this.t += ms; }
}
