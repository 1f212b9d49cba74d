import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ADMIN, call, chat, startTestPortal, waitFor, type TestPortal } from '../support/harness.js';

/** Three ways a subscription used to lose or double records, each reproduced against the fake. */
describe('the usage subscription', () => {
  const counted = async (t: TestPortal, email: string) =>
    (await call(t.url, 'GET', `/api/user-stats/${encodeURIComponent(email)}`, { token: ADMIN })).body.totals.requests as number;
  const start = async (email: string) => {
    const t = await startTestPortal({ env: { USAGE_SOURCE: 'subscribe' } });
    await waitFor(() => t.portal.usage.status().subscribed, 'the subscription');
    const { key } = (await call(t.url, 'POST', '/api/register-key', { body: { email } })).body as { key: string };
    await waitFor(async () => (await chat(t.fake, key)) === 200, 'the key to go live');
    await waitFor(async () => (await counted(t, email)) === 1, 'the first request to count');
    return { t, key };
  };

  it('counts a record that arrives in the same packet as the SUBSCRIBE confirmation', async () => {
    const { t, key } = await start('same-chunk@x.cn');
    try {
      t.fake.recordUsage({ apiKey: key, alias: 'fake-chat', input: 1, output: 1, failed: false, atNextSubscribe: true });
      t.fake.dropSubscribers(); // the portal subscribes again, and the record comes with the confirmation
      await waitFor(() => t.fake.atNextSubscribe.length === 0 && t.portal.usage.status().subscribed, 'the new subscription', 5000);
      assert.equal(await chat(t.fake, key), 200);
      await waitFor(async () => (await counted(t, 'same-chunk@x.cn')) >= 3, 'both records to count', 3000);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await counted(t, 'same-chunk@x.cn'), 3);
    } finally {
      await t.stop();
    }
  });

  it('never holds two subscriptions when draining the queue fails after subscribing', async () => {
    const { t, key } = await start('drain-fails@x.cn');
    try {
      t.fake.failQueuePops = 3; // every try of the drain after the next SUBSCRIBE answers 500
      t.fake.dropSubscribers();
      await waitFor(() => t.fake.failQueuePops === 0, 'the failing drain');
      await waitFor(() => t.portal.usage.status().subscribed && t.portal.usage.status().error === null, 'a working subscription again', 8000);
      await new Promise((r) => setTimeout(r, 1500)); // time for a stray second subscription to appear
      assert.equal(t.fake.subscribers.size, 1, 'one subscription');
      for (let i = 0; i < 5; i++) assert.equal(await chat(t.fake, key), 200);
      await waitFor(async () => (await counted(t, 'drain-fails@x.cn')) >= 6, 'the five requests', 3000);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await counted(t, 'drain-fails@x.cn'), 6, 'each request counted once');
    } finally {
      await t.stop();
    }
  });

  it('reports a CLIProxyAPI that never answers AUTH, and recovers when it does', async () => {
    const { t, key } = await start('silent@x.cn');
    try {
      t.fake.respSilent = true;
      t.fake.dropSubscribers();
      await waitFor(() => t.portal.usage.status().error !== null, 'the unanswered AUTH to be reported', 9000);
      assert.match(t.portal.usage.status().error!, /AUTH|answer/i);
      assert.equal(t.portal.usage.status().subscribed, false);
      for (let i = 0; i < 3; i++) assert.equal(await chat(t.fake, key), 200); // no subscriber: these wait in the queue
      t.fake.respSilent = false;
      await waitFor(async () => (await counted(t, 'silent@x.cn')) === 4, 'the queued records after recovery', 40_000);
      await waitFor(() => t.portal.usage.status().subscribed && t.portal.usage.status().error === null, 'the subscription back', 5000);
    } finally {
      await t.stop();
    }
  });
});
