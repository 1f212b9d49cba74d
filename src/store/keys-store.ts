import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Low } from 'lowdb';
import { AtomicJsonFile, CorruptDataFile } from './atomic-file.js';
import { keyIdOf, keyIndex, newKey } from '../keys/format.js';
import type { Logger } from '../log.js';

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
  readonly [extra: string]: unknown;
}

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

export interface PoolStatus { total: number; unused: number; assigned: number; retired: number }

export interface NewKeyFields {
  email: string | null;
  name?: string;
  label: string;
  issued_by: string;
  daily_limit: number;
  daily_token_limit: number;
  now: Date;
  extra?: Record<string, unknown>;
}

/** Raised when a change could not be written; the change was rolled back in memory too. */
export class CommitFailed extends Error {
  override name = 'CommitFailed';
}

/**
 * The only owner of key_pool.json and user_keys.json. All state lives in memory as maps in both
 * directions (email → keys, key → owner); mutators are synchronous and change memory only, and
 * `commit()` resolves once every change made before the call is durable on disk. Changes made while
 * a write is under way are written together by the next one (group commit).
 *
 * Crash safety across the two files comes from the write order. A batch writes, in turn:
 *   1. the pool with newly assigned keys already assigned but newly retired keys still assigned,
 *   2. user_keys.json (the commit point: it records who holds what),
 *   3. the final pool, only if keys were retired.
 * Every state a crash can leave satisfies the invariants, and `open()` rolls the pool forward or
 * back to agree with user_keys.json (an assigned key no user holds was never answered, so it
 * returns to the pool).
 */
export class KeysStore {
  readonly poolFile: string;
  readonly usersFile: string;
  private readonly poolDb: Low<PoolFile>;
  private readonly usersDb: Low<UserKeysFile>;

  private generatedAt = new Date().toISOString();
  private poolExtra: Record<string, unknown> = {};
  private usersExtra: Record<string, unknown> = {};
  private readonly unused = new Set<string>();
  private readonly assigned = new Map<string, string>();
  private readonly retired = new Set<string>();
  private readonly users = new Map<string, UserRecord>();
  private readonly keys = new Map<string, KeyRecord>();
  private readonly byId = new Map<string, string>();
  private nextIndex = 1;

  private poolDirty = false;
  private usersDirty = false;
  private retiring = new Map<string, string>();
  private flushing: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private epoch = 0;
  /** Number of file writes so far (the benchmark reports writes per registration). */
  writes = 0;

  private constructor(readonly dir: string, readonly prefix: string, private readonly log: Logger) {
    this.poolFile = path.join(dir, 'key_pool.json');
    this.usersFile = path.join(dir, 'user_keys.json');
    this.poolDb = new Low(new AtomicJsonFile<PoolFile>(this.poolFile), emptyPool());
    this.usersDb = new Low(new AtomicJsonFile<UserKeysFile>(this.usersFile), emptyUsers());
  }

  /** Opens (or creates) the files. A file that does not parse throws CorruptDataFile. */
  static async open(dir: string, prefix: string, log: Logger): Promise<KeysStore> {
    const store = new KeysStore(dir, prefix, log);
    await store.poolDb.read();
    await store.usersDb.read();
    const repaired = store.load(store.poolDb.data, store.usersDb.data);
    // The maps now hold everything; the parsed files would only double the memory.
    store.poolDb.data = emptyPool();
    store.usersDb.data = emptyUsers();
    if (repaired) {
      store.poolDirty = store.usersDirty = true;
      await store.commit();
    }
    return store;
  }

  /** True when no key_pool.json existed at open (a first start). */
  get isNew(): boolean {
    return this.unused.size + this.assigned.size + this.retired.size === 0;
  }

  // ---- reads -------------------------------------------------------------------------------

  poolStatus(): PoolStatus {
    return {
      total: this.unused.size + this.assigned.size + this.retired.size,
      unused: this.unused.size, assigned: this.assigned.size, retired: this.retired.size,
    };
  }

  getKey(key: string): KeyRecord | undefined { return this.keys.get(key); }
  /** The full key behind a public key id, if the portal knows it. */
  keyById(id: string): string | undefined { return this.byId.get(id); }
  getUser(email: string): UserRecord | undefined { return this.users.get(email); }
  userCount(): number { return this.users.size; }
  keyCount(): number { return this.keys.size; }
  isUnused(key: string): boolean { return this.unused.has(key); }
  isRetired(key: string): boolean { return this.retired.has(key); }
  /** A key the portal minted or issued (in its pool or its records): it may add or remove it. */
  owns(key: string): boolean {
    return this.unused.has(key) || this.assigned.has(key) || this.retired.has(key) || this.keys.has(key);
  }

