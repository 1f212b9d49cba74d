import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { Browser } from '../support/browser-client.js';
import { ManualClock } from '../support/clock.js';
import { ADMIN, auditLines, auditText, call, startTestPortal, tempDir, type TestPortal } from '../support/harness.js';

/** Requests from another address: the portal trusts X-Forwarded-For from loopback only (TRUST_PROXY=loopback). */
const from = (ip: string) => ({ 'X-Forwarded-For': ip });

describe('wrong credentials', () => {
  it('share one budget per address across Bearer keys, the admin token, /usage and the forms; then the address is locked out, audited', async () => {
    const clock = new ManualClock();
    const t = await startTestPortal({ clock, env: { TRUST_PROXY: 'loopback', AUTH_FAILURE_LIMIT: '20/15m' } });
    try {
      const { key } = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'holder@x.cn' } })).body as { key: string };
      const attacker = from('10.9.9.9');
      const wrongKey = `${key.slice(0, 14)}${'0'.repeat(48)}`; // the right key id, a wrong secret
      const tries: [string, string, string][] = [
        ['GET', '/admin/usage', 'guessed-admin-token-0001'], ['GET', '/api/all-users-stats', 'guessed-admin-token-0002'],
        ['GET', '/usage', wrongKey], ['POST', '/api/my-keys', 'usr_pool_9999_' + 'f'.repeat(48)],
      ];
      const statuses: number[] = [];
      for (let i = 0; i < 60; i++) {
        const [m, p, token] = tries[i % tries.length]!;
        const res = await call(t.url, m, p, { token, headers: attacker, body: m === 'POST' ? {} : undefined });
        statuses.push(res.status);
        if (res.status === 429) {
          assert.equal(res.body.error.code, 'too_many_failures');
          assert.equal(Number(res.headers.get('retry-after')), 900);
        }
      }
      assert.deepEqual(statuses.slice(0, 20), Array(20).fill(401), 'the budget: 20 wrong credentials');
      assert.deepEqual(statuses.slice(20), Array(40).fill(429), 'then every credential from that address is refused unchecked');
      assert.equal((await call(t.url, 'GET', '/admin/usage', { token: ADMIN, headers: attacker })).status, 429, 'even the right token');
      const browser = new Browser(t.url, attacker);
      await browser.get('/my-keys');
      assert.equal((await browser.post('/my-keys/sign-in', { key })).status, 429, 'and the sign-in forms');
      assert.equal((await call(t.url, 'GET', '/admin/usage', { token: ADMIN, headers: from('10.1.1.1') })).status, 200, 'another address is not affected');
      assert.equal((await call(t.url, 'GET', '/usage', { token: key, headers: from('10.1.1.1') })).status, 200);

      const lines = await auditLines(t);
      const failed = lines.filter((l) => l.action === 'auth.failed');
      assert.equal(failed.length, 20, 'each wrong credential of the budget is audited, the refused ones are not (a flood cannot fill the disk)');
      assert.ok(failed.every((l) => l.details?.ip === '10.9.9.9'));
      assert.deepEqual([...new Set(failed.map((l) => l.key_id))].sort(), [key.slice(9, 13), 'unknown'].sort(), 'the key id claimed, or "unknown"');
      assert.deepEqual([...new Set(failed.map((l) => l.details?.via))].sort(), ['bearer', 'usage']);
      assert.equal(lines.filter((l) => l.action === 'auth.lockout').length, 1);
      const everything = (await auditText(t)) + t.logs.text();
      for (const secret of ['guessed-admin-token', wrongKey.slice(14), 'f'.repeat(48)]) assert.ok(!everything.includes(secret), 'no presented secret is kept');

      // The lockout ends with its window; the next one lasts twice as long.
      clock.advance(15 * 60_000 + 1000);
      assert.equal((await call(t.url, 'GET', '/admin/usage', { token: ADMIN, headers: attacker })).status, 200);
      for (let i = 0; i < 20; i++) await call(t.url, 'GET', '/admin/usage', { token: `wrong-${i}-0123456789abcdef`, headers: attacker });
      const again = await call(t.url, 'GET', '/admin/usage', { token: ADMIN, headers: attacker });
      assert.equal(again.status, 429);
      assert.equal(Number(again.headers.get('retry-after')), 1800, 'the second lockout lasts twice the first');
    } finally {
      await t.stop();
    }
  });

  it('count a wrong token on /healthz (its details would otherwise be an oracle for the admin and metrics tokens)', async () => {
    const t = await startTestPortal({ env: { AUTH_FAILURE_LIMIT: '3/15m', METRICS_TOKEN: 'metrics-token-0123456789' } });
    try {
      const anon = await call(t.url, 'GET', '/healthz');
      assert.deepEqual(Object.keys(anon.body).sort(), ['reasons', 'status']);
      assert.ok(!anon.text.includes(t.fake.url) && !anon.text.includes(t.dataDir), 'no address or path for anyone');
      const metrics = await call(t.url, 'GET', '/healthz', { token: 'metrics-token-0123456789' });
      assert.equal(metrics.body.cliproxy.url, t.fake.url, 'METRICS_TOKEN sees the details');
      for (let i = 0; i < 3; i++) assert.deepEqual(Object.keys((await call(t.url, 'GET', '/healthz', { token: `guess-${i}-0123456789` })).body).sort(), ['reasons', 'status']);
      assert.equal((await call(t.url, 'GET', '/healthz', { token: 'metrics-token-0123456789' })).status, 429);
      assert.equal((await call(t.url, 'GET', '/healthz')).status, 200, 'a load balancer without a token is never locked out');
    } finally {
      await t.stop();
    }
  });
});

