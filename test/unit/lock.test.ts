import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { DataDirLock, DataDirLocked, readLock } from '../../src/store/lock.js';
import { tempDir } from '../support/harness.js';

const holdLock = (dir: string, pid: number) =>
  writeFileSync(path.join(dir, '.lock'), JSON.stringify({ pid, port: 8080, host: null, started_at: '' }));

describe('data directory lock', () => {
  it('takes over a lock whose process is gone (kill -9)', async () => {
    const dir = await tempDir();
    const dead = Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))']).stdout.toString());
    holdLock(dir, dead);
    assert.equal(readLock(dir), null);
    const lock = DataDirLock.acquire(dir);
    lock.setAddress('127.0.0.1', 8080);
    lock.release();
  });

  it('refuses a lock held by a running node process, and ignores a pid reused by another program', async () => {
    const dir = await tempDir();
    const portal = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 20000)'], { stdio: 'ignore' });
    const other = spawn('sleep', ['20'], { stdio: 'ignore' });
    try {
      holdLock(dir, portal.pid!);
      assert.throws(() => DataDirLock.acquire(dir), (err: Error) => err instanceof DataDirLocked && /in use by key-portal process/.test(err.message));
      holdLock(dir, other.pid!);
      assert.equal(readLock(dir), null);
      DataDirLock.acquire(dir).release();
    } finally {
      portal.kill('SIGKILL');
      other.kill('SIGKILL');
    }
  });
});
