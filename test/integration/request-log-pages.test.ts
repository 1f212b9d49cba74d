import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Browser } from '../support/browser-client.js';
import { ADMIN, adminBrowser, call, chat, decodeHtml, holderBrowser, pageText, startTestPortal, waitFor, type TestPortal } from '../support/harness.js';

const DAY_MS = 86_400_000;
/** A day on the portal's calendar (the harness runs it in Asia/Shanghai). */
const dayIn = (ms: number) => new Intl.DateTimeFormat('en-CA', { timeZone: 'Asia/Shanghai' }).format(ms);


/** The log table's rows, each as the text of its cells. */
function rowsOf(html: string): string[][] {
  const body = /<tbody>([\s\S]*?)<\/tbody>/.exec(html)?.[1] ?? '';
  return [...body.matchAll(/<tr>([\s\S]*?)<\/tr>/g)].map((m) => [...m[1]!.matchAll(/<td[^>]*>([\s\S]*?)<\/td>/g)].map((c) => pageText(c[1]!)));
}

const linkOf = (html: string, rel: 'next') => {
  const m = new RegExp(`href="([^"]+)" rel="${rel}"`).exec(html);
  return m ? decodeHtml(m[1]!) : null;
};
const problemOf = (html: string) => { const m = /<p class="problem" role="alert">([\s\S]*?)<\/p>/.exec(html); return m ? pageText(m[1]!) : null; };

// Holder columns: time, key, model, endpoint, result, input, output, total, latency.
const H = { time: 0, key: 1, model: 2, endpoint: 3, result: 4, input: 5, output: 6, total: 7, latency: 8 };
// Admin columns: time, key, person, model, endpoint, result, input, output, total, latency, client, agent.
const A = { key: 1, person: 2, model: 3, result: 5, input: 6, client: 10, agent: 11 };

