import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ADMIN, adminBrowser, call, chat, holderBrowser, pageText, startTestPortal, syncUsage, tempDir, waitFor, type TestPortal } from '../support/harness.js';
import { Tmpfs } from '../support/tmpfs.js';

/** One request through the fake CLIProxyAPI: `model`, and its token split (cached tokens are part of the input). */
const use = (t: TestPortal, key: string, model: string, input: number, output: number, cached = 0) => chat(t.fake, key, { model, input, output, cached });

const sync = syncUsage;
const text = pageText;
const near = (a: number | null, b: number, what: string) => assert.ok(a !== null && Math.abs(a - b) < 1e-9, `${what}: ${a} ≈ ${b}`);
type ModelCost = { model: string; cost: number | null };

/**
 * The usage every test starts from, for one person (two keys):
 * - claude-sonnet-4-5 (claude-sonnet-4*: 3 / cached 0.3 / 15): 1M input of which 400k cached, 100k output
 *   = 600k × 3 + 400k × 0.3 + 100k × 15 = 1.80 + 0.12 + 1.50 = 3.42 USD;
 * - gpt-4o-2024-08-06 (gpt-4o*: 2.5 / 10): 200k input, 50k output = 0.50 + 0.50 = 1.00 USD;
 * - gpt-4o-mini (gpt-4o-mini*, the longer prefix: 0.15 / 0.6): 1M input = 0.15 USD;
 * - fake-chat (recorded as fake-model-1): no price.
 */
async function seedUsage(t: TestPortal): Promise<{ key: string; keyId: string; secondId: string }> {
  const first = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'cost@x.cn', name: 'Cost' } })).body;
  const second = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'cost@x.cn', label: 'two' }, token: first.key })).body;
  await waitFor(async () => (await use(t, first.key, 'claude-sonnet-4-5', 1_000_000, 100_000, 400_000)) === 200, 'key live');
  assert.equal(await use(t, second.key, 'gpt-4o-2024-08-06', 200_000, 50_000), 200);
  assert.equal(await use(t, first.key, 'gpt-4o-mini', 1_000_000, 0), 200);
  assert.equal(await use(t, first.key, 'fake-chat', 1000, 100), 200);
  await sync(t);
  return { key: first.key, keyId: first.key_id, secondId: second.key_id };
}
const SEEDED_USD = 3.42 + 1 + 0.15;

