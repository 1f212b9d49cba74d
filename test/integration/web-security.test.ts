import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ROOT_DIR } from '../../src/app.js';
import { Browser } from '../support/browser-client.js';
import { ManualClock } from '../support/clock.js';
import { ADMIN, auditLines, auditText, call, startTestPortal, waitFor, type TestPortal } from '../support/harness.js';

const EVIL_NAME = '<script>alert("name")</script>';
const EVIL_LABEL = '<img src=x onerror=alert(1)>';

describe('the web surface', () => {
  let t: TestPortal;
  let issued: { key: string; key_id: string };
  before(async () => {
    t = await startTestPortal({ env: { POOL_SIZE: '60', AUTH_FAILURE_LIMIT: '0' } });
    issued = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'xss@example.com', name: EVIL_NAME, label: EVIL_LABEL } })).body;
  });
  after(async () => { await t.stop(); });

  async function signedIn(as: 'user' | 'admin'): Promise<Browser> {
    const b = new Browser(t.url);
    await b.get('/register');
    const res = as === 'user' ? await b.post('/my-keys/sign-in', { key: issued.key }) : await b.post('/admin/sign-in', { token: ADMIN });
    assert.equal(res.status, 303);
    return b;
  }

  it('renders names and labels escaped on every page that shows them', async () => {
    const user = await signedIn('user');
    const admin = await signedIn('admin');
    const pages = [
      await user.get('/my-keys'),
      await user.get(`/my-keys/revoke/${issued.key_id}`),
      await admin.get('/admin/users'),
      await admin.get('/admin/users/xss%40example.com'),
    ];
    for (const p of pages) {
      assert.equal(p.status, 200);
      assert.ok(!p.html.includes(EVIL_NAME) && !p.html.includes(EVIL_LABEL), 'no raw markup from user input');
    }
    assert.ok(pages[0]!.html.includes('&lt;script&gt;alert(&#34;name&#34;)&lt;/script&gt;'));
    assert.ok(pages[0]!.html.includes('&lt;img src=x onerror=alert(1)&gt;'));
    assert.ok(pages[2]!.html.includes('&lt;script&gt;'));
    // The register form echoes what was typed after an error, escaped too.
    const anon = new Browser(t.url);
    await anon.get('/register');
    const again = await anon.post('/register', { email: 'xss@example.com', name: EVIL_NAME, label: EVIL_LABEL });
    assert.equal(again.status, 409);
    assert.ok(!again.html.includes(EVIL_NAME) && again.html.includes('&lt;script&gt;'));
  });

  it('refuses state-changing forms without the CSRF token, and changes nothing', async () => {
    const before = t.portal.store.poolStatus();
    const anon = new Browser(t.url);
    await anon.get('/register');
    assert.equal((await anon.post('/register', { email: 'csrf@example.com' }, { csrf: null })).status, 403);
    assert.equal((await anon.post('/register', { email: 'csrf@example.com' }, { csrf: 'forged' })).status, 403);
    // A token belongs to one browser session: another browser (no session, or its own) cannot use it.
    const crossSite = new Browser(t.url);
    assert.equal((await crossSite.post('/register', { email: 'csrf@example.com' }, { csrf: anon.csrf })).status, 403);
    await crossSite.get('/register');
    assert.equal((await crossSite.post('/register', { email: 'csrf@example.com' }, { csrf: anon.csrf })).status, 403);

    const user = await signedIn('user');
    assert.equal((await user.post('/my-keys/add', { label: 'x' }, { csrf: null })).status, 403);
    assert.equal((await user.post(`/my-keys/revoke/${issued.key_id}`, {}, { csrf: null })).status, 403);
    const admin = await signedIn('admin');
    assert.equal((await admin.post('/admin/pool', { count: 5 }, { csrf: null })).status, 403);
    // JSON calls that ride on the session cookie need the token as a header.
    const viaCookie = await fetch(`${t.url}/api/revoke-key`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', Cookie: `kp_session=${encodeURIComponent(user.cookies.kp_session!)}` },
      body: JSON.stringify({ key_id: issued.key_id }),
    });
    assert.equal(viaCookie.status, 403);
    assert.deepEqual(t.portal.store.poolStatus(), before);
    assert.equal(t.portal.store.getKey(issued.key)?.status, 'active');
  });

  it('never puts a full key in a response, except the one that issues it', async () => {
    const issueAnswers: string[] = [];
    const otherAnswers: string[] = [];
    const reg = await call(t.url, 'POST', '/api/register-key', { body: { email: 'leak@example.com', label: 'leak' } });
    issueAnswers.push(reg.text);
    const key = reg.body.key as string;
    const user = new Browser(t.url);
    await user.get('/register');
    await user.post('/my-keys/sign-in', { key });
    const added = await user.post('/my-keys/add', { label: 'second' });
    issueAnswers.push(added.html);
    const second = /id="new-key">([^<]+)</.exec(added.html)![1]!;
    const admin = await signedIn('admin');
    for (const p of ['/', '/my-keys', `/my-keys/revoke/${reg.body.key_id}`, '/register']) otherAnswers.push((await user.get(p)).html);
    for (const p of ['/admin/users', '/admin/users/leak%40example.com', '/admin/pool']) otherAnswers.push((await admin.get(p)).html);
    for (const [m, p, body, token] of [
      ['POST', '/api/my-keys', {}, key], ['POST', '/api/my-keys', { email: 'leak@example.com' }, ADMIN],
      ['GET', '/api/user-stats/leak%40example.com', undefined, key], ['GET', '/api/all-users-stats', undefined, ADMIN],
      ['GET', '/api/key-pool-status', undefined, undefined], ['GET', '/healthz', undefined, undefined],
      ['POST', '/admin/pool', { count: 1 }, ADMIN], ['POST', '/api/revoke-key', { key_id: reg.body.key_id }, key],
    ] as const) otherAnswers.push((await call(t.url, m, p, { body, token })).text);
    assert.ok(issueAnswers.every((a, i) => a.includes(i === 0 ? key : second)), 'the issuing answers do show the key');
    for (const a of otherAnswers) {
      for (const k of [key, second, issued.key]) assert.ok(!a.includes(k.slice(14)), 'no other answer holds a key secret');
    }
  });

  it('answers errors as JSON to the API and as a readable page to a browser', async () => {
    const api = await call(t.url, 'GET', '/api/nope');
    assert.equal(api.status, 404);
    assert.deepEqual(Object.keys(api.body.error), ['code', 'message']);
    const page = await new Browser(t.url).get('/nope');
    assert.equal(page.status, 404);
    assert.match(page.html, /<html lang="en">/);
    assert.ok(page.html.includes('There is nothing at this address.'));
    const zh = await new Browser(t.url, { 'Accept-Language': 'zh-CN,zh;q=0.9' }).get('/nope');
    assert.ok(zh.html.includes('页面不存在'));
    const badDays = await call(t.url, 'GET', '/api/user-stats/xss%40example.com?days=lots', { token: ADMIN });
    assert.equal(badDays.status, 400);
    const badEmail = await call(t.url, 'POST', '/api/my-keys', { body: { email: 42 }, token: ADMIN });
    assert.equal(badEmail.status, 400);
    const noUser = await call(t.url, 'POST', '/api/my-keys', { body: { email: 'nobody@example.com' }, token: ADMIN });
    assert.equal(noUser.status, 404);
  });

  it('sends security headers and a strict Content-Security-Policy with no inline script', async () => {
    const res = await fetch(`${t.url}/register`, { headers: { Accept: 'text/html' } });
    const csp = res.headers.get('content-security-policy') ?? '';
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.ok(!csp.includes('unsafe-inline') && !csp.includes('unsafe-eval'));
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    const html = await res.text();
    assert.ok(!/(src|href)="(https?:)?\/\//.test(html), 'no external assets: everything comes from the portal');
    assert.ok(!/<script(?![^>]*\bsrc=)[^>]*>/.test(html), 'no inline <script>');
    assert.ok(!/ on[a-z]+="/.test(html) && !/ style="/.test(html), 'no inline handlers or styles');
    const cookie = res.headers.getSetCookie().find((c) => c.startsWith('kp_session='))!;
    assert.match(cookie, /HttpOnly/);
    assert.match(cookie, /SameSite=Strict/);
  });
});

