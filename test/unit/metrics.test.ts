import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { Histogram, Registry } from 'prom-client';
import { StatusHistogram } from '../../src/metrics.js';

describe('StatusHistogram', () => {
  it('scrapes to the same text as prom-client’s Histogram given the same observations', async () => {
    const bounds = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];
    const observation = fc.record({
      status: fc.constantFrom(200, 201, 400, 429, 502, 503),
      // Values on the bounds themselves too (a bucket is "less than or equal").
      seconds: fc.oneof(fc.double({ min: 0, max: 400, noNaN: true }), fc.constantFrom(...bounds)),
    });
    await fc.assert(fc.asyncProperty(fc.array(observation, { maxLength: 200 }), async (observations) => {
      const theirs = new Registry();
      const ours = new Registry();
      const reference = new Histogram({ name: 'd_seconds', help: 'durations', labelNames: ['status'], buckets: bounds, registers: [theirs] });
      const counted = new StatusHistogram('d_seconds', 'durations', bounds, ours);
      for (const o of observations) {
        reference.labels(String(o.status)).observe(o.seconds);
        counted.observe(o.status, o.seconds);
      }
      assert.equal(await ours.metrics(), await theirs.metrics());
    }), { numRuns: 200 });
  });
});
