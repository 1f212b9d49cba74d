import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ManualClock } from '../support/clock.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, call, chat, settled, startTestPortal, waitFor } from '../support/harness.js';
import { strictInvariantViolations } from '../support/invariants.js';

describe('keeping CLIProxyAPI’s key list right', () => {
  it('keeps foreign keys, adds the sentinel, restores a key removed by hand, removes a revoked key added back', async () => {
    const t = await startTestPortal({ fakeOptions: { apiKeys: ['sk-ops-1', '  sk-ops-2 ', 'sk-ops-1'] } });
    try {
      assert.ok(t.fake.apiKeys?.includes(t.portal.sentinel), 'sentinel present after the start-up run');
      const { body: a } = await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@x.cn' } });
      const { body: b } = await call(t.url, 'POST', '/api/register-key', { body: { email: 'b@x.cn' } });
      await call(t.url, 'POST', '/api/revoke-key', { body: { key: b.key } });

      t.fake.editByHand((keys) => keys.filter((k) => k !== a.key).concat(b.key)); // an operator's mistakes
      const report = await t.portal.reconciler.run();
      assert.equal(report.ok, true);
      assert.deepEqual(report.added, [a.key_id]);
      assert.deepEqual(report.removed, [b.key_id]);
      assert.equal(report.foreign, 2);
      assert.ok(t.fake.apiKeys?.includes(a.key));
      assert.ok(!t.fake.apiKeys?.includes(b.key));
      // Foreign keys stay exactly as the operator wrote them, duplicates and spaces included.
      assert.deepEqual(t.fake.apiKeys?.filter((k) => k.includes('sk-ops')), ['sk-ops-1', '  sk-ops-2 ', 'sk-ops-1']);
      await waitFor(async () => (await chat(t.fake, a.key)) === 200, 'restored key works');

      await new Promise((r) => setTimeout(r, 100));
      const before = t.fake.calls.length;
      const quiet = await t.portal.reconciler.run();
      assert.deepEqual([quiet.added, quiet.removed], [[], []]);
      assert.deepEqual(t.fake.calls.slice(before).map((c) => c.method), ['GET'], 'a converged list costs one GET and nothing else');
    } finally {
      await t.stop();
    }
  });

  it('never leaves the list empty: an empty list (proxy open to anyone) gets the sentinel first', async () => {
    const fake = await FakeCliproxy.start({ apiKeys: null });
    assert.equal(await chat(fake, 'anything'), 200, 'an empty list lets anyone in');
    const t = await startTestPortal({ fake });
    try {
      const report = t.portal.reconciler.last!; // the start-up run
      assert.equal(report.was_empty, true);
      assert.deepEqual(fake.apiKeys, [t.portal.sentinel]);
      await waitFor(async () => (await chat(fake, 'anything')) === 401, 'the proxy to close');
      assert.match(t.logs.text(), /empty api-keys list/);
      // Revoking the only issued key leaves the sentinel, so the list is never empty again.
      const { body } = await call(t.url, 'POST', '/api/register-key', { body: { email: 'only@x.cn' } });
      await call(t.url, 'POST', '/api/revoke-key', { body: { key: body.key } });
      assert.deepEqual(fake.apiKeys, [t.portal.sentinel]);
    } finally {
      await t.stop();
      await fake.stop();
    }
  });

  it('never replaces the list: many changes (PRELOAD_POOL) are a PATCH each, and unloading them a DELETE each', async () => {
    const fake = await FakeCliproxy.start({ apiKeys: ['sk-ops-1'] });
    try {
      const t = await startTestPortal({ fake, keepDataDir: true, env: { PRELOAD_POOL: 'true', POOL_SIZE: '40' } });
      try {
        assert.equal(fake.apiKeys?.[0], 'sk-ops-1');
        assert.equal(fake.apiKeys?.length, 42, 'foreign key + sentinel + 40 pool keys');
        assert.equal(fake.apiKeys?.[1], t.portal.sentinel, 'the sentinel first');
        assert.equal(fake.calls.filter((c) => c.method === 'PUT').length, 0, 'never a PUT');
        assert.equal(fake.calls.filter((c) => c.method === 'PATCH').length, 41);
      } finally {
        await t.stop();
      }
      // The same data directory without preloading: the unused keys leave CLIProxyAPI.
      const t2 = await startTestPortal({ fake, dataDir: t.dataDir, env: { PRELOAD_POOL: 'false' } });
      try {
        assert.equal(t2.portal.reconciler.last?.removed.length, 40);
        assert.deepEqual(fake.apiKeys, ['sk-ops-1', t2.portal.sentinel]);
        assert.equal(fake.calls.filter((c) => c.method === 'DELETE').length, 40);
        assert.equal(fake.calls.filter((c) => c.method === 'PUT').length, 0);
      } finally {
        await t2.stop();
      }
    } finally {
      await fake.stop();
    }
  });

  // Reproduction (real v7.2.140 and v6.9.49): a pass that read the list during a burst of 50
  // registrations wrote the keys still waiting their turn once more — 195 PATCHes for 103 keys, each
  // extra one on v7 waiting 1.5 s for a reload that never came, so later registrations took 1.5 s.
  it('writes each key of a burst once, even when a full pass reads the list in the middle of it', async () => {
    const t = await startTestPortal({ fakeOptions: { reloadDelayMs: 20 }, settleMs: 30 });
    try {
      const before = t.fake.calls.filter((c) => c.method === 'PATCH').length;
      const burst = Promise.all(Array.from({ length: 20 }, (_, i) => call(t.url, 'POST', '/api/register-key', { body: { email: `burst${i}@x.cn` } })));
      await waitFor(() => t.fake.calls.filter((c) => c.method === 'PATCH').length >= before + 3, 'the burst under way');
      const report = await t.portal.reconciler.run(); // reads the list with most of the burst still queued
      const answers = await burst;
      assert.deepEqual([...new Set(answers.map((a) => a.status))], [201]);
      await t.portal.reconciler.idle();
      assert.equal(t.fake.calls.filter((c) => c.method === 'PATCH').length - before, 20, 'one PATCH per key');
      assert.deepEqual(report.added, [], 'the pass left the queued keys to their own writes');
      for (const a of answers) assert.equal(await chat(t.fake, a.body.key), 200);
    } finally {
      await t.stop();
    }
  });

  it('keeps an operator’s key added between the portal’s read and its write', async () => {
    const t = await startTestPortal();
    try {
      await t.portal.reconciler.run();
      t.fake.editByHand((keys) => keys.filter((k) => k !== t.portal.sentinel)); // drift the next run repairs
      t.fake.afterListRead = () => { t.fake.afterListRead = null; t.fake.editByHand((keys) => [...keys, 'sk-added-by-hand']); };
      const report = await t.portal.reconciler.run();
      assert.deepEqual(report.added, ['sentinel']);
      assert.ok(t.fake.apiKeys?.includes('sk-added-by-hand'), 'the operator’s key survives the portal’s write');
      assert.ok(t.fake.apiKeys?.includes(t.portal.sentinel));
    } finally {
      await t.stop();
    }
  });

  for (const garble of ['html', 'empty', 'truncated', 'null', 'text'] as const) {
    it(`never writes after a garbled answer (${garble}), keeps foreign keys, and says so`, async () => {
      const t = await startTestPortal({ fakeOptions: { apiKeys: ['sk-ops-1', 'sk-ops-2'] } });
      try {
        const { body } = await call(t.url, 'POST', '/api/register-key', { body: { email: 'g@x.cn' } });
        t.fake.editByHand((keys) => keys.filter((k) => k !== body.key)); // there is something to repair
        const before = t.fake.calls.length;
        t.fake.garbleNextList.push(garble, garble);
        const report = await t.portal.reconciler.run();
        assert.equal(report.ok, false);
        assert.equal(report.error_code, 'cliproxy_bad_answer');
        assert.deepEqual(t.fake.calls.slice(before).map((c) => c.method), ['GET'], 'read, and nothing written');
        assert.deepEqual(t.fake.apiKeys?.slice(0, 2), ['sk-ops-1', 'sk-ops-2']);
        const health = await call(t.url, 'GET', '/healthz', { token: ADMIN });
        assert.equal(health.status, 503);
        assert.equal(health.body.status, 'degraded');
        assert.ok(health.body.reasons.some((r: { code: string }) => r.code === 'cliproxy_bad_answer'));
        await t.portal.reconciler.run(); // still garbled
        assert.ok(!t.fake.calls.slice(before).some((c) => c.method !== 'GET'));
        const healed = await t.portal.reconciler.run(); // good answers again
        assert.deepEqual(healed.added, [body.key_id]);
        assert.equal((await call(t.url, 'GET', '/healthz')).body.status, 'ok', 'the error is gone with its cause');
      } finally {
        await t.stop();
      }
    });
  }

  it('repairs a hand-emptied list and a revoked key added back within 2 s of CLIProxyAPI’s reload (subscribe)', async (ctx) => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'subscribe' } });
    try {
      await waitFor(() => t.portal.usage.status().subscribed, 'the subscription');
      const { body: a } = await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@x.cn' } });
      const { body: b } = await call(t.url, 'POST', '/api/register-key', { body: { email: 'b@x.cn' } });
      await call(t.url, 'POST', '/api/revoke-key', { body: { key: b.key } });
      await new Promise((r) => setTimeout(r, 300));

      let t0 = Date.now();
      t.fake.editByHand(() => []); // CLIProxyAPI now lets anyone in
      await waitFor(async () => (await chat(t.fake, 'anyone')) === 200, 'the list to be empty');
      await waitFor(() => !!t.fake.apiKeys?.includes(t.portal.sentinel) && !!t.fake.apiKeys?.includes(a.key), 'the list refilled', 2000);
      await waitFor(async () => (await chat(t.fake, 'anyone')) === 401, 'the proxy to close again', 2000);
      ctx.diagnostic(`emptied list refilled in ${Date.now() - t0} ms`);

      t0 = Date.now();
      t.fake.editByHand((keys) => [...keys, b.key]);
      await waitFor(() => !t.fake.apiKeys?.includes(b.key), 'the revoked key out again', 2000);
      ctx.diagnostic(`revoked key removed again in ${Date.now() - t0} ms`);
    } finally {
      await t.stop();
    }
  });

  for (const mode of ['subscribe', 'queue'] as const) {
    it(`keeps every key when CLIProxyAPI loses a write made during the previous one's reload (${mode}: ${mode === 'subscribe' ? 'the reload message' : 'a quiet gap'} between writes)`, async () => {
      const t = await startTestPortal({ settleMs: 60, env: { USAGE_SOURCE: mode }, fakeOptions: { reloadDelayMs: 25 } });
      try {
        if (mode === 'subscribe') await waitFor(() => t.portal.usage.status().subscribed, 'the subscription');
        t.fake.racyReloads = true;
        const regs = await Promise.all(Array.from({ length: 12 }, (_, i) => call(t.url, 'POST', '/api/register-key', { body: { email: `race${i}@x.cn` } })));
        assert.ok(regs.every((r) => r.status === 201));
        await new Promise((r) => setTimeout(r, 300));
        assert.equal(t.fake.racedWrites, 0, 'no write came while another one’s reload was under way');
        for (const r of regs) assert.ok(t.fake.live.has(r.body.key), `key ${r.body.key_id} is live`);
        assert.equal(t.fake.calls.filter((c) => c.method === 'PUT').length, 0);
      } finally {
        await t.stop();
      }
    });
  }

  it('would lose keys without the wait (the fake’s race is real)', async () => {
    const t = await startTestPortal({ settleMs: 0, env: { USAGE_SOURCE: 'queue' }, fakeOptions: { reloadDelayMs: 25 } });
    try {
      t.fake.racyReloads = true;
      await Promise.all(Array.from({ length: 12 }, (_, i) => call(t.url, 'POST', '/api/register-key', { body: { email: `nowait${i}@x.cn` } })));
      assert.ok(t.fake.racedWrites > 0, `${t.fake.racedWrites} writes lost`);
    } finally {
      await t.stop();
    }
  });

  it('issues keys as pending while CLIProxyAPI is down and makes them live when it is back', async () => {
    const t = await startTestPortal({ pushWaitMs: 3000 });
    try {
      await t.fake.stop();
      const res = await call(t.url, 'POST', '/api/register-key', { body: { email: 'down@x.cn' } });
      assert.equal(res.status, 201);
      assert.equal(res.body.status, 'pending');
      const health = (await call(t.url, 'GET', '/healthz', { token: ADMIN })).body;
      assert.equal(health.status, 'degraded');
      assert.equal(health.cliproxy.reachable, false);
      assert.equal(health.cliproxy.error_code, 'cliproxy_unreachable');
      assert.deepEqual((await call(t.url, 'GET', '/healthz')).body, { status: 'degraded', reasons: ['cliproxy_unreachable'] }, 'no details for anyone else');

      await t.fake.listen();
      // No schedule runs in tests: the reconciler's own retry (every 5 s while down) brings it live.
      await waitFor(() => t.portal.store.getKey(res.body.key)?.status === 'active', 'the key to go live', 9000);
      await waitFor(async () => (await chat(t.fake, res.body.key)) === 200, 'the pending key to work');
      assert.equal((await call(t.url, 'GET', '/healthz', { token: ADMIN })).body.cliproxy.reachable, true);
      const h = (await call(t.url, 'GET', '/healthz', { token: ADMIN })).body; assert.equal(h.status, 'ok', JSON.stringify(h.reasons));
      assert.deepEqual(strictInvariantViolations(await settled(t)), []);
    } finally {
      await t.stop();
    }
  });

  it('heals after CLIProxyAPI fails to save (500): the next run re-reads and re-applies', async () => {
    const t = await startTestPortal();
    try {
      await t.portal.reconciler.run();
      t.fake.failNextSave = true;
      const res = await call(t.url, 'POST', '/api/register-key', { body: { email: 'flaky@x.cn' } });
      assert.equal(res.status, 201);
      // The client retried the idempotent PATCH after the 500, so the key got through anyway.
      assert.ok(t.fake.apiKeys?.includes(res.body.key));
      await waitFor(async () => (await chat(t.fake, res.body.key)) === 200, 'key live');
    } finally {
      await t.stop();
    }
  });

  it('sends a wrong management key fewer than 5 times a minute, and says so in /healthz', async () => {
    const clock = new ManualClock(Date.parse('2026-11-22T10:00:00Z'));
    const fake = await FakeCliproxy.start({ managementKey: 'the-right-key', now: () => clock.now() });
    const t = await startTestPortal({ fake, clock });
    try {
      for (let second = 0; second < 60; second += 2) {
        await t.portal.reconciler.run();
        if (second % 10 === 0) await call(t.url, 'POST', '/api/register-key', { body: { email: `w${second}@x.cn` } });
        clock.advance(2000);
      }
      assert.ok(fake.failedLogins() < 5, `${fake.failedLogins()} failed logins in a minute`);
      assert.equal(fake.failedLogins(), 1);
      assert.equal(fake.bans.size, 0, 'not banned');
      const health = (await call(t.url, 'GET', '/healthz', { token: ADMIN })).body;
      assert.equal(health.cliproxy.error_code, 'management_key_rejected');
      assert.equal(health.cliproxy.authenticated, false);
      assert.ok(health.cliproxy.paused_until);
      assert.match(t.logs.text(), /rejected the management key/);
      // Over the next hours it tries again now and then, and is never banned.
      for (let i = 0; i < 24 * 60; i++) { clock.advance(60_000); await t.portal.reconciler.run(); }
      assert.equal(fake.bans.size, 0, 'still not banned after a day');
      assert.ok(fake.failedLogins() <= 12, `${fake.failedLogins()} failed logins in a day`);
    } finally {
      await t.stop();
      await fake.stop();
    }
  });

  it('waits out a ban instead of adding to it', async () => {
    const clock = new ManualClock(Date.parse('2026-11-22T10:00:00Z'));
    const fake = await FakeCliproxy.start({ now: () => clock.now() });
    fake.bans.set('127.0.0.1', clock.now() + 30 * 60_000);
    const t = await startTestPortal({ fake, clock });
    try {
      await t.portal.reconciler.run();
      await t.portal.reconciler.run();
      assert.equal(fake.calls.length, 1, 'one call (at start) met the ban; none after');
      assert.equal((await call(t.url, 'GET', '/healthz', { token: ADMIN })).body.cliproxy.error_code, 'management_forbidden');
      clock.advance(32 * 60_000);
      const report = await t.portal.reconciler.run();
      assert.equal(report.ok, true);
    } finally {
      await t.stop();
      await fake.stop();
    }
  });

  it('reports management switched off (404) and does not hammer it', async () => {
    const fake = await FakeCliproxy.start({ managementKey: null });
    const t = await startTestPortal({ fake });
    try {
      for (let i = 0; i < 5; i++) await t.portal.reconciler.run();
      assert.equal(fake.calls.length, 1, 'one call at start, then a pause');
      assert.equal((await call(t.url, 'GET', '/healthz', { token: ADMIN })).body.cliproxy.error_code, 'management_disabled');
    } finally {
      await t.stop();
      await fake.stop();
    }
  });

  it('keeps keys pending, and calls nothing, without a management key', async () => {
    const t = await startTestPortal({ env: { CLIPROXY_MANAGEMENT_KEY: '' } });
    try {
      const res = await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@x.cn' } });
      assert.equal(res.body.status, 'pending');
      assert.equal(t.fake.calls.length, 0);
      const admin = await call(t.url, 'POST', '/admin/pool', { body: { count: 1 }, token: ADMIN });
      assert.equal(admin.status, 201);
      assert.equal((await call(t.url, 'GET', '/healthz', { token: ADMIN })).body.cliproxy.error_code, 'management_key_missing');
    } finally {
      await t.stop();
    }
  });
});

describe('CLIProxyAPI v8', () => {
  it('is recognised, and its v0 routes are used while it serves them', async () => {
    const fake = await FakeCliproxy.start({ generation: 'v8', apiKeys: ['sk-ops-1'] });
    const t = await startTestPortal({ fake, env: { USAGE_SOURCE: 'queue' } });
    try {
      const { body } = await call(t.url, 'POST', '/api/register-key', { body: { email: 'v8@x.cn' } });
      assert.equal(body.status, 'active');
      assert.equal(await chat(fake, body.key), 200);
      assert.ok(!fake.calls.some((c) => c.path === '/v8/management/config/access/api-keys'), 'v0 routes while served');
      const health = (await call(t.url, 'GET', '/healthz', { token: ADMIN })).body;
      assert.deepEqual([health.cliproxy.key_api, t.portal.cliproxy.status().v8], ['v0', true]);
    } finally {
      await t.stop();
      await fake.stop();
    }
  });

  it('falls back to its config routes once v0 is gone: keys and usage keep working, foreign keys stay', async () => {
    const fake = await FakeCliproxy.start({ generation: 'v8', v0Served: false, apiKeys: ['sk-ops-1', 'sk-ops-2'] });
    const t = await startTestPortal({ fake, env: { USAGE_SOURCE: 'queue' } });
    try {
      assert.equal(t.portal.cliproxy.keyApi, 'v8');
      const { body: a } = await call(t.url, 'POST', '/api/register-key', { body: { email: 'a@v8.cn' } });
      const { body: b } = await call(t.url, 'POST', '/api/register-key', { body: { email: 'b@v8.cn' } });
      assert.equal(a.status, 'active');
      assert.equal(await chat(fake, a.key), 200);
      await call(t.url, 'POST', '/api/revoke-key', { body: { key: b.key } });
      assert.equal(await chat(fake, b.key), 401);
      assert.deepEqual(fake.apiKeys?.slice(0, 2), ['sk-ops-1', 'sk-ops-2']);
      assert.ok(fake.apiKeys?.includes(t.portal.sentinel));
      // Usage from v8's queue route.
      for (let i = 0; i < 3; i++) await chat(fake, a.key);
      const pulled = (await call(t.url, 'POST', '/api/sync-usage', { token: ADMIN })).body;
      assert.equal(pulled.source, 'queue');
      assert.equal((await call(t.url, 'GET', '/api/user-stats/a%40v8.cn', { token: ADMIN })).body.totals.requests, 4);
      assert.ok(fake.calls.some((c) => c.path === '/v8/management/observability/usage/queue'));
    } finally {
      await t.stop();
      await fake.stop();
    }
  });
});

describe('answers that say what CLIProxyAPI really does', () => {
  it('says active only once CLIProxyAPI accepts the key, and revoked once it refuses it (a slow reload)', async () => {
    const t = await startTestPortal({ fakeOptions: { reloadDelayMs: 250 } });
    try {
      const res = await call(t.url, 'POST', '/api/register-key', { body: { email: 'slow@x.cn' } });
      assert.equal(res.body.status, 'active');
      assert.equal(await chat(t.fake, res.body.key), 200, 'usable the moment the answer says active');
      const revoked = await call(t.url, 'POST', '/api/revoke-key', { body: { key: res.body.key } });
      assert.equal(revoked.status, 200);
      assert.equal(await chat(t.fake, res.body.key), 401, 'refused the moment the answer says revoked');
    } finally {
      await t.stop();
    }
  });
});
