import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { keyIdOf, keyIndex, maskKey, newKey, safeEqual, SECRET_BYTES } from '../../src/keys/format.js';

describe('key format', () => {
  it('is {prefix}{NNNN}_{secret} with the pool index as a zero-padded id of at least 4 digits', () => {
    assert.match(newKey('usr_pool_', 7), /^usr_pool_0007_[0-9a-f]{48}$/);
    assert.match(newKey('usr_pool_', 12345), /^usr_pool_12345_[0-9a-f]{48}$/);
    assert.equal(keyIdOf('usr_pool_', newKey('usr_pool_', 42)), '0042');
    assert.equal(keyIndex('usr_pool_', newKey('usr_pool_', 42)), 42);
    assert.equal(keyIndex('usr_pool_', 'sk-something-else'), null);
  });

  it('carries at least 128 random bits in the secret', () => {
    assert.ok(SECRET_BYTES * 8 >= 128);
    const secrets = Array.from({ length: 2000 }, (_, i) => newKey('p_', i).split('_').pop()!);
    assert.equal(new Set(secrets).size, secrets.length, 'no two secrets repeat');
    // Every hex digit appears about equally often at every position (a biased generator would not).
    const counts = new Array(16).fill(0);
    for (const s of secrets) for (const c of s) counts[parseInt(c, 16)]++;
    const expected = (secrets.length * 48) / 16;
    const chi2 = counts.reduce((acc, n) => acc + (n - expected) ** 2 / expected, 0);
    assert.ok(chi2 < 50, `hex digits are uniform (chi² ${chi2.toFixed(1)} with 15 degrees of freedom)`);
  });

  it('gives keys of other shapes a stable hashed id that does not reveal them', () => {
    const id = keyIdOf('usr_pool_', 'sk-legacy-abcdef');
    assert.match(id, /^h[0-9a-f]{12}$/);
    assert.equal(id, keyIdOf('usr_pool_', 'sk-legacy-abcdef'));
    assert.ok(!id.includes('abcdef'));
  });

  it('masks keys down to their id and last four characters', () => {
    const key = newKey('usr_pool_', 3);
    const masked = maskKey('usr_pool_', key);
    assert.equal(masked, `usr_pool_0003_…${key.slice(-4)}`);
    assert.ok(!masked.includes(key.slice(14, 40)));
  });

  it('compares secrets of any length without shortcuts', () => {
    assert.equal(safeEqual('abc', 'abc'), true);
    assert.equal(safeEqual('abc', 'abd'), false);
    assert.equal(safeEqual('abc', 'abcd'), false);
    assert.equal(safeEqual('', ''), true);
  });
});
