import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.js';
import { costUsd, DEFAULT_PRICES, PriceMatcher, patternKey, type PriceRow } from '../../src/costs/prices.js';

const row = (pattern: string, input: number, output: number, cached: number | null = null): PriceRow => ({ pattern, input, output, cached });

describe('the price table', () => {
  it('finds a model’s row: an exact name first, then the longest prefix, case aside', () => {
    const m = new PriceMatcher([row('gpt-5*', 1, 1), row('gpt-5-mini*', 2, 2), row('gpt-5-mini-2025', 3, 3), row('Claude-*', 4, 4)]);
    assert.equal(m.find('gpt-5-codex')?.input, 1);
    assert.equal(m.find('gpt-5-mini-high')?.input, 2, 'the longer prefix');
    assert.equal(m.find('gpt-5-mini-2025')?.input, 3, 'the exact name over both prefixes');
    assert.equal(m.find('GPT-5-MINI-2025')?.input, 3, 'case does not matter');
    assert.equal(m.find('claude-opus-4-1')?.input, 4);
    assert.equal(m.find('gpt-4o'), null, 'no row, no price');
    assert.equal(m.find('gpt-5'), m.find('gpt-5'), 'the same answer from the memo');
  });

  it('bills cached input at the cached price, else at the input price, and output at the output price', () => {
    const t = { input: 1_000_000, output: 100_000, cached: 400_000 };
    assert.equal(costUsd(row('m', 3, 15, 0.3), t), 1.8 + 0.12 + 1.5);
    assert.equal(costUsd(row('m', 3, 15), t), 3 + 1.5, 'no cached price: all input at the input price');
    assert.equal(costUsd(row('m', 3, 15, 0.3), { input: 100, output: 0, cached: 400 }), 400 * 0.3 / 1e6, 'more cached than input never bills negative input');
  });

  it('has defaults for the common models, each pattern once, every price a number', () => {
    const m = new PriceMatcher(DEFAULT_PRICES);
    for (const model of ['claude-opus-4-5-20251101', 'claude-opus-4-1-20250805', 'claude-sonnet-4-5-20250929', 'claude-haiku-4-5', 'gpt-4o', 'gpt-4.1',
      'gpt-5', 'gpt-5-codex', 'o3', 'o4-mini', 'gemini-2.5-pro', 'gemini-2.5-flash', 'deepseek-chat', 'qwen3-coder-plus', 'glm-4.6', 'kimi-k2-0905-preview']) {
      assert.ok(m.find(model), `${model} has a default price`);
    }
    assert.equal(m.find('claude-opus-4-5-20251101')?.input, 5, 'Opus 4.5 is not priced as Opus 4.1');
    const keys = DEFAULT_PRICES.map((r) => patternKey(r.pattern));
    assert.equal(new Set(keys).size, keys.length);
    for (const r of DEFAULT_PRICES) assert.ok(r.input >= 0 && r.output >= r.input && (r.cached === null || r.cached <= r.input), r.pattern);
  });

  it('reads PRICE_CURRENCY and PRICE_CURRENCY_RATE, and refuses a currency without a rate', () => {
    const c = loadConfig({ env: {}, dotenv: false });
    assert.equal(c.PRICE_CURRENCY, 'USD');
    assert.equal(c.PRICE_CURRENCY_RATE, 1);
    const cny = loadConfig({ env: { PRICE_CURRENCY: 'cny', PRICE_CURRENCY_RATE: '7.2' }, dotenv: false });
    assert.equal(cny.PRICE_CURRENCY, 'CNY');
    assert.equal(cny.PRICE_CURRENCY_RATE, 7.2);
    const cases: [Record<string, string>, RegExp][] = [
      [{ PRICE_CURRENCY: 'yuan' }, /^Invalid configuration: PRICE_CURRENCY must be a three-letter currency code such as USD or CNY \(got "yuan"\)$/],
      [{ PRICE_CURRENCY_RATE: 'seven' }, /PRICE_CURRENCY_RATE must be a number such as 7\.2/],
      [{ PRICE_CURRENCY_RATE: '0' }, /PRICE_CURRENCY_RATE must be above 0/],
      [{ PRICE_CURRENCY: 'EUR' }, /^Invalid configuration: PRICE_CURRENCY=EUR needs PRICE_CURRENCY_RATE/],
    ];
    for (const [env, re] of cases) {
      assert.throws(() => loadConfig({ env, dotenv: false }), (err: Error) => err instanceof ConfigError && re.test(err.message) && !err.message.includes('\n'));
    }
  });
});
