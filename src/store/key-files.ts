import { CorruptDataFile } from './atomic-file.js';
import { keyIdOf } from '../keys/format.js';
import type { Logger } from '../log.js';

/** The formats of key_pool.json and user_keys.json (the original tool's, extended), and the journal. */
export const FORMAT_VERSION = '1.1';
export type KeyStatus = 'pending' | 'active' | 'suspended' | 'revoked';

/** One issued key. Records are replaced, never edited in place, so a snapshot stays consistent. */
export interface KeyRecord {
  readonly email: string | null;
  readonly label: string;
  readonly created_at: string;
  readonly status: KeyStatus;
  readonly daily_limit: number;
  readonly daily_token_limit: number;
  readonly issued_by: string;
  readonly revoked_at: string | null;
  /** When the key is revoked by itself (ISO), or null. */
  readonly expires_at?: string | null;
  /** Why and until when a suspended key is out of CLIProxyAPI. */
  readonly suspension?: Suspension | null;
  /** An admin reset: requests that started before it no longer count against today's limits. */
  readonly quota_reset?: QuotaReset | null;
  /** Gateway limits (0 or absent: none): requests started per minute, requests at once, models allowed. */
  readonly rpm_limit?: number;
  readonly max_concurrency?: number;
  readonly allowed_models?: readonly string[];
  readonly [extra: string]: unknown;
}

export interface Suspension {
  reason: 'daily_limit' | 'daily_token_limit' | 'admin';
  at: string;
  /** When it lifts by itself (the next midnight in TIMEZONE); null for an admin's suspension. */
  until: string | null;
}

/**
 * When an admin reset a key's usage (`at`, ISO). Records of 0.1.0 also carry the day and the counts
 * seen then; a reset without `at` subtracts those counts on that day.
 */
export interface QuotaReset { at?: string; day?: string; requests?: number; tokens?: number }

export interface UserRecord {
  readonly email: string;
  readonly name: string;
  readonly api_keys: readonly string[];
  readonly created_at: string;
  readonly [extra: string]: unknown;
}

export interface PoolFile {
  version: string;
  generated_at: string;
  total: number;
  unused: string[];
  assigned: Record<string, string>;
  retired: string[];
  [extra: string]: unknown;
}

export interface UserKeysFile {
  version: string;
  users: Record<string, UserRecord>;
  keys: Record<string, KeyRecord>;
  [extra: string]: unknown;
}

/** Where a key sits in the pool: unused, retired, or assigned to an owner ('' for none). */
export type Placement = 'u' | 'r' | ['a', string];

/** One journal line: the absolute state, after the batch, of everything the batch touched. */
export interface JournalBatch {
  at: string;
  k?: Record<string, KeyRecord>;
  u?: Record<string, UserRecord>;
  p?: Record<string, Placement>;
  m?: { preload?: boolean; generated_at?: string };
}

/** Everything the two files hold, as maps in both directions. */
export interface KeyState {
  unused: Set<string>;
  assigned: Map<string, string>;
  retired: Set<string>;
  users: Map<string, UserRecord>;
  keys: Map<string, KeyRecord>;
  poolExtra: Record<string, unknown>;
  usersExtra: Record<string, unknown>;
  generatedAt: string;
}

export function emptyState(): KeyState {
  return {
    unused: new Set(), assigned: new Map(), retired: new Set(), users: new Map(), keys: new Map(),
    poolExtra: {}, usersExtra: {}, generatedAt: new Date().toISOString(),
  };
}

// ---- rendering (the checkpoint files) ---------------------------------------------------------

/** key_pool.json; keys in `stillAssigned` are written as assigned, not yet retired (see KeysStore). */
export function renderPool(s: KeyState, stillAssigned: ReadonlyMap<string, string>): string {
  const assigned: Record<string, string> = {};
  for (const [k, v] of s.assigned) assigned[k] = v;
  for (const [k, v] of stillAssigned) assigned[k] = v;
  const retired = stillAssigned.size ? [...s.retired].filter((k) => !stillAssigned.has(k)) : [...s.retired];
  const unused = [...s.unused];
  return JSON.stringify({
    ...s.poolExtra, version: FORMAT_VERSION, generated_at: s.generatedAt,
    total: unused.length + s.assigned.size + stillAssigned.size + retired.length,
    unused, assigned, retired,
  });
}