describe('the CLIProxyAPI banner', () => {
  it('tells everyone when CLIProxyAPI is down, and admins when it rejects the management key', async () => {
    const down = await startTestPortal();
    try {
      await down.fake.stop();
      await down.portal.reconciler.run();
      const home = await new Browser(down.url).get('/');
      assert.match(home.html, /class="banner" role="alert">CLIProxyAPI cannot be reached right now/);
      const zh = await new Browser(down.url, { 'Accept-Language': 'zh-CN' }).get('/');
      assert.match(zh.html, /class="banner" role="alert">暂时无法连接 CLIProxyAPI/);
    } finally {
      await down.stop();
    }
    const rejected = await startTestPortal({ fakeOptions: { managementKey: 'another-key-entirely' } });
    try {
      const admin = new Browser(rejected.url);
      await admin.get('/admin');
      await admin.post('/admin/sign-in', { token: ADMIN });
      const page = await admin.get('/admin/users');
      assert.match(page.html, /class="banner" role="alert">CLIProxyAPI rejects the portal’s management key/);
    } finally {
      await rejected.stop();
    }
    const v6only = await startTestPortal({ env: { USAGE_SOURCE: 'subscribe' }, fakeOptions: { generation: 'v6' } });
    try {
      const admin = new Browser(v6only.url);
      await admin.get('/admin');
      await admin.post('/admin/sign-in', { token: ADMIN });
      await call(v6only.url, 'POST', '/api/sync-usage', { token: ADMIN });
      await waitFor(async () => (await admin.get('/admin/users')).html.includes('Usage is not being recorded'), 'the usage banner', 5000);
    } finally {
      await v6only.stop();
    }
    const fine = await startTestPortal();
    try {
      assert.ok(!(await new Browser(fine.url).get('/')).html.includes('class="banner"'));
      const admin = new Browser(fine.url);
      await admin.get('/admin');
      await admin.post('/admin/sign-in', { token: ADMIN });
      await call(fine.url, 'POST', '/api/sync-usage', { token: ADMIN });
      const page = (await admin.get('/admin/users')).html;
      assert.ok(!page.includes('class="banner"'));
      assert.match(page, /(pushed by CLIProxyAPI \(subscribe\)|read from its queue) · last record/, 'the usage source in words');
    } finally {
      await fine.stop();
    }
  });
});

