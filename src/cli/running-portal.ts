import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config.js';
import { readLock } from '../store/lock.js';

/**
 * The portal running on DATA_DIR, if any (from its lock), with the admin token to ask it with:
 * ADMIN_TOKEN, else the generated data/.admin-token. Commands that would touch the files ask it instead.
 */
export async function runningPortal(config: Config, what: string): Promise<{ url: string; port: number; token: string } | null> {
  const lock = readLock(config.DATA_DIR);
  if (!lock?.port) return null;
  const host = lock.host;
  const h = !host || host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const token = config.ADMIN_TOKEN ?? await readFile(path.join(config.DATA_DIR, '.admin-token'), 'utf8').then((s) => s.trim(), () => '');
  if (!token) throw new Error(`a portal is running on ${config.DATA_DIR} (port ${lock.port}) but no admin token is known to ${what}: set ADMIN_TOKEN`);
  return { url: `http://${h}:${lock.port}`, port: lock.port, token };
}
