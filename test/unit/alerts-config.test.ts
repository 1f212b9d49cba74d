import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { ConfigError, describeConfig, loadConfig } from '../../src/config.js';
import { AuditLog } from '../../src/store/audit.js';
import { ManualClock } from '../support/clock.js';
import { tempDir } from '../support/harness.js';

const load = (env: Record<string, string>) => loadConfig({ env, dotenv: false, cwd: '/srv/portal' });

describe('alert settings', () => {
  it('default to warnings at 80 % and no webhook', () => {
    const c = load({});
    assert.equal(c.ALERT_THRESHOLD_PERCENT, 80);
    assert.equal(c.ALERT_WEBHOOK_URL, undefined);
    assert.equal(c.PORTAL_PUBLIC_URL, undefined);
    assert.equal(load({ ALERT_THRESHOLD_PERCENT: '0' }).ALERT_THRESHOLD_PERCENT, 0);
  });

  it('refuse a threshold that is not a whole percent under 100, and a webhook that is no http(s) URL or holds credentials, without echoing it', () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ ALERT_THRESHOLD_PERCENT: '100' }, /^Invalid configuration: ALERT_THRESHOLD_PERCENT must be between 0 and 99 \(got "100"\)$/],
      [{ ALERT_THRESHOLD_PERCENT: '80%' }, /ALERT_THRESHOLD_PERCENT must be a whole number/],
      [{ ALERT_WEBHOOK_URL: 'ftp://hooks.example/x' }, /^Invalid configuration: ALERT_WEBHOOK_URL must be an http:\/\/ or https:\/\/ URL$/],
      [{ ALERT_WEBHOOK_URL: 'https://bot:s3cret@hooks.example/x' }, /^Invalid configuration: ALERT_WEBHOOK_URL must not hold user:password@/],
      [{ PORTAL_PUBLIC_URL: 'keys.intranet' }, /PORTAL_PUBLIC_URL must be an http/],
    ];
    for (const [env, message] of cases) {
      assert.throws(() => load(env), (err: Error) => err instanceof ConfigError && message.test(err.message) && !err.message.includes('s3cret'), JSON.stringify(env));
    }
  });

  it('keep the webhook exactly as given, and show only its origin in the start-up line', () => {
    const url = 'https://hooks.example/services/T0/B0/s3cret/';
    const c = load({ ALERT_WEBHOOK_URL: url });
    assert.equal(c.ALERT_WEBHOOK_URL, url, 'a trailing slash can matter to the receiver');
    assert.equal(describeConfig(c).ALERT_WEBHOOK_URL, 'https://hooks.example/***');
  });
});

describe('audit log reading with a stop', () => {
  it('reads newest first and ends at the first entry the stop names, without reading further back', async () => {
    const dir = await tempDir();
    const clock = new ManualClock(Date.parse('2026-11-21T10:00:00Z'));
    const log = new AuditLog(dir, clock);
    await log.record('system', 'key.suspend', '0001', { reason: 'daily_limit' });
    clock.set(Date.parse('2026-11-22T01:00:00Z'));
    await log.record('system', 'key.limit_warning', '0002', { day: '2026-11-22' });
    await log.record('admin', 'key.update', '0002');
    await log.record('system', 'key.limit_warning', '0003', { day: '2026-11-22' });
    const seen: string[] = [];
    const today = Date.parse('2026-11-22T00:00:00Z');
    const { entries, more } = await log.page({
      offset: 0, limit: 100, match: (e) => { seen.push(e.key_id!); return e.action === 'key.limit_warning'; }, stop: (e) => Date.parse(e.at) < today,
    });
    assert.deepEqual(entries.map((e) => e.key_id), ['0003', '0002']);
    assert.equal(more, false);
    assert.deepEqual(seen, ['0003', '0002', '0002'], 'the entry of the day before is never matched');
    assert.equal((await log.page({ offset: 0, limit: 1, stop: (e) => Date.parse(e.at) < today })).more, true, 'a full page still says more');
    await log.close();
    await rm(dir, { recursive: true, force: true });
  });
});