describe('sessions and sign-in limits', () => {
  it('expires a session after 12 hours and rate limits sign-in attempts with Retry-After', async () => {
    const clock = new ManualClock();
    const t = await startTestPortal({ clock, env: { AUTH_FAILURE_LIMIT: '3/15m' } });
    try {
      const { key } = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'sess@example.com' } })).body;
      const b = new Browser(t.url);
      await b.get('/my-keys');
      const ok = await b.post('/my-keys/sign-in', { key });
      assert.equal(ok.status, 303);
      assert.match(ok.location ?? '', /\/my-keys$/);
      assert.ok((await b.get('/my-keys')).html.includes('sess@example.com'));
      clock.advance(12 * 3_600_000 + 1000);
      assert.ok(!(await b.get('/my-keys')).html.includes('sess@example.com'), 'the session has expired');

      // Three wrong credentials per 15 minutes, counted across the user and admin forms.
      assert.equal((await b.post('/my-keys/sign-in', { key: 'usr_pool_0001_bad' })).status, 401);
      assert.equal((await b.post('/admin/sign-in', { token: 'not-the-token-0000' })).status, 401);
      assert.equal((await b.post('/my-keys/sign-in', { key: 'usr_pool_0001_bad' })).status, 401);
      assert.equal((await b.post('/my-keys/sign-in', { key })).status, 429, 'locked out: not even the right key is looked at');
      const limited = await fetch(`${t.url}/admin/sign-in`, { method: 'POST', headers: { 'Content-Type': 'application/x-www-form-urlencoded' }, body: 'token=x' });
      assert.equal(limited.status, 429);
      assert.ok(Number(limited.headers.get('retry-after')) > 0);
      const audit = await auditText(t);
      assert.match(audit, /"action":"auth.failed","key_id":"unknown","details":\{"ip":"[^"]+","via":"admin_sign_in"\}/, 'failed admin sign-ins are audited');
      assert.match(audit, /"action":"auth.failed","key_id":"0001","details":\{"ip":"[^"]+","via":"sign_in"\}/, 'a wrong key is audited by the id it claimed');
      assert.match(audit, /"action":"auth.lockout"/);
      assert.ok(!audit.includes(key.slice(14)), 'the audit log holds no key');
    } finally {
      await t.stop();
    }
  });
});

describe('templates', () => {
  it('hold no text of their own: every word comes from the zh-CN/en dictionaries', () => {
    const dir = path.join(ROOT_DIR, 'views');
    const files = [...readdirSync(dir).map((f) => path.join(dir, f)), ...readdirSync(path.join(dir, 'partials')).map((f) => path.join(dir, 'partials', f))]
      .filter((f) => f.endsWith('.ejs'));
    const offenders: string[] = [];
    for (const f of files) {
      const text = readFileSync(f, 'utf8')
        .replace(/<%[\s\S]*?%>/g, ' ')          // EJS tags
        .replace(/<(script|style|pre|svg)[\s\S]*?<\/\1>/g, ' ')
        .replace(/<[^>]+>/g, '\n');             // markup
      for (const chunk of text.split('\n')) {
        if (/[A-Za-z\u4e00-\u9fff]{2,}/.test(chunk)) offenders.push(`${path.basename(f)}: "${chunk.trim()}"`);
      }
    }
    assert.deepEqual(offenders, []);
  });
});
