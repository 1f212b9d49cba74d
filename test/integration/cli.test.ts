import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ROOT_DIR } from '../../src/app.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { ADMIN, MANAGEMENT_KEY, startTestPortal, tempDir } from '../support/harness.js';
import { readDataFiles, strictInvariantViolations } from '../support/invariants.js';

function run(bin: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(ROOT_DIR, 'bin', bin), ...args], {
      env: { PATH: process.env.PATH, LOG_FILE: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT_DIR,
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('generate-keys', () => {
  it('mints into the pool files, appending and never overwriting', async () => {
    const dir = await tempDir();
    const first = await run('generate-keys', ['--count', '10', '--data-dir', dir]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /Generated 10 keys \(usr_pool_0001 … usr_pool_0010\)/);
    assert.match(first.stdout, /Saved to .*key_pool\.json/);
    assert.match(first.stdout, /Pool: total 10, unused 10, assigned 0, retired 0/);
    const keysBefore = readDataFiles(dir).pool.unused;
    const second = await run('key-portal', ['generate-keys', '--count', '5', '--data-dir', dir]);
    assert.equal(second.code, 0, second.stderr);
    assert.match(second.stdout, /Generated 5 keys \(usr_pool_0011 … usr_pool_0015\)/);
    const after = readDataFiles(dir).pool.unused;
    assert.deepEqual(after.slice(0, 10), keysBefore);
    assert.equal(after.length, 15);
    assert.deepEqual(strictInvariantViolations(dir), []);
  });

  it('defaults to POOL_SIZE keys', async () => {
    const dir = await tempDir();
    const res = await run('generate-keys', ['--data-dir', dir], { POOL_SIZE: '25' });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stdout, /Generated 25 keys/);
  });

  it('exits non-zero with the reason on bad input or a bad setting', async () => {
    const dir = await tempDir();
    const zero = await run('generate-keys', ['--count', '0', '--data-dir', dir]);
    assert.notEqual(zero.code, 0);
    assert.match(zero.stderr, /--count must be a whole number from 1 to 100000/);
    const unknown = await run('generate-keys', ['--cuont', '3', '--data-dir', dir]);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /Unknown argument/);
    const badEnv = await run('generate-keys', ['--data-dir', dir], { POOL_SIZE: 'many' });
    assert.equal(badEnv.code, 2);
    assert.match(badEnv.stderr, /POOL_SIZE must be a whole number/);
  });

  it('with --preload pushes the new keys to CLIProxyAPI and says what it found', async () => {
    const fake = await FakeCliproxy.start({ apiKeys: ['sk-ops-1', 'sk-ops-2'] });
    try {
      const dir = await tempDir();
      const res = await run('generate-keys', ['--count', '12', '--data-dir', dir, '--preload'],
        { CLIPROXY_URL: fake.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY });
      assert.equal(res.code, 0, res.stderr);
      assert.match(res.stdout, /Found 2 keys of others in CLIProxyAPI; pushed 13, removed 0/); // 12 + the sentinel
      assert.equal(fake.apiKeys?.length, 15);
      for (const k of readDataFiles(dir).pool.unused) assert.ok(fake.apiKeys?.includes(k));
    } finally {
      await fake.stop();
    }
  });

  it('asks the running portal instead of touching its files', async () => {
    const t = await startTestPortal({ env: { POOL_SIZE: '10' } });
    try {
      const res = await run('generate-keys', ['--count', '7', '--data-dir', t.dataDir], { ADMIN_TOKEN: ADMIN });
      assert.equal(res.code, 0, res.stderr);
      assert.match(res.stdout, /A portal is running on this data directory \(port \d+\)/);
      assert.match(res.stdout, /Generated 7 keys \(usr_pool_0011 … usr_pool_0017\)/);
      assert.match(res.stdout, /Pool: total 17, unused 17/);
      assert.equal(t.portal.store.poolStatus().total, 17, 'the running portal holds them in memory');
      const wrongToken = await run('generate-keys', ['--count', '1', '--data-dir', t.dataDir], { ADMIN_TOKEN: 'wrong-token-0123456789' });
      assert.notEqual(wrongToken.code, 0);
      assert.match(wrongToken.stderr, /the running portal refused/);
    } finally {
      await t.stop();
    }
  });
});

describe('the command line', () => {
  it('starts with no command (as npx key-portal does), and every command has --help', async () => {
    for (const args of [['--help'], ['start', '--help'], ['generate-keys', '--help'], ['backup', '--help'], ['restore', '--help']]) {
      const r = await run('key-portal', args);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stdout, /key-portal/);
    }
    assert.match((await run('key-portal', ['--help'])).stdout, /start.*\n.*generate-keys[\s\S]*backup[\s\S]*restore/);
    const dir = await tempDir('kp-cli-default-');
    const fake = await FakeCliproxy.start();
    const child = spawn(process.execPath, [path.join(ROOT_DIR, 'bin', 'key-portal')], {
      env: { PATH: process.env.PATH, LOG_FILE: '', DATA_DIR: dir, PORT: '0', HOST: '127.0.0.1', CLIPROXY_URL: fake.url, ADMIN_TOKEN: ADMIN, POOL_SIZE: '5' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    try {
      const { readLock } = await import('../../src/store/lock.js');
      const deadline = Date.now() + 15_000;
      while (!readLock(dir)?.port && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const port = readLock(dir)?.port;
      assert.ok(port, 'listening');
      assert.equal((await fetch(`http://127.0.0.1:${port}/healthz?probe=live`)).status, 200);
    } finally {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      assert.equal(await exited, 0, 'a clean stop');
      await fake.stop();
    }
  });

  it('takes back flags npm kept for itself (npm start --port 9000)', async () => {
    const { npmFlags } = await import('../../src/cli/main.js');
    const npm = { npm_lifecycle_event: 'start' };
    assert.deepEqual(npmFlags(['start', '9000'], { ...npm, npm_config_port: 'true' }).args, ['start', '--port', '9000']);
    assert.deepEqual(npmFlags(['start'], { ...npm, npm_config_port: '9000', npm_config_data_dir: '/srv/kp' }).args, ['start', '--port', '9000', '--data-dir', '/srv/kp']);
    assert.match(npmFlags(['start', '9000', '/srv'], { ...npm, npm_config_port: 'true', npm_config_data_dir: 'true' }).error ?? '', /npm start -- --port … --data-dir …/);
    assert.deepEqual(npmFlags(['start', '--port', '9000'], {}).args, ['start', '--port', '9000'], 'outside npm: as given');
    // npx passes flags through: they stay exactly as given (a flag's value is not a stray word).
    const npx = { npm_lifecycle_event: 'npx' };
    assert.deepEqual(npmFlags(['restore', '--from', 'b.kpbackup', '--data-dir', '/srv/kp', '--force'], npx).args, ['restore', '--from', 'b.kpbackup', '--data-dir', '/srv/kp', '--force']);
    assert.deepEqual(npmFlags(['backup', '--out', 'b.kpbackup', '9000'], { ...npm, npm_config_port: 'true' }).args, ['backup', '--out', 'b.kpbackup', '--port', '9000']);
  });
});
