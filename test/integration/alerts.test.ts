import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { rm } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { ManualClock } from '../support/clock.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, adminBrowser, auditLines, call, holderBrowser, startTestPortal, syncUsage, tempDir, waitFor, type TestPortal } from '../support/harness.js';

const FULL_KEY = /usr_pool_\d{4,}_[0-9a-f]{48}/;
const DOC_FIELDS = ['day', 'email', 'event', 'key_id', 'label', 'limit', 'max', 'percent', 'portal_url', 'resets_at', 'time_zone', 'used'];

interface Hit { at: number; raw: string; body: Record<string, any>; contentType: string | undefined }
type Behaviour = 'ok' | 'hang' | 503 | 400;

/** A webhook receiver on 127.0.0.1: records what arrives and answers as told (one behaviour per request, then 204). */
class Receiver {
  readonly hits: Hit[] = [];
  /** Requests that arrived, answered or not (a hung one never becomes a hit). */
  arrivals = 0;
  plan: Behaviour[] = [];
  private server!: Server;
  private hung: ServerResponse[] = [];
  url = '';

  async start(): Promise<void> {
    this.server = createServer((req: IncomingMessage, res: ServerResponse) => {
      let raw = '';
      req.on('data', (c) => { raw += c; });
      req.on('end', () => {
        this.arrivals++;
        const what = this.plan.shift() ?? 'ok';
        if (what === 'hang') { this.hung.push(res); return; }
        if (what === 'ok') this.hits.push({ at: Date.now(), raw, body: JSON.parse(raw), contentType: req.headers['content-type'] });
        res.writeHead(what === 'ok' ? 204 : what).end();
      });
    });
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  events(keyId: string): string[] { return this.hits.filter((h) => h.body.key_id === keyId).map((h) => `${h.body.event} ${h.body.limit}`); }

  async stop(): Promise<void> {
    for (const r of this.hung) r.destroy();
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }
}

/** Successful records of one key, queued in the fake CLIProxyAPI (as if it had served them). */
function served(t: TestPortal, key: string, n: number, tokens = { input: 3, output: 2 }): void {
  for (let i = 0; i < n; i++) t.fake.recordUsage({ apiKey: key, alias: 'fake-chat', ...tokens, failed: false });
}

const sync = syncUsage;

/** Lets the alert handlers (audit, then webhook) finish what a sync set off. */
async function quiet(t: TestPortal, ms = 300): Promise<void> {
  await t.portal.audit.flushed();
  await new Promise((r) => setTimeout(r, ms));
}

async function metric(t: TestPortal, name: string, labels: string): Promise<number> {
  const text = (await call(t.url, 'GET', '/metrics', { token: ADMIN, headers: { Accept: 'text/plain' } })).text;
  const m = new RegExp(`^${name}\\{${labels}\\} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

const signedIn = (t: TestPortal, key: string, lang: string) => holderBrowser(t.url, key, lang);

const admin = (t: TestPortal, lang = 'en') => adminBrowser(t.url, lang);

const create = async (t: TestPortal, body: Record<string, unknown>) => {
  const res = await call(t.url, 'POST', '/admin/keys', { token: ADMIN, body });
  assert.equal(res.status, 201);
  return res.body as { key: string; key_id: string };
};

describe('limit alerts: webhook and audit once per key, limit and day, surviving a restart (TIMEZONE Asia/Shanghai)', () => {
  // 12:00 in Shanghai on the 22nd; its midnight is 16:00 UTC.
  const clock = new ManualClock(Date.parse('2026-11-22T04:00:00Z'));
  const hook = new Receiver();
  let fake: FakeCliproxy;
  let dataDir: string;
  let t: TestPortal;
  const start = async () => {
    t = await startTestPortal({
      fake, dataDir, clock,
      env: { USAGE_SOURCE: 'queue', POOL_SIZE: '20', ALERT_WEBHOOK_URL: `${hook.url}/hooks/s3cret-path?token=s3cret-query`, PORTAL_PUBLIC_URL: 'http://portal.example' },
    });
  };

  before(async () => {
    await hook.start();
    fake = await FakeCliproxy.start({ now: () => clock.now(), reloadDelayMs: 5 });
    dataDir = await tempDir();
    await start();
  });
  after(async () => {
    await t.stop();
    await fake.stop();
    await hook.stop();
    await rm(dataDir, { recursive: true, force: true });
  });

  it('warns once at 80 % of a request limit, not on the next records, not after a restart; reaching it sends limit_reached once', async () => {
    const { key, key_id: id } = await create(t, { label: 'laptop', daily_limit: 20, email: 'li@example.com' });
    await waitFor(() => fake.live.has(key), 'live');

    served(t, key, 15);
    await sync(t);
    await quiet(t);
    assert.deepEqual(hook.events(id), [], '75 % is under the threshold');

    served(t, key, 1);
    await sync(t);
    await waitFor(() => hook.events(id).length === 1, 'the warning at 16 of 20');
    const warning = hook.hits.find((h) => h.body.key_id === id)!;
    assert.equal(warning.contentType, 'application/json');
    assert.deepEqual(Object.keys(warning.body).sort(), DOC_FIELDS);
    assert.deepEqual(warning.body, {
      event: 'limit_warning', key_id: id, email: 'li@example.com', label: 'laptop', limit: 'requests', used: 16, max: 20, percent: 80,
      day: '2026-11-22', time_zone: 'Asia/Shanghai', resets_at: '2026-11-22T16:00:00.000Z', portal_url: `http://portal.example/admin/keys/${id}`,
    });
    assert.doesNotMatch(warning.raw, FULL_KEY, 'never the key');
    const audited = (await auditLines(t)).filter((l) => l.key_id === id && l.action === 'key.limit_warning');
    assert.equal(audited.length, 1);
    assert.deepEqual(audited[0]!.details, { limit: 'requests', used: 16, max: 20, percent: 80, threshold: 80, day: '2026-11-22' });