describe('the request log pages', () => {
  let t: TestPortal;
  let a1: { key: string; key_id: string };
  let a2: { key: string; key_id: string };
  let b1: { key: string; key_id: string };
  let input = 100;

  /** One request through the fake CLIProxyAPI; every one has its own input token count, so every row differs. */
  const use = (key: string, o: { model?: string; fail?: boolean } = {}) => chat(t.fake, key, { ...o, input: input++, output: 7 });


  const holder = (key: string, lang = 'en') => holderBrowser(t.url, key, lang);
  const admin = (lang = 'en') => adminBrowser(t.url, lang);

  before(async () => {
    t = await startTestPortal({ env: { USAGE_SOURCE: 'queue' } });
    const reg = async (body: Record<string, string>, token?: string) => (await call(t.url, 'POST', '/api/register-key', { body, token })).body;
    a1 = await reg({ email: 'alice@x.cn', label: 'laptop' });
    a2 = await reg({ email: 'alice@x.cn', label: 'desktop' }, a1.key);
    b1 = await reg({ email: 'bob@x.cn', label: 'bobs-box' });
    await waitFor(() => [a1, a2, b1].every((k) => t.fake.live.has(k.key)), 'keys live');
    // alice: 3 succeeded + 2 failed on a1, 4 on a2 with another model, 2 on a1 three days ago; bob: 2.
    for (let i = 0; i < 3; i++) await use(a1.key);
    for (let i = 0; i < 2; i++) await use(a1.key, { fail: true });
    for (let i = 0; i < 4; i++) await use(a2.key, { model: 'fake-pro' });
    for (let i = 0; i < 2; i++) await use(b1.key, { model: 'fake-bob-model' });
    for (let i = 0; i < 2; i++) t.fake.recordUsage({ apiKey: a1.key, alias: 'fake-old', input: input++, output: 3, failed: false, at: Date.now() - 3 * DAY_MS });
    const pulled = (await call(t.url, 'POST', '/api/sync-usage', { token: ADMIN })).body;
    assert.equal(pulled.ingested, 13);
  });
  after(async () => { await t?.stop(); });

  it('shows a holder every request of their own keys, and nothing of anybody else’s', async () => {
    const alice = await holder(a1.key);
    const page = await alice.get('/my-keys/requests');
    assert.equal(page.status, 200);
    const rows = rowsOf(page.html);
    assert.equal(rows.length, 11);
    assert.deepEqual(new Set(rows.map((r) => r[H.key]!.split(' ')[0])), new Set([a1.key_id, a2.key_id]));
    assert.ok(!page.html.includes('fake-bob-model') && !page.html.includes(b1.key_id), 'bob’s requests and key are nowhere on the page');
    assert.ok(!page.html.includes(a1.key) && !page.html.includes(a2.key), 'never a full key');
    // Newest first, in the portal's zone with its offset, with units in the headers.
    const times = rows.map((r) => r[H.time]!);
    assert.ok(times.every((s) => /^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} \+08:00$/.test(s)), times.join());
    assert.deepEqual([...times].sort().reverse(), times);
    assert.match(page.html, /Time \(Asia\/Shanghai\)/);
    for (const h of ['Input (tokens)', 'Output (tokens)', 'Total (tokens)', 'Latency (ms)']) assert.ok(page.html.includes(h), h);
    const failed = rows.filter((r) => r[H.result] === 'Failed 500');
    assert.equal(failed.length, 2);
    const ok = rows.find((r) => r[H.model] === 'fake-pro')!;
    assert.deepEqual([ok[H.endpoint], ok[H.result], ok[H.output], ok[H.latency]], ['POST /v1/chat/completions', 'Succeeded 200', '7', '733']);
    assert.equal(Number(ok[H.total]!.replace(/,/g, '')), Number(ok[H.input]!.replace(/,/g, '')) + 7);
    // The key filter lists alice's keys only, by id and label.
    const options = [...page.html.matchAll(/<option value="(\w*)"[^>]*>([^<]*)<\/option>/g)].map((m) => [m[1], m[2]]);
    assert.deepEqual(options.filter(([v]) => v !== '' && v !== 'true' && v !== 'false'), [[a1.key_id, `${a1.key_id} · laptop`], [a2.key_id, `${a2.key_id} · desktop`]]);

    const own = await alice.get(`/my-keys/requests?key_id=${a2.key_id}`);
    assert.equal(rowsOf(own.html).length, 4);
    assert.ok(rowsOf(own.html).every((r) => r[H.key]!.startsWith(a2.key_id)));

    // Naming bob's key or bob is refused with a message, and shows none of his rows.
    const theirs = await alice.get(`/my-keys/requests?key_id=${b1.key_id}`);
    assert.equal(theirs.status, 404);
    assert.equal(problemOf(theirs.html), 'No such key.');
    assert.equal(rowsOf(theirs.html).length, 0);
    assert.ok(!theirs.html.includes('fake-bob-model'));
    const byEmail = await alice.get('/my-keys/requests?email=bob%40x.cn');
    assert.equal(byEmail.status, 403);
    assert.equal(problemOf(byEmail.html), 'You may see only your own usage.');
    assert.equal(rowsOf(byEmail.html).length, 0);

    // And bob sees his two, none of alice's.
    const bob = await holder(b1.key);
    const his = rowsOf((await bob.get('/my-keys/requests')).html);
    assert.equal(his.length, 2);
    assert.ok(his.every((r) => r[H.key]!.startsWith(b1.key_id) && r[H.model] === 'fake-bob-model'));
  });

  it('narrows the rows by model, result and days, and keeps the filters in the form', async () => {
    const alice = await holder(a1.key);
    const today = dayIn(Date.now());
    const threeDaysAgo = dayIn(Date.now() - 3 * DAY_MS);
    const rows = async (q: string) => {
      const res = await alice.get(`/my-keys/requests?${q}`);
      assert.equal(res.status, 200, q);
      return rowsOf(res.html);
    };
    const pro = await rows('model=fake-pro');
    assert.equal(pro.length, 4);
    assert.ok(pro.every((r) => r[H.model] === 'fake-pro'));
    assert.match(alice.html, /id="f-model" name="model" type="text" maxlength="200" value="fake-pro"/);

    const failed = await rows('failed=true');
    assert.equal(failed.length, 2);
    assert.ok(failed.every((r) => r[H.result] === 'Failed 500'));
    assert.match(alice.html, /<option value="true" selected>/);
    const succeeded = await rows('failed=false');
    assert.equal(succeeded.length, 9);
    assert.ok(succeeded.every((r) => r[H.result] === 'Succeeded 200'));

    const old = await rows(`from=${threeDaysAgo}&to=${threeDaysAgo}`);
    assert.equal(old.length, 2);
    assert.ok(old.every((r) => r[H.model] === 'fake-old' && r[H.time]!.startsWith(threeDaysAgo)));
    assert.match(alice.html, new RegExp(`name="from" type="date" value="${threeDaysAgo}"`));
    const recent = await rows(`from=${today}`);
    assert.equal(recent.length, 9);
    assert.ok(recent.every((r) => r[H.time]!.startsWith(today)));
    assert.equal((await rows(`to=${dayIn(Date.now() - 2 * DAY_MS)}`)).length, 2);

    const both = await rows(`model=fake-model-1&failed=false&from=${today}&to=${today}&key_id=${a1.key_id}`);
    assert.equal(both.length, 3);
    const none = await rows('model=no-such-model');
    assert.equal(none.length, 0);
    assert.ok(alice.html.includes('No requests match these filters.'));
  });

  it('pages back in time with the cursor, with no row twice and none left out', async () => {
    const alice = await holder(a1.key);
    const all = rowsOf((await alice.get('/my-keys/requests?limit=500')).html);
    assert.equal(all.length, 11);
    const succeeded = all.filter((r) => r[H.result] === 'Succeeded 200');
    assert.equal(new Set(succeeded.map((r) => r[H.input])).size, 9, 'every succeeded row differs (a failed one has no tokens)');
    const walk = async (first: string, size: number) => {
      const seen: string[][] = [];
      let next: string | null = first;
      let pages = 0;
      while (next) {
        assert.ok(pages < 10, 'the pages come to an end');
        const res = await alice.get(next);
        assert.equal(res.status, 200, next);
        const rows = rowsOf(res.html);
        assert.ok(rows.length > 0 && rows.length <= size);
        seen.push(...rows);
        if (pages > 0) assert.match(res.html, /href="\/my-keys\/requests(\?[^"]*)?"[^>]*>← Newest</, 'an older page links back to the newest');
        next = linkOf(res.html, 'next');
        if (next) assert.match(next, /[?&]before=\d+_\d+/);
        pages++;
      }
      return { seen, pages };
    };
    const paged = await walk('/my-keys/requests?limit=4', 4);
    assert.equal(paged.pages, 3);
    assert.deepEqual(paged.seen, all, 'the pages together are the whole log, in order');
    assert.ok(!(await alice.get('/my-keys/requests?limit=4')).html.includes('← Newest'), 'the newest page has no link to itself');

    // The filters go along to the older pages.
    const pro = await walk('/my-keys/requests?model=fake-pro&limit=3', 3);
    assert.equal(pro.pages, 2);
    assert.deepEqual(pro.seen, all.filter((r) => r[H.model] === 'fake-pro'));
  });

  it('shows an admin everyone’s requests, with owners, addresses and user agents, and filters by person and key', async () => {
    const b = await admin();
    const page = await b.get('/admin/log');
    assert.equal(page.status, 200);
    const rows = rowsOf(page.html);
    assert.equal(rows.length, 13);
    assert.deepEqual(new Set(rows.map((r) => r[A.person])), new Set(['alice@x.cn', 'bob@x.cn']));
    assert.ok(rows.every((r) => r[A.client] === '127.0.0.1' && r[A.agent] === 'portal-test/1.0'));
    assert.ok(page.html.includes(`<a href="/admin/keys/${b1.key_id}">${b1.key_id}</a>`));
    assert.ok(page.html.includes('<a href="/admin/users/alice%40x.cn">alice@x.cn</a>'));
    assert.match(page.html, /<a href="\/admin\/log" aria-current="page">Request log<\/a>/);

    const bob = rowsOf((await b.get('/admin/log?email=bob%40x.cn')).html);
    assert.equal(bob.length, 2);
    assert.ok(bob.every((r) => r[A.person] === 'bob@x.cn' && r[A.key]!.startsWith(b1.key_id)));
    assert.match(b.html, /name="email" type="text" inputmode="email" maxlength="254" value="bob@x.cn"/);
    const key = rowsOf((await b.get(`/admin/log?key_id=${a2.key_id}`)).html);
    assert.equal(key.length, 4);
    assert.ok(key.every((r) => r[A.key]!.startsWith(a2.key_id) && r[A.person] === 'alice@x.cn'));
    const failedAlice = rowsOf((await b.get('/admin/log?email=alice%40x.cn&failed=true')).html);
    assert.equal(failedAlice.length, 2);

    // Links to the log: the person's page, the key's page, and a holder's own page.
    assert.ok((await b.get('/admin/users/bob%40x.cn')).html.includes('href="/admin/log?email=bob%40x.cn"'));
    assert.ok((await b.get(`/admin/keys/${a1.key_id}`)).html.includes(`href="/admin/log?key_id=${a1.key_id}"`));
    assert.ok((await (await holder(a1.key)).get('/my-keys')).html.includes('href="/my-keys/requests"'));
  });

  it('keeps the admin log to admins and the holder’s log to signed-in holders', async () => {
    const anonymous = new Browser(t.url);
    const adminVisit = await anonymous.get('/admin/log');
    assert.deepEqual([adminVisit.status, adminVisit.location], [303, '/admin']);
    const visitor = await anonymous.get('/my-keys/requests');
    assert.deepEqual([visitor.status, visitor.location], [303, '/my-keys']);
    const alice = await holder(a1.key);
    const refused = await alice.get('/admin/log');
    assert.equal(refused.status, 403);
    assert.equal(rowsOf(refused.html).length, 0);
  });

  it('answers a filter it cannot read with 400 and the reason, on the page, in the reader’s language', async () => {
    const alice = await holder(a1.key);
    const bad = await alice.get('/my-keys/requests?from=2026-13-45&model=fake-pro');
    assert.equal(bad.status, 400);
    assert.equal(problemOf(bad.html), 'from must be a day (2026-11-01) or a date-time with a zone.');
    assert.equal(rowsOf(bad.html).length, 0);
    assert.match(bad.html, /name="model" type="text" maxlength="200" value="fake-pro"/, 'the form keeps what was typed');
    const cases: [string, string][] = [
      ['failed=maybe', 'failed must be true or false.'],
      ['before=yesterday', 'before must be the cursor a previous page returned.'],
      ['from=2026-11-02&to=2026-11-01', 'from must not be after to.'],
      ['limit=0', 'limit must be at least 1.'],
    ];
    for (const [q, message] of cases) {
      const res = await alice.get(`/my-keys/requests?${q}`);
      assert.deepEqual([res.status, problemOf(res.html)], [400, message], q);
    }
    const zh = await holder(a1.key, 'zh-CN');
    const zhBad = await zh.get('/my-keys/requests?to=not-a-day');
    assert.equal(zhBad.status, 400);
    assert.equal(problemOf(zhBad.html), '结束日期必须是日期（2026-11-01）或带时区的时间。');
    const adminBad = await (await admin()).get('/admin/log?email=not-an-email');
    assert.deepEqual([adminBad.status, problemOf(adminBad.html)], [400, 'email must be a valid email address.']);
    // The API refuses a backwards period too, rather than answering it empty.
    const api = await call(t.url, 'GET', '/api/requests?from=2026-11-02&to=2026-11-01', { token: a1.key });
    assert.equal(api.status, 400);
  });

  it('keeps showing a revoked key’s requests to the person who held it', async () => {
    const alice = await holder(a1.key);
    assert.equal((await call(t.url, 'POST', '/api/revoke-key', { body: { key_id: a2.key_id }, token: a1.key })).status, 200);
    const page = await alice.get(`/my-keys/requests?key_id=${a2.key_id}`);
    assert.equal(page.status, 200);
    assert.equal(rowsOf(page.html).length, 4);
    assert.match(page.html, new RegExp(`<option value="${a2.key_id}" selected>${a2.key_id} · desktop \\(revoked\\)</option>`));
  });

  it('shows the new pages wholly in Chinese', async () => {
    // Every English text these pages add (the form, the headers, the results, paging, links).
    const english = ['My requests', 'Request log', 'All my keys', 'Key id', 'Person (email)', 'Model', 'Result', 'Succeeded', 'Failed',
      'From', 'To', 'Show', 'Clear filters', 'Time (', 'Endpoint', 'Input (tokens)', 'Output (tokens)', 'Total (tokens)', 'Latency (ms)',
      'Client address', 'User agent', 'Older →', '← Newest', 'newest first', 'Times are in', 'are kept for', 'My keys'];
    const visible = (html: string) => pageText(html.replace(/<head>[\s\S]*?<\/head>/, ''));
    const pages = async (lang: string) => {
      const h = await holder(a1.key, lang);
      const a = await admin(lang);
      return [
        visible((await h.get('/my-keys/requests?limit=2&before=99999999999999_999999&failed=false')).html),
        visible((await a.get('/admin/log?limit=2&before=99999999999999_999999&failed=false')).html),
      ];
    };
    const en = (await pages('en')).join('\n');
    for (const s of english) assert.ok(en.includes(s), `the English page shows "${s}"`);
    const [mine, all] = await pages('zh-CN');
    for (const [text, title] of [[mine!, '我的请求记录'], [all!, '请求日志']] as const) {
      const left = english.filter((s) => text.includes(s));
      assert.deepEqual(left, [], 'no English label on the Chinese page');
      for (const s of [title, '时间（Asia/Shanghai）', '输入（tokens）', '耗时（毫秒）', '结果（HTTP 状态码）', '更早 →', '← 最新', '成功 200']) assert.ok(text.includes(s), s);
    }
  });
});
