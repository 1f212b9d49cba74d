import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config.js';
import { tempDir } from '../support/harness.js';

describe('config', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({ env: {}, dotenv: false, cwd: '/srv/portal' });
    assert.equal(c.PORT, 8080);
    assert.equal(c.DATA_DIR, '/srv/portal/data');
    assert.equal(c.CLIPROXY_URL, 'http://127.0.0.1:8317');
    assert.equal(c.CLIPROXY_PUBLIC_URL, 'http://127.0.0.1:8317');
    assert.equal(c.KEY_PREFIX, 'usr_pool_');
    assert.equal(c.POOL_SIZE, 500);
    assert.equal(c.PRELOAD_POOL, false);
    assert.equal(c.RECONCILE_CRON, '12,42 * * * * *');
    assert.equal(c.LOG_FILE, '/srv/portal/data/portal.log');
  });

  it('stops with one line naming the variable and the problem', () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ PORT: 'abc' }, /^Invalid configuration: PORT must be a whole number \(got "abc"\)$/],
      [{ PORT: '70000' }, /PORT must be between 0 and 65535/],
      [{ PRELOAD_POOL: 'maybe' }, /PRELOAD_POOL must be true or false/],
      [{ USAGE_SOURCE: 'push' }, /USAGE_SOURCE must be one of auto, subscribe, queue, snapshot/],
      [{ TIMEZONE: 'Mars/Olympus' }, /TIMEZONE must be an IANA time zone/],
      [{ RECONCILE_CRON: 'every minute' }, /RECONCILE_CRON must be a valid cron expression/],
      [{ CLIPROXY_URL: 'ftp://x' }, /CLIPROXY_URL must be an http/],
      [{ ADMIN_TOKEN: 'short' }, /^Invalid configuration: ADMIN_TOKEN must be at least 16 characters$/],
      [{ REGISTER_RATE_LIMIT: 'lots' }, /REGISTER_RATE_LIMIT must look like/],
    ];
    for (const [env, re] of cases) {
      assert.throws(() => loadConfig({ env, dotenv: false }), (err: Error) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, re);
        assert.ok(!err.message.includes('\n'));
        return true;
      });
    }
  });

  it('reads .env, lets the environment override it and flags override both', async () => {
    const dir = await tempDir();
    writeFileSync(path.join(dir, '.env'), 'PORT=9001\nPOOL_SIZE=7\nKEY_PREFIX=team_\n');
    const c = loadConfig({ cwd: dir, env: { POOL_SIZE: '9' }, flags: { KEY_PREFIX: 'cli_' } });
    assert.equal(c.PORT, 9001);
    assert.equal(c.POOL_SIZE, 9);
    assert.equal(c.KEY_PREFIX, 'cli_');
  });

  it('parses rate limits, trust proxy and email domains', () => {
    const c = loadConfig({ dotenv: false, env: { REGISTER_RATE_LIMIT: '10/15m', TRUST_PROXY: '1', ALLOWED_EMAIL_DOMAINS: '@Corp.example, lab.example' } });
    assert.deepEqual(c.REGISTER_RATE_LIMIT, { limit: 10, windowMs: 900_000 });
    assert.equal(c.TRUST_PROXY, 1);
    assert.deepEqual(c.ALLOWED_EMAIL_DOMAINS, ['corp.example', 'lab.example']);
  });
});