describe('one person, one account', () => {
  // Reproduction: `a@` + 15,900 dots cost 0.7–0.9 s of main thread per request (the pattern ran even
  // after the length check failed); 30 of them held /healthz for 24 s. Linear now: milliseconds.
  it('refuses 30 pathological emails at once without holding up anything else', { timeout: 10_000 }, async () => {
    const t = await startTestPortal();
    try {
      const email = 'a@' + '.'.repeat(15_900);
      const answers = Promise.all(Array.from({ length: 30 }, () => call(t.url, 'POST', '/api/register-key', { body: { email } })));
      const health = await call(t.url, 'GET', '/healthz');
      assert.equal(health.status, 200);
      for (const res of await answers) assert.deepEqual([res.status, res.body.error.code], [400, 'invalid_field']);
      assert.equal(t.portal.store.poolStatus().assigned, 0);
    } finally {
      await t.stop();
    }
  });

  it('treats NFC/NFD, full-width letters, a trailing dot and IDN spellings as the same email, and refuses invisible characters', async () => {
    const t = await startTestPortal();
    try {
      const register = (body: Record<string, unknown>, token?: string) => call(t.url, 'POST', '/api/register-key', { body, token });
      const same: [string, string][] = [
        ['jos\u00e9@x.cn', 'jose\u0301@x.cn'], ['alice@x.cn', '\uff41lice@x.cn'], ['bob@x.cn', 'bob@x.cn.'],
        ['carol@b\u00fccher.example', 'carol@xn--bcher-kva.example'], ['dave@x.cn', 'DAVE@X.CN'],
      ];
      for (const [first, second] of same) {
        const a = await register({ email: first });
        assert.equal(a.status, 201, first);
        const b = await register({ email: second });
        assert.equal(b.status, 409, `${second} is ${first}`);
        assert.equal(b.body.error.code, 'email_registered');
      }
      assert.equal((await register({ email: 'carol@xn--bcher-kva.example' })).body.error.code, 'email_registered');
      assert.equal((await call(t.url, 'GET', `/api/user-stats/${encodeURIComponent('CAROL@bücher.example')}`, { token: ADMIN })).status, 200, 'looked up in the same normal form');

      for (const email of ['alice\u200b@x.cn', 'al\u202eice@x.cn', 'alice@x\u200d.cn', 'a lice@x.cn', 'alice@@x.cn', 'alice@x', 'alice@-x.cn', '\ud800@x.cn']) {
        const res = await register({ email });
        assert.equal(res.status, 400, JSON.stringify(email));
        assert.equal(res.body.error.code, 'invalid_field');
      }
      for (const [field, value, reason] of [['name', 'Eve\u202egnp.exe', /invisible or direction-changing/], ['label', 'lap\u200btop', /invisible/],
        ['label', 'line\u2028break', /invisible/], ['name', 'bell\u0007', /control characters/]] as const) {
        const res = await register({ email: 'eve@x.cn', [field]: value });
        assert.equal(res.status, 400, `${field} ${JSON.stringify(value)}`);
        assert.match(res.body.error.message, reason);
      }
      const fine = await register({ email: 'eve@x.cn', name: '  Jose\u0301 张三 👩‍💻 ', label: 'ノートPC' });
      assert.equal(fine.status, 400, 'a zero-width joiner is refused too, even inside an emoji');
      const ok = await register({ email: 'eve@x.cn', name: '  Jose\u0301 张三 ', label: 'ノートPC 💻' });
      assert.equal(ok.status, 201);
      assert.equal(ok.body.name, 'Jos\u00e9 张三', 'names are NFC and trimmed');
    } finally {
      await t.stop();
    }
  });

  it('does not put an admin’s key under an email someone else registered, unless the admin says it is the same person', async () => {
    const t = await startTestPortal();
    try {
      const squatter = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'boss@corp.example' } })).body as { key: string };
      const refused = await call(t.url, 'POST', '/admin/keys', { token: ADMIN, body: { email: 'BOSS@corp.example', label: 'for the boss' } });
      assert.equal(refused.status, 409);
      assert.equal(refused.body.error.code, 'email_taken');
      assert.equal((await call(t.url, 'POST', '/api/my-keys', { token: squatter.key })).body.keys.length, 1, 'nothing was added to the squatter’s account');
      const confirmed = await call(t.url, 'POST', '/admin/keys', { token: ADMIN, body: { email: 'boss@corp.example', same_person: true } });
      assert.equal(confirmed.status, 201);
      // A fresh email takes an admin's key without more ado, and its holder then owns it.
      assert.equal((await call(t.url, 'POST', '/admin/keys', { token: ADMIN, body: { email: 'new@corp.example' } })).status, 201);
      assert.equal((await call(t.url, 'POST', '/admin/keys', { token: ADMIN, body: { email: 'new@corp.example' } })).status, 201, 'admin keys only: no one else registered it');
    } finally {
      await t.stop();
    }
  });
});