    served(t, key, 1);
    await sync(t);
    await quiet(t);
    assert.deepEqual(hook.events(id), ['limit_warning requests'], 'not again at 17');

    await t.stop();
    await start();
    served(t, key, 1);
    await sync(t);
    await quiet(t);
    assert.deepEqual(hook.events(id), ['limit_warning requests'], 'not again at 18 after a restart the same day');
    assert.equal((await auditLines(t)).filter((l) => l.key_id === id && l.action === 'key.limit_warning').length, 1);

    served(t, key, 2);
    await sync(t);
    await waitFor(() => hook.events(id).length === 2, 'limit_reached at 20');
    assert.equal(t.portal.store.getKey(key)!.status, 'suspended');
    assert.deepEqual(hook.hits.filter((h) => h.body.key_id === id).map((h) => h.body)[1], {
      event: 'limit_reached', key_id: id, email: 'li@example.com', label: 'laptop', limit: 'requests', used: 20, max: 20, percent: 100,
      day: '2026-11-22', time_zone: 'Asia/Shanghai', resets_at: '2026-11-22T16:00:00.000Z', portal_url: `http://portal.example/admin/keys/${id}`,
    });

    // An admin reset starts a fresh quota, but the day has had its alerts: none again, before or after a restart.
    assert.equal((await call(t.url, 'POST', '/admin/reset-usage', { token: ADMIN, body: { key_id: id } })).status, 200);
    clock.advance(1000);
    await waitFor(() => fake.live.has(key), 'reinstated');
    served(t, key, 17);
    await sync(t);
    await quiet(t);
    await t.stop();
    await start();
    served(t, key, 3);
    await sync(t);
    await waitFor(() => t.portal.store.getKey(key)!.status === 'suspended', 'suspended again');
    await quiet(t);
    assert.deepEqual(hook.events(id), ['limit_warning requests', 'limit_reached requests'], 'once per key, limit and day');
    assert.equal(await metric(t, 'kp_alert_webhooks_total', 'result="failed"'), 0);

    // A new day in Shanghai: the key is back, and passing 80 % warns again.
    clock.set(Date.parse('2026-11-22T16:00:01Z'));
    await t.portal.jobs.runNow('quota-midnight');
    await waitFor(() => fake.live.has(key), 'reinstated at midnight');
    served(t, key, 16);
    await sync(t);
    await waitFor(() => hook.events(id).length === 3, 'the next day’s warning');
    assert.equal(hook.hits.filter((h) => h.body.key_id === id)[2]!.body.day, '2026-11-23');
  });

  it('warns for a token limit on its own, and keeps the key and the webhook’s secret path out of every log line', async () => {
    const { key, key_id: id } = await create(t, { label: 'tokens', daily_token_limit: 1000, email: 'wu@example.com' });
    await waitFor(() => fake.live.has(key), 'live');
    served(t, key, 1, { input: 500, output: 340 });
    await sync(t);
    await waitFor(() => hook.events(id).length === 1, 'the token warning');
    assert.deepEqual([hook.hits.at(-1)!.body.limit, hook.hits.at(-1)!.body.used, hook.hits.at(-1)!.body.max, hook.hits.at(-1)!.body.percent], ['tokens', 840, 1000, 84]);
    const logs = t.logs.text();
    assert.doesNotMatch(logs, FULL_KEY);
    assert.doesNotMatch(logs, /s3cret/, 'the webhook’s path and query are its secret');
    assert.match(logs, /passed 80 % of a daily limit/);
  });
});