  *entries(): IterableIterator<[string, KeyRecord]> { yield* this.keys; }
  *userEntries(): IterableIterator<[string, UserRecord]> { yield* this.users; }
  unusedKeys(): IterableIterator<string> { return this.unused.values(); }

  /** Keys that should be accepted by CLIProxyAPI right now. */
  *liveKeys(): IterableIterator<string> {
    for (const [k, r] of this.keys) if (r.status === 'active' || r.status === 'pending') yield k;
  }

  // ---- mutators (memory only; call commit() to make them durable) ----------------------------

  /** Takes the next unused key and gives it to `fields.email` (or to no one: an admin key). */
  assignNext(fields: NewKeyFields): { key: string; record: KeyRecord } {
    const key = this.unused.values().next().value as string | undefined;
    if (key === undefined) throw new PoolExhausted();
    const now = fields.now.toISOString();
    const record: KeyRecord = {
      ...fields.extra,
      email: fields.email, label: fields.label, created_at: now, status: 'pending',
      daily_limit: fields.daily_limit, daily_token_limit: fields.daily_token_limit,
      issued_by: fields.issued_by, revoked_at: null,
    };
    this.unused.delete(key);
    this.assigned.set(key, fields.email ?? '');
    this.keys.set(key, record);
    if (fields.email) {
      const user = this.users.get(fields.email);
      this.users.set(fields.email, user
        ? { ...user, name: fields.name || user.name, api_keys: [...user.api_keys, key] }
        : { email: fields.email, name: fields.name ?? '', api_keys: [key], created_at: now });
    }
    this.poolDirty = this.usersDirty = true;
    return { key, record };
  }

  /** Retires a key for good: it leaves its holder's list and is never handed out again. */
  revoke(key: string, now: Date): KeyRecord {
    const record = this.keys.get(key);
    if (!record) throw new Error('revoke: unknown key');
    if (record.status === 'revoked') return record;
    const updated: KeyRecord = { ...record, status: 'revoked', revoked_at: now.toISOString() };
    this.keys.set(key, updated);
    if (record.email) {
      const user = this.users.get(record.email);
      if (user) this.users.set(record.email, { ...user, api_keys: user.api_keys.filter((k) => k !== key) });
    }
    this.retiring.set(key, this.assigned.get(key) ?? '');
    this.assigned.delete(key);
    this.retired.add(key);
    this.poolDirty = this.usersDirty = true;
    return updated;
  }

  /** Replaces fields of a key's record (status, label, limits…); never its owner. */
  updateKey(key: string, patch: Partial<Omit<KeyRecord, 'email' | 'created_at'>>): KeyRecord {
    const record = this.keys.get(key);
    if (!record) throw new Error('updateKey: unknown key');
    const updated = { ...record, ...patch } as KeyRecord;
    this.keys.set(key, updated);
    this.usersDirty = true;
    return updated;
  }

  /** Whether unused keys are kept live in CLIProxyAPI too (`generate-keys --preload`), saved in the pool file. */
  get preload(): boolean { return this.poolExtra.preload === true; }

  async setPreload(on: boolean): Promise<void> {
    if (this.preload === on) return;
    this.poolExtra = { ...this.poolExtra, preload: on };
    this.poolDirty = true;
    await this.commit();
  }

