import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { AppError, ERRORS, fail, FIELD_NAMES_ZH, invalidField, REASONS } from '../../src/errors.js';
import { normalizeEmail } from '../../src/web/http/validate.js';
import { seededFc } from '../support/random.js';

const placeholders = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

describe('the error catalogue', () => {
  it('has an English and a Chinese message for every code and every reason, with the same placeholders', () => {
    for (const [code, spec] of Object.entries(ERRORS)) {
      assert.ok(spec.en.trim() && spec.zh.trim(), code);
      assert.ok(spec.status >= 400 && spec.status < 600, code);
      const words = spec.zh.replace(/\{\w+\}/g, '').replace(/[。，、：""]/g, '');
      if (words) assert.match(words, /[\u4e00-\u9fff]/, `${code} is Chinese`);
      assert.deepEqual(placeholders(spec.zh).filter((p) => p !== 'what_zh'), placeholders(spec.en).filter((p) => p !== 'what'), code);
    }
    for (const [reason, text] of Object.entries(REASONS)) {
      assert.ok(text.en && text.zh, reason);
      assert.deepEqual(placeholders(text.zh), placeholders(text.en), reason);
    }
    for (const zh of Object.values(FIELD_NAMES_ZH)) assert.match(zh, /[\u4e00-\u9fff]/);
  });

  it('speaks the reader’s language, filled in', () => {
    const e = invalidField('name', 'too_long', { max: 100 });
    assert.equal(e.message, 'name must be at most 100 characters.');
    assert.equal(e.text('zh-CN'), '姓名最多 100 个字符。');
    const r = fail('rate_limited', { what: 'registrations from this address', what_zh: '此地址的注册', seconds: 30 });
    assert.equal(r.text('en'), 'Too many registrations from this address. Try again in 30 s.');
    assert.equal(r.text('zh-CN'), '此地址的注册过于频繁，请 30 秒后再试。');
    assert.ok(r instanceof AppError && r.status === 429);
  });
});

describe('email normal form', () => {
  it('is one form per person: case, NFKC, IDN and a trailing dot do not make another account', () => {
    const same = [['Zhang.San@Example.COM', 'zhang.san@example.com'], ['jose\u0301@x.cn', 'jos\u00e9@x.cn'], ['\uff41\uff4c\uff49\uff43\uff45@x.cn', 'alice@x.cn'],
      ['a@bücher.example', 'a@xn--bcher-kva.example'], ['a@x.cn.', 'a@x.cn'], ['  a@x.cn  ', 'a@x.cn'], ['张三@例子.中国', '张三@xn--fsqu00a.xn--fiqs8s']];
    for (const [input, normal] of same) assert.deepEqual(normalizeEmail(input!), { email: normal }, input);
    for (const bad of ['a@x', 'a@@x.cn', '@x.cn', 'a@', 'a@.cn', 'a@x..cn', '.a@x.cn', 'a.@x.cn', 'a..b@x.cn', 'a b@x.cn', 'a\u200b@x.cn',
      'a@x\u202e.cn', 'a@-x.cn', 'a@x-.cn', 'a@x.123', 'a"b@x.cn', 'a<b@x.cn', 'a@x_y.cn', '\ud800@x.cn', 'a\u0000@x.cn']) {
      assert.ok('reason' in normalizeEmail(bad), JSON.stringify(bad));
    }
  });

  it('is decided in time linear in the input: 200 adversarial inputs of 16 kB each (a backtracking pattern took 0.7 s apiece)', { timeout: 30_000 }, () => {
    // A pattern that backtracks spends seconds here; this suite's whole budget for the 200 is the test's time limit.
    const shapes = [(n: number) => 'a@' + '.'.repeat(n), (n: number) => 'a'.repeat(n) + '@', (n: number) => '@'.repeat(n),
      (n: number) => 'a@' + 'a.'.repeat(n / 2) + '!', (n: number) => 'a'.repeat(n / 2) + '@' + '-'.repeat(n / 2), (n: number) => 'a@b.' + 'c-'.repeat(n / 2)];
    let refused = 0;
    for (let i = 0; i < 200; i++) {
      const input = shapes[i % shapes.length]!(15_900 + i);
      if ('reason' in normalizeEmail(input)) refused++;
    }
    assert.equal(refused, 200);
  });

  it('never throws, and its output is its own normal form, for any string (property)', () => {
    fc.assert(fc.property(fc.oneof(fc.string({ unit: 'binary', maxLength: 300 }), fc.emailAddress(), fc.emailAddress().map((e) => e.toUpperCase() + '.')), (s) => {
      const n = normalizeEmail(s);
      if ('email' in n) {
        assert.ok(n.email.length <= 254);
        assert.deepEqual(normalizeEmail(n.email), n, 'idempotent');
      }
    }), seededFc('email normal form', 3000));
  });
});