describe('sessions', () => {
  it('end at sign-out for every copy of the cookie, for a key holder and for the admin, across a restart', async () => {
    const dataDir = await tempDir('kp-sessions-');
    let t = await startTestPortal({ dataDir });
    try {
      const { key } = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'copy@x.cn' } })).body as { key: string };
      const user = new Browser(t.url);
      await user.get('/my-keys');
      await user.post('/my-keys/sign-in', { key });
      const admin = new Browser(t.url);
      await admin.get('/admin');
      await admin.post('/admin/sign-in', { token: ADMIN });
      const copies = { user: { ...user.cookies }, admin: { ...admin.cookies } };
      const page = async (cookies: Record<string, string>, p: string) => {
        const b = new Browser(t.url);
        b.cookies = { ...cookies };
        return b.get(p);
      };
      assert.ok((await page(copies.user, '/my-keys')).html.includes('copy@x.cn'));
      assert.equal((await page(copies.admin, '/admin/users')).status, 200);

      await t.stop(); // sessions live in data/sessions.json: a restart keeps them
      t = await startTestPortal({ dataDir });
      for (const b of [user, admin]) (b as unknown as { base: string }).base = t.url;
      assert.ok((await page(copies.user, '/my-keys')).html.includes('copy@x.cn'), 'still signed in after a restart');

      await user.get('/my-keys');
      assert.equal((await user.post('/my-keys/sign-out', {})).status, 303);
      await admin.get('/admin/users');
      assert.equal((await admin.post('/admin/sign-out', {})).status, 303);
      assert.ok(!(await page(copies.user, '/my-keys')).html.includes('copy@x.cn'), 'a copied user cookie is signed out too');
      assert.equal((await page(copies.admin, '/admin/users')).status, 303, 'a copied admin cookie too');

      await t.stop();
      t = await startTestPortal({ dataDir });
      assert.ok(!(await page(copies.user, '/my-keys')).html.includes('copy@x.cn'), 'and it stays signed out after a restart');
      assert.doesNotMatch(readFileSync(path.join(dataDir, 'sessions.json'), 'utf8'), new RegExp(copies.admin.kp_session!.split('.')[0]!), 'the file holds hashes of session ids, not the ids');
    } finally {
      await t.stop();
    }
  });

  it('bind the CSRF token to the session: another session’s token, a cookie the client made up or a cross-site post are refused', async () => {
    const t = await startTestPortal();
    try {
      const { key } = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'csrf@x.cn' } })).body as { key: string };
      const victim = new Browser(t.url);
      await victim.get('/my-keys');
      await victim.post('/my-keys/sign-in', { key });
      const attacker = new Browser(t.url);
      await attacker.get('/register');
      const keysBefore = (await call(t.url, 'POST', '/api/my-keys', { token: key })).body.keys.length;
      assert.equal((await victim.post('/my-keys/add', { label: 'x' }, { csrf: attacker.csrf })).status, 403, 'the attacker’s own valid token');
      const planted = new Browser(t.url);
      planted.cookies = { ...victim.cookies, kp_csrf: 'chosen-by-the-attacker-000000000000' };
      assert.equal((await planted.post('/my-keys/add', { label: 'x' }, { csrf: attacker.csrf })).status, 403, 'a cookie of the client’s choosing');
      const forged = new Browser(t.url);
      forged.cookies = { kp_session: 'made-up-session.made-up-signature' };
      assert.equal((await forged.post('/register', { email: 'x@x.cn' }, { csrf: attacker.csrf })).status, 403);
      const crossSite = new Browser(t.url, { 'Sec-Fetch-Site': 'cross-site' });
      crossSite.cookies = { ...victim.cookies };
      crossSite.csrf = victim.csrf;
      assert.equal((await crossSite.post('/my-keys/add', { label: 'x' })).status, 403, 'a cross-site post with the right token');
      const otherOrigin = new Browser(t.url, { Origin: 'http://evil.example' });
      otherOrigin.cookies = { ...victim.cookies };
      otherOrigin.csrf = victim.csrf;
      assert.equal((await otherOrigin.post('/my-keys/add', { label: 'x' })).status, 403, 'an Origin that is not this site');
      assert.equal((await call(t.url, 'POST', '/api/my-keys', { token: key })).body.keys.length, keysBefore, 'nothing was added');
      assert.equal((await victim.post('/my-keys/add', { label: 'mine' })).status, 200, 'the session’s own token works');
    } finally {
      await t.stop();
    }
  });
});

