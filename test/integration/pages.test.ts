import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ADMIN, adminBrowser, call, chat, holderBrowser, pageText, startTestPortal, syncUsage, waitFor, type TestPortal } from '../support/harness.js';

/** A chat completion through the fake with chosen token counts. */
const use = (t: TestPortal, key: string, input = 100, output = 20) => chat(t.fake, key, { input, output });

const sync = syncUsage;
const text = pageText;


describe('pages: figures that agree, times in TIMEZONE, words instead of codes', () => {
  it('counts a revoked key and the trial keys in the totals, the leaderboard and the CSV alike', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue' } });
    try {
      const first = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'rev@x.cn' } })).body;
      const second = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'rev@x.cn', label: 'second' }, token: first.key })).body;
      const trial = (await call(t.url, 'POST', '/admin/keys', { body: { label: 'visitor', daily_limit: 50 }, token: ADMIN })).body;
      await waitFor(async () => (await use(t, trial.key)) === 200, 'keys live');
      for (let i = 0; i < 3; i++) assert.equal(await use(t, first.key), 200);
      assert.equal(await use(t, second.key), 200);
      await sync(t);
      assert.equal((await call(t.url, 'POST', '/api/revoke-key', { body: { key: first.key }, token: second.key })).status, 200);

      const mine = (await call(t.url, 'POST', '/api/my-keys', { token: second.key, body: {} })).body;
      assert.equal(mine.keys.length, 1, 'the list shows the live key');
      assert.equal(mine.revoked, 1);
      assert.equal(mine.totals.requests, 4, 'the totals keep the revoked key’s requests');
      assert.equal(mine.totals.tokens, 4 * 120);
      assert.equal(mine.totals.today_requests, 4);
      const stats = (await call(t.url, 'GET', '/api/user-stats/rev%40x.cn', { token: second.key })).body;
      assert.equal(stats.totals.requests, mine.totals.requests, 'cards and charts agree');
      assert.equal(stats.by_model.reduce((n: number, m: { tokens: number }) => n + m.tokens, 0), mine.totals.tokens);

      const board = (await call(t.url, 'GET', '/api/all-users-stats', { token: ADMIN })).body;
      assert.deepEqual(board.users.map((u: { email: string; total_requests: number }) => [u.email, u.total_requests]), [['rev@x.cn', 4]]);
      assert.deepEqual(board.trial.keys.map((k: { key_id: string; total_requests: number }) => [k.key_id, k.total_requests]), [[trial.key_id, 1]]);
      assert.equal(board.summary.total_requests, 5, 'people and trial keys');

      const csv = (await call(t.url, 'GET', '/api/usage.csv?days=7', { token: ADMIN })).text.trim().split('\n').slice(1).map((l) => l.split(','));
      assert.equal(csv.reduce((n, r) => n + Number(r[4]), 0), 5, 'the CSV has the same requests as the summary');
      assert.deepEqual(csv.filter((r) => r[2] === trial.key_id).map((r) => [r[1], r[4]]), [['', '1']], 'the trial key, with no email');
      const own = (await call(t.url, 'GET', '/api/usage.csv?days=7', { token: second.key })).text;
      assert.ok(!own.includes(trial.key_id), 'a holder’s CSV has only their keys');

      const users = text((await (await adminBrowser(t.url, 'en-US')).get('/admin/users')).html);
      assert.match(users, /Trial keys \(no owner\)/);
      assert.match(users, new RegExp(`${trial.key_id} visitor`));
    } finally {
      await t.stop();
    }
  });

  it('shows every time in TIMEZONE with its offset, audit actions and details in words, in both languages', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue', TIMEZONE: 'Asia/Kathmandu' } });
    try {
      const made = (await call(t.url, 'POST', '/admin/keys', { body: { email: 'tz@x.cn', label: 'tz', daily_limit: 10 }, token: ADMIN })).body;
      assert.equal((await call(t.url, 'PATCH', `/admin/keys/${made.key_id}`, { body: { daily_limit: 12 }, token: ADMIN })).status, 200);
      await waitFor(async () => (await use(t, made.key)) === 200, 'key live');
      await sync(t);
      for (const lang of ['en', 'zh-CN'] as const) {
        const b = await adminBrowser(t.url, lang === 'en' ? 'en-US' : 'zh-CN,zh;q=0.9');
        const audit = text((await b.get('/admin/audit')).html);
        assert.match(audit, /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+05:45/, 'audit times in Asia/Kathmandu, with the offset');
        assert.ok(!/\bUTC\b/.test(audit), 'not labelled UTC');
        assert.match(audit, lang === 'en' ? /Key issued/ : /发放密钥/);
        assert.match(audit, lang === 'en' ? /requests per day 10 → 12/ : /每日请求数 10 → 12/, 'a change as before → after');
        assert.ok(!/key\.issue|key\.update|[{}]/.test(audit), 'no codes or JSON');
        const key = text((await b.get(`/admin/keys/${made.key_id}`)).html);
        assert.match(key, /\d{4}-\d\d-\d\d \d\d:\d\d \+05:45/, 'created in TIMEZONE');
        assert.match(key, lang === 'en' ? /Usage of this key .*Requests by day/ : /此密钥的用量 .*每日请求/, 'the key page has its chart');
        const person = text((await b.get('/admin/users/tz%40x.cn')).html);
        assert.match(person, /\d{4}-\d\d-\d\d \d\d:\d\d \+05:45/, 'last used in TIMEZONE');
        assert.match(person, lang === 'en' ? /Create a key for this person/ : /为此用户创建密钥/);
        assert.ok(!person.includes(lang === 'en' ? 'My keys ' : '我的密钥 '), 'the admin’s page of a person is not “my keys”');
      }
      // A holder's own page: the same offset, and units on each figure.
      const holder = await holderBrowser(t.url, made.key);
      const page = text(holder.html);
      assert.match(page, /\+05:45/);
      assert.match(page, /Today \(requests\).*All time \(tokens\)/);
    } finally {
      await t.stop();
    }
  });

  it('says what is wrong with CLIProxyAPI in the reader’s language, the technical detail after it', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue' } });
    try {
      await t.fake.stop(); // unreachable from now on
      await call(t.url, 'POST', '/api/sync-usage', { token: ADMIN }).catch(() => undefined);
      await waitFor(async () => (await call(t.url, 'GET', '/healthz', { token: ADMIN })).body.status === 'degraded', 'the portal to notice');
      const b = await adminBrowser(t.url, 'zh-CN,zh;q=0.9');
      const users = text((await b.get('/admin/users')).html);
      assert.match(users, /暂时无法连接 CLIProxyAPI/, 'the banner in Chinese');
      const card = /([^ ]*无法连接 CLIProxyAPI（详情：[^）]+）)/.exec(users);
      assert.ok(card, `the CLIProxyAPI card leads with Chinese: ${users.slice(0, 600)}`);
    } finally {
      await t.stop();
    }
  });
});

