import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ROOT_DIR } from '../../src/app.js';

describe('npm run demo', () => {
  it('serves the portal and gateway with simulated traffic that shows in the stats, and stops on Ctrl-C', { timeout: 60_000 }, async () => {
    const child = spawn(process.execPath, [path.join(ROOT_DIR, 'dist/test/support/demo.js')], { cwd: ROOT_DIR, stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH } });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    const exited = new Promise<number | null>((r) => child.once('exit', r));
    try {
      const deadline = Date.now() + 30_000;
      while (!/admin +(http:\S+) +\(token: (\S+)\)/.test(out) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const m = /portal +(http:\S+)\n +admin +\S+ +\(token: (\S+)\)/.exec(out);
      assert.ok(m, out);
      const [, url, token] = m;
      assert.match(out, /gateway +http:\/\/127\.0\.0\.1:\d+/);
      let total = 0;
      while (total < 3 && Date.now() < deadline + 20_000) {
        await new Promise((r) => setTimeout(r, 500));
        const stats = await (await fetch(`${url}/api/all-users-stats`, { headers: { Authorization: `Bearer ${token}` } })).json() as { summary: { total_requests: number } };
        total = stats.summary.total_requests;
      }
      assert.ok(total >= 3, `traffic shows in the stats (${total} requests)`);
    } finally {
      child.kill('SIGINT');
    }
    assert.equal(await exited, 0);
    assert.match(out, /stopped \(\d+ simulated requests\)/);
  });
});
