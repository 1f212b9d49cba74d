import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ADMIN, call, chat, journalBytes, settled, startTestPortal, waitFor, type TestPortal } from '../support/harness.js';
import { readDataFiles, strictInvariantViolations } from '../support/invariants.js';

describe('registering and revoking keys', () => {
  let t: TestPortal;
  before(async () => { t = await startTestPortal({ env: { POOL_SIZE: '300' } }); });
  after(async () => { await t.stop(); });

  const register = (body: unknown, token?: string) => call(t.url, 'POST', '/api/register-key', { body, token });

  it('issues a key that is live in CLIProxyAPI and works for a chat completion', async () => {
    const before = (await call(t.url, 'GET', '/api/key-pool-status')).body;
    const res = await register({ email: '  Zhang.San@Example.COM ', name: '张三', label: '工作电脑' });
    assert.equal(res.status, 201);
    const b = res.body;
    assert.match(b.key, /^usr_pool_\d{4}_[0-9a-f]{48}$/);
    assert.equal(b.key_id, b.key.slice(9, 13));
    assert.equal(b.email, 'zhang.san@example.com');
    assert.equal(b.name, '张三');
    assert.equal(b.label, '工作电脑');
    assert.equal(b.status, 'active');
    assert.equal(b.base_url, t.fake.url);
    assert.equal(res.headers.get('cache-control'), 'no-store');
    assert.ok(t.fake.apiKeys?.includes(b.key), 'pushed to CLIProxyAPI');
    await waitFor(async () => (await chat(t.fake, b.key)) === 200, 'the key to work after hot reload');
    const afterStatus = (await call(t.url, 'GET', '/api/key-pool-status')).body;
    assert.equal(afterStatus.unused, before.unused - 1);
    assert.equal(afterStatus.assigned, before.assigned + 1);
    const files = readDataFiles(await settled(t));
    assert.equal(files.pool.assigned[b.key], 'zhang.san@example.com');
    assert.deepEqual(strictInvariantViolations(await settled(t)), []);
  });

  it('refuses a second key for a registered email unless its holder or an admin asks', async () => {
    const first = await register({ email: 'li@example.com' });
    assert.equal(first.status, 201);
    await settled(t);
    const again = await register({ email: 'li@example.com' });
    assert.equal(again.status, 409);
    assert.equal(again.body.error.code, 'email_registered');
    assert.equal(journalBytes(t.dataDir), 0, 'nothing written');

    const other = await register({ email: 'wang@example.com' });
    const byOther = await register({ email: 'li@example.com' }, other.body.key);
    assert.equal(byOther.status, 409, 'another user’s key does not count');

    const byOwner = await register({ email: 'li@example.com', label: 'laptop' }, first.body.key);
    assert.equal(byOwner.status, 201);
    assert.notEqual(byOwner.body.key, first.body.key);
    const byAdmin = await register({ email: 'li@example.com' }, ADMIN);
    assert.equal(byAdmin.status, 201);
    assert.equal(readDataFiles(await settled(t)).users.users['li@example.com']?.api_keys.length, 3);
  });

  it('rejects bad input with a clear 4xx and takes nothing from the pool', async () => {
    await settled(t); // earlier changes folded into the files; the journal is empty
    const poolBefore = readFileSync(path.join(t.dataDir, 'key_pool.json'), 'utf8');
    const usersBefore = readFileSync(path.join(t.dataDir, 'user_keys.json'), 'utf8');
    const statusBefore = t.portal.store.poolStatus();
    const bad: [unknown, number, string, RegExp?][] = [
      [{}, 400, 'invalid_field', /email is required/],
      [{ email: 'not-an-email' }, 400, 'invalid_field', /email must be a valid email/],
      [{ email: 42 }, 400, 'invalid_field'],
      [{ email: `${'a'.repeat(250)}@x.cn` }, 400, 'invalid_field', /254/],
      [{ email: 'a@x.cn', name: 'x'.repeat(101) }, 400, 'invalid_field', /name must be at most 100/],
      [{ email: 'a@x.cn', label: 'bad\u0007label' }, 400, 'invalid_field', /control characters/],
      [{ email: 'a@x.cn', name: ['array'] }, 400, 'invalid_field'],
      [[{ email: 'a@x.cn' }], 400, 'invalid_body'],
    ];
    for (const [body, status, code, msg] of bad) {
      const res = await register(body);
      assert.equal(res.status, status, JSON.stringify(body).slice(0, 60));
      assert.equal(res.body.error.code, code);
      if (msg) assert.match(res.body.error.message, msg);
    }
    const malformed = await call(t.url, 'POST', '/api/register-key', { raw: '{"email": ' });
    assert.equal(malformed.status, 400);
    assert.equal(malformed.body.error.code, 'invalid_json');
    const huge = await call(t.url, 'POST', '/api/register-key', { raw: JSON.stringify({ email: 'a@x.cn', name: 'x'.repeat(40_000) }) });
    assert.equal(huge.status, 413);
    assert.equal(huge.body.error.code, 'payload_too_large');
    const wrongToken = await register({ email: 'new@x.cn' }, 'usr_pool_9999_deadbeef');
    assert.equal(wrongToken.status, 401);
    assert.equal(journalBytes(t.dataDir), 0, 'nothing was written');
    assert.deepEqual(t.portal.store.poolStatus(), statusBefore);
    assert.equal(readFileSync(path.join(t.dataDir, 'key_pool.json'), 'utf8'), poolBefore);
    assert.equal(readFileSync(path.join(t.dataDir, 'user_keys.json'), 'utf8'), usersBefore);
  });

  it('revokes a key for its holder: gone from CLIProxyAPI, retired, never reissued, pool topped up', async () => {
    const { body: issued } = await register({ email: 'zhao@example.com' });
    await waitFor(async () => (await chat(t.fake, issued.key)) === 200, 'key live');
    const before = (await call(t.url, 'GET', '/api/key-pool-status')).body;

    const res = await call(t.url, 'POST', '/api/revoke-key', { body: { key: issued.key } });
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { revoked: true, key_id: issued.key_id });
    assert.ok(!t.fake.apiKeys?.includes(issued.key), 'removed from CLIProxyAPI');
    await waitFor(async () => (await chat(t.fake, issued.key)) === 401, 'the key to be refused');

    const afterStatus = (await call(t.url, 'GET', '/api/key-pool-status')).body;
    assert.equal(afterStatus.retired, before.retired + 1);
    assert.equal(afterStatus.unused, before.unused + 1, 'a fresh key replaces it');
    assert.equal(afterStatus.total, before.total + 1);
    const files = readDataFiles(await settled(t));
    assert.ok(files.pool.retired.includes(issued.key));
    assert.ok(!files.pool.unused.includes(issued.key));
    assert.equal(files.users.keys[issued.key]?.status, 'revoked');
    assert.deepEqual(strictInvariantViolations(await settled(t)), []);

    const twice = await call(t.url, 'POST', '/api/revoke-key', { body: { key: issued.key } });
    assert.equal(twice.status, 409);
    assert.equal(twice.body.error.code, 'key_revoked');
    // The revoked key no longer signs anything in.
    const asBearer = await register({ email: 'zhao@example.com' }, issued.key);
    assert.equal(asBearer.status, 401);
    // The same email can start again, and never gets the revoked key back.
    const fresh = await register({ email: 'zhao@example.com' });
    assert.equal(fresh.status, 201);
    assert.notEqual(fresh.body.key, issued.key);
  });

  it('lets only the owner or an admin revoke by key id', async () => {
    const { body: a } = await register({ email: 'qian@example.com' });
    const { body: b } = await register({ email: 'sun@example.com' });
    const anonymous = await call(t.url, 'POST', '/api/revoke-key', { body: { key_id: a.key_id } });
    assert.equal(anonymous.status, 401);
    const other = await call(t.url, 'POST', '/api/revoke-key', { body: { key_id: a.key_id }, token: b.key });
    assert.equal(other.status, 403);
    assert.equal(readDataFiles(await settled(t)).users.keys[a.key]?.status, 'active');
    const owner = await call(t.url, 'POST', '/api/revoke-key', { body: { key_id: a.key_id }, token: a.key });
    assert.equal(owner.status, 200);
    const admin = await call(t.url, 'POST', '/api/revoke-key', { body: { key_id: b.key_id }, token: ADMIN });
    assert.equal(admin.status, 200);
    const unknown = await call(t.url, 'POST', '/api/revoke-key', { body: { key_id: '9999' }, token: ADMIN });
    assert.equal(unknown.status, 404);
    const neither = await call(t.url, 'POST', '/api/revoke-key', { body: {}, token: ADMIN });
    assert.equal(neither.status, 400);
  });

  it('gives 100 concurrent registrations 100 distinct keys', async () => {
    const results = await Promise.all(Array.from({ length: 100 }, (_, i) => register({ email: `burst${i}@example.com` })));
    assert.deepEqual(results.map((r) => r.status), new Array(100).fill(201));
    const keys = new Set(results.map((r) => r.body.key));
    assert.equal(keys.size, 100);
    const files = readDataFiles(await settled(t));
    for (const r of results) assert.equal(files.pool.assigned[r.body.key], r.body.email);
    assert.deepEqual(strictInvariantViolations(await settled(t)), []);
    // CLIProxyAPI takes keys one write at a time: in a burst some are answered pending and go live just after.
    await waitFor(() => [...keys].every((k) => t.fake.apiKeys?.includes(k)), 'every key in CLIProxyAPI', 15_000);
  });

  it('mints pool keys for an admin only', async () => {
    const anon = await call(t.url, 'POST', '/admin/pool', { body: { count: 5 } });
    assert.equal(anon.status, 401);
    const { body: user } = await register({ email: 'zhou@example.com' });
    const asUser = await call(t.url, 'POST', '/admin/pool', { body: { count: 5 }, token: user.key });
    assert.equal(asUser.status, 403);
    const badCount = await call(t.url, 'POST', '/admin/pool', { body: { count: 0 }, token: ADMIN });
    assert.equal(badCount.status, 400);
    const notNumber = await call(t.url, 'POST', '/admin/pool', { body: { count: '5' }, token: ADMIN });
    assert.equal(notNumber.status, 400);
    const before = (await call(t.url, 'GET', '/api/key-pool-status')).body;
    const ok = await call(t.url, 'POST', '/admin/pool', { body: { count: 5 }, token: ADMIN });
    assert.equal(ok.status, 201);
    assert.equal(ok.body.minted, 5);
    assert.equal(ok.body.pool.unused, before.unused + 5);
    assert.deepEqual(strictInvariantViolations(await settled(t)), []);
  });

  it('never writes a key to the log', async () => {
    const { body } = await register({ email: 'log-check@example.com' });
    await call(t.url, 'POST', '/api/revoke-key', { body: { key: body.key } });
    const text = t.logs.text();
    assert.ok(text.includes(body.key_id), 'the key id is logged');
    for (const k of Object.keys(readDataFiles(await settled(t)).users.keys)) assert.ok(!text.includes(k.slice(14)), 'no key secret in the log');
    assert.ok(!text.includes(t.portal.sentinel.slice(12)), 'no sentinel in the log');
  });
});

