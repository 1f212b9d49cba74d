import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT_DIR } from '../../src/app.js';
import { readLock } from '../../src/store/lock.js';
import { ADMIN, waitFor } from './harness.js';

/**
 * Starts the real portal as a child process, as `npm start` would, and waits until it listens.
 * `nodeFlags`: flags for node itself (the benchmarks pass npm start's, from `startFlags()`).
 */
export async function spawnPortal(dataDir: string, env: Record<string, string>, nodeFlags: string[] = []): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [...nodeFlags, path.join(ROOT_DIR, 'bin/key-portal'), 'start'], {
    env: {
      PATH: process.env.PATH, HOST: '127.0.0.1', PORT: '0', DATA_DIR: dataDir, ADMIN_TOKEN: ADMIN,
      REGISTER_RATE_LIMIT: '0', REGISTER_EMAIL_RATE_LIMIT: '0', LOG_LEVEL: 'warn', LOG_FILE: '', ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => { stderr += d; });
  let port: number | null = null;
  await waitFor(() => {
    if (child.exitCode !== null) throw new Error(`portal exited: ${stderr}`);
    const lock = readLock(dataDir);
    port = lock && lock.pid === child.pid ? lock.port : null;
    return port !== null;
  }, 'the portal to listen', 15_000);
  return { child, url: `http://127.0.0.1:${port}` };
}

export function killHard(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}


/** The flags between `node` and `bin/key-portal` in package.json's start script. */
export function startFlags(): string[] {
  const pkg = JSON.parse(readFileSync(path.join(ROOT_DIR, 'package.json'), 'utf8')) as { scripts: { start: string } };
  const m = /^node((?: --[^\s]+)*) bin\/key-portal start$/.exec(pkg.scripts.start);
  if (!m) throw new Error(`package.json's start script is not "node [flags] bin/key-portal start": ${pkg.scripts.start}`);
  return m[1]!.trim().split(' ').filter(Boolean);
}