  /** Adds `count` fresh keys to the unused pool; returns their ids. */
  mint(count: number): string[] {
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const index = this.nextIndex++;
      const key = newKey(this.prefix, index);
      this.unused.add(key);
      const id = keyIdOf(this.prefix, key);
      this.byId.set(id, key);
      ids.push(id);
    }
    if (count > 0) {
      this.poolDirty = true;
      this.generatedAt = new Date().toISOString();
    }
    return ids;
  }

  // ---- durability ----------------------------------------------------------------------------

  /**
   * Marks the moment before a change whose durability will be awaited later: commit(mark) rejects if
   * any write failed (and rolled memory back) after it.
   */
  mark(): number { return this.epoch; }

  /** Resolves when every change made before this call is on disk; rejects if it was rolled back. */
  async commit(epoch = this.epoch): Promise<void> {
    await this.nextFlush();
    if (this.epoch !== epoch) throw new CommitFailed('an earlier write failed; this change was rolled back');
  }

  /** The flush that will include every change made so far: the queued one, or a new one. */
  private nextFlush(): Promise<void> {
    if (this.queued) return this.queued;
    const before = this.flushing ?? Promise.resolve();
    const queued: Promise<void> = before.catch(() => undefined).then(() => {
      // From here on, new changes belong to the flush after this one.
      if (this.queued === queued) this.queued = null;
      const flushing = this.flush();
      this.flushing = flushing;
      return flushing.finally(() => { if (this.flushing === flushing) this.flushing = null; });
    });
    this.queued = queued;
    return queued;
  }

  private async flush(): Promise<void> {
    // Take the state synchronously: the texts show one moment, whatever changes while they are written.
    const retiring = this.retiring;
    const first = this.poolDirty ? this.renderPool(retiring) : null;
    const users = this.usersDirty ? this.renderUsers() : null;
    const final = retiring.size > 0 ? this.renderPool(new Map()) : null;
    this.poolDirty = this.usersDirty = false;
    this.retiring = new Map();
    try {
      if (first !== null) await this.write(this.poolDb, first);
      if (users !== null) await this.write(this.usersDb, users);
      if (final !== null) await this.write(this.poolDb, final);
    } catch (err) {
      this.epoch++;
      this.log.error({ err }, 'writing the key files failed; reloading the last committed state');
      this.reloadFromDisk();
      throw new CommitFailed(`could not write the key files: ${(err as Error).message}`);
    }
  }

  private async write<T>(db: Low<T>, text: string | Iterable<string>): Promise<void> {
    await (db.adapter as AtomicJsonFile<T>).writeText(text);
    this.writes++;
  }

  private renderPool(stillAssigned: Map<string, string>): string {
    const assigned: Record<string, string> = {};
    for (const [k, v] of this.assigned) assigned[k] = v;
    for (const [k, v] of stillAssigned) assigned[k] = v;
    const retired = stillAssigned.size ? [...this.retired].filter((k) => !stillAssigned.has(k)) : [...this.retired];
    const unused = [...this.unused];
    return JSON.stringify({
      ...this.poolExtra, version: FORMAT_VERSION, generated_at: this.generatedAt,
      total: unused.length + this.assigned.size + stillAssigned.size + retired.length,
      unused, assigned, retired,
    });
  }

  /**
   * user_keys.json as chunks, one record at a time: the file is never one large string. The entry
   * lists are taken now; records are immutable, so rendering them later still shows this moment.
   */
  private renderUsers(): Iterable<string> {
    const head = JSON.stringify({ ...this.usersExtra, version: FORMAT_VERSION }).slice(0, -1);
    const users = [...this.users];
    const keys = [...this.keys];
    return (function* render() {
      yield `${head},"users":{`;
      for (let i = 0; i < users.length; i++) yield `${i ? ',' : ''}${JSON.stringify(users[i]![0])}:${JSON.stringify(users[i]![1])}`;
      yield '},"keys":{';
      for (let i = 0; i < keys.length; i++) yield `${i ? ',' : ''}${JSON.stringify(keys[i]![0])}:${JSON.stringify(keys[i]![1])}`;
      yield '}}';
    })();
  }

  private reloadFromDisk(): void {
    const read = <T>(file: string): T | null => {
      try { return JSON.parse(readFileSync(file, 'utf8')) as T; } catch { return null; }
    };
    this.load(read<PoolFile>(this.poolFile), read<UserKeysFile>(this.usersFile));
  }

  // ---- loading and repair --------------------------------------------------------------------

  /** Builds the maps from file contents (seed formats accepted); returns true if it repaired. */
  private load(pool: PoolFile | null, usersFile: UserKeysFile | null): boolean {
    for (const c of [this.unused, this.assigned, this.retired, this.users, this.keys, this.byId]) c.clear();
    this.nextIndex = 1;
    validateShape(this.poolFile, pool, { unused: 'array', assigned: 'object', retired: 'array?' });
    validateShape(this.usersFile, usersFile, { users: 'object', keys: 'object?' });
    let repaired = false;
    const fix = (msg: string, key?: string) => {
      repaired = true;
      this.log.warn({ key_id: key ? keyIdOf(this.prefix, key) : undefined }, `repairing data files: ${msg}`);
    };

    // Each key and email is parsed several times over (pool, users, keys); keep one copy of each.
    const shared = new Map<string, string>();
    const one = (s: string): string => {
      const known = shared.get(s);
      if (known !== undefined) return known;
      shared.set(s, s);
      return s;
    };
    if (usersFile) {
      const { version: _v, users, keys, ...extra } = usersFile;
      this.usersExtra = extra;
      for (const [k, r] of Object.entries(keys ?? {})) this.keys.set(one(k), normaliseKey(r, one));
      for (const [email, u] of Object.entries(users)) {
        const apiKeys = (Array.isArray(u.api_keys) ? u.api_keys : []).map(one);
        this.users.set(one(email), { ...u, email: one(email), name: u.name ?? '', api_keys: apiKeys, created_at: u.created_at ?? '' });
        for (const k of apiKeys) {
          // Seed files of the original tool list keys only under their user.
          if (!this.keys.has(k)) this.keys.set(k, normaliseKey({ email, created_at: u.created_at }, one));
        }
      }
    }
    if (pool) {
      const { version: _v, generated_at, total: _t, unused, assigned, retired, ...extra } = pool;
      this.poolExtra = extra;
      this.generatedAt = typeof generated_at === 'string' ? generated_at : this.generatedAt;
      for (const k of unused) this.unused.add(one(k));
      for (const [k, v] of Object.entries(assigned)) this.assigned.set(one(k), one(v));
      for (const k of retired ?? []) this.retired.add(one(k));
    }

    // user_keys.json is the record of who holds what; the pool is made to agree with it.
    for (const [k, r] of this.keys) {
      if (r.status === 'revoked') {
        if (!this.retired.has(k)) { fix('a revoked key was not retired', k); this.retired.add(k); }
        if (this.assigned.delete(k)) fix('a revoked key was still assigned', k);
        if (this.unused.delete(k)) fix('a revoked key was still unused', k);
        const u = r.email ? this.users.get(r.email) : undefined;
        if (u?.api_keys.includes(k)) {
          fix('a revoked key was still listed under its user', k);
          this.users.set(u.email, { ...u, api_keys: u.api_keys.filter((x) => x !== k) });
        }
        continue;
      }
      if (this.unused.delete(k)) fix('an issued key was still unused', k);
      if (this.retired.delete(k)) fix('a live key was retired in the pool but not revoked', k);
      if (this.assigned.get(k) !== (r.email ?? '')) {
        if (this.assigned.has(k)) fix('a key was assigned to another owner in the pool', k);
        else fix('an issued key was missing from the pool', k);
        this.assigned.set(k, r.email ?? '');
      }
      if (r.email) {
        const u = this.users.get(r.email);
        if (!u) {
          fix('a key belonged to a user with no record', k);
          this.users.set(r.email, { email: r.email, name: '', api_keys: [k], created_at: r.created_at });
        } else if (!u.api_keys.includes(k)) {
          fix('a key was missing from its user’s list', k);
          this.users.set(u.email, { ...u, api_keys: [...u.api_keys, k] });
        }
      }
    }
    for (const k of [...this.assigned.keys()]) {
      if (!this.keys.has(k)) {
        // Written to the pool by a batch whose user_keys.json never landed: never answered.
        fix('an assigned key no user holds returns to the pool', k);
        this.assigned.delete(k);
        this.unused.add(k);
      }
    }
    for (const k of this.unused) if (this.retired.has(k)) { fix('a key was both unused and retired', k); this.unused.delete(k); }
    for (const k of this.retired) this.unused.delete(k);
    if (pool && pool.total !== this.poolStatus().total) repaired = true;
    // Files of an older format (the original tool's 1.0) are rewritten in this one.
    if ((pool && pool.version !== FORMAT_VERSION && this.poolStatus().total > 0) ||
        (usersFile && (usersFile.version !== FORMAT_VERSION || !usersFile.keys) && this.users.size > 0)) {
      this.log.info('upgrading the key files to format ' + FORMAT_VERSION);
      repaired = true;
    }

    for (const k of [...this.unused, ...this.assigned.keys(), ...this.retired, ...this.keys.keys()]) {
      this.byId.set(keyIdOf(this.prefix, k), k);
      const i = keyIndex(this.prefix, k);
      if (i !== null && i >= this.nextIndex) this.nextIndex = i + 1;
    }
    return repaired;
  }
}

export class PoolExhausted extends Error {
  override name = 'PoolExhausted';
}

function emptyPool(): PoolFile {
  return { version: FORMAT_VERSION, generated_at: new Date().toISOString(), total: 0, unused: [], assigned: {}, retired: [] };
}
function emptyUsers(): UserKeysFile {
  return { version: FORMAT_VERSION, users: {}, keys: {} };
}

function normaliseKey(r: Partial<KeyRecord>, one: (s: string) => string): KeyRecord {
  const status: KeyStatus = r.status && ['pending', 'active', 'suspended', 'revoked'].includes(r.status)
    ? r.status : 'active';
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