describe('TRUST_PROXY', () => {
  it('refuses true at start with a one-line reason, and takes a hop count or addresses', () => {
    assert.throws(() => loadConfig({ dotenv: false, env: { TRUST_PROXY: 'true' } }), (err: Error) =>
      /^Invalid configuration: TRUST_PROXY must not be true: any client could then pick its address in X-Forwarded-For\. Give the number of proxies/.test(err.message) && !err.message.includes('\n'));
    assert.equal(loadConfig({ dotenv: false, env: { TRUST_PROXY: '1' } }).TRUST_PROXY, 1);
    assert.equal(loadConfig({ dotenv: false, env: { TRUST_PROXY: '10.0.0.0/8, 127.0.0.1' } }).TRUST_PROXY, '10.0.0.0/8, 127.0.0.1');
    assert.equal(loadConfig({ dotenv: false, env: {} }).TRUST_PROXY, false);
  });

  it('with a hop count, a client cannot choose the address the limits and the audit log see', async () => {
    const t = await startTestPortal({ env: { TRUST_PROXY: '1', AUTH_FAILURE_LIMIT: '2/15m' } });
    try {
      // The proxy (here: the test, on loopback) appends the real client; what the client wrote before it is ignored.
      for (const spoofed of ['1.1.1.1', '2.2.2.2', '3.3.3.3']) {
        await call(t.url, 'GET', '/admin/usage', { token: 'wrong-token-0123456789', headers: { 'X-Forwarded-For': `${spoofed}, 10.0.0.7` } });
      }
      const locked = await call(t.url, 'GET', '/admin/usage', { token: ADMIN, headers: { 'X-Forwarded-For': '4.4.4.4, 10.0.0.7' } });
      assert.equal(locked.status, 429, 'three spoofed addresses were one client');
      assert.deepEqual([...new Set((await auditLines(t)).filter((l) => l.action === 'auth.failed').map((l) => l.details?.ip))], ['10.0.0.7']);
    } finally {
      await t.stop();
    }
  });
});

