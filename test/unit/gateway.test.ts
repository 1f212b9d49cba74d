import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MessageChannel } from 'node:worker_threads';
import fc from 'fast-check';
import { duration, StartTimes } from '../../src/gateway/admission.js';
import { ChangeReceiver, ChangeSender } from '../../src/gateway/changes.js';
import { candidates, stripOthers } from '../../src/gateway/credentials.js';
import { semiSpaceFlag } from '../../src/gateway/host.js';
import { geminiModel, ModelScanner } from '../../src/gateway/model-scan.js';
import { modelAllowed } from '../../src/gateway/server.js';
import { seededFc } from '../support/random.js';

describe('reading a body’s model as it streams', () => {
  it('finds what JSON.parse finds at the top level, however the bytes are cut (property)', () => {
    const body = fc.record({
      before: fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 4 }),
      model: fc.option(fc.oneof(fc.string({ unit: 'grapheme' }), fc.jsonValue()), { nil: undefined }),
      after: fc.dictionary(fc.string(), fc.jsonValue(), { maxKeys: 4 }),
      space: fc.constantFrom('', ' ', '\n  '),
    });
    fc.assert(fc.property(body, fc.array(fc.integer({ min: 1, max: 7 }), { minLength: 1 }), (b, cuts) => {
      const obj: Record<string, unknown> = { ...b.before };
      delete obj.model;
      if (b.model !== undefined) obj.model = b.model;
      Object.assign(obj, Object.fromEntries(Object.entries(b.after).filter(([k]) => k !== 'model')));
      const text = JSON.stringify(obj, null, b.space || undefined);
      const expected = typeof obj.model === 'string' ? obj.model : null;
      const bytes = Buffer.from(text);
      const scanner = new ModelScanner();
      let at = 0;
      let i = 0;
      while (at < bytes.length && !scanner.result) {
        const n = cuts[i++ % cuts.length]!;
        scanner.push(bytes.subarray(at, at + n));
        at += n;
      }
      assert.deepEqual((scanner.result ?? scanner.end()).model, expected, text);
    }), seededFc('model scanner', 2000));
  });

  it('stops at the model: a huge rest is never read; a non-object has none', () => {
    const s = new ModelScanner();
    assert.deepEqual(s.push(Buffer.from('{"messages":[{"role":"user","content":"{\\"model\\":\\"no\\"}"}],"model":"claude-x","pad":"')), { model: 'claude-x' });
    assert.deepEqual(new ModelScanner().push(Buffer.from('\ufeff["model","x"]')), { model: null });
    assert.deepEqual(new ModelScanner().push(Buffer.from('{"model":5}')), { model: null });
    assert.deepEqual(new ModelScanner().push(Buffer.from('{"a":{"model":"inner"}}')), { model: null });
    assert.equal(geminiModel('/v1beta/models/gemini-2.5-pro:streamGenerateContent'), 'gemini-2.5-pro');
    assert.equal(geminiModel('/v1beta/models'), null);
  });
});

describe('keys as CLIProxyAPI reads them', () => {
  it('in its order, and strips the others without touching the rest of the query', () => {
    const found = candidates({ authorization: 'Bearer a', 'x-goog-api-key': 'b', 'x-api-key': 'c' }, 'key=d&x=1&auth_token=e');
    assert.deepEqual(found.map((c) => `${c.place}=${c.value}`), ['authorization=a', 'x-goog-api-key=b', 'x-api-key=c', 'key=d', 'auth_token=e']);
    assert.deepEqual(candidates({ authorization: 'raw-key' }, '').map((c) => c.value), ['raw-key'], 'without Bearer, as is');
    const headers: Record<string, string | undefined> = { authorization: 'Bearer a', 'x-goog-api-key': 'b', 'x-api-key': 'c', other: 'x' };
    assert.equal(stripOthers(headers, 'a=%20+1&key=d&k%65y=d2&auth_token=e&z', 'key'), 'a=%20+1&key=d&k%65y=d2&z');
    assert.deepEqual(headers, { other: 'x' });
  });

  it('matches models by name or by a prefix ending in *; says when a limit resets', () => {
    assert.ok(modelAllowed(['claude-*'], 'claude-sonnet-4'));
    assert.ok(!modelAllowed(['claude-*', 'gpt-4o'], 'gpt-4o-mini'));
    assert.deepEqual([duration(5), duration(65), duration(3600), duration(38985)], ['5s', '1m5s', '1h0m0s', '10h49m45s']);
  });
});

describe('the start times an rpm_limit counts', () => {
  it('keeps what a plain array kept, through every growth and wrap of the ring (property)', () => {
    // Steps: a start at a later time, or forgetting the starts up to some time.
    // Mostly starts, so the ring fills and grows while its oldest is not at the front.
    const step = fc.oneof({ arbitrary: fc.record({ push: fc.integer({ min: 0, max: 50 }) }), weight: 6 },
      { arbitrary: fc.record({ drop: fc.integer({ min: 0, max: 400 }) }), weight: 1 });
    fc.assert(fc.property(fc.array(step, { minLength: 20, maxLength: 400, size: 'max' }), (steps) => {
      const ring = new StartTimes();
      const model: number[] = [];
      let now = 0;
      for (const s of steps) {
        if ('push' in s) {
          now += s.push;
          ring.push(now);
          model.push(now);
        } else {
          const until = now - s.drop;
          ring.dropUntil(until);
          while (model.length && model[0]! <= until) model.shift();
        }
        assert.equal(ring.size, model.length);
        if (model.length) assert.equal(ring.oldest(), model[0]);
      }
    }), seededFc('rpm start times', 500));
  });
});

describe('changes sent to the gateway’s thread', () => {
  it('are applied, all and in order, when the receiver catches up, with no turn of its event loop in between', async () => {
    const { port1, port2 } = new MessageChannel();
    const sender = new ChangeSender<number>(port1);
    sender.post(-1); // made before the receiver exists: applied as it starts
    const seen: number[] = [];
    const receiver = new ChangeReceiver<number>(sender.shared, port2, (n) => seen.push(n));
    try {
      assert.deepEqual(seen, [-1]);
      let next = 0;
      for (let round = 0; round < 50; round++) {
        for (let i = 0; i < 1 + (round % 7) * 3; i++) sender.post(next++);
        receiver.catchUp();
        assert.equal(seen.length, next + 1, `round ${round}: every change posted so far`);
      }
      assert.deepEqual(seen, [-1, ...Array.from({ length: next }, (_, i) => i)]);
      // With no one catching up, the receiver's event loop delivers them.
      sender.post(next++);
      sender.post(next++);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.deepEqual(seen.slice(-2), [next - 2, next - 1]);
    } finally {
      receiver.close();
      sender.close();
    }
  });
});

describe('the semi-space size node was started with (put back after the gateway’s thread has its own)', () => {
  it('is read from node’s arguments and NODE_OPTIONS, in both spellings, the last one winning', () => {
    assert.equal(semiSpaceFlag([]), 0);
    assert.equal(semiSpaceFlag(['--max-semi-space-size=4']), 4);
    assert.equal(semiSpaceFlag(['--max_semi_space_size', '32', '--expose-gc']), 32);
    assert.equal(semiSpaceFlag(['--max-semi-space-size=4', '', '--max-semi-space-size=8']), 8);
    assert.equal(semiSpaceFlag(['--max-old-space-size=512']), 0);
  });
});
