import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Browser } from '../support/browser-client.js';
import { ManualClock } from '../support/clock.js';
import { ADMIN, auditLines, auditText, call, chat, startTestPortal, waitFor, type ChatOptions, type TestPortal } from '../support/harness.js';

const use = (t: TestPortal, key: string, o: ChatOptions = {}) => chat(t.fake, key, o);

const FULL_KEY = /usr_pool_\d{4,}_[0-9a-f]{48}/;

describe('daily limits, enforced through CLIProxyAPI (clock injected, TIMEZONE Asia/Shanghai)', () => {
  // 23:00 in Shanghai on the 22nd: Shanghai's midnight is 16:00 UTC, eight hours before UTC's.
  const clock = new ManualClock(Date.parse('2026-11-22T15:00:00Z'));
  let t: TestPortal;
  const admin = (method: string, p: string, body?: unknown) => call(t.url, method, p, { token: ADMIN, body });
  const statusOf = async (id: string) => (await admin('GET', `/admin/keys/${id}`)).body as { status: string; suspension: { reason: string; until: string | null } | null };
  const sync = () => admin('POST', '/api/sync-usage', {});
  const live = (key: string) => t.fake.live.has(key);

  before(async () => {
    t = await startTestPortal({ clock, fakeOptions: { now: () => clock.now(), reloadDelayMs: 5 }, env: { USAGE_SOURCE: 'queue', POOL_SIZE: '30' } });
  });
  after(async () => { await t.stop(); });

  it('lets a key with daily_limit 3 work 3 times, failed attempts not counted, then suspends it until Shanghai midnight', async () => {
    const created = await admin('POST', '/admin/keys', { label: 'trial for Li', daily_limit: 3 });
    assert.equal(created.status, 201);
    const { key, key_id: id } = created.body as { key: string; key_id: string };
    assert.match(key, FULL_KEY);
    assert.equal(created.body.daily_limit, 3);
    await waitFor(() => live(key), 'the key to go live');

    assert.equal(await use(t, key, { fail: true }), 500);
    assert.equal(await use(t, key, { fail: true }), 500);
    for (let i = 0; i < 2; i++) assert.equal(await use(t, key), 200);
    await sync();
    assert.equal((await statusOf(id)).status, 'active', 'two requests and two failed attempts are under the limit');

    assert.equal(await use(t, key), 200, 'the third request works');
    await sync();
    await waitFor(async () => (await statusOf(id)).status === 'suspended' && !live(key), 'suspension within the ingestion cycle');
    const s = await statusOf(id);
    assert.equal(s.suspension!.reason, 'daily_limit');
    assert.equal(s.suspension!.until, '2026-11-22T16:00:00.000Z', 'lifts at midnight in Asia/Shanghai, not UTC');
    assert.equal(await use(t, key), 401, 'CLIProxyAPI refuses the fourth');

    const usage = await call(t.url, 'GET', '/usage', { token: key });
    assert.equal(usage.status, 200, 'a suspended trial key can still read its usage');
    assert.deepEqual([usage.body.status, usage.body.today.requests, usage.body.today.failed, usage.body.remaining.requests, usage.body.reset_at],
      ['suspended', 3, 2, 0, '2026-11-22T16:00:00.000Z']);

    // Not yet: one second before Shanghai's midnight the job leaves it alone.
    assert.equal(t.portal.jobs.get('quota-midnight')!.timezone, 'Asia/Shanghai');
    clock.set(Date.parse('2026-11-22T15:59:59Z'));
    await t.portal.jobs.runNow('quota-midnight');
    assert.equal((await statusOf(id)).status, 'suspended');
    clock.set(Date.parse('2026-11-22T16:00:00Z'));
    await t.portal.jobs.runNow('quota-midnight');
    await waitFor(() => live(key), 'reinstated at midnight');
    assert.match((await statusOf(id)).status, /^(active|pending)$/);
    assert.equal(await use(t, key), 200, 'works again on the new day');
    const totals = (await call(t.url, 'GET', '/usage', { token: key })).body;
    assert.deepEqual([totals.today.requests, totals.totals.requests], [0, 3], 'suspension never touched history (today’s request not yet pulled)');

    const lines = await auditLines(t);
    assert.ok(!(await auditText(t)).match(FULL_KEY), 'no full key in the audit log');
    assert.deepEqual(lines.filter((l) => l.key_id === id).map((l) => `${l.actor} ${l.action}`),
      ['admin key.issue', 'system key.suspend', 'system key.reinstate']);
  });

  it('lifts a suspension on an admin reset (history kept) and when the limit is raised; suspends when it is lowered', async () => {
    const { key, key_id: id } = (await admin('POST', '/admin/keys', { label: 'reset me', daily_limit: 2 })).body as { key: string; key_id: string };
    await waitFor(() => live(key), 'live');
    for (let i = 0; i < 2; i++) assert.equal(await use(t, key), 200);
    await sync();
    await waitFor(async () => (await statusOf(id)).status === 'suspended' && !live(key), 'suspended');

    const reset = await admin('POST', '/admin/reset-usage', { key_id: id });
    assert.equal(reset.status, 200);
    assert.equal(reset.body.today.requests, 2, 'the history keeps today’s requests');
    assert.equal(reset.body.today.counted_requests, 0, 'but they no longer count against the limit');
    clock.advance(1000);
    await waitFor(() => live(key), 'reinstated after the reset');
    for (let i = 0; i < 2; i++) assert.equal(await use(t, key), 200);
    await sync();
    await waitFor(async () => (await statusOf(id)).status === 'suspended', 'suspended again after two more');

    const raised = await admin('PATCH', `/admin/keys/${id}`, { daily_limit: 10 });
    assert.equal(raised.status, 200);
    assert.equal(raised.body.daily_limit, 10);
    await waitFor(() => live(key), 'a raised limit lifts the suspension');
    assert.equal(await use(t, key), 200);
    await sync();
    const lowered = await admin('PATCH', `/admin/keys/${id}`, { daily_limit: 3 });
    assert.equal(lowered.body.status, 'suspended', 'a limit lowered under today’s use suspends at once');
    await waitFor(() => !live(key), 'out of CLIProxyAPI');
    assert.equal((await admin('PATCH', `/admin/keys/${id}`, { status: 'active' })).status, 409, 'resuming while over the limit is refused with a reason');

    const actions = (await auditLines(t))
      .filter((l) => l.key_id === id).map((l) => l.action);
    assert.deepEqual(actions, ['key.issue', 'key.suspend', 'key.reset_usage', 'key.reinstate', 'key.suspend', 'key.update', 'key.reinstate',
      'key.update', 'key.suspend']);
  });

  it('treats a reset as a point in time: requests made before it never count again, even when their records arrive after it', async () => {
    const { key, key_id: id } = (await admin('POST', '/admin/keys', { label: 'late records', daily_limit: 3 })).body as { key: string; key_id: string };
    await waitFor(() => live(key), 'live');
    for (let i = 0; i < 3; i++) assert.equal(await use(t, key), 200);
    await sync();
    await waitFor(async () => (await statusOf(id)).status === 'suspended', 'suspended at 3');
    // Two more were already under way when the limit was reached; their records are still in CLIProxyAPI's queue.
    clock.advance(200);
    t.fake.recordUsage({ apiKey: key, alias: 'fake-chat', input: 1, output: 1, failed: false });
    t.fake.recordUsage({ apiKey: key, alias: 'fake-chat', input: 1, output: 1, failed: false });
    clock.advance(1000);
    assert.equal((await admin('POST', '/admin/reset-usage', { key_id: id })).body.today.counted_requests, 0);
    clock.advance(1000);
    await sync(); // the two late records arrive after the reset
    const after = (await call(t.url, 'GET', '/usage', { token: key })).body;
    assert.deepEqual([after.today.requests, after.today.counted_requests], [5, 0], 'history has them; the fresh quota does not');
    assert.match(after.status, /^(active|pending)$/);
    await t.portal.jobs.runNow('quota-sweep');
    await waitFor(() => live(key), 'stays reinstated');
    for (let i = 0; i < 2; i++) assert.equal(await use(t, key), 200);
    await sync();
    assert.equal((await statusOf(id)).status, 'active', 'two of the fresh three');
    assert.equal(await use(t, key), 200);
    await sync();
    await waitFor(async () => (await statusOf(id)).status === 'suspended', 'suspended at the third request after the reset');
  });

  it('lets an admin’s suspension outrank a limit’s: it survives a reset and midnight, and only an admin lifts it', async () => {
    const { key, key_id: id } = (await admin('POST', '/admin/keys', { label: 'over and out', daily_limit: 2 })).body as { key: string; key_id: string };
    await waitFor(() => live(key), 'live');
    for (let i = 0; i < 2; i++) assert.equal(await use(t, key), 200);
    await sync();
    await waitFor(async () => (await statusOf(id)).suspension?.reason === 'daily_limit', 'suspended for its limit');
    const byHand = await admin('PATCH', `/admin/keys/${id}`, { status: 'suspended' });
    assert.equal(byHand.status, 200);
    assert.deepEqual([byHand.body.status, byHand.body.suspension.reason, byHand.body.suspension.until], ['suspended', 'admin', null]);
    assert.equal((await admin('POST', '/admin/reset-usage', { key_id: id })).status, 200);
    assert.deepEqual([(await statusOf(id)).status, (await statusOf(id)).suspension?.reason], ['suspended', 'admin'], 'a reset does not lift it');
    clock.advance(86_400_000);
    await t.portal.jobs.runNow('quota-midnight');
    await t.portal.jobs.runNow('quota-sweep');
    assert.equal((await statusOf(id)).status, 'suspended', 'midnight does not lift it');
    assert.ok(!live(key));
    await admin('PATCH', `/admin/keys/${id}`, { status: 'active' });
    await waitFor(() => live(key), 'an admin lifts it');
    const lines = (await auditLines(t)).filter((l) => l.key_id === id);
    const byAdmin = lines.find((l) => l.action === 'key.suspend' && l.actor === 'admin');
    assert.equal(byAdmin?.details?.replaces, 'daily_limit', 'the audit says the admin’s suspension replaced the limit’s');
    assert.deepEqual(lines.map((l) => `${l.actor} ${l.action}`), ['admin key.issue', 'system key.suspend', 'admin key.suspend', 'admin key.reset_usage', 'admin key.reinstate']);
  });

  it('suspends on the daily token limit the same way', async () => {
    const { key, key_id: id } = (await admin('POST', '/admin/keys', { daily_token_limit: 100 })).body as { key: string; key_id: string };
    await waitFor(() => live(key), 'live');
    assert.equal(await use(t, key, { input: 40, output: 20 }), 200);
    await sync();
    assert.equal((await statusOf(id)).status, 'active', '60 of 100 tokens');
    assert.equal(await use(t, key, { input: 40, output: 20 }), 200);
    await sync();
    await waitFor(async () => (await statusOf(id)).status === 'suspended' && !live(key), 'suspended at 120 of 100 tokens');
    assert.equal((await statusOf(id)).suspension!.reason, 'daily_token_limit');
    const u = (await call(t.url, 'GET', '/usage', { token: key })).body;
    assert.deepEqual([u.today.tokens, u.remaining.tokens, u.remaining.requests], [120, 0, null]);
  });

  it('revokes a key at its expiry, and an admin suspension stays until an admin resumes it', async () => {
    const expires = new Date(clock.now() + 3_600_000).toISOString();
    const { key, key_id: id } = (await admin('POST', '/admin/keys', { label: 'one hour', expires_at: expires })).body as { key: string; key_id: string };
    await waitFor(() => live(key), 'live');
    await t.portal.jobs.runNow('quota-sweep');
    assert.notEqual((await statusOf(id)).status, 'revoked');
    clock.advance(3_600_000);
    await t.portal.jobs.runNow('quota-sweep');
    assert.equal((await statusOf(id)).status, 'revoked');
    await waitFor(() => !live(key), 'gone from CLIProxyAPI');
    const line = (await auditLines(t)).find((l) => l.key_id === id && l.action === 'key.revoke');
    assert.deepEqual([line?.actor, line?.details?.reason], ['system', 'expired']);

    const other = (await admin('POST', '/admin/keys', { label: 'paused' })).body as { key: string; key_id: string };
    await waitFor(() => live(other.key), 'live');
    assert.equal((await admin('PATCH', `/admin/keys/${other.key_id}`, { status: 'suspended' })).body.status, 'suspended');
    await waitFor(() => !live(other.key), 'out');
    clock.advance(86_400_000);
    await t.portal.jobs.runNow('quota-midnight');
    assert.equal((await statusOf(other.key_id)).status, 'suspended', 'midnight lifts only limit suspensions');
    await admin('PATCH', `/admin/keys/${other.key_id}`, { status: 'active' });
    await waitFor(() => live(other.key), 'resumed');
  });
});

