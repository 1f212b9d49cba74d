/** Time, passed in so tests can move it (midnight resets, bans, backoff). */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };
