import assert from 'node:assert/strict';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import Database from 'better-sqlite3';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, call, chat, startTestPortal, syncUsage, tempDir, waitFor, type ChatOptions, type TestPortal } from '../support/harness.js';

const use = (t: TestPortal, key: string, o: ChatOptions = {}) => chat(t.fake, key, o);

const sync = syncUsage;

describe('usage from the v7 queue', () => {
  it('counts exactly what was sent, per user, key, day, hour and model; failures are not requests', async () => {
    const t = await startTestPortal({ env: { TIMEZONE: 'Asia/Shanghai', USAGE_SOURCE: 'queue' } });
    try {
      const reg = async (email: string, token?: string) => (await call(t.url, 'POST', '/api/register-key', { body: { email }, token })).body;
      const a1 = await reg('a@x.cn');
      const a2 = await reg('a@x.cn', a1.key);
      const b = await reg('b@x.cn');
      await waitFor(async () => (await use(t, b.key)) === 200, 'keys live'); // 1 request for b (59 tokens)
      const plan: [string, { model?: string; input?: number; output?: number; fail?: boolean }, number][] = [
        [a1.key, { input: 100, output: 50 }, 7], [a2.key, { model: 'fake-pro', input: 10, output: 5 }, 5],
        [a1.key, { fail: true }, 3], [b.key, { model: 'fake-pro', input: 1, output: 1 }, 4],
      ];
      for (const [key, o, n] of plan) for (let i = 0; i < n; i++) await use(t, key, o);
      await use(t, 'sk-operator-own-key'); // the operator's own key: not the portal's

      const pulled = await sync(t);
      assert.equal(pulled.source, 'queue');
      assert.equal(pulled.ingested, 1 + 7 + 5 + 3 + 4 + 1);
      assert.equal(t.fake.queue.length, 0, 'the queue was drained');

      const aStats = (await call(t.url, 'GET', '/api/user-stats/a%40x.cn', { token: a1.key })).body;
      assert.equal(aStats.totals.requests, 12);
      assert.equal(aStats.totals.failed, 3);
      assert.equal(aStats.totals.tokens, 7 * 150 + 5 * 15);
      assert.deepEqual(aStats.by_model.map((m: any) => [m.model, m.requests, m.tokens]), [['fake-model-1', 7, 1050], ['fake-pro', 5, 75]]);
      const today = aStats.by_day.at(-1);
      assert.equal(today.requests, 12);
      assert.equal(aStats.by_day.reduce((s: number, d: any) => s + d.requests, 0), 12);
      assert.equal(aStats.by_hour.reduce((s: number, h: any) => s + h.requests, 0), 12);
      const perKey = Object.fromEntries(aStats.keys.map((k: any) => [k.key_id, k.totals.requests]));
      assert.deepEqual(perKey, { [a1.key_id]: 7, [a2.key_id]: 5 });

      const mine = (await call(t.url, 'GET', '/usage', { token: a2.key })).body;
      assert.equal(mine.today.requests, 5);
      assert.equal(mine.today.tokens, 75);
      assert.equal(mine.remaining.requests, null, 'no limit');
      assert.equal(mine.time_zone, 'Asia/Shanghai');
      assert.ok(Date.parse(mine.reset_at) > Date.now());

      const board = (await call(t.url, 'GET', '/api/all-users-stats', { token: ADMIN })).body;
      assert.deepEqual(board.users.map((u: any) => [u.email, u.total_requests, u.total_tokens]), [['a@x.cn', 12, 1125], ['b@x.cn', 5, 67]]);
      assert.equal(board.summary.total_requests, 17, 'the operator’s own key is not a person');
      assert.equal(board.users[0].share, Math.round((1125 / 1192) * 10000) / 10000);
      assert.equal(t.portal.usageStore.unmanagedIds().length, 1, 'its usage sits in the unmanaged bucket');

      assert.equal(board.unmanaged.total_requests, 1);
      assert.equal(board.unmanaged.keys.length, 1);
      assert.match(board.unmanaged.keys[0].id, /^h[0-9a-f]{12}$/, 'a hash, never the key');

      const csvRows = (text: string): string[][] => text.trim().split('\n').slice(1).map((l) => l.split(','));
      const mineCsv = await call(t.url, 'GET', '/api/usage.csv', { token: a1.key, headers: { Accept: 'text/csv' } });
      assert.equal(mineCsv.status, 200);
      assert.match(mineCsv.headers.get('content-type') ?? '', /text\/csv/);
      assert.match(mineCsv.headers.get('content-disposition') ?? '', /attachment; filename="usage-a@x\.cn-\d{4}-\d{2}-\d{2}-\d{4}-\d{2}-\d{2}\.csv"/);
      const ownRows = csvRows(mineCsv.text);
      assert.ok(ownRows.every((r) => r[1] === 'a@x.cn'), 'a key holder gets only their own usage');
      assert.equal(ownRows.reduce((n, r) => n + Number(r[4]), 0), 12);
      assert.equal(ownRows.reduce((n, r) => n + Number(r[5]), 0), 3);
      assert.equal(ownRows.reduce((n, r) => n + Number(r[6]), 0), 1125);
      const everyone = csvRows((await call(t.url, 'GET', '/api/usage.csv?days=7', { token: ADMIN })).text);
      assert.equal(everyone.reduce((n, r) => n + Number(r[4]), 0), 17);
      assert.deepEqual([...new Set(everyone.map((r) => r[1]))].sort(), ['a@x.cn', 'b@x.cn']);
      assert.ok(!mineCsv.text.includes(a1.key.slice(14)), 'no key in the export');

      const health = (await call(t.url, 'GET', '/healthz', { token: ADMIN })).body;
      assert.equal(health.cliproxy.generation, 'queue');
      assert.ok(health.cliproxy.last_usage_at);
      assert.equal(health.usage.ingested_total, 21);
    } finally {
      await t.stop();
    }
  });

  it('ignores refresh payloads, keeps no key or upstream credential on disk, and survives a restart without double counting', async () => {
    const t = await startTestPortal({ keepDataDir: true, env: { USAGE_SOURCE: 'queue' } });
    const dataDir = t.dataDir;
    let key: string;
    try {
      key = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'c@x.cn' } })).body.key;
      await waitFor(async () => (await use(t, key)) === 200, 'key live');
      for (let i = 0; i < 9; i++) await use(t, key);
      t.fake.queue.push({ at: Date.now(), json: '{"support_refresh":true}' }, { at: Date.now(), json: '{"refresh":true}' });
      assert.equal((await sync(t)).ingested, 10);
      for (let i = 0; i < 5; i++) await use(t, key);
      assert.equal((await sync(t)).ingested, 5);
      const log = (await call(t.url, 'GET', '/api/requests?limit=500', { token: key })).body;
      assert.equal(log.requests.length, 15);
      assert.deepEqual(Object.keys(log.requests[0]).sort(), ['alias', 'at', 'cached', 'client_ip', 'endpoint', 'failed', 'input', 'key_id', 'latency_ms',
        'model', 'output', 'reasoning', 'request_id', 'status', 'tokens', 'ttft_ms', 'user_agent']);
      assert.equal(log.requests[0].user_agent, 'portal-test/1.0');
    } finally {
      await t.portal.stop();
      await t.fake.stop();
    }
    const bytes = readdirSync(dataDir).filter((f) => f.startsWith('usage.db')).map((f) => readFileSync(path.join(dataDir, f)).toString('latin1')).join('');
    assert.ok(bytes.length > 0 && !bytes.includes(key!.slice(14)) && !bytes.includes('upstream-dummy-key'), 'no key, no source in usage.db');
    // Restarted on the same data: each record once.
    const again = await startTestPortal({ dataDir, env: { USAGE_SOURCE: 'queue' } });
    try {
      const stats = (await call(again.url, 'GET', '/api/user-stats/c%40x.cn', { token: ADMIN })).body;
      assert.equal(stats.totals.requests, 15);
    } finally {
      await again.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe('the leaderboard cache', () => {
  it('is not rebuilt while nothing changed, and shows new usage within one STATS_TTL_MS', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue', STATS_TTL_MS: '100' } });
    try {
      const key = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'lead@x.cn' } })).body.key;
      await waitFor(async () => (await use(t, key)) === 200, 'key live');
      await sync(t);
      let builds = 0;
      const usage = t.portal.usageStore;
      const unmanagedIds = usage.unmanagedIds.bind(usage);
      usage.unmanagedIds = () => { builds++; return unmanagedIds(); }; // read once per body built
      const board = async () => {
        const res = await fetch(`${t.url}/api/all-users-stats`, { headers: { Authorization: `Bearer ${ADMIN}` } });
        return { etag: res.headers.get('etag'), body: await res.json() as { summary: { total_requests: number } } };
      };
      const first = await board();
      assert.equal(first.body.summary.total_requests, 1);
      for (let i = 0; i < 3; i++) {
        await new Promise((r) => setTimeout(r, 150)); // past the TTL
        assert.equal((await board()).etag, first.etag);
      }
      await new Promise((r) => setImmediate(r));
      assert.equal(builds, 1, 'built once: keys and usage stayed the same');

      await use(t, key);
      await sync(t);
      await new Promise((r) => setTimeout(r, 150));
      await board(); // may still be the last one (stale while revalidating, within two TTLs)
      await waitFor(async () => (await board()).body.summary.total_requests === 2, 'the new request on the board');
      assert.equal(builds, 2);

      // After a quiet spell (more than two TTLs), the first reader gets the fresh board, not the old one.
      await use(t, key);
      await sync(t);
      await new Promise((r) => setTimeout(r, 250));
      assert.equal((await board()).body.summary.total_requests, 3, 'never a body older than two TTLs');
    } finally {
      await t.stop();
    }
  });
});

describe('usage exports', () => {
  it('quote cells a spreadsheet would run as a formula', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'queue' } });
    try {
      const { key } = (await call(t.url, 'POST', '/api/register-key', { body: { email: '=cmd|x@x.cn' } })).body;
      await waitFor(async () => (await use(t, key)) === 200, 'key live');
      await sync(t);
      const csv = (await call(t.url, 'GET', '/api/usage.csv', { token: ADMIN })).text;
      assert.ok(csv.includes(",'=cmd|x@x.cn,"), csv);
      assert.ok(!/,=cmd/.test(csv));
    } finally {
      await t.stop();
    }
  });
});

describe('usage pushed over RESP (SUBSCRIBE usage)', () => {
  const requestsOf = async (t: TestPortal, email: string) =>
    (await call(t.url, 'GET', `/api/user-stats/${encodeURIComponent(email)}`, { token: ADMIN })).body.totals.requests as number;

  it('sees each request within a second, ignores refresh payloads, and recovers what a dropped subscriber missed', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'auto' } });
    try {
      await waitFor(() => t.portal.usage.status().subscribed, 'the subscription');
      assert.equal(t.portal.usage.status().source, 'subscribe');
      const { key } = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'push@x.cn' } })).body;
      await waitFor(async () => (await use(t, key)) === 200, 'key live');
      for (let i = 0; i < 9; i++) await use(t, key);
      await waitFor(async () => (await requestsOf(t, 'push@x.cn')) === 10, 'pushed records to count', 1000);
      assert.equal(t.fake.queue.length, 0, 'with a subscriber nothing is queued');
      t.fake.editByHand((k) => [...k, 'sk-another-by-hand']); // a config reload: {"refresh":true} to subscribers
      await new Promise((r) => setTimeout(r, 100));

      t.fake.dropSubscribers(); // as CLIProxyAPI does to a subscriber 256 messages behind
      for (let i = 0; i < 5; i++) await use(t, key); // these go to the queue
      assert.equal(t.fake.queue.length, 5);
      await waitFor(async () => (await requestsOf(t, 'push@x.cn')) === 15, 'the reconnect to drain the queue', 5000);
      await waitFor(() => t.portal.usage.status().subscribed, 'the subscription again');
      assert.equal(t.portal.usage.status().ingested_total, 15, 'refresh payloads are not usage');
    } finally {
      await t.stop();
    }
  });

  it('does not send a wrong management key over RESP again and again', async () => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'subscribe' }, fakeOptions: { managementKey: 'the-right-one' } });
    try {
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(t.fake.failedLogins(), 1, "one failed login, then a pause");
      assert.equal(t.fake.bans.size, 0);
      assert.equal(t.portal.usage.status().subscribed, false);
    } finally {
      await t.stop();
    }
  });
});

describe('usage from the first generation (v6 GET /usage snapshot)', () => {
  it('counts each detail once across polls, CLIProxyAPI restarts and portal restarts, late-finishing requests included', async () => {
    const fake = await FakeCliproxy.start({ generation: 'v6' });
    const dataDir = await tempDir('kp-v6-');
    try {
      const t = await startTestPortal({ fake, dataDir, env: { USAGE_SOURCE: 'auto' } });
      let key: string;
      try {
        key = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'v6@x.cn' } })).body.key;
        await waitFor(async () => (await use(t, key)) === 200, 'key live');
        for (let i = 0; i < 7; i++) await use(t, key);
        await use(t, key, { fail: true });
        let pulled = await sync(t);
        assert.equal(pulled.source, 'snapshot');
        assert.equal(pulled.ingested, 9);
        assert.equal((await sync(t)).ingested, 0, 'the same snapshot again adds nothing');
        // A request that started before the last one counted but finished after it.
        fake.recordUsage({ apiKey: key, alias: 'fake-chat', input: 1, output: 1, failed: false, at: Date.now() - 60_000 });
        assert.equal((await sync(t)).ingested, 1, 'a late-finishing request is not lost');
        fake.restartStats(); // CLIProxyAPI restarted: its counters and details are gone
        for (let i = 0; i < 3; i++) await use(t, key);
        pulled = await sync(t);
        assert.equal(pulled.ingested, 3);
        assert.equal((await call(t.url, 'GET', '/healthz', { token: ADMIN })).body.cliproxy.generation, 'v6-snapshot');
      } finally {
        await t.portal.stop();
      }
      // Restarted portal (the clean stop checkpointed): the snapshot still holds the 3; none counted twice.
      for (let i = 0; i < 2; i++) await fetch(`${fake.url}/v1/chat/completions`, { method: 'POST', headers: { Authorization: `Bearer ${key!}` }, body: '{}' }).then((r) => r.text());
      const t2 = await startTestPortal({ fake, dataDir, env: { USAGE_SOURCE: 'snapshot' } });
      try {
        await sync(t2); // (the start-up pull may already have taken them)
        const stats = (await call(t2.url, 'GET', '/api/user-stats/v6%40x.cn', { token: ADMIN })).body;
        assert.equal(stats.totals.requests, 8 + 1 + 3 + 2);
        assert.equal(stats.totals.failed, 1);
      } finally {
        await t2.portal.stop();
      }
      // Even with the watermark gone, every detail of the snapshot is read again and none counts twice.
      const db = new Database(path.join(dataDir, 'usage.db'));
      db.prepare("DELETE FROM usage_meta WHERE name = 'snapshot_newest'").run();
      db.close();
      const t3 = await startTestPortal({ fake, dataDir, env: { USAGE_SOURCE: 'snapshot' } });
      try {
        await sync(t3);
        assert.equal((await call(t3.url, 'GET', '/api/user-stats/v6%40x.cn', { token: ADMIN })).body.totals.requests, 14);
      } finally {
        await t3.portal.stop();
      }
    } finally {
      await fake.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('usage over RESP LPOP (v6.10.0-v6.10.7: no HTTP queue, no SUBSCRIBE)', () => {
  it('is picked by auto and counts exactly what was sent', async () => {
    const fake = await FakeCliproxy.start({ generation: 'v6.10' });
    const t = await startTestPortal({ fake, env: { USAGE_SOURCE: 'auto' } });
    try {
      const { key } = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'lpop@x.cn' } })).body;
      await waitFor(async () => (await use(t, key)) === 200, 'key live');
      for (let i = 0; i < 11; i++) await use(t, key, { input: 3, output: 2 });
      const pulled = await sync(t);
      assert.equal(pulled.source, 'lpop');
      const stats = (await call(t.url, 'GET', '/api/user-stats/lpop%40x.cn', { token: ADMIN })).body;
      assert.equal(stats.totals.requests, 12);
      assert.equal(stats.totals.tokens, 59 + 11 * 5);
      assert.equal(fake.queue.length, 0);
      assert.equal((await call(t.url, 'GET', '/healthz', { token: ADMIN })).body.cliproxy.generation, 'v6.10-resp');
    } finally {
      await t.stop();
      await fake.stop();
    }
  });
});

describe('usage on v6.10.8-v7.0.6 (HTTP queue, RESP without SUBSCRIBE)', () => {
  it('auto settles on the queue and counts on its schedule, without trying to subscribe every time', async () => {
    const fake = await FakeCliproxy.start({ generation: 'v6.10.8' });
    const t = await startTestPortal({ fake, env: { USAGE_SOURCE: 'auto' } });
    try {
      const { key } = (await call(t.url, 'POST', '/api/register-key', { body: { email: 'v6108@x.cn' } })).body;
      await waitFor(async () => (await use(t, key)) === 200, 'key live');
      await waitFor(() => t.portal.usage.status().source === 'queue', 'the queue to be chosen');
      const subscribesBefore = fake.calls.filter((c) => c.path === '/v0/management/usage-queue' && c.status === 400).length;
      for (let i = 0; i < 6; i++) await use(t, key);
      for (let i = 0; i < 3; i++) await t.portal.jobs.runNow('usage'); // the schedule, not a forced sync
      const stats = (await call(t.url, 'GET', '/api/user-stats/v6108%40x.cn', { token: ADMIN })).body;
      assert.equal(stats.totals.requests, 7);
      assert.equal(fake.calls.filter((c) => c.path === '/v0/management/usage-queue' && c.status === 400).length, subscribesBefore, 'no more probing');
      assert.equal((await call(t.url, 'GET', '/healthz', { token: ADMIN })).body.usage.source, 'queue');
    } finally {
      await t.stop();
      await fake.stop();
    }
  });
});