describe('the admin API', () => {
  let t: TestPortal;
  before(async () => { t = await startTestPortal({ env: { POOL_SIZE: '30' } }); });
  after(async () => { await t.stop(); });
  const admin = (method: string, p: string, body?: unknown) => call(t.url, method, p, { token: ADMIN, body });

  it('answers 401 without the token on every route, as JSON', async () => {
    for (const [method, p] of [['POST', '/admin/keys'], ['GET', '/admin/keys'], ['GET', '/admin/keys/0001'], ['PATCH', '/admin/keys/0001'],
      ['DELETE', '/admin/keys/0001'], ['GET', '/admin/usage'], ['POST', '/admin/reset-usage'], ['GET', '/admin/audit']] as const) {
      const res = await call(t.url, method, p, { body: method === 'GET' || method === 'DELETE' ? undefined : {} });
      assert.equal(res.status, 401, `${method} ${p}`);
      assert.equal(res.body.error.code, 'admin_token_required');
      assert.equal(res.headers.get('www-authenticate'), 'Bearer');
    }
  });

  it('validates bodies and changes nothing on bad input', async () => {
    const before = t.portal.store.poolStatus();
    for (const body of [{ daily_limit: -1 }, { daily_limit: 'x' }, { daily_limit: 1.5 }, { label: 'a'.repeat(101) }, { label: 'bad\u0007' },
      { expires_at: '2020-01-01T00:00:00Z' }, { expires_at: 'tomorrow' }, { email: 'not-an-email' }]) {
      const res = await admin('POST', '/admin/keys', body);
      assert.equal(res.status, 400, JSON.stringify(body));
    }
    assert.deepEqual(t.portal.store.poolStatus(), before);
    const { key_id: id } = (await admin('POST', '/admin/keys', { label: 'ok' })).body;
    assert.equal((await admin('PATCH', `/admin/keys/${id}`, { status: 'revoked' })).status, 400);
    assert.equal((await admin('PATCH', `/admin/keys/${id}`, { daily_token_limit: -5 })).status, 400);
    assert.equal((await admin('PATCH', '/admin/keys/9999', { label: 'x' })).status, 404);
    assert.equal((await admin('POST', '/admin/reset-usage', {})).status, 400);
    assert.equal((await admin('GET', '/admin/keys?status=bogus')).status, 400);
    assert.equal((await admin('GET', `/admin/keys/${id}`)).body.label, 'ok');
  });

  it('lists, filters and pages keys with owners and limits, and never shows a full key except on creation', async () => {
    const made: string[] = [];
    for (let i = 0; i < 5; i++) {
      const res = await admin('POST', '/admin/keys', { label: `batch ${i}`, daily_limit: i, email: i % 2 ? 'odd@x.cn' : undefined, name: 'Odd' });
      assert.match(res.text, FULL_KEY);
      made.push(res.body.key);
    }
    const page1 = await admin('GET', '/admin/keys?q=batch&per_page=2');
    assert.deepEqual([page1.body.total, page1.body.keys.length, page1.body.pages], [5, 2, 3]);
    assert.equal(page1.body.keys[0].label, 'batch 4', 'newest first');
    const odd = await admin('GET', '/admin/keys?email=odd%40x.cn');
    assert.deepEqual(odd.body.keys.map((k: { label: string }) => k.label).sort(), ['batch 1', 'batch 3']);
    // By full key in the path (compared in constant time): DELETE revokes.
    const del = await admin('DELETE', `/admin/keys/${made[0]}`);
    assert.deepEqual(del.body, { revoked: true, key_id: made[0]!.slice(9, 13) });
    assert.equal((await admin('DELETE', `/admin/keys/${made[0]}`)).status, 409);
    for (const p of ['/admin/keys', '/admin/keys?status=revoked', `/admin/keys/${made[1]!.slice(9, 13)}`, '/admin/usage', '/admin/audit', '/api/all-users-stats']) {
      const res = await admin('GET', p);
      assert.equal(res.status, 200, p);
      assert.doesNotMatch(res.text, FULL_KEY, `${p} shows no full key`);
    }
    const audit = await admin('GET', '/admin/audit?per_page=3');
    assert.equal(audit.body.entries.length, 3);
    assert.equal(audit.body.more, true);
    assert.equal(audit.body.entries[0].action, 'key.revoke', 'newest first');
    const next = await admin('GET', '/admin/audit?per_page=3&page=2');
    assert.notDeepEqual(next.body.entries[0], audit.body.entries[0]);
    const issues = await admin('GET', '/admin/audit?action=key.issue&per_page=100');
    assert.ok(issues.body.entries.length >= 5 && issues.body.entries.every((e: { action: string }) => e.action === 'key.issue'));
  });
});