describe('registration policies', () => {
  it('limits keys per person, email domains, and answers 503 when the pool is empty', async () => {
    const t = await startTestPortal({ env: { POOL_SIZE: '3', MAX_KEYS_PER_USER: '2', ALLOWED_EMAIL_DOMAINS: 'corp.example' } });
    try {
      const outside = await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@gmail.com' } });
      assert.equal(outside.status, 403);
      assert.equal(outside.body.error.code, 'email_domain_not_allowed');
      const sub = await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@dev.corp.example' } });
      assert.equal(sub.status, 201, 'subdomains are allowed');
      const k2 = await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@dev.corp.example' }, token: sub.body.key });
      assert.equal(k2.status, 201);
      const k3 = await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@dev.corp.example' }, token: sub.body.key });
      assert.equal(k3.status, 409);
      assert.equal(k3.body.error.code, 'max_keys_reached');
      await call(t.url, 'POST', '/api/register-key', { body: { email: 'b@corp.example' } });
      const empty = await call(t.url, 'POST', '/api/register-key', { body: { email: 'c@corp.example' } });
      assert.equal(empty.status, 503);
      assert.equal(empty.body.error.code, 'pool_exhausted');
      assert.ok(empty.headers.get('retry-after'));
    } finally {
      await t.stop();
    }
  });

  it('refills the pool automatically when POOL_AUTO_REFILL is set', async () => {
    const t = await startTestPortal({ env: { POOL_SIZE: '4', POOL_AUTO_REFILL: '3' } });
    try {
      await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@x.cn' } });
      await call(t.url, 'POST', '/api/register-key', { body: { email: 'b@x.cn' } });
      const status = (await call(t.url, 'GET', '/api/key-pool-status')).body;
      assert.equal(status.unused, 4);
      assert.equal(status.assigned, 2);
    } finally {
      await t.stop();
    }
  });

  it('rate limits registrations per address with Retry-After', async () => {
    const t = await startTestPortal({ env: { REGISTER_RATE_LIMIT: '2/1h' } });
    try {
      assert.equal((await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@x.cn' } })).status, 201);
      assert.equal((await call(t.url, 'POST', '/api/register-key', { body: { email: 'b@x.cn' } })).status, 201);
      const limited = await call(t.url, 'POST', '/api/register-key', { body: { email: 'c@x.cn' } });
      assert.equal(limited.status, 429);
      assert.equal(limited.body.error.code, 'rate_limited');
      assert.ok(Number(limited.headers.get('retry-after')) > 0);
    } finally {
      await t.stop();
    }
  });
});
