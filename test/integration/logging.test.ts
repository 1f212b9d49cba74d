import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { loadConfig } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { startPortal } from '../../src/main.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, MANAGEMENT_KEY, tempDir } from '../support/harness.js';

describe('the log', () => {
  it('puts the request id on every line written while a request is handled, whichever module writes it, and no key', async () => {
    const lines: Record<string, unknown>[] = [];
    const stream = new Writable({ write(chunk, _enc, done) { for (const l of String(chunk).split('\n').filter(Boolean)) lines.push(JSON.parse(l)); done(); } });
    const fake = await FakeCliproxy.start();
    const log = createLogger({ level: 'info', file: null, stdout: false, stream, keyPrefix: 'usr_pool_' });
    const config = loadConfig({ dotenv: false, env: { HOST: '127.0.0.1', PORT: '0', DATA_DIR: await tempDir(), CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY, ADMIN_TOKEN: ADMIN, LOG_FILE: '' } });
    const portal = await startPortal(config, { log, announce: () => undefined, noSchedules: true, settleMs: 20 });
    try {
      await portal.ready;
      const wrong = 'usr_pool_0001_' + 'ab'.repeat(24);
      const res = await fetch(`${portal.url}/usage`, { headers: { Authorization: `Bearer ${wrong}`, 'X-Request-Id': 'req-abc-123' } });
      assert.equal(res.status, 401);
      await new Promise((r) => setTimeout(r, 50));
      const mine = lines.filter((l) => l.req_id === 'req-abc-123');
      assert.deepEqual(mine.map((l) => l.module).sort(), ['auth', 'http'], 'the auth module’s warning and the access line');
      assert.ok(!JSON.stringify(lines).includes('ab'.repeat(24)), 'no presented key in the log');
    } finally {
      await portal.stop();
      await fake.stop();
    }
  });
});