describe('the admin pages for keys, and limits on /my-keys', () => {
  let t: TestPortal;
  before(async () => { t = await startTestPortal({ env: { POOL_SIZE: '30', USAGE_SOURCE: 'queue' }, fakeOptions: { reloadDelayMs: 5 } }); });
  after(async () => { await t.stop(); });

  it('create with a label and limit (key shown once), change, suspend, resume, reset and revoke after confirmation', async () => {
    const b = new Browser(t.url);
    await b.get('/admin');
    await b.post('/admin/sign-in', { token: ADMIN });
    await b.get('/admin/keys');
    const created = await b.post('/admin/keys', { label: 'trial 张三', daily_limit: '5', daily_token_limit: '', expires_at: '', email: '', name: '' });
    assert.equal(created.status, 200);
    const key = FULL_KEY.exec(created.html)![0];
    assert.match(created.html, /data-copy="new-key"/);
    const id = key.slice(9, 13);
    const page = await b.get(`/admin/keys/${id}`);
    assert.doesNotMatch(page.html, FULL_KEY, 'the key page shows it masked');
    assert.match(page.html, /trial 张三/);
    assert.equal((await b.post(`/admin/keys/${id}`, { action: 'update', label: 'renamed', daily_limit: '7', daily_token_limit: '0', expires_at: '' })).status, 303);
    assert.equal(t.portal.store.getKey(key)!.daily_limit, 7);
    assert.equal((await b.post(`/admin/keys/${id}`, { action: 'suspend' })).status, 303);
    assert.equal(t.portal.store.getKey(key)!.status, 'suspended');
    assert.equal((await b.post(`/admin/keys/${id}`, { action: 'resume' })).status, 303);
    assert.notEqual(t.portal.store.getKey(key)!.status, 'suspended');
    assert.equal((await b.post(`/admin/keys/${id}`, { action: 'reset' })).status, 303);
    assert.equal((await b.post(`/admin/keys/${id}`, { action: 'update', daily_limit: '-3' })).status, 400, 'a bad value shows the page with the problem');
    assert.equal((await b.post(`/admin/keys/${id}`, { action: 'update', daily_limit: '9' }, { csrf: null })).status, 403);
    assert.equal(t.portal.store.getKey(key)!.daily_limit, 7, 'refused forms changed nothing');
    await b.get(`/admin/keys/${id}?confirm=revoke`);
    assert.equal((await b.post(`/admin/keys/${id}`, { action: 'revoke' })).status, 400, 'not without the confirmation');
    assert.equal((await b.post(`/admin/keys/${id}`, { action: 'revoke', confirm: 'yes' })).status, 303);
    assert.equal(t.portal.store.getKey(key)!.status, 'revoked');
    const audit = await b.get(`/admin/audit?key_id=${id}`);
    assert.match(audit.html, /key\.revoke/);
    assert.doesNotMatch(audit.html, FULL_KEY);
  });

  it('shows a holder each key’s limit, today’s use as a bar, and when a suspension lifts', async () => {
    const res = await call(t.url, 'POST', '/admin/keys', { token: ADMIN, body: { email: 'holder@x.cn', name: 'Holder', daily_limit: 2 } });
    const key = res.body.key as string;
    await waitFor(() => t.fake.live.has(key), 'live');
    for (let i = 0; i < 2; i++) assert.equal(await use(t, key), 200);
    await call(t.url, 'POST', '/api/sync-usage', { token: ADMIN, body: {} });
    await waitFor(() => t.portal.store.getKey(key)!.status === 'suspended', 'suspended');
    const b = new Browser(t.url, { 'Accept-Language': 'en' });
    await b.get('/my-keys');
    assert.equal((await b.post('/my-keys/sign-in', { key })).status, 303, 'a suspended key still signs its holder in');
    const page = await b.get('/my-keys');
    assert.match(page.html, /2 \/ 2 requests/);
    assert.match(page.html, /class="fill full"/);
    const until = t.portal.store.getKey(key)!.suspension!.until!;
    const local = new Date(Date.parse(until) + 8 * 3_600_000).toISOString().slice(0, 16).replace('T', ' ');
    assert.match(page.html, new RegExp(`Back at ${local} \\+08:00`));
    assert.ok(local.endsWith('00:00'), 'midnight in Shanghai');
  });
});