describe('limit alerts on the pages', () => {
  const clock = new ManualClock(Date.parse('2026-11-22T04:00:00Z'));
  let t: TestPortal;
  before(async () => {
    t = await startTestPortal({ clock, fakeOptions: { now: () => clock.now(), reloadDelayMs: 5 }, env: { USAGE_SOURCE: 'queue', POOL_SIZE: '20' } });
  });
  after(async () => { await t.stop(); });

  it('tells a key holder in English and Chinese how much of today’s limit is used and when it works again; admins see how many keys are past it', async () => {
    const a = await create(t, { label: 'a', daily_limit: 100, email: 'zhang@example.com' });
    await waitFor(() => t.fake.live.has(a.key), 'live');
    const adminEn = await admin(t, 'en');
    for (const page of ['/admin/keys', '/admin/users']) assert.doesNotMatch((await adminEn.get(page)).html, /past 80 % of a limit/, 'nobody is past it yet');

    served(t, a.key, 85);
    await sync(t);
    const en = await signedIn(t, a.key, 'en');
    const page = (await en.get('/my-keys')).html;
    assert.match(page, new RegExp(`Key ${a.key_id} has used 85 % of today’s 100 requests; it stops at 100 and works again at 2026-11-23 00:00 \\+08:00\\.`));
    const zh = await signedIn(t, a.key, 'zh-CN');
    assert.match((await zh.get('/my-keys')).html, new RegExp(`密钥 ${a.key_id} 今日已用 85%（上限 100 次请求）；用满即暂停，2026-11-23 00:00 \\+08:00 恢复可用。`));

    for (const p of ['/admin/keys', '/admin/users']) {
      assert.match((await adminEn.get(p)).html, /<a href="\/admin\/usage">1 key is past 80 % of a limit today<\/a>/, p);
    }
    const adminZh = await admin(t, 'zh-CN');
    assert.match((await adminZh.get('/admin/users')).html, /今日有 1 个密钥的用量已超过上限的 80%/);

    // Reaching the limit: the notice says the key is out until the reset; a trial key (no email) has its own page.
    served(t, a.key, 15);
    await sync(t);
    await waitFor(() => t.portal.store.getKey(a.key)!.status === 'suspended', 'suspended');
    assert.match((await en.get('/my-keys')).html, new RegExp(`Key ${a.key_id} has used all of today’s 100 requests: it is out until the reset at 2026-11-23 00:00 \\+08:00\\.`));
    assert.match((await zh.get('/my-keys')).html, new RegExp(`密钥 ${a.key_id} 已用完今日额度（100 次请求），暂停使用至 2026-11-23 00:00 \\+08:00 重置。`));

    const trial = await create(t, { label: 'trial', daily_token_limit: 1000 });
    await waitFor(() => t.fake.live.has(trial.key), 'live');
    served(t, trial.key, 1, { input: 450, output: 450 });
    await sync(t);
    const holder = await signedIn(t, trial.key, 'en');
    assert.match((await holder.get('/my-keys')).html, new RegExp(`Key ${trial.key_id} has used 90 % of today’s 1,000 tokens; it stops at 1,000 and works again at 2026-11-23 00:00 \\+08:00\\.`));
    assert.match((await adminEn.get('/admin/keys')).html, /2 keys are past 80 % of a limit today/);
  });
});

/** A portal (fake CLIProxyAPI, clock at noon in Shanghai) posting its alerts to a receiver of its own. */
function portalWithHook(env: Record<string, string> = {}): { hook: Receiver; t: () => TestPortal } {
  const clock = new ManualClock(Date.parse('2026-11-22T04:00:00Z'));
  const hook = new Receiver();
  let t: TestPortal;
  before(async () => {
    await hook.start();
    t = await startTestPortal({
      clock, fakeOptions: { now: () => clock.now(), reloadDelayMs: 5 },
      env: { USAGE_SOURCE: 'queue', POOL_SIZE: '20', ALERT_WEBHOOK_URL: `${hook.url}/hook`, ...env },
    });
  });
  after(async () => { await t.stop(); await hook.stop(); });
  return { hook, t: () => t };
}