describe('usage pages: a period, a key and a model', () => {
  it('narrow the charts, keep the person’s totals, and answer a bad date with 400 and the default period', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue' } });
    try {
      const a = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'range@x.cn', label: 'one' } })).body;
      const b = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'range@x.cn', label: 'two' }, token: a.key })).body;
      await waitFor(async () => (await use(t, b.key)) === 200, 'keys live');
      for (let i = 0; i < 3; i++) assert.equal(await use(t, a.key), 200);
      await sync(t);
      const holder = await holderBrowser(t.url, a.key);
      const requestsIn = (html: string) => [...html.matchAll(/<title>\d\d-\d\d: ([\d,]+) requests<\/title>/g)].reduce((n, m) => n + Number(m[1]!.replace(/,/g, '')), 0);
      assert.equal(requestsIn(holder.html), 4, 'both keys by default');
      const one = await holder.get(`/my-keys?from=&to=&key=${a.key_id}&model=`);
      assert.equal(one.status, 200);
      assert.equal(requestsIn(one.html), 3, 'one key');
      assert.match(one.html, new RegExp(`<option value="${a.key_id}" selected>`));
      assert.equal(requestsIn((await holder.get('/my-keys?model=another-model')).html), 0, 'a model with no use');
      const today = /name="to" value="(\d{4}-\d\d-\d\d)"/.exec(holder.html)![1]!;
      const tomorrow = new Date(Date.parse(today) + 86_400_000).toISOString().slice(0, 10);
      assert.equal(requestsIn((await holder.get(`/my-keys?from=${tomorrow}&to=${tomorrow}`)).html), 0, 'a period with no use');
      const bad = await holder.get('/my-keys?from=2026-13-45');
      assert.equal(bad.status, 400);
      assert.match(text(bad.html), /from must be a day such as 2026-11-01/);
      assert.equal(requestsIn(bad.html), 4, 'the default period is shown under the problem');
    } finally {
      await t.stop();
    }
  });
});