describe('registration limits', () => {
  it('let 50 colleagues behind one address register at once, then limit the address and each email', async () => {
    const defaults = loadConfig({ dotenv: false, env: {} });
    assert.deepEqual([defaults.REGISTER_RATE_LIMIT, defaults.REGISTER_EMAIL_RATE_LIMIT], [{ limit: 100, windowMs: 600_000 }, { limit: 5, windowMs: 3_600_000 }], 'the defaults, as used below');
    const t = await startTestPortal({ env: { POOL_SIZE: '200', REGISTER_RATE_LIMIT: '100/10m', REGISTER_EMAIL_RATE_LIMIT: '5/1h' } });
    try {
      const team = await Promise.all(Array.from({ length: 50 }, (_, i) => call(t.url, 'POST', '/api/register-key', { body: { email: `member${i}@corp.example` } })));
      assert.deepEqual([...new Set(team.map((r) => r.status))], [201], 'the whole team, in one go');
      const statuses: number[] = [];
      for (let i = 0; i < 6; i++) statuses.push((await call(t.url, 'POST', '/api/register-key', { body: { email: 'member0@corp.example' } })).status);
      assert.deepEqual(statuses, [409, 409, 409, 409, 429, 429], 'five tries per email per hour (the registration was the first)');
      const limited = await call(t.url, 'POST', '/api/register-key', { body: { email: 'MEMBER0@corp.example' } });
      assert.equal(limited.status, 429, 'counted on the normal form of the email');
      assert.ok(Number(limited.headers.get('retry-after')) > 0);
      const byHolder = await call(t.url, 'POST', '/api/register-key', { body: { email: 'member0@corp.example' }, token: team[0]!.body.key });
      assert.equal(byHolder.status, 201, 'a holder adding a key is not held back by the per-email limit');
      let next = 0;
      const more: number[] = [];
      for (let i = 0; i < 45; i++) more.push((await call(t.url, 'POST', '/api/register-key', { body: { email: `late${next++}@corp.example` } })).status);
      // 58 counted so far: 50 + 6 + 1 + the holder's (the address limit counts every registration).
      assert.equal(more.filter((s) => s === 201).length, 100 - 58, 'up to 100 per address in 10 minutes');
      assert.equal(more.at(-1), 429);
    } finally {
      await t.stop();
    }
  });
});

