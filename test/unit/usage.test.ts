import assert from 'node:assert/strict';
import { cpSync, existsSync, readFileSync, statSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { hashId } from '../../src/keys/format.js';
import { silentLogger } from '../../src/log.js';
import { importLegacyUsage } from '../../src/store/usage-legacy.js';
import { UsageStore } from '../../src/store/usage-store.js';
import { Zone } from '../../src/time/zone.js';
import { toUsageRow } from '../../src/usage/record.js';
import { ROOT_DIR } from '../../src/app.js';
import { tempDir } from '../support/harness.js';

const shanghai = new Zone('Asia/Shanghai');
const resolve = (k: string) => (k === 'usr_pool_0001_aa' ? { id: '0001', managed: true } : { id: 'hx', managed: false });
const v7 = {
  timestamp: '2026-11-23T00:30:00.123456789+08:00', latency_ms: 733, ttft_ms: 118, source: 'sk-upstream-SECRET', auth_index: 'abc',
  tokens: { input_tokens: 42, output_tokens: 17, reasoning_tokens: 5, cached_tokens: 10, total_tokens: 64 },
  token_breakdown: { total_tokens: 59, input: { total_tokens: 42, cache_read_tokens: 10 }, output: { total_tokens: 17, reasoning_tokens: 5 } },
  failed: false, fail: { status_code: 200, body: '' }, model: 'fake-model-1', alias: 'fake-chat', endpoint: 'POST /v1/chat/completions',
  api_key: 'usr_pool_0001_aa', request_id: '5e0b91c4', client_ip: '10.0.0.7', user_agent: 'claude-cli/2.0',
};
const row = (raw: object, zone = shanghai) => toUsageRow(raw, resolve, zone, 0)!;

describe('usage records', () => {
  it('keep the key id and never the key or the upstream credential', () => {
    const r = row(v7);
    const text = JSON.stringify(r);
    assert.equal(r.k, '0001');
    assert.equal(r.x, 0);
    assert.ok(!text.includes('usr_pool_0001_aa') && !text.includes('SECRET'));
    assert.deepEqual([r.endpoint, r.status, r.latency, r.ttft, r.rid, r.ip, r.ua], ['POST /v1/chat/completions', 200, 733, 118, '5e0b91c4', '10.0.0.7', 'claude-cli/2.0']);
  });

  it('count tokens from token_breakdown when present, else tokens.total_tokens, never a sum of fields', () => {
    assert.equal(row(v7).tokens, 59);
    const { token_breakdown: _b, ...v6 } = v7;
    assert.equal(row(v6).tokens, 64);
    const r = row(v7);
    assert.deepEqual([r.input, r.output, r.reasoning, r.cached], [42, 17, 5, 10]);
  });

  it('take the split from tokens when token_breakdown is empty or partial', () => {
    const empty = row({ ...v7, token_breakdown: {} });
    assert.deepEqual([empty.tokens, empty.input, empty.output, empty.reasoning, empty.cached], [64, 42, 17, 5, 10]);
    const partial = row({ ...v7, token_breakdown: { total_tokens: 59, input: {} } });
    assert.deepEqual([partial.tokens, partial.input, partial.output], [59, 42, 17]);
  });

  it('normalise the server’s offset to UTC, and put the record on its day and hour in TIMEZONE', () => {
    const r = row({ ...v7, failed: true, api_key: 'sk-operator' });
    assert.equal(r.ts, Date.parse('2026-11-22T16:30:00.123Z'));
    assert.deepEqual([r.day, r.hour], [20261123, 2026112300]);
    assert.deepEqual([r.failed, r.x, r.alias], [1, 1, 'fake-chat']);
    const london = row(v7, new Zone('Europe/London'));
    assert.deepEqual([london.day, london.hour], [20261122, 2026112216]);
  });

  it('tell two attempts of one request apart, and a replay from the original', () => {
    const retry = row({ ...v7, timestamp: '2026-11-23T00:30:00.123999999+08:00', failed: true });
    assert.equal(retry.ts, row(v7).ts, 'the same millisecond');
    assert.notEqual(retry.h, row(v7).h);
    assert.equal(row(structuredClone(v7)).h, row(v7).h);
  });

  it('are not refresh payloads or anything without a timestamp', () => {
    for (const raw of [{ support_refresh: true }, { refresh: true }, null, 'x', [], { tokens: {} }]) {
      assert.equal(toUsageRow(raw, resolve, shanghai, 0), null);
    }
  });
});

describe('usage.db', () => {
  const at = (iso: string) => Date.parse(iso);
  const mk = (k: string, iso: string, o: { model?: string; failed?: boolean; tokens?: number; rid?: string } = {}) => {
    const t = at(iso);
    return row({ ...v7, api_key: k === '0001' ? 'usr_pool_0001_aa' : 'other', timestamp: new Date(t).toISOString(), model: o.model ?? 'm1',
      failed: o.failed ?? false, request_id: o.rid ?? `r${t}`, token_breakdown: undefined,
      tokens: { input_tokens: 1, output_tokens: (o.tokens ?? 3) - 1, total_tokens: o.tokens ?? 3 } });
  };

  it('counts each record once, keeps rollups equal to the rows, and reads ranges, the request log and usage since an instant', async () => {
    const dir = await tempDir();
    const store = await UsageStore.open(dir, silentLogger());
    try {
      const rows = [
        mk('0001', '2026-11-21T01:00:00Z'), mk('0001', '2026-11-22T01:00:00Z', { model: 'm2', tokens: 10 }),
        mk('0001', '2026-11-22T02:00:00Z', { failed: true }), mk('0001', '2026-11-22T15:59:59Z'), // 23:59:59 in Shanghai
        mk('0001', '2026-11-22T16:00:00Z'), mk('x', '2026-11-22T03:00:00Z', { tokens: 7 }),
      ];
      const first = await store.write(rows);
      assert.equal(first.inserted, 6);
      const again = await store.write([rows[1]!, rows[4]!, mk('0001', '2026-11-23T02:00:00Z')]);
      assert.deepEqual([again.inserted, again.duplicateRows], [1, [0, 1]], 'a replay is stored and counted once');
      assert.equal(statSync(store.file).mode & 0o777, 0o600);

      const totals = store.totals('0001');
      assert.deepEqual([totals.requests, totals.failed, totals.tokens], [5, 1, 3 + 10 + 3 + 3 + 3]);
      assert.deepEqual(store.unmanagedIds(), ['hx']);
      assert.deepEqual(store.day(['0001'], '2026-11-22'), { requests: 2, failed: 1, tokens: 13, input: 2, output: 11, reasoning: 0, cached: 0 });
      assert.equal(store.day(['0001'], '2026-11-23').requests, 2, 'a record at 16:00Z is the next day in Shanghai');
      const byDay = store.byDay(['0001', 'hx'], '2026-11-21', '2026-11-23');
      assert.equal(byDay.reduce((n, r) => n + r.counts.requests, 0), 6);
      assert.deepEqual(store.byDay(['0001'], '2026-11-21', '2026-11-23', 'm2').map((r) => [r.day, r.counts.tokens]), [['2026-11-22', 10]]);
      assert.equal(store.byHour(['0001'], '2026-11-22T09', '2026-11-22T10').reduce((n, r) => n + r.counts.requests + r.counts.failed, 0), 2);
      assert.deepEqual(store.models(['0001']), ['m1', 'm2']);
      assert.deepEqual(store.since('0001', at('2026-11-22T02:00:00Z')), { requests: 3, tokens: 9, failed: 1 });

      const page1 = store.requests({ keyIds: ['0001'], limit: 3 });
      assert.deepEqual(page1.map((r) => new Date(r.at).toISOString()), ['2026-11-23T02:00:00.000Z', '2026-11-22T16:00:00.000Z', '2026-11-22T15:59:59.000Z']);
      const page2 = store.requests({ keyIds: ['0001'], limit: 3, before: { at: page1[2]!.at, id: page1[2]!.id } });
      assert.equal(page2.length, 3);
      assert.equal(page2[0]!.failed, true);
      assert.deepEqual(store.requests({ keyIds: null, limit: 10, failed: false, from: at('2026-11-22T00:00:00Z'), to: at('2026-11-22T04:00:00Z') })
        .map((r) => r.key_id), ['hx', '0001']);
      assert.equal(store.requests({ keyIds: ['0001', 'hx'], limit: 100 }).length, 7, 'several keys merge into one newest-first list');
      assert.deepEqual(store.requests({ keyIds: null, limit: 10, model: 'nope' }), []);

      const pruned = await store.prune(at('2026-11-22T00:00:00Z'), '2026-11-22T10');
      assert.equal(pruned.events, 1);
      assert.equal(store.totals('0001').requests, 5, 'pruning raw rows leaves the rollups');
      assert.equal(store.byDay(['0001'], '2026-11-21', '2026-11-21')[0]!.counts.requests, 1);
      assert.equal(store.byHour(['0001'], '2026-11-21T00', '2026-11-22T09').length, 0, 'hourly rollups before the cut are gone');
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('keeps what was committed across a reopen, and refuses a batch it cannot store without storing any of it', async () => {
    const dir = await tempDir();
    let store = await UsageStore.open(dir, silentLogger());
    try {
      await store.write([mk('0001', '2026-11-22T01:00:00Z')]);
      await store.close();
      store = await UsageStore.open(dir, silentLogger());
      assert.equal(store.totals('0001').requests, 1);
      const bad = [mk('0001', '2026-11-22T02:00:00Z'), { ...mk('0001', '2026-11-22T03:00:00Z'), tokens: 'x' as unknown as number, h: null as unknown as number }];
      await assert.rejects(store.write(bad), /usage\.db/);
      assert.equal(store.totals('0001').requests, 1, 'nothing of the refused batch counts');
      assert.equal(store.requests({ keyIds: ['0001'], limit: 10 }).length, 1);
      assert.equal((await store.write([mk('0001', '2026-11-22T02:00:00Z')])).inserted, 1, 'the writer goes on');
    } finally {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('the usage data of key-portal 0.1.0', () => {
  it('is imported once, checked against its own totals, and moved aside', async () => {
    const fixture = path.join(ROOT_DIR, 'test/fixtures/legacy-usage-0.1.0');
    const expected = JSON.parse(readFileSync(path.join(fixture, 'expected.json'), 'utf8')) as {
      records: number; keys: Record<string, string>;
      totals: Record<string, { requests: number; failed: number; tokens: number; input: number; output: number; days: Record<string, Record<string, [number, number, number]>> }>;
    };
    const dir = await tempDir();
    cpSync(path.join(fixture, 'data'), dir, { recursive: true });
    const zone = new Zone('Asia/Shanghai');
    try {
      const report = importLegacyUsage(dir, zone, silentLogger())!;
      assert.equal(report.events, expected.records, 'every logged event is a raw row');
      assert.equal(report.tail, 7, 'the events after the checkpoint were counted too');
      assert.ok(!existsSync(path.join(dir, 'usage.json')) && existsSync(path.join(dir, 'usage.legacy', 'usage.json')));
      assert.ok(existsSync(path.join(dir, 'usage.legacy', 'usage', 'agg')), 'the old files are kept');
      assert.equal(importLegacyUsage(dir, zone, silentLogger()), null, 'nothing left to import');

      const store = await UsageStore.open(dir, silentLogger());
      try {
        const ids = { ...Object.fromEntries(Object.values(expected.keys).map((id) => [id, id])), operator: hashId('sk-operator-own') };
        for (const [name, want] of Object.entries(expected.totals)) {
          const id = ids[name as keyof typeof ids]!;
          const got = store.totals(id);
          assert.deepEqual([got.requests, got.failed, got.tokens, got.input, got.output], [want.requests, want.failed, want.tokens, want.input, want.output], `totals of ${name}`);
          const days = Object.keys(want.days).sort();
          const rows = store.byDay([id], days[0]!, days.at(-1)!);
          for (const [day, models] of Object.entries(want.days)) {
            for (const [model, [req, failed, tok]] of Object.entries(models)) {
              const r = rows.find((x) => x.day === day && x.model === model);
              assert.deepEqual([r?.counts.requests, r?.counts.failed, r?.counts.tokens], [req, failed, tok], `${name} on ${day} (${model})`);
            }
          }
        }
        assert.equal(store.totals(hashId('sk-operator-own')).unmanaged, true);
        assert.equal(store.requests({ keyIds: null, limit: 500 }).length, expected.records);
        assert.equal(store.byHour([expected.keys.alice1!], '2026-11-20T00', '2026-11-20T23').reduce((n, r) => n + r.counts.requests, 0), 6,
          'hours come across too (the checkpointed one and the five after it)');
      } finally {
        await store.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('reads the JSON aggregates of the versions before it', async () => {
    const dir = await tempDir();
    const { writeFileSync } = await import('node:fs');
    writeFileSync(path.join(dir, 'usage.json'), JSON.stringify({
      version: '1.0', cursor: null, ledger: {
        k1: { last_used: Date.parse('2026-11-22T10:00:00Z'), unmanaged: false,
          days: { '2026-11-21': { a: { requests: 1, tokens: 10 } }, '2026-11-22': { a: { requests: 2, failed: 1, tokens: 20 } } },
          hours: { '2026-11-22T10': { a: { requests: 2, tokens: 20 } } } },
      },
    }));
    try {
      const report = importLegacyUsage(dir, new Zone('UTC'), silentLogger())!;
      assert.equal(report.keys, 1);
      const store = await UsageStore.open(dir, silentLogger());
      try {
        assert.deepEqual([store.totals('k1').requests, store.totals('k1').failed, store.totals('k1').tokens], [3, 1, 30]);
        assert.equal(store.byHour(['k1'], '2026-11-22T10', '2026-11-22T10')[0]!.counts.tokens, 20);
      } finally {
        await store.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