describe('bulk trial keys', () => {
  it('creates N trial keys as a CSV that CLIProxyAPI accepts, and refuses a bad count changing nothing', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue' } });
    try {
      const before = t.portal.store.keyCount();
      const tooMany = await call(t.url, 'POST', '/admin/keys/bulk', { body: { count: 201 }, token: ADMIN });
      assert.equal(tooMany.status, 400);
      assert.equal(t.portal.store.keyCount(), before, 'nothing issued');

      const res = await call(t.url, 'POST', '/admin/keys/bulk', { body: { count: 12, label: '=visitors', daily_limit: 5 }, token: ADMIN });
      assert.equal(res.status, 201);
      assert.match(res.headers.get('content-disposition') ?? '', /attachment; filename="?trial-keys-\d{4}-\d\d-\d\d\.csv"?/);
      const [head, ...rows] = res.text.trim().split('\n');
      assert.equal(head, 'key_id,key,label,status,daily_limit,daily_token_limit,expires_at');
      assert.equal(rows.length, 12);
      const keys = rows.map((r) => r.split(','));
      assert.equal(new Set(keys.map((k) => k[1])).size, 12, 'twelve different keys');
      assert.deepEqual(keys.map((k) => k[2]), Array.from({ length: 12 }, (_, i) => `'=visitors ${i + 1}/12`), 'numbered labels, kept as text');
      assert.ok(keys.every((k) => k[4] === '5'));
      for (const k of keys) await waitFor(async () => (await use(t, k[1]!)) === 200, `key ${k[0]} live`);
      const board = (await call(t.url, 'GET', '/admin/keys?per_page=100', { token: ADMIN })).body;
      assert.equal(board.keys.filter((k: { email: string | null }) => k.email === null).length, 12, 'trial keys, no owner');
      const log = (await call(t.url, 'GET', '/admin/audit?action=key.issue', { token: ADMIN })).body;
      assert.equal(JSON.stringify(log).includes(keys[0]![1]!), false, 'no key in the audit log');

      // The page form: a bad count shows the form again with the problem.
      const b = await adminBrowser(t.url, 'zh-CN,zh;q=0.9');
      await b.get('/admin/keys');
      const bad = await b.post('/admin/keys/bulk', { count: 0, label: 'x' });
      assert.equal(bad.status, 400);
      assert.match(text(bad.html), /数量不能小于 1/);
    } finally {
      await t.stop();
    }
  });
});

describe('bulk revoke', () => {
  it('revokes the chosen keys after a confirmation, all or nothing when an id is unknown', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue' } });
    try {
      const made = (await call(t.url, 'POST', '/admin/keys/bulk', { body: { count: 5, label: 'batch' }, token: ADMIN })).text
        .trim().split('\n').slice(1).map((l) => { const [id, key] = l.split(','); return { id: id!, key: key! }; });
      for (const k of made) await waitFor(async () => (await use(t, k.key)) === 200, `key ${k.id} live`);

      const unknown = await call(t.url, 'POST', '/admin/keys/revoke', { body: { key_ids: [made[0]!.id, '9999'] }, token: ADMIN });
      assert.equal(unknown.status, 404);
      assert.equal(await use(t, made[0]!.key), 200, 'nothing revoked when one id is unknown');
      assert.equal((await call(t.url, 'POST', '/admin/keys/revoke', { body: { key_ids: [] }, token: ADMIN })).status, 400);

      const api = await call(t.url, 'POST', '/admin/keys/revoke', { body: { key_ids: [made[0]!.id, made[1]!.id] }, token: ADMIN });
      assert.equal(api.status, 200);
      assert.deepEqual(api.body, { revoked: [made[0]!.id, made[1]!.id].sort(), already: [] });
      for (const k of made.slice(0, 2)) assert.equal(await use(t, k.key), 401, 'CLIProxyAPI refuses it once answered');
      const again = await call(t.url, 'POST', '/admin/keys/revoke', { body: { key_ids: [made[1]!.id, made[2]!.id] }, token: ADMIN });
      assert.deepEqual(again.body, { revoked: [made[2]!.id], already: [made[1]!.id] });

      // The page: the list's checkboxes, a confirmation that names the keys, then the revocations.
      const b = await adminBrowser(t.url, 'en-US');
      const list = await b.get('/admin/keys');
      assert.ok(!list.html.includes(`name="key_id" value="${made[0]!.id}"`), 'a revoked key has no checkbox');
      const confirm = await b.post('/admin/keys/revoke', { key_id: made[3]!.id, key_id2: 'ignored' });
      assert.equal(confirm.status, 200);
      assert.match(text(confirm.html), /Revoke 1 keys\?/);
      assert.equal(await use(t, made[3]!.key), 200, 'not before the confirmation');
      const body = new URLSearchParams([['_csrf', b.csrf], ['key_id', made[3]!.id], ['key_id', made[4]!.id], ['confirm', 'yes']]);
      const done = await fetch(`${t.url}/admin/keys/revoke`, { method: 'POST', redirect: 'manual', body,
        headers: { Accept: 'text/html', 'Content-Type': 'application/x-www-form-urlencoded', Cookie: Object.entries(b.cookies).map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('; '), Origin: t.url } });
      assert.equal(done.status, 303, await done.clone().text().then((h) => text(h).slice(0, 300)));
      assert.equal(done.headers.get('location'), '/admin/keys?revoked=2');
      for (const k of made.slice(3)) assert.equal(await use(t, k.key), 401);
      assert.match(text((await b.get('/admin/keys?revoked=2')).html), /2 keys were revoked\./);
      const audit = (await call(t.url, 'GET', '/admin/audit?action=key.revoke&per_page=50', { token: ADMIN })).body;
      assert.equal(JSON.stringify(audit).match(/"action":"key\.revoke"/g)?.length, 5, 'each revocation audited');
    } finally {
      await t.stop();
    }
  });
});