describe('cost estimates', () => {
  it('turns input, cached and output tokens into money by exact name or longest prefix, and lists models without a price', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue' } });
    try {
      const { key, keyId, secondId } = await seedUsage(t);
      const stats = (await call(t.url, 'GET', '/api/user-stats/cost%40x.cn', { token: key })).body;
      const cost = (m: string) => (stats.by_model as ModelCost[]).find((r) => r.model === m)?.cost ?? null;
      near(cost('claude-sonnet-4-5'), 3.42, 'cached input at the cached price, the rest at the input price');
      near(cost('gpt-4o-2024-08-06'), 1, 'a prefix pattern');
      near(cost('gpt-4o-mini'), 0.15, 'the longest prefix wins');
      assert.equal(cost('fake-model-1'), null, 'a model without a price has no cost');
      assert.equal(stats.cost.currency, 'USD');
      near(stats.cost.total, SEEDED_USD, 'the period’s total is the sum over priced models');
      assert.deepEqual(stats.cost.unpriced, ['fake-model-1']);

      // An exact name wins over a prefix; without a cached price, cached tokens cost the input price.
      const table = (await call(t.url, 'GET', '/admin/prices', { token: ADMIN })).body;
      assert.equal(table.source, 'defaults');
      const rows = [...table.prices, { pattern: 'claude-sonnet-4-5', input: 4, output: 20 }];
      assert.equal((await call(t.url, 'PUT', '/admin/prices', { token: ADMIN, body: { prices: rows } })).status, 200);
      const after = (await call(t.url, 'GET', '/api/user-stats/cost%40x.cn', { token: key })).body;
      near((after.by_model as ModelCost[]).find((r) => r.model === 'claude-sonnet-4-5')!.cost, (1_000_000 * 4 + 100_000 * 20) / 1e6, 'exact row, cached at the input price');

      // Today at /admin/usage: per key and in all, the same arithmetic.
      const today = (await call(t.url, 'GET', '/admin/usage', { token: ADMIN })).body;
      near(today.totals.cost, 6 + 1 + 0.15, 'today’s total');
      assert.deepEqual(today.unpriced, ['fake-model-1']);
      const todayOf = (id: string) => (today.keys as { key_id: string; cost: number | null }[]).find((k) => k.key_id === id)?.cost ?? null;
      near(todayOf(keyId), 6 + 0.15, 'a key’s cost today: its models only');
      near(todayOf(secondId), 1, 'the other key’s');
    } finally {
      await t.stop();
    }
  });

  it('keeps an admin’s prices across a restart, in data/prices.json, and the numbers follow them', async () => {
    const dataDir = await tempDir();
    let t = await startTestPortal({ dataDir, env: { USAGE_SOURCE: 'queue' } });
    const file = path.join(dataDir, 'prices.json');
    try {
      const { key } = await seedUsage(t);
      assert.ok(!existsSync(file), 'no file while the defaults apply');
      const put = await call(t.url, 'PUT', '/admin/prices', { token: ADMIN, body: { prices: [
        { pattern: 'fake-model-*', input: 10, output: 20 }, { pattern: 'claude-sonnet-4*', input: 6, output: 30, cached: 0.6 },
      ] } });
      assert.equal(put.status, 200);
      assert.equal(put.body.source, 'custom');
      assert.equal(JSON.parse(readFileSync(file, 'utf8')).prices.length, 2, 'written to data/prices.json');

      await t.stop();
      t = await startTestPortal({ dataDir, env: { USAGE_SOURCE: 'queue' } });
      const table = (await call(t.url, 'GET', '/admin/prices', { token: ADMIN })).body;
      assert.deepEqual(table.prices.map((r: { pattern: string }) => r.pattern), ['fake-model-*', 'claude-sonnet-4*'], 'the table survives a restart');
      const stats = (await call(t.url, 'GET', '/api/user-stats/cost%40x.cn', { token: key })).body;
      const cost = (m: string) => (stats.by_model as ModelCost[]).find((r) => r.model === m)?.cost ?? null;
      near(cost('fake-model-1'), (1000 * 10 + 100 * 20) / 1e6, 'a model that had no price now has one');
      near(cost('claude-sonnet-4-5'), (600_000 * 6 + 400_000 * 0.6 + 100_000 * 30) / 1e6, 'the changed price');
      assert.equal(cost('gpt-4o-mini'), null, 'a row the admin dropped prices nothing');
      assert.deepEqual(stats.cost.unpriced, ['gpt-4o-2024-08-06', 'gpt-4o-mini']);

      // The page's forms: change a row, remove one, go back to the defaults; each is audited.
      const b = await adminBrowser(t.url);
      await b.get('/admin/prices');
      assert.equal((await b.post('/admin/prices', { action: 'set', replaces: 'fake-model-*', pattern: 'fake-model-1', input: '1.5', output: '2', cached: '' })).status, 303);
      let rows = (await call(t.url, 'GET', '/admin/prices', { token: ADMIN })).body.prices;
      assert.deepEqual(rows[0], { pattern: 'fake-model-1', input: 1.5, output: 2, cached: null }, 'renamed and changed in place');
      assert.equal((await b.post('/admin/prices', { action: 'remove', pattern: 'claude-sonnet-4*' })).status, 303);
      rows = (await call(t.url, 'GET', '/admin/prices', { token: ADMIN })).body.prices;
      assert.deepEqual(rows.map((r: { pattern: string }) => r.pattern), ['fake-model-1']);
      assert.equal((await b.post('/admin/prices', { action: 'reset', confirm: 'yes' })).status, 303);
      const reset = (await call(t.url, 'GET', '/admin/prices', { token: ADMIN })).body;
      assert.equal(reset.source, 'defaults');
      assert.ok(reset.prices.some((r: { pattern: string }) => r.pattern === 'claude-opus-4*'));
      assert.equal(JSON.parse(readFileSync(file, 'utf8')).prices, null, 'the file says "defaults"');
      const audit = (await call(t.url, 'GET', '/admin/audit?action=prices.update', { token: ADMIN })).body.entries;
      assert.deepEqual(audit.map((e: { details: { change: string } }) => e.details.change),
        ['prices_reset', 'prices_remove', 'prices_set', 'prices_replace'], 'every change is in the audit log, newest first');
    } finally {
      await t.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('refuses bad prices with 400 and a clear message, and changes nothing', async () => {
    const t = await startTestPortal();
    try {
      const before = (await call(t.url, 'GET', '/admin/prices', { token: ADMIN })).body;
      const bad: [unknown, RegExp][] = [
        [{ prices: [{ pattern: 'gpt-5*', input: -1, output: 10 }] }, /prices\.0\.input must be at least 0/],
        [{ prices: [{ pattern: 'gpt-*-mini', input: 1, output: 1 }] }, /prices\.0\.pattern must be a model name, or a prefix ending in \*/],
        [{ prices: [{ pattern: 'a', input: 1, output: 1 }, { pattern: 'A', input: 2, output: 2 }] }, /prices lists A more than once/],
        [{ prices: [{ pattern: 'a', input: '1', output: 1 }] }, /prices\.0\.input must be a number/],
        [{ prices: [{ pattern: 'a', input: 1 }] }, /prices\.0\.output is required/],
        [{ prices: [{ pattern: 'a', input: 1, output: 1e9 }] }, /prices\.0\.output must be at most 100000/],
        [{}, /prices is required/],
        [[], /must be a JSON object/],
      ];
      for (const [body, message] of bad) {
        const res = await call(t.url, 'PUT', '/admin/prices', { token: ADMIN, body });
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.match(res.body.error.message, message);
      }
      // The page's form: the same refusals, shown on the page in the reader's language.
      const b = await adminBrowser(t.url, 'zh-CN,zh;q=0.9');
      await b.get('/admin/prices');
      const form = await b.post('/admin/prices', { action: 'set', pattern: 'gpt-5*', input: 'abc', output: '10' });
      assert.equal(form.status, 400);
      assert.match(text(form.html), /输入价格必须是数字/);
      assert.equal((await b.post('/admin/prices', { action: 'remove', pattern: 'no-such-model' })).status, 400);
      assert.equal((await b.post('/admin/prices', { action: 'reset' })).status, 400, 'a reset needs its confirmation');
      assert.deepEqual((await call(t.url, 'GET', '/admin/prices', { token: ADMIN })).body, before, 'nothing changed');
      assert.ok(!existsSync(path.join(t.dataDir, 'prices.json')));
      assert.equal((await call(t.url, 'PUT', '/admin/prices', { body: { reset: true } })).status, 401, 'only the admin');
    } finally {
      await t.stop();
    }
  });

  it('adds a cost column named after PRICE_CURRENCY to the CSV, at PRICE_CURRENCY_RATE, empty without a price', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue', PRICE_CURRENCY: 'cny', PRICE_CURRENCY_RATE: '7.2' } });
    try {
      const { key } = await seedUsage(t);
      const [head, ...lines] = (await call(t.url, 'GET', '/api/usage.csv?days=7', { token: key })).text.trim().split('\n');
      const cols = head!.split(',');
      assert.equal(cols.at(-1), 'cost_cny');
      const byModel = new Map(lines.map((l) => l.split(',')).map((r) => [r[3]!, r.at(-1)!]));
      near(Number(byModel.get('claude-sonnet-4-5')), 3.42 * 7.2, 'USD × the rate');
      near(Number(byModel.get('gpt-4o-2024-08-06')), 7.2, 'the other key');
      assert.equal(byModel.get('fake-model-1'), '', 'no price, no figure');
      const stats = (await call(t.url, 'GET', '/api/user-stats/cost%40x.cn', { token: key })).body;
      assert.equal(stats.cost.currency, 'CNY');
      near(stats.cost.total, SEEDED_USD * 7.2, 'the pages’ figures in the same currency');
    } finally {
      await t.stop();
    }
  });

  it('shows costs, marked as estimates, on every usage page in English and Chinese', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue' } });
    try {
      const { key, keyId } = await seedUsage(t);
      for (const lang of ['en', 'zh-CN'] as const) {
        const en = lang === 'en';
        const headers = { 'Accept-Language': en ? 'en-US' : 'zh-CN,zh;q=0.9' };
        const usd = (v: string) => (en ? `≈ $${v}` : `≈ US$${v}`);
        const holder = await holderBrowser(t.url, key, headers['Accept-Language']);
        const mine = text((await holder.get('/my-keys')).html);
        assert.ok(mine.includes(`${en ? 'Cost of this period (≈ estimate)' : '本时段费用（≈ 估算）'}: ${usd('4.57')}`), `my keys: the period’s cost (${lang})`);
        assert.ok(mine.includes(en ? 'Cost (≈ estimate, USD)' : '费用（≈ 估算，USD）'), 'the by-model table has a cost column');
        assert.ok(mine.includes(`${usd('3.42')}`) && mine.includes(`${usd('0.15')}`), 'per model');
        assert.match(mine, /fake-model-1 (\S+ ){4}— /, 'a model without a price shows “—”');
        assert.ok(mine.includes(en ? 'No price for fake-model-1' : 'fake-model-1 尚未定价'), 'and is listed');

        const admin = await adminBrowser(t.url, headers['Accept-Language']);
        const person = text((await admin.get('/admin/users/cost%40x.cn')).html);
        assert.ok(person.includes(usd('4.57')), 'the person page');
        const keyPage = text((await admin.get(`/admin/keys/${keyId}`)).html);
        assert.ok(keyPage.includes(usd('3.57')), 'the key page: its own models only (3.42 + 0.15)');
        const board = text((await admin.get('/admin/users')).html);
        assert.ok(board.includes(en ? 'Cost, all time (≈ estimate, USD)' : '累计费用（≈ 估算，USD）'), 'the leaderboard has a cost column');
        assert.match(board, new RegExp(`cost@x\\.cn \\S+ [\\d.%]+ ${usd('4.57').replace(/[$.]/g, '\\$&')}`), 'the person’s all-time cost on the leaderboard');
        const today = text((await admin.get('/admin/usage')).html);
        assert.ok(today.includes(`${usd('4.57')} ${en ? 'Cost today (≈ estimate)' : '今日费用（≈ 估算）'}`), 'today’s cost');
        const prices = text((await admin.get('/admin/prices')).html);
        assert.ok(prices.includes(en ? 'Models used without a price' : '尚未定价的模型') && prices.includes('fake-model-1'), 'the price page lists unpriced models');
        assert.ok(prices.includes('claude-sonnet-4*'));
      }
      // More usage: the leaderboard's all-time cost follows it.
      assert.equal(await use(t, key, 'claude-sonnet-4-5', 0, 1_000_000), 200);
      await sync(t);
      const admin = await adminBrowser(t.url);
      assert.ok(text((await admin.get('/admin/users')).html).includes('≈ $19.57'), 'new usage reaches the leaderboard’s cost');
    } finally {
      await t.stop();
    }
  });

  it('answers 503 and keeps the old prices when data/prices.json cannot be written', { skip: !Tmpfs.available() && 'needs root to mount a tmpfs' }, async () => {
    const fs = Tmpfs.mount(16 * 1024);
    const t = await startTestPortal({ dataDir: fs.dir });
    try {
      const before = (await call(t.url, 'GET', '/admin/prices', { token: ADMIN })).body;
      fs.fill();
      const res = await call(t.url, 'PUT', '/admin/prices', { token: ADMIN, body: { prices: [{ pattern: 'x*', input: 1, output: 1 }] } });
      assert.equal(res.status, 503);
      assert.equal(res.body.error.code, 'storage_unavailable');
      assert.deepEqual((await call(t.url, 'GET', '/admin/prices', { token: ADMIN })).body, before, 'the table in use is the one on disk');
      fs.free();
      assert.equal((await call(t.url, 'PUT', '/admin/prices', { token: ADMIN, body: { prices: [{ pattern: 'x*', input: 1, output: 1 }] } })).status, 200);
    } finally {
      await t.stop();
      fs.unmount();
    }
  });
});
