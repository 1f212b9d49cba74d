import fc from 'fast-check';

/**
 * A seeded random source for fault tests: the seed is printed, and KP_SEED=<seed> replays a run.
 * (mulberry32: small, fast, and good enough for choosing delays.)
 */
export function seeded(name: string): { seed: number; next(): number; between(lo: number, hi: number): number } {
  const seed = process.env.KP_SEED ? Number(process.env.KP_SEED) : Math.floor(Math.random() * 2 ** 31);
  process.stderr.write(`# ${name}: seed ${seed} (KP_SEED=${seed} to replay)\n`);
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { seed, next, between: (lo, hi) => lo + next() * (hi - lo) };
}

/**
 * fast-check sizes every array and string "small" (about ten items) unless told otherwise, whatever
 * its `maxLength`: a property over `fc.string({ maxLength: 300 })` never saw a string past twenty
 * characters. In this project's properties a stated upper bound is what they explore up to. Set when
 * this module loads, before any test file builds its arbitraries (fast-check reads it then).
 */
fc.configureGlobal({ ...fc.readConfigureGlobal(), defaultSizeToMaxWhenMaxSpecified: true });

/** fast-check parameters with a printed seed (KP_SEED=<seed> replays the run) and `numRuns` cases. */
export function seededFc(name: string, numRuns: number): { seed: number; numRuns: number } {
  const seed = process.env.KP_SEED ? Number(process.env.KP_SEED) : Math.floor(Math.random() * 2 ** 31);
  process.stderr.write(`# ${name}: seed ${seed} (KP_SEED=${seed} to replay)\n`);
  return { seed, numRuns };
}