/**
 * user_keys.json as chunks, one record at a time, so the file never exists as one large string.
 * The entry lists are taken now; records are immutable, so rendering later still shows this moment.
 */
export function renderUsers(s: KeyState): Iterable<string> {
  const head = JSON.stringify({ ...s.usersExtra, version: FORMAT_VERSION }).slice(0, -1);
  const users = [...s.users];
  const keys = [...s.keys];
  return (function* render() {
    yield `${head},"users":{`;
    for (let i = 0; i < users.length; i++) yield `${i ? ',' : ''}${JSON.stringify(users[i]![0])}:${JSON.stringify(users[i]![1])}`;
    yield '},"keys":{';
    for (let i = 0; i < keys.length; i++) yield `${i ? ',' : ''}${JSON.stringify(keys[i]![0])}:${JSON.stringify(keys[i]![1])}`;
    yield '}}';
  })();
}

// ---- loading, replay and repair ---------------------------------------------------------------

/**
 * Builds the state from the checkpoint files (seed formats accepted) and the journal batches after
 * them, then makes the pool agree with user_keys.json, the record of who holds what. Returns whether
 * anything needed repair (or upgrade), so the caller writes a fresh checkpoint.
 */
export function loadState(files: { pool: PoolFile | null; users: UserKeysFile | null; poolFile: string; usersFile: string },
  batches: JournalBatch[], prefix: string, log: Logger): { state: KeyState; repaired: boolean } {
  const s = emptyState();
  const { pool, users: usersFile } = files;
  validateShape(files.poolFile, pool, { unused: 'array', assigned: 'object', retired: 'array?' });
  validateShape(files.usersFile, usersFile, { users: 'object', keys: 'object?' });
  let repaired = false;
  const fix = (msg: string, key?: string) => {
    repaired = true;
    log.warn({ key_id: key ? keyIdOf(prefix, key) : undefined }, `repairing data files: ${msg}`);
  };
  // Each key and email is parsed several times over (pool, users, keys); keep one copy of each.
  const shared = new Map<string, string>();
  const one = (str: string): string => {
    const known = shared.get(str);
    if (known !== undefined) return known;
    shared.set(str, str);
    return str;
  };

  if (usersFile) {
    const { version: _v, users, keys, ...extra } = usersFile;
    s.usersExtra = extra;
    for (const [k, r] of Object.entries(keys ?? {})) s.keys.set(one(k), normaliseKey(r, one));
    for (const [email, u] of Object.entries(users)) {
      s.users.set(one(email), normaliseUser(email, u, one));
      for (const k of s.users.get(email)!.api_keys) {
        // Seed files of the original tool list keys only under their user.
        if (!s.keys.has(k)) s.keys.set(k, normaliseKey({ email, created_at: u.created_at }, one));
      }
    }
  }
  if (pool) {
    const { version: _v, generated_at, total: _t, unused, assigned, retired, ...extra } = pool;
    s.poolExtra = extra;
    if (typeof generated_at === 'string') s.generatedAt = generated_at;
    for (const k of unused) s.unused.add(one(k));
    for (const [k, v] of Object.entries(assigned)) s.assigned.set(one(k), one(v));
    for (const k of retired ?? []) s.retired.add(one(k));
  }
  for (const b of batches) applyBatch(s, b, one);
  if (batches.length) repaired = true; // replayed: the checkpoint files are behind

  for (const [k, r] of s.keys) {
    if (r.status === 'revoked') {
      if (!s.retired.has(k)) { fix('a revoked key was not retired', k); s.retired.add(k); }
      if (s.assigned.delete(k)) fix('a revoked key was still assigned', k);
      if (s.unused.delete(k)) fix('a revoked key was still unused', k);
      const u = r.email ? s.users.get(r.email) : undefined;
      if (u?.api_keys.includes(k)) {
        fix('a revoked key was still listed under its user', k);
        s.users.set(u.email, { ...u, api_keys: u.api_keys.filter((x) => x !== k) });
      }
      continue;
    }
    if (s.unused.delete(k)) fix('an issued key was still unused', k);
    if (s.retired.delete(k)) fix('a live key was retired in the pool but not revoked', k);
    if (s.assigned.get(k) !== (r.email ?? '')) {
      fix(s.assigned.has(k) ? 'a key was assigned to another owner in the pool' : 'an issued key was missing from the pool', k);
      s.assigned.set(k, r.email ?? '');
    }
    if (r.email) {
      const u = s.users.get(r.email);
      if (!u) {
        fix('a key belonged to a user with no record', k);
        s.users.set(r.email, { email: r.email, name: '', api_keys: [k], created_at: r.created_at });
      } else if (!u.api_keys.includes(k)) {
        fix('a key was missing from its user’s list', k);
        s.users.set(u.email, { ...u, api_keys: [...u.api_keys, k] });
      }
    }
  }
  for (const k of [...s.assigned.keys()]) {
    if (!s.keys.has(k)) {
      // Written to the pool by a checkpoint whose user_keys.json never landed: never answered.
      fix('an assigned key no user holds returns to the pool', k);
      s.assigned.delete(k);
      s.unused.add(k);
    }
  }
  for (const k of s.retired) if (s.unused.delete(k)) fix('a key was both unused and retired', k);
  const total = s.unused.size + s.assigned.size + s.retired.size;
  if (pool && pool.total !== total) repaired = true;
  // Files of an older format (the original tool's 1.0) are rewritten in this one.
  if ((pool && pool.version !== FORMAT_VERSION && total > 0) ||
      (usersFile && (usersFile.version !== FORMAT_VERSION || !usersFile.keys) && s.users.size > 0)) {
    log.info(`upgrading the key files to format ${FORMAT_VERSION}`);
    repaired = true;
  }
  return { state: s, repaired };
}

