import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageLedger } from '../../src/usage/ledger.js';
import { toStoredEvent } from '../../src/usage/record.js';

const resolve = (k: string) => (k === 'usr_pool_0001_aa' ? { id: '0001', managed: true } : { id: 'hx', managed: false });
const v7 = {
  timestamp: '2026-11-23T00:30:00.123456789+08:00', latency_ms: 733, source: 'sk-upstream-SECRET', auth_index: 'abc',
  tokens: { input_tokens: 42, output_tokens: 17, reasoning_tokens: 5, cached_tokens: 10, total_tokens: 64 },
  token_breakdown: { total_tokens: 59, input: { total_tokens: 42, cache_read_tokens: 10 }, output: { total_tokens: 17, reasoning_tokens: 5 } },
  failed: false, model: 'fake-model-1', alias: 'fake-chat', api_key: 'usr_pool_0001_aa', request_id: '5e0b91c4',
};

describe('usage records', () => {
  it('keep the key id and never the key or the upstream credential', () => {
    const e = toStoredEvent(v7, resolve, 0)!;
    const text = JSON.stringify(e);
    assert.equal(e.k, '0001');
    assert.ok(!text.includes('usr_pool_0001_aa') && !text.includes('SECRET'));
  });

  it('count tokens from token_breakdown when present, else tokens.total_tokens, never a sum of fields', () => {
    assert.equal(toStoredEvent(v7, resolve, 0)!.tok, 59);
    const { token_breakdown: _b, ...v6 } = v7;
    assert.equal(toStoredEvent(v6, resolve, 0)!.tok, 64);
    assert.deepEqual([toStoredEvent(v7, resolve, 0)!.in, toStoredEvent(v7, resolve, 0)!.out, toStoredEvent(v7, resolve, 0)!.rea, toStoredEvent(v7, resolve, 0)!.cac], [42, 17, 5, 10]);
  });

  it('normalise the server’s offset to UTC, and mark failures and keys of others', () => {
    const e = toStoredEvent({ ...v7, failed: true, api_key: 'sk-operator' }, resolve, 0)!;
    assert.equal(e.t, Date.parse('2026-11-22T16:30:00.123Z'));
    assert.equal(e.f, 1);
    assert.equal(e.x, 1);
    assert.equal(e.a, 'fake-chat');
  });

  it('are not refresh payloads or anything without a timestamp', () => {
    for (const raw of [{ support_refresh: true }, { refresh: true }, null, 'x', [], { tokens: {} }]) {
      assert.equal(toStoredEvent(raw, resolve, 0), null);
    }
  });
});

describe('usage ledger', () => {
  it('puts a +08:00 record on its day in TIMEZONE, not on the UTC day', () => {
    const shanghai = new UsageLedger('Asia/Shanghai');
    const utc = new UsageLedger('UTC');
    const e = toStoredEvent(v7, resolve, 0)!; // 00:30 on the 23rd in Shanghai = 16:30 on the 22nd UTC
    shanghai.add(e);
    utc.add(e);
    const now = Date.parse('2026-11-23T02:00:00Z');
    assert.equal(shanghai.today('0001', now).requests, 1);
    assert.equal(shanghai.series(['0001'], 2, now).by_day.map((d) => `${d.day}:${d.requests}`).join(), '2026-11-22:0,2026-11-23:1');
    assert.equal(utc.series(['0001'], 2, now).by_day.map((d) => `${d.day}:${d.requests}`).join(), '2026-11-22:1,2026-11-23:0');
  });

  it('counts failed attempts apart, without tokens, and survives a round trip through JSON', () => {
    const l = new UsageLedger('Asia/Shanghai');
    l.add(toStoredEvent(v7, resolve, 0)!);
    l.add(toStoredEvent({ ...v7, failed: true }, resolve, 0)!);
    const t = l.totals('0001');
    assert.deepEqual([t.requests, t.failed, t.tokens], [1, 1, 59]);
    const copy = new UsageLedger('Asia/Shanghai');
    copy.load(JSON.parse(JSON.stringify(l.toJSON())));
    assert.deepEqual(copy.totals('0001'), t);
  });

  it('knows when the day ends in its zone, across daylight-saving changes', () => {
    const at = (tz: string, now: string) => new Date(new UsageLedger(tz).nextDayStart(Date.parse(now))).toISOString();
    assert.equal(at('Asia/Shanghai', '2026-11-22T15:59:59Z'), '2026-11-22T16:00:00.000Z');
    assert.equal(at('Asia/Shanghai', '2026-11-22T16:00:00Z'), '2026-11-23T16:00:00.000Z');
    assert.equal(at('America/New_York', '2026-03-08T03:00:00Z'), '2026-03-08T05:00:00.000Z');
    assert.equal(at('America/New_York', '2026-03-08T06:00:00Z'), '2026-03-09T04:00:00.000Z');
    assert.equal(at('America/New_York', '2026-11-01T02:00:00Z'), '2026-11-01T04:00:00.000Z');
  });
});

describe('usage checkpoints', () => {
  it('stream the aggregates as one line per key, so no single string has to hold them all', () => {
    const l = new UsageLedger('UTC');
    for (let k = 0; k < 50; k++) l.add({ k: `k${k}`, m: 'm', t: Date.parse('2026-11-22T10:00:00Z'), tok: k, in: k, out: 0, rea: 0, cac: 0 });
    const lines = [...l.entryLines()];
    assert.equal(lines.length, 50);
    const copy = new UsageLedger('UTC');
    for (const line of lines) { const [id, e] = JSON.parse(line); copy.loadEntry(id, e); }
    assert.deepEqual(copy.totals('k49'), l.totals('k49'));
  });
});
