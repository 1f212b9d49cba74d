import { readFileSync } from 'node:fs';
import path from 'node:path';

interface Pool { total: number; unused: string[]; assigned: Record<string, string>; retired: string[] }
interface Users { users: Record<string, { email: string; api_keys: string[] }>; keys: Record<string, { email: string | null; status: string }> }

/** The two files as they are on disk; an absent file (not yet checkpointed) reads as empty. */
export function readDataFiles(dataDir: string): { pool: Pool; users: Users } {
  const read = <T>(name: string, empty: T): T => {
    try { return JSON.parse(readFileSync(path.join(dataDir, name), 'utf8')) as T; } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return empty;
      throw err;
    }
  };
  return {
    pool: read<Pool>('key_pool.json', { total: 0, unused: [], assigned: {}, retired: [] }),
    users: read<Users>('user_keys.json', { users: {}, keys: {} }),
  };
}

/**
 * DESIGN §2's invariants, read from the files themselves. They must hold at every moment, even in
 * files a kill -9 left behind: unused ∩ assigned = ∅; every key in users[*].api_keys is in keys
 * and in assigned (to that user); total = |unused| + |assigned| + |retired|.
 */
export function designInvariantViolations(dataDir: string): string[] {
  const { pool, users } = readDataFiles(dataDir);
  const out: string[] = [];
  const unused = new Set(pool.unused);
  if (unused.size !== pool.unused.length) out.push('unused has duplicates');
  for (const k of Object.keys(pool.assigned)) if (unused.has(k)) out.push(`key ${k.slice(0, 14)} is both unused and assigned`);
  for (const [email, u] of Object.entries(users.users)) {
    for (const k of u.api_keys) {
      if (!users.keys[k]) out.push(`${email} lists a key missing from keys`);
      if (pool.assigned[k] !== email) out.push(`${email} lists a key not assigned to them in the pool`);
    }
  }
  const sum = pool.unused.length + Object.keys(pool.assigned).length + pool.retired.length;
  if (pool.total !== sum) out.push(`total ${pool.total} != ${sum}`);
  return out;
}

/**
 * The full agreement a settled data directory has (after a clean write or after the store's
 * repair on open): every live key assigned to its owner, every revoked key retired and listed
 * nowhere, no key in two places, nothing assigned that no record holds.
 */
export function strictInvariantViolations(dataDir: string): string[] {
  const out = designInvariantViolations(dataDir);
  const { pool, users } = readDataFiles(dataDir);
  const retired = new Set(pool.retired);
  if (retired.size !== pool.retired.length) out.push('retired has duplicates');
  for (const k of pool.unused) if (retired.has(k)) out.push('a key is both unused and retired');
  for (const k of Object.keys(pool.assigned)) {
    if (retired.has(k)) out.push('a key is both assigned and retired');
    if (!users.keys[k]) out.push('an assigned key has no record');
  }
  for (const [k, r] of Object.entries(users.keys)) {
    if (r.status === 'revoked') {
      if (!retired.has(k)) out.push('a revoked key is not retired');
      if (r.email && users.users[r.email]?.api_keys.includes(k)) out.push('a revoked key is still listed under its user');
    } else {
      if (pool.assigned[k] !== (r.email ?? '')) out.push('a live key is not assigned to its owner');
      if (r.email && !users.users[r.email]?.api_keys.includes(k)) out.push('a live key is missing from its user');
    }
  }
  return out;
}
