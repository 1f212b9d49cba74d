import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UsageLedger } from '../../src/usage/ledger.js';
import { toStoredEvent } from '../../src/usage/record.js';
import { rm } from 'node:fs/promises';
import { silentLogger } from '../../src/log.js';
import { KeysStore } from '../../src/store/keys-store.js';
import { Ingestor } from '../../src/usage/ingest.js';
import { ManualClock } from '../support/clock.js';
import { tempDir } from '../support/harness.js';

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
  it('puts a +08:00 record on its day in TIMEZONE, not on the UTC day', async () => {
    const shanghai = new UsageLedger('Asia/Shanghai');
    const utc = new UsageLedger('UTC');
    const e = toStoredEvent(v7, resolve, 0)!; // 00:30 on the 23rd in Shanghai = 16:30 on the 22nd UTC
    shanghai.add(e);
    utc.add(e);
    const now = Date.parse('2026-11-23T02:00:00Z');
    assert.equal(shanghai.today('0001', now).requests, 1);
    assert.equal((await shanghai.series(['0001'], 2, now)).by_day.map((d) => `${d.day}:${d.requests}`).join(), '2026-11-22:0,2026-11-23:1');
    assert.equal((await utc.series(['0001'], 2, now)).by_day.map((d) => `${d.day}:${d.requests}`).join(), '2026-11-22:1,2026-11-23:0');
  });

  it('counts failed attempts apart and without tokens', () => {
    const l = new UsageLedger('Asia/Shanghai');
    l.add(toStoredEvent(v7, resolve, 0)!);
    l.add(toStoredEvent({ ...v7, failed: true }, resolve, 0)!);
    const t = l.totals('0001');
    assert.deepEqual([t.requests, t.failed, t.tokens], [1, 1, 59]);
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

const rowsOf = async (l: UsageLedger, id: string, days: number, now: number) => {
  const out: string[] = [];
  for (const day of l.daysWithin(days, now)) await l.eachDay([day], (_d, b) => l.rowsOf(b, [id], (_id, model, c) => out.push(`${day} ${model} ${JSON.stringify(c)}`)));
  return out;
};

describe('usage checkpoints', () => {
  const roundTrip = (l: UsageLedger, tz: string, today: string): UsageLedger => {
    const copy = new UsageLedger(tz, 30);
    copy.restore(JSON.parse(JSON.stringify(l.index())), l.encodeTotals());
    for (const unit of l.allUnits()) copy.loadUnit(unit, Buffer.concat(l.encodeUnit(unit, unit.slice(2) >= today)));
    return copy;
  };

  it('keep every day, hour, model and field through the binary unit files, with large and odd values', async () => {
    const l = new UsageLedger('Asia/Shanghai', 30);
    const now = Date.parse('2026-11-22T10:00:00Z');
    const big = 2 ** 40 + 3; // beyond 32 bits: a token count that must not wrap
    for (let k = 0; k < 40; k++) {
      for (let d = 0; d < 20; d++) {
        const t = now - d * 86_400_000 - k * 1000;
        l.add({ k: `k${k}`, m: `m${d % 3}`, t, tok: k === 7 ? big : k * 10 + d, in: k, out: d, rea: k % 2, cac: 5 });
        l.add({ k: `k${k}`, m: `m${d % 3}`, t, tok: 0, in: 0, out: 0, rea: 0, cac: 0, f: 1 });
      }
    }
    l.add({ k: 'hx', m: 'm0', t: now, tok: 3, in: 1, out: 1, rea: 0, cac: 0, x: 1 }); // tokens below in + out
    const copy = roundTrip(l, 'Asia/Shanghai', '2026-11-22');
    assert.deepEqual(copy.totals('k7'), l.totals('k7'));
    assert.equal(copy.totals('k7').tokens, 20 * big);
    assert.deepEqual(await copy.series(['k3', 'k7'], 30, now), await l.series(['k3', 'k7'], 30, now));
    assert.equal((await copy.series(['k3'], 30, now)).by_day.reduce((s, d) => s + d.requests, 0), 20);
    assert.deepEqual(await rowsOf(copy, 'k5', 30, now), await rowsOf(l, 'k5', 30, now));
    assert.deepEqual(copy.unmanagedIds(), ['hx']);
    assert.equal(copy.totals('hx').tokens, 3);
    // A late record for a frozen day thaws it and counts.
    copy.add({ k: 'k5', m: 'm0', t: now - 9 * 86_400_000, tok: 1, in: 1, out: 0, rea: 0, cac: 0 });
    assert.ok(copy.dirtyUnits().includes('d:2026-11-13'));
    assert.equal((await copy.series(['k5'], 30, now)).by_day.find((d) => d.day === '2026-11-13')!.requests, 2);
  });

  it('leave old days on disk, read them for queries and exports, and warm one for a late record', async () => {
    const dir = await tempDir();
    const clock = new ManualClock(Date.parse('2026-08-01T04:00:00Z'));
    const open = async () => {
      const store = await KeysStore.open(dir, 'usr_pool_', silentLogger());
      const ledger = new UsageLedger('Asia/Shanghai', 14);
      const ingestor = await Ingestor.open({ dataDir: dir, store, ledger, log: silentLogger(), clock });
      return { store, ledger, ingestor, close: async () => { await ingestor.close(); await store.close(); } };
    };
    try {
      let p = await open();
      const raw = (t: number, key = 'sk-x') => ({ timestamp: new Date(t).toISOString(), api_key: key, model: 'm', failed: false, tokens: { input_tokens: 2, output_tokens: 1, total_tokens: 3 } });
      for (let d = 0; d < 90; d++) {
        await p.ingestor.ingest([raw(clock.now()), raw(clock.now() + 1000)]);
        clock.advance(86_400_000);
        if (d % 10 === 9) await p.ingestor.checkpoint();
      }
      const id = p.ledger.unmanagedIds()[0]!;
      const now = clock.now();
      const before = await p.ledger.series([id], 91, now); // the first day is 90 days back
      await p.close();
      p = await open();
      const held = p.ledger.allUnits().length;
      assert.ok(held >= 90, `${held} units on disk`);
      assert.ok(p.ledger.rowCount <= 33, `only recent days are in memory (${p.ledger.rowCount} rows)`);
      const after = await p.ledger.series([id], 91, now);
      assert.deepEqual(after, before);
      assert.equal(after.by_day.reduce((s, d) => s + d.requests, 0), 180);
      assert.equal((await rowsOf(p.ledger, id, 91, now)).length, 90);
      // A late record for a day 60 days back: the day is read, counted and written again.
      await p.ingestor.ingest([raw(now - 60 * 86_400_000)]);
      await p.close();
      p = await open();
      const late = await p.ledger.series([id], 91, now);
      assert.equal(late.by_day.reduce((s, d) => s + d.requests, 0), 181);
      assert.equal(p.ledger.totals(id).requests, 181);
      await p.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
  it('read the JSON aggregates of earlier versions', async () => {
    const l = new UsageLedger('UTC');
    l.loadLegacyEntry('k1', {
      total: { requests: 3, failed: 1, tokens: 30, input: 20, output: 10 }, last_used: Date.parse('2026-11-22T10:00:00Z'), unmanaged: false,
      days: { '2026-11-21': { a: { requests: 1, tokens: 10 } }, '2026-11-22': { a: { requests: 2, failed: 1, tokens: 20 } } },
      hours: { '2026-11-22T10': { a: { requests: 2, tokens: 20 } } },
    });
    const now = Date.parse('2026-11-22T11:00:00Z');
    assert.deepEqual([l.totals('k1').requests, l.today('k1', now).requests, l.today('k1', now).failed], [3, 2, 1]);
    assert.equal((await l.series(['k1'], 2, now)).by_hour.find((h) => h.hour === '2026-11-22T10')!.tokens, 20);
    assert.deepEqual(l.dirtyUnits(), ['d:2026-11-21', 'd:2026-11-22', 'h:2026-11-22']);
  });
});
