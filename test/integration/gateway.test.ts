import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import WebSocket from 'ws';
import { Browser } from '../support/browser-client.js';
import { pino } from 'pino';
import { systemClock } from '../../src/clock.js';
import { Admission } from '../../src/gateway/admission.js';
import { gated, KeyTable } from '../../src/gateway/key-table.js';
import { Gateway } from '../../src/gateway/server.js';
import type { KeyRecord } from '../../src/store/key-files.js';
import { Zone } from '../../src/time/zone.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, call, LogCapture, startTestPortal, waitFor, type TestPortal } from '../support/harness.js';

const PREFIX = 'usr_pool_';

/** The gateway in front of the fake CLIProxyAPI, over real sockets. */
describe('the gateway', () => {
  let t: TestPortal;
  let gw: string;
  const fixedNow = Date.parse('2026-11-23T04:00:00Z');
  let t0 = Date.now();
  /** The portal's clock: it starts at fixedNow and runs. */
  const portalNow = () => fixedNow + (Date.now() - t0);
  const newKey = async (fields: Record<string, unknown> = {}) =>
    (await call(t.url, 'POST', '/admin/keys', { token: ADMIN, body: { label: 'gw', ...fields } })).body as { key: string; key_id: string };
  const post = (base: string, path: string, key: string | null, body: unknown, headers: Record<string, string> = {}) =>
    fetch(base + path, { method: 'POST', headers: { 'Content-Type': 'application/json', ...(key ? { Authorization: `Bearer ${key}` } : {}), ...headers }, body: JSON.stringify(body) });

  before(async () => {
    // The fake stamps every record (and answer) with fixedNow, so bodies match byte for byte; the
    // portal's clock starts there too and runs, so those records are today's whatever the hour of the run.
    t0 = Date.now();
    t = await startTestPortal({ env: { GATEWAY_PORT: '0', POOL_SIZE: '200' }, fakeOptions: { now: () => fixedNow }, clock: { now: portalNow } });
    gw = `http://127.0.0.1:${t.portal.gatewayPort}`;
  });
  after(async () => { await t.stop(); });

  it('answers exactly as CLIProxyAPI does: chat completions, Anthropic messages, Gemini generateContent, models', async () => {
    const { key } = await newKey();
    const cases: [string, string, (base: string) => Promise<Response>][] = [
      ['chat', '/v1/chat/completions', (b) => post(b, '/v1/chat/completions', key, { model: 'fake-chat', messages: [{ role: 'user', content: 'hi' }] })],
      ['messages', '/v1/messages', (b) => post(b, '/v1/messages', null, { model: 'claude-x', max_tokens: 5, messages: [] }, { 'x-api-key': key, 'anthropic-version': '2023-06-01' })],
      ['gemini', '/v1beta', (b) => post(b, `/v1beta/models/gemini-x:generateContent?key=${key}`, null, { contents: [] })],
      ['models', '/v1/models', (b) => fetch(`${b}/v1/models`, { headers: { Authorization: `Bearer ${key}` } })],
      ['unknown key', '/v1/models', (b) => fetch(`${b}/v1/chat/nothing`, { headers: { Authorization: `Bearer ${key}` } })],
    ];
    for (const [name, , send] of cases) {
      const direct = await send(t.fake.url);
      const via = await send(gw);
      const [a, b] = [await direct.text(), await via.text()];
      assert.equal(via.status, direct.status, name);
      assert.equal(b, a, `${name}: the same body`);
      assert.equal(via.headers.get('content-type'), direct.headers.get('content-type'), name);
    }
  });

  it('streams an answer chunk by chunk (SSE), and passes the client’s abort on to CLIProxyAPI', async () => {
    const { key } = await newKey();
    const res = await post(gw, '/v1/chat/completions', key, { model: 'fake-chat', stream: true, messages: [] }, { 'x-fake-chunk-gap-ms': '150', 'x-fake-chunks': '4' });
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const arrivals: number[] = [];
    let text = '';
    const decoder = new TextDecoder();
    for await (const chunk of res.body!) { arrivals.push(performance.now()); text += decoder.decode(chunk as Uint8Array, { stream: true }); }
    assert.match(text, /data: \[DONE\]/);
    assert.ok(arrivals.length >= 5, `${arrivals.length} chunks arrived apart, not one buffered body`);
    assert.ok(arrivals.at(-1)! - arrivals[0]! >= 500, 'the last event came ~150 ms after each one before it');

    const abortedBefore = t.fake.aborted;
    const ac = new AbortController();
    const slow = await post(gw, '/v1/messages', key, { model: 'claude-x', stream: true, messages: [] }, { 'x-fake-chunk-gap-ms': '200', 'x-fake-chunks': '50' });
    const reader = slow.body!.getReader();
    await reader.read();
    ac.abort();
    await reader.cancel();
    await waitFor(() => t.fake.aborted === abortedBefore + 1, 'CLIProxyAPI sees the request aborted');
  });

  it('passes a 50 MB body as it comes, holding a bounded part of it', async () => {
    const { key } = await newKey({ allowed_models: ['fake-chat'] }); // the model is read from the body's start, then it streams
    const chunk = Buffer.alloc(256 * 1024, 'x');
    const total = 200 * chunk.length; // 50 MiB
    const head = Buffer.from('{"model":"fake-chat","pad":"');
    const start = t.fake.sinkBytes;
    let sent = 0;
    let widest = 0; // the most bytes sent by the client and not yet received by CLIProxyAPI
    const body = Readable.from((async function* () {
      yield head;
      sent += head.length;
      for (let i = 0; i < 200; i++) {
        widest = Math.max(widest, sent - (t.fake.sinkBytes - start));
        yield chunk;
        sent += chunk.length;
      }
    })());
    const res = await request(`${gw}/v1/fake/sink`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body });
    assert.equal(res.statusCode, 200);
    assert.deepEqual(await res.body.json(), { bytes: total + head.length });
    // Held in between (socket buffers both ways, the gateway's stream): a few MiB at most, never the body.
    assert.ok(widest < 16 * 1024 * 1024, `up to ${Math.round(widest / 1048576)} MiB were on their way at once`);
  });

  it('lets exactly daily_limit requests through under concurrency, in each API’s shape, and gives back a failed one’s unit', async () => {
    const { key, key_id } = await newKey({ daily_limit: 10 });
    const answers = await Promise.all(Array.from({ length: 50 }, () => post(gw, '/v1/chat/completions', key, { model: 'fake-chat', messages: [] })));
    const statuses = answers.map((r) => r.status);
    assert.equal(statuses.filter((s) => s === 200).length, 10, statuses.join(','));
    assert.equal(statuses.filter((s) => s === 429).length, 40);
    const refused = answers.find((r) => r.status === 429)!;
    assert.ok(Number(refused.headers.get('retry-after')) > 0);
    assert.equal(refused.headers.get('x-should-retry'), 'false', 'Claude Code would retry a 429 ten times otherwise');
    const body = await refused.json() as { error: { message: string; type: string; code: string } };
    assert.deepEqual([body.error.type, body.error.code], ['rate_limit_exceeded', 'daily_limit_reached']);
    assert.match(body.error.message, /daily limit of 10 requests is reached\. It resets at 2026-11-2\d/);
    assert.equal(t.fake.served.get(key), 10, 'CLIProxyAPI served 10');
    const ok = answers.find((r) => r.status === 200)!;
    assert.equal(ok.headers.get('x-ratelimit-limit-requests'), '10');
    // The refusal says when the limit is whole again the same way the answers let through do.
    assert.ok(ok.headers.get('x-ratelimit-reset-requests-at'));
    assert.equal(refused.headers.get('x-ratelimit-reset-requests-at'), ok.headers.get('x-ratelimit-reset-requests-at'));

    // Anthropic and Gemini callers get their own shapes.
    const msg = await post(gw, '/v1/messages', null, { model: 'claude-x', messages: [] }, { 'x-api-key': key });
    assert.deepEqual([msg.status, ((await msg.json()) as { type: string; error: { type: string } }).error.type], [429, 'rate_limit_error']);
    const gem = await post(gw, `/v1beta/models/g:generateContent?key=${key}`, null, {});
    assert.deepEqual([gem.status, ((await gem.json()) as { error: { status: string } }).error.status], [429, 'RESOURCE_EXHAUSTED']);

    // Belt and braces: once the records are counted, the key is suspended in CLIProxyAPI too.
    await call(t.url, 'POST', '/api/sync-usage', { token: ADMIN, body: {} });
    await waitFor(async () => (await call(t.url, 'GET', `/admin/keys/${key_id}`, { token: ADMIN })).body.status === 'suspended', 'suspended at its limit');
    await waitFor(() => !t.fake.live.has(key), 'out of CLIProxyAPI');
    const after = await post(gw, '/v1/chat/completions', key, { model: 'fake-chat', messages: [] });
    assert.equal(after.status, 429, 'still a limit, not "Invalid API key"');
    assert.deepEqual([after.headers.get('x-ratelimit-limit-requests'), after.headers.get('x-ratelimit-remaining-requests')], ['10', '0']);
    assert.equal(after.headers.get('x-ratelimit-reset-requests-at'), ok.headers.get('x-ratelimit-reset-requests-at'), 'suspended: the same reset');
    assert.match(((await after.json()) as { error: { message: string } }).error.message, /resets at 2026-11-2\d 00:00 \+08:00/, 'in TIMEZONE, as the other refusals');

    const two = await newKey({ daily_limit: 2 });
    assert.equal((await post(gw, '/v1/chat/completions', two.key, { messages: [] }, { 'x-fake-fail': '1' })).status, 500);
    assert.equal((await post(gw, '/v1/chat/completions', two.key, { messages: [] })).status, 200);
    assert.equal((await post(gw, '/v1/chat/completions', two.key, { messages: [] })).status, 200, 'the failed request gave its unit back');
    assert.equal((await post(gw, '/v1/chat/completions', two.key, { messages: [] })).status, 429);
  });

  it('refuses past the token limit (from counted usage), and an expired key', async () => {
    const { key } = await newKey({ daily_token_limit: 100 });
    for (let i = 0; i < 2; i++) assert.equal((await post(gw, '/v1/chat/completions', key, { messages: [] })).status, 200, 'tokens are counted after the fact');
    await call(t.url, 'POST', '/api/sync-usage', { token: ADMIN, body: {} }); // 2 × 59 tokens counted
    const r = await post(gw, '/v1/chat/completions', key, { messages: [] });
    assert.equal(r.status, 429);
    const e = (await r.json()) as { error: { code: string; message: string } };
    assert.equal(e.error.code, 'daily_token_limit_reached');
    assert.match(e.error.message, /daily limit of 100 tokens is reached/);

    const soon = new Date(portalNow() + 1500).toISOString();
    const expiring = await newKey({ expires_at: soon });
    assert.equal((await post(gw, '/v1/chat/completions', expiring.key, { messages: [] })).status, 200);
    await new Promise((res) => setTimeout(res, 1600));
    const x = await post(gw, '/v1/chat/completions', expiring.key, { messages: [] });
    assert.deepEqual([x.status, ((await x.json()) as { error: { code: string } }).error.code], [403, 'key_expired']);
  });

  it('refuses past rpm_limit and max_concurrency with Retry-After, and a lease ends with its client', async () => {
    const rpm = await newKey({ rpm_limit: 3 });
    for (let i = 0; i < 3; i++) {
      const r = await post(gw, '/v1/chat/completions', rpm.key, { messages: [] });
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-ratelimit-remaining-requests'), String(2 - i));
    }
    const fourth = await post(gw, '/v1/messages', rpm.key, { model: 'claude-x', messages: [] });
    assert.equal(fourth.status, 429);
    assert.equal(fourth.headers.get('x-should-retry'), null, 'a minute’s wait is worth a retry');
    const wait = Number(fourth.headers.get('retry-after'));
    assert.ok(wait > 0 && wait <= 60, String(wait));
    const body = await fourth.json() as { type: string; error: { type: string; message: string } };
    assert.deepEqual([body.type, body.error.type], ['error', 'rate_limit_error']);
    assert.match(body.error.message, /3 requests a minute/);

    const conc = await newKey({ max_concurrency: 2 });
    const slow = () => post(gw, '/v1/chat/completions', conc.key, { stream: true, messages: [] }, { 'x-fake-chunk-gap-ms': '100', 'x-fake-chunks': '30' });
    const a = await slow();
    const b = await slow();
    const c = await post(gw, '/v1/chat/completions', conc.key, { messages: [] });
    assert.equal(c.status, 429);
    assert.equal(((await c.json()) as { error: { code: string } }).error.code, 'concurrency_limit_reached');
    await a.body!.cancel(); // the client goes away mid-stream: its lease ends
    await waitFor(async () => (await post(gw, '/v1/chat/completions', conc.key, { messages: [] })).status === 200, 'a lease freed by a disconnect');
    await b.body!.cancel();
  });

  it('aborts every request under way on a connection that closes, pipelined ones too, and frees their leases', async () => {
    const conc = await newKey({ max_concurrency: 2 });
    const abortedBefore = t.fake.aborted;
    const body = JSON.stringify({ stream: true, messages: [] });
    const one = `POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ${conc.key}\r\nContent-Type: application/json\r\n`
      + `x-fake-chunk-gap-ms: 200\r\nx-fake-chunks: 50\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const socket = net.connect(Number(new URL(gw).port), '127.0.0.1');
    socket.write(one + one); // two requests on one connection, the second before the first is answered
    let seen = '';
    await new Promise<void>((resolve) => socket.on('data', (d) => { seen += d; if (seen.includes('data: ')) resolve(); }));
    const third = await post(gw, '/v1/chat/completions', conc.key, { messages: [] });
    assert.equal(third.status, 429, 'both pipelined requests hold a lease');
    await third.text();
    socket.destroy();
    await waitFor(() => t.fake.aborted === abortedBefore + 2, 'CLIProxyAPI sees both requests aborted, the queued one too');
    const [a, b] = await Promise.all([post(gw, '/v1/chat/completions', conc.key, { messages: [] }), post(gw, '/v1/chat/completions', conc.key, { messages: [] })]);
    assert.deepEqual([a.status, b.status], [200, 200], 'both leases freed');
  });

  it('keeps a key to its models: the body’s model, or the Gemini path’s', async () => {
    const { key, key_id } = await newKey({ allowed_models: ['fake-chat', 'claude-*'] });
    assert.equal((await post(gw, '/v1/chat/completions', key, { model: 'fake-chat', messages: [] })).status, 200);
    assert.equal((await post(gw, '/v1/messages', key, { model: 'claude-sonnet-4', messages: [] })).status, 200);
    const other = await post(gw, '/v1/chat/completions', key, { messages: [], model: 'gpt-4o' });
    assert.equal(other.status, 403);
    const e = (await other.json()) as { error: { code: string; message: string } };
    assert.equal(e.error.code, 'model_not_allowed');
    assert.match(e.error.message, /gpt-4o.*fake-chat, claude-\*/);
    const gem = await post(gw, `/v1beta/models/gemini-pro:generateContent?key=${key}`, null, {});
    assert.deepEqual([gem.status, ((await gem.json()) as { error: { code: number; status: string } }).error], [403, { code: 403, message: 'This key may not use gemini-pro. It may use: fake-chat, claude-*.', status: 'PERMISSION_DENIED' }]);
    assert.equal((await post(gw, '/v1/chat/completions', key, { messages: [] })).status, 400, 'no model named');
    // Editable by an admin: lifting the list lets any model through.
    assert.equal((await call(t.url, 'PATCH', `/admin/keys/${key_id}`, { token: ADMIN, body: { allowed_models: [] } })).status, 200);
    assert.equal((await post(gw, '/v1/chat/completions', key, { messages: [], model: 'gpt-4o' })).status, 200);
  });

  it('has its limits edited on the admin’s key page, in the key’s JSON and its register answer’s base URL', async () => {
    const { key_id } = await newKey();
    const b = new Browser(t.url);
    await b.get('/admin');
    assert.equal((await b.post('/admin/sign-in', { token: ADMIN })).status, 303);
    await b.get(`/admin/keys/${key_id}`);
    assert.match(b.html, /name="rpm_limit"/);
    const saved = await b.post(`/admin/keys/${key_id}`, { action: 'update', label: 'gw', daily_limit: '0', daily_token_limit: '0', expires_at: '', rpm_limit: '5', max_concurrency: '2', allowed_models: 'claude-*, gpt-4o' });
    assert.equal(saved.status, 303);
    const view = (await call(t.url, 'GET', `/admin/keys/${key_id}`, { token: ADMIN })).body;
    assert.deepEqual([view.rpm_limit, view.max_concurrency, view.allowed_models], [5, 2, ['claude-*', 'gpt-4o']]);
    await b.post(`/admin/keys/${key_id}`, { action: 'update', label: 'gw', rpm_limit: '0', max_concurrency: '0', allowed_models: '' });
    const cleared = (await call(t.url, 'GET', `/admin/keys/${key_id}`, { token: ADMIN })).body;
    assert.deepEqual([cleared.rpm_limit, cleared.max_concurrency, cleared.allowed_models], [0, 0, []]);
    const bad = await call(t.url, 'PATCH', `/admin/keys/${key_id}`, { token: ADMIN, body: { allowed_models: ['has space'] } });
    assert.equal(bad.status, 400);
    const reg = await call(t.url, 'POST', '/api/register-key', { body: { email: 'gw-holder@x.cn' } });
    assert.equal(reg.body.base_url, `http://127.0.0.1:${t.portal.gatewayPort}`, 'holders are sent to the gateway');
  });

  it('shows a trial key’s holder, signed in with the key alone, today’s use, the limit and when it resets', async () => {
    const { key } = await newKey({ daily_limit: 3, label: 'trial for 李' });
    assert.equal((await post(gw, '/v1/chat/completions', key, { messages: [] })).status, 200);
    await call(t.url, 'POST', '/api/sync-usage', { token: ADMIN, body: {} });
    const usage = await call(t.url, 'GET', '/usage', { token: key });
    assert.deepEqual([usage.body.today.counted_requests, usage.body.limits.daily_limit, usage.body.remaining.requests], [1, 3, 2]);
    for (const lang of ['en', 'zh-CN']) {
      const b = new Browser(t.url, { 'Accept-Language': lang });
      await b.get('/my-keys');
      assert.equal((await b.post('/my-keys/sign-in', { key })).status, 303);
      const page = await b.get('/my-keys');
      assert.equal(page.status, 200);
      assert.match(page.html, lang === 'en' ? /Trial key/ : /试用密钥/);
      assert.match(page.html, /1 \/ 3/);
      assert.match(page.html, lang === 'en' ? /limits reset at 2026-11-2\d 00:00/ : /将于 2026-11-2\d 00:00/);
      assert.match(page.html, new RegExp(`127\\.0\\.0\\.1:${t.portal.gatewayPort}`), 'the base URL is the gateway');
      assert.equal((await b.get('/my-keys/revoke/0001')).status, 303, 'a trial holder has no other pages');
    }
  });

  it('reads the key as CLIProxyAPI does, forwards only that one, and drops hop-by-hop headers', async () => {
    const { key } = await newKey();
    // (node:http, since fetch will not send a Connection header)
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${gw}/v1/fake/echo?b=1&auth_token=junk&a=%20x+y`, {
        method: 'POST', headers: { Authorization: 'Bearer not-a-key', 'x-api-key': key, Connection: 'keep-alive, x-drop-me', 'x-drop-me': '1', 'x-keep-me': '2' },
      }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)); });
      req.on('error', reject);
      req.end('hello');
    });
    // CLIProxyAPI tries Authorization first; not a key here, so x-api-key decides.
    assert.equal(status, 200);
    const seen = t.fake.lastEcho!;
    assert.equal(seen.query, '?b=1&a=%20x+y', 'the query byte for byte, without the other key');
    assert.equal(seen.headers.authorization, undefined);
    assert.equal(seen.headers['x-api-key'], key);
    assert.equal(seen.headers['x-drop-me'], undefined, 'named in Connection: hop-by-hop');
    assert.equal(seen.headers['x-keep-me'], '2');
    assert.equal(seen.headers.host, new URL(t.fake.url).host, 'CLIProxyAPI’s own host, not the one the client named');

    const shapes: [string, Record<string, string>, number, string][] = [
      ['/v1/chat/completions', {}, 401, 'missing_api_key'],
      ['/v1/chat/completions', { Authorization: 'Bearer usr_pool_9999_nope' }, 401, 'invalid_api_key'],
    ];
    for (const [p, h, status, code] of shapes) {
      const r = await fetch(gw + p, { method: 'POST', headers: h, body: '{}' });
      assert.equal(r.status, status);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, code);
    }
    const anthropic = await fetch(`${gw}/v1/messages`, { method: 'POST', headers: { 'x-api-key': 'nope' }, body: '{}' });
    assert.deepEqual(await anthropic.json(), { type: 'error', error: { type: 'authentication_error', message: 'This API key is not known here. Check it, or ask for a new one.' } });
    const revoked = await newKey();
    await call(t.url, 'DELETE', `/admin/keys/${revoked.key_id}`, { token: ADMIN });
    assert.equal((await post(gw, '/v1/chat/completions', revoked.key, {})).status, 401);
    const suspended = await newKey();
    await call(t.url, 'PATCH', `/admin/keys/${suspended.key_id}`, { token: ADMIN, body: { status: 'suspended' } });
    const s = await post(gw, '/v1/chat/completions', suspended.key, {});
    assert.deepEqual([s.status, ((await s.json()) as { error: { code: string } }).error.code], [403, 'key_suspended']);
    const mgmt = await fetch(`${gw}/v0/management/api-keys`, { headers: { Authorization: 'Bearer test-management-key' } });
    assert.equal(mgmt.status, 404, 'the management API is never forwarded');
    assert.equal(t.fake.calls.filter((c) => c.path === '/v0/management/api-keys' && c.at > Date.now() - 100).length, 0);
  });

  it('passes a WebSocket upgrade (the Responses API), and refuses one with a wrong key', async () => {
    const { key } = await newKey();
    const ws = new WebSocket(`${gw.replace('http', 'ws')}/v1/responses`, { headers: { Authorization: `Bearer ${key}` } });
    const reply = await new Promise<string>((resolve, reject) => {
      ws.once('open', () => ws.send('hello'));
      ws.once('message', (d) => resolve(String(d)));
      ws.once('error', reject);
    });
    assert.equal(reply, `echo:${key.slice(0, 14)}:hello`);
    ws.close();
    const bad = new WebSocket(`${gw.replace('http', 'ws')}/v1/responses`, { headers: { Authorization: 'Bearer nope' } });
    const status = await new Promise<number>((resolve) => bad.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0)));
    assert.equal(status, 401);
  });

  it('runs on a thread of its own that sees each key change by the next request, and is started again if that thread stops', async () => {
    const code = async (r: Response) => [r.status, ((await r.json().catch(() => ({}))) as { error?: { code?: string } }).error?.code ?? null];
    const patch = (id: string, body: Record<string, unknown>) => call(t.url, 'PATCH', `/admin/keys/${id}`, { token: ADMIN, body });
    // Changes are made on the main thread; each request through the gateway right after an admin's
    // answer must see it, with no wait in between (a few rounds: a lag would show in one of them).
    for (let round = 0; round < 10; round++) {
      const { key, key_id } = await newKey();
      const chat = () => post(gw, '/v1/chat/completions', key, { model: 'fake-chat', messages: [] });
      assert.deepEqual(await code(await chat()), [200, null], `round ${round}: issued`);
      assert.equal((await patch(key_id, { allowed_models: ['claude-*'] })).status, 200);
      assert.deepEqual(await code(await chat()), [403, 'model_not_allowed'], `round ${round}: models limited`);
      assert.equal((await patch(key_id, { allowed_models: [], status: 'suspended' })).status, 200);
      assert.deepEqual(await code(await chat()), [403, 'key_suspended'], `round ${round}: suspended`);
      assert.equal((await patch(key_id, { status: 'active', daily_limit: 2 })).status, 200);
      assert.deepEqual(await code(await chat()), [200, null], `round ${round}: reinstated, one of two left today`);
      assert.deepEqual(await code(await chat()), [429, 'daily_limit_reached'], `round ${round}: limited`);
      assert.equal((await call(t.url, 'DELETE', `/admin/keys/${key_id}`, { token: ADMIN })).status, 200);
      assert.deepEqual(await code(await chat()), [401, 'key_revoked'], `round ${round}: revoked`);
    }

    const host = t.portal.gateway!;
    const before = host.thread!;
    const known = await newKey();
    await before.terminate();
    const issuedWhileDown = await newKey(); // the next thread starts with every key
    const ok = async (key: string) => { try { return (await post(gw, '/v1/chat/completions', key, { messages: [] })).status === 200; } catch { return false; } };
    await waitFor(() => ok(known.key), 'the gateway is back on its port');
    assert.ok(await ok(issuedWhileDown.key));
    assert.notEqual(host.thread, before);
    assert.match(t.logs.text(), /"module":"gateway".*the gateway thread stopped.*\n.*starting the gateway thread again in 1 s/);
  });

  it('answers 502 in the caller’s shape while CLIProxyAPI is down', async () => {
    const { key } = await newKey();
    await t.fake.stop();
    try {
      const r = await post(gw, '/v1/chat/completions', key, { messages: [] });
      assert.equal(r.status, 502);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'upstream_unreachable');
      const m = await post(gw, '/v1/messages', key, { messages: [] });
      assert.deepEqual([m.status, ((await m.json()) as { type: string }).type], [502, 'error']);
    } finally {
      await t.fake.listen();
    }
  });
});

describe('the gateway at a stop', () => {
  it('closes its thread without reporting it as a failure', async () => {
    const t = await startTestPortal({ env: { GATEWAY_PORT: '0' } });
    await t.stop();
    assert.doesNotMatch(t.logs.text(), /the gateway thread (stopped|failed)|starting the gateway thread again/);
    assert.match(t.logs.text(), /gateway/, 'the gateway was on');
  });
});

describe('the gateway when today’s usage cannot be read', () => {
  it('answers 503 in the caller’s shape for a key with a daily limit, logs why, and goes on serving', async () => {
    const limited = `${PREFIX}0001_${'a'.repeat(48)}`;
    const open = `${PREFIX}0002_${'b'.repeat(48)}`;
    const fake = await FakeCliproxy.start({ apiKeys: [limited, open] });
    const keys = new KeyTable(PREFIX);
    keys.set(limited, gated({ status: 'active', daily_limit: 5, daily_token_limit: 0 } as KeyRecord));
    keys.set(open, gated({ status: 'active', daily_limit: 0, daily_token_limit: 0 } as KeyRecord));
    const broken = { day: () => { throw new Error('SQLITE_IOERR: disk I/O error'); }, since: () => { throw new Error('SQLITE_IOERR'); } };
    const logs = new LogCapture();
    const zone = new Zone('UTC');
    const gateway = new Gateway({
      upstream: fake.url, keys, admission: new Admission({ usage: broken, zone, clock: systemClock }), log: pino(logs), zone, clock: systemClock,
      connectTimeoutMs: 2000, headersTimeoutMs: 5000, bodyTimeoutMs: 5000,
    });
    const port = await gateway.listen(0, '127.0.0.1');
    try {
      const send = (key: string, path = '/v1/chat/completions') => fetch(`http://127.0.0.1:${port}${path}`, {
        method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}` }, body: JSON.stringify({ model: 'fake-chat', messages: [] }),
      });
      const r = await send(limited);
      assert.equal(r.status, 503);
      assert.equal(((await r.json()) as { error: { code: string } }).error.code, 'usage_unavailable');
      const m = await send(limited, '/v1/messages');
      assert.deepEqual([m.status, ((await m.json()) as { type: string; error: { type: string } }).error.type], [503, 'api_error']);
      assert.match(logs.text(), /could not read today's usage to check a limit/);
      assert.equal((await send(open)).status, 200, 'a key without a limit needs no usage');
      assert.equal(fake.served.get(limited) ?? 0, 0, 'nothing unchecked reached CLIProxyAPI');
    } finally {
      await gateway.close();
      await fake.stop();
    }
  });
});