describe('registration modes', () => {
  it('approval: a request waits for an admin, and its code shows the key once', async () => {
    const t = await startTestPortal({ env: { REGISTRATION: 'approval' } });
    try {
      const asked = await call(t.url, 'POST', '/api/register-key', { body: { email: 'wait@x.cn', name: 'Wait' } });
      assert.equal(asked.status, 202);
      const { claim, request_id } = asked.body as { claim: string; request_id: string };
      assert.equal((await call(t.url, 'POST', '/api/register-key', { body: { email: 'WAIT@x.cn' } })).body.error.code, 'registration_pending');
      assert.equal((await call(t.url, 'POST', '/api/claim-key', { body: { claim } })).status, 202);
      assert.equal((await call(t.url, 'POST', '/api/claim-key', { body: { claim: 'a-wrong-claim-code' } })).body.error.code, 'claim_not_found');
      const list = (await call(t.url, 'GET', '/admin/requests', { token: ADMIN })).body;
      assert.equal(list.requests[0].status, 'pending');
      assert.ok(!JSON.stringify(list).includes(claim) && !('claim_hash' in list.requests[0]));
      assert.equal((await call(t.url, 'POST', `/admin/requests/${request_id}/approve`, { token: ADMIN, body: {} })).body.status, 'approved');
      assert.equal((await call(t.url, 'POST', `/admin/requests/${request_id}/deny`, { token: ADMIN, body: {} })).body.error.code, 'registration_decided');
      const got = await call(t.url, 'POST', '/api/claim-key', { body: { claim } });
      assert.equal(got.status, 201);
      assert.match(got.body.key, /^usr_pool_\d{4}_/);
      assert.equal(got.body.email, 'wait@x.cn');
      assert.equal((await call(t.url, 'POST', '/api/claim-key', { body: { claim } })).body.error.code, 'registration_claimed', 'shown once');
      assert.ok(!readFileSync(path.join(t.dataDir, 'registration_requests.json'), 'utf8').includes(got.body.key), 'the key is no longer held for the claim');
      assert.equal((await call(t.url, 'POST', '/api/register-key', { body: { email: 'wait@x.cn' }, token: got.body.key })).status, 201, 'the holder adds keys without asking');

      const denied = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'no@x.cn' } })).body as { claim: string; request_id: string };
      await call(t.url, 'POST', `/admin/requests/${denied.request_id}/deny`, { token: ADMIN, body: {} });
      const refused = await call(t.url, 'POST', '/api/claim-key', { body: { claim: denied.claim } });
      assert.equal(refused.status, 403);
      assert.equal(refused.body.error.code, 'registration_denied');
      assert.equal((await call(t.url, 'POST', '/api/register-key', { body: { email: 'admin-made@x.cn' }, token: ADMIN })).status, 201, 'an admin registers anyone at once');
    } finally {
      await t.stop();
    }
  });

  it('approval through the pages: the code on the waiting page, the admin’s list, the key once', async () => {
    const t = await startTestPortal({ env: { REGISTRATION: 'approval' } });
    try {
      const person = new Browser(t.url);
      await person.get('/register');
      const waiting = await person.post('/register', { email: 'page@x.cn' });
      assert.equal(waiting.status, 202);
      const claim = /id="claim-code">([^<]+)</.exec(waiting.html)![1]!;
      const admin = new Browser(t.url);
      await admin.get('/admin');
      await admin.post('/admin/sign-in', { token: ADMIN });
      const list = await admin.get('/admin/requests');
      const id = /action="\/admin\/requests\/([0-9a-f]+)\/approve"/.exec(list.html)![1]!;
      assert.equal((await admin.post(`/admin/requests/${id}/approve`, {})).status, 303);
      await person.get('/register/claim');
      const shown = await person.post('/register/claim', { claim });
      assert.equal(shown.status, 200);
      assert.match(shown.html, /id="new-key">usr_pool_\d{4}_[0-9a-f]{48}</);
      await person.get('/register/claim');
      assert.equal((await person.post('/register/claim', { claim })).status, 409);
    } finally {
      await t.stop();
    }
  });

  it('domains: addresses of ALLOWED_EMAIL_DOMAINS (IDN spelt either way) and their subdomains only', async () => {
    const t = await startTestPortal({ env: { REGISTRATION: 'domains', ALLOWED_EMAIL_DOMAINS: 'bücher.example' } });
    try {
      assert.equal((await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@xn--bcher-kva.example' } })).status, 201);
      assert.equal((await call(t.url, 'POST', '/api/register-key', { body: { email: 'b@team.bücher.example' } })).status, 201);
      const outside = await call(t.url, 'POST', '/api/register-key', { body: { email: 'c@evilbücher.example' } });
      assert.equal(outside.status, 403);
      assert.equal(outside.body.error.code, 'email_domain_not_allowed');
    } finally {
      await t.stop();
    }
    assert.throws(() => loadConfig({ dotenv: false, env: { REGISTRATION: 'domains' } }), /REGISTRATION=domains needs ALLOWED_EMAIL_DOMAINS/);
  });
});