describe('a webhook that is slow, down or refusing', () => {
  const { hook, t: portal } = portalWithHook();
  let t: TestPortal;
  before(() => { t = portal(); });

  it('never holds up ingestion or a suspension, gives up an attempt after 5 s and retries it', { timeout: 30_000 }, async () => {
    const { key, key_id: id } = await create(t, { label: 'slow', daily_limit: 10 });
    await waitFor(() => t.fake.live.has(key), 'live');
    hook.plan = ['hang'];
    served(t, key, 8);
    const t0 = Date.now();
    await sync(t);
    await waitFor(() => hook.arrivals === 1, 'the first attempt, which hangs');
    served(t, key, 2);
    assert.equal((await sync(t)).ingested, 2);
    await waitFor(() => t.portal.store.getKey(key)!.status === 'suspended' && !t.fake.live.has(key), 'suspended and out of CLIProxyAPI', 2000);
    assert.ok(Date.now() - t0 < 3000, `ingestion and the suspension did not wait for the webhook (${Date.now() - t0} ms)`);
    await waitFor(() => hook.events(id).includes('limit_reached requests'), 'the limit_reached alert, delivered meanwhile');
    assert.ok(!hook.events(id).includes('limit_warning requests'), 'the warning is still hanging');
    await waitFor(() => hook.events(id).includes('limit_warning requests'), 'the warning, retried after its attempt timed out', 12_000);
    const took = hook.hits.find((h) => h.body.key_id === id && h.body.event === 'limit_warning')!.at - t0;
    assert.ok(took >= 5000, `the hung attempt was given up after 5 s (${took} ms)`);
    assert.ok(await metric(t, 'kp_alert_webhooks_total', 'result="retried"') >= 1);
    assert.equal(await metric(t, 'kp_alert_webhooks_total', 'result="delivered"'), 2);
  });

  it('retries an answer of 503; gives up on a 400 at once, logs that once and counts every failure', { timeout: 20_000 }, async () => {
    const x = await create(t, { label: 'x', daily_limit: 10 });
    const y = await create(t, { label: 'y', daily_limit: 10 });
    const z = await create(t, { label: 'z', daily_limit: 10 });
    await waitFor(() => [x, y, z].every((k) => t.fake.live.has(k.key)), 'live');
    hook.plan = [503];
    served(t, x.key, 9);
    await sync(t);
    await waitFor(() => hook.events(x.key_id).length === 1, 'delivered on the second attempt');
    assert.equal(hook.arrivals, 5, 'three earlier, the 503 and its retry');

    const failedBefore = await metric(t, 'kp_alert_webhooks_total', 'result="failed"');
    hook.plan = [400, 400];
    served(t, y.key, 9);
    served(t, z.key, 9);
    await sync(t);
    await waitFor(() => hook.arrivals === 7, 'both tried');
    await quiet(t);
    assert.equal(hook.arrivals, 7, 'a 400 is not retried');
    assert.equal(await metric(t, 'kp_alert_webhooks_total', 'result="failed"'), failedBefore + 2);
    const warned = t.logs.lines.filter((l) => /alert webhook could not be delivered/.test(l));
    assert.equal(warned.length, 1, 'one log line while it keeps failing');
    assert.match(warned[0]!, /"error":"answered HTTP 400"/);
    assert.doesNotMatch(t.logs.text(), FULL_KEY);
    assert.equal((await auditLines(t)).filter((l) => l.action === 'key.limit_warning').length, 4, 'every warning is in the audit log, delivered or not');
  });
});

describe('ALERT_THRESHOLD_PERCENT=0', () => {
  const { hook, t: portal } = portalWithHook({ ALERT_THRESHOLD_PERCENT: '0' });
  let t: TestPortal;
  before(() => { t = portal(); });

  it('turns the warnings off (webhook, audit, notices, the admin line); a suspension is still announced', async () => {
    const { key, key_id: id } = await create(t, { label: 'quiet', daily_limit: 10, email: 'off@example.com' });
    await waitFor(() => t.fake.live.has(key), 'live');
    served(t, key, 9);
    await sync(t);
    await quiet(t);
    assert.deepEqual(hook.events(id), []);
    assert.equal((await auditLines(t)).filter((l) => l.action === 'key.limit_warning').length, 0);
    const b = await signedIn(t, key, 'en');
    assert.doesNotMatch((await b.get('/my-keys')).html, /has used 90 %/);
    assert.doesNotMatch((await (await admin(t)).get('/admin/users')).html, /of a limit today/);

    served(t, key, 1);
    await sync(t);
    await waitFor(() => hook.events(id).length === 1, 'limit_reached');
    assert.deepEqual(hook.events(id), ['limit_reached requests']);
    assert.match((await b.get('/my-keys')).html, /has used all of today’s 10 requests/);
  });
});