function applyBatch(s: KeyState, b: JournalBatch, one: (x: string) => string): void {
  for (const [k, r] of Object.entries(b.k ?? {})) s.keys.set(one(k), normaliseKey(r, one));
  for (const [email, u] of Object.entries(b.u ?? {})) s.users.set(one(email), normaliseUser(email, u, one));
  for (const [k, place] of Object.entries(b.p ?? {})) {
    const key = one(k);
    s.unused.delete(key);
    s.assigned.delete(key);
    s.retired.delete(key);
    if (place === 'u') s.unused.add(key);
    else if (place === 'r') s.retired.add(key);
    else s.assigned.set(key, one(place[1]));
  }
  if (b.m?.preload !== undefined) s.poolExtra = { ...s.poolExtra, preload: b.m.preload };
  if (b.m?.generated_at) s.generatedAt = b.m.generated_at;
}

function normaliseUser(email: string, u: Partial<UserRecord>, one: (x: string) => string): UserRecord {
  return {
    ...u, email: one(email), name: u.name ?? '',
    api_keys: (Array.isArray(u.api_keys) ? u.api_keys : []).map(one), created_at: u.created_at ?? '',
  };
}

function normaliseKey(r: Partial<KeyRecord>, one: (x: string) => string): KeyRecord {
  const status: KeyStatus = r.status && ['pending', 'active', 'suspended', 'revoked'].includes(r.status) ? r.status : 'active';
  return {
    ...r,
    email: typeof r.email === 'string' ? one(r.email) : null, label: r.label ?? '', created_at: r.created_at ?? '',
    status, daily_limit: r.daily_limit ?? 0, daily_token_limit: r.daily_token_limit ?? 0,
    issued_by: r.issued_by ?? 'self', revoked_at: r.revoked_at ?? null,
  };
}

type Kind = 'array' | 'object' | 'array?' | 'object?';
function validateShape(file: string, data: unknown, fields: Record<string, Kind>): void {
  if (data === null) return;
  if (typeof data !== 'object' || Array.isArray(data)) throw new CorruptDataFile(file, 'not a JSON object');
  for (const [name, kind] of Object.entries(fields)) {
    const v = (data as Record<string, unknown>)[name];
    if (v === undefined && kind.endsWith('?')) continue;
    const ok = kind.startsWith('array') ? Array.isArray(v) : (typeof v === 'object' && v !== null && !Array.isArray(v));
    if (!ok) throw new CorruptDataFile(file, `"${name}" must be ${kind.startsWith('array') ? 'an array' : 'an object'}`);
  }
}
