import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Low } from 'lowdb';
import { AtomicJsonFile, StorageError } from './atomic-file.js';
import { Journal } from './journal.js';
import {
  emptyState, loadState, renderPool, renderUsers, FORMAT_VERSION,
  type JournalBatch, type KeyRecord, type KeyState, type Placement, type PoolFile, type UserKeysFile, type UserRecord,
} from './key-files.js';
import { keyIdOf, keyIndex, newKey } from '../keys/format.js';
import type { Logger } from '../log.js';

export { FORMAT_VERSION };
export type { KeyRecord, KeyStatus, PoolFile, QuotaReset, Suspension, UserKeysFile, UserRecord } from './key-files.js';

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
export class CommitFailed extends StorageError {
  override name = 'CommitFailed';
}

export class PoolExhausted extends Error {
  override name = 'PoolExhausted';
}

/** The journal is folded into the files once it grows past this, whatever the checkpoint job does. */
const JOURNAL_LIMIT_BYTES = 8 << 20;

/**
 * The only owner of key_pool.json, user_keys.json and keys.journal. All state lives in memory as
 * maps in both directions (email → keys, key → owner). Mutators are synchronous and change memory
 * only; `commit()` resolves once every change made before the call is durable.
 *
 * Durability: a batch of changes (all those made while the previous batch was being written: group
 * commit) is one line appended to keys.journal and fsync'd, holding the absolute state of what the
 * batch touched; its cost does not grow with the number of users. A checkpoint (every second while
 * there are changes, at start and at stop) writes the two JSON files through lowdb by atomic
 * replacement and empties the journal. Opening replays the journal over the files; replaying an
 * absolute state twice is harmless, so a crash at any point of a checkpoint loses nothing.
 *
 * The files themselves stay consistent across a crash between their two replacements: a checkpoint
 * writes the pool with new assignments but with keys retired since the last checkpoint still
 * assigned, then user_keys.json (who holds what), then the final pool.
 */
export class KeysStore {
  readonly poolFile: string;
  readonly usersFile: string;
  private readonly poolDb: Low<PoolFile>;
  private readonly usersDb: Low<UserKeysFile>;
  private readonly journal: Journal<JournalBatch>;
  private s: KeyState = emptyState();
  private readonly byId = new Map<string, string>();
  private nextIndex = 1;

  private touchedKeys = new Set<string>();
  private touchedUsers = new Set<string>();
  private touchedPool = new Set<string>();
  private touchedMeta = false;
  /** Keys retired since the last checkpoint, with their former owner. */
  private retiring = new Map<string, string>();
  private checkpointWanted = false;
  private flushing: Promise<void> | null = null;
  private queued: Promise<void> | null = null;
  private epoch = 0;
  /** fsync'd writes so far: journal appends and checkpoint files (the benchmark reports them). */
  writes = 0;
  /** Memory may hold changes that are not on disk (a write failed): reload before the next write. */
  private stale = false;
  /** Why changes cannot be written now (null when they can). */
  storageError: string | null = null;
  /** Why the key files cannot be written now; the journal still holds everything (null when they can). */
  checkpointError: string | null = null;
  /** Counts changes to keys and owners in memory: readers cache what they derive from it. */
  version = 0;
  /**
   * Told of every key record changed in memory, as it changes (before it is durable, like every
   * reader here), or of all of them (null) when memory was reloaded: the gateway's copy follows it.
   */
  private watchers: ((key: string | null, record: KeyRecord | null) => void)[] = [];

  private constructor(readonly dir: string, readonly prefix: string, private readonly log: Logger) {
    this.poolFile = path.join(dir, 'key_pool.json');
    this.usersFile = path.join(dir, 'user_keys.json');
    this.poolDb = new Low(new AtomicJsonFile<PoolFile>(this.poolFile), null as unknown as PoolFile);
    this.usersDb = new Low(new AtomicJsonFile<UserKeysFile>(this.usersFile), null as unknown as UserKeysFile);
    this.journal = new Journal<JournalBatch>(path.join(dir, 'keys.journal'));
  }

  /** Opens (or creates) the files. A file that does not parse throws CorruptDataFile. */
  static async open(dir: string, prefix: string, log: Logger): Promise<KeysStore> {
    const store = new KeysStore(dir, prefix, log);
    await store.poolDb.read();
    await store.usersDb.read();
    const batches = await store.journal.read();
    const repaired = store.adopt(store.poolDb.data, store.usersDb.data, batches);
    // The maps now hold everything; the parsed files would only double the memory.
    store.poolDb.data = store.usersDb.data = null as never;
    if (repaired) await store.checkpoint();
    return store;
  }

  /** True when the directory had no keys at all (a first start). */
  get isNew(): boolean { return this.poolStatus().total === 0; }

  // ---- reads -------------------------------------------------------------------------------

  poolStatus(): PoolStatus {
    const { unused, assigned, retired } = this.s;
    return { total: unused.size + assigned.size + retired.size, unused: unused.size, assigned: assigned.size, retired: retired.size };
  }

  getKey(key: string): KeyRecord | undefined { return this.s.keys.get(key); }
  /** The full key behind a public key id, if the portal knows it. */
  keyById(id: string): string | undefined { return this.byId.get(id); }
  getUser(email: string): UserRecord | undefined { return this.s.users.get(email); }
  userCount(): number { return this.s.users.size; }
  keyCount(): number { return this.s.keys.size; }
  isUnused(key: string): boolean { return this.s.unused.has(key); }
  isRetired(key: string): boolean { return this.s.retired.has(key); }
  /** A key the portal minted or issued (in its pool or its records): it may add or remove it. */
  owns(key: string): boolean {
    const { unused, assigned, retired, keys } = this.s;
    return unused.has(key) || assigned.has(key) || retired.has(key) || keys.has(key);
  }
  entries(): IterableIterator<[string, KeyRecord]> { return this.s.keys.entries(); }
  userEntries(): IterableIterator<[string, UserRecord]> { return this.s.users.entries(); }
  unusedKeys(): IterableIterator<string> { return this.s.unused.values(); }

  /** Calls `watcher` with each key record that changes, or (null, null) when every record may have. */
  watch(watcher: (key: string | null, record: KeyRecord | null) => void): () => void {
    this.watchers.push(watcher);
    return () => { this.watchers = this.watchers.filter((w) => w !== watcher); };
  }

  private setKey(key: string, record: KeyRecord): void {
    this.s.keys.set(key, record);
    for (const w of this.watchers) w(key, record);
  }

  /** Keys that should be accepted by CLIProxyAPI right now. */
  *liveKeys(): IterableIterator<string> {
    for (const [k, r] of this.s.keys) if (r.status === 'active' || r.status === 'pending') yield k;
  }

  /** Whether unused keys are kept live in CLIProxyAPI too (`generate-keys --preload`), saved with the pool. */
  get preload(): boolean { return this.s.poolExtra.preload === true; }

  // ---- mutators (memory only; call commit() to make them durable) ----------------------------

  /** Takes the next unused key and gives it to `fields.email` (or to no one: an admin key). */
  assignNext(fields: NewKeyFields): { key: string; record: KeyRecord } {
    this.fresh();
    this.version++;
    const key = this.s.unused.values().next().value as string | undefined;
    if (key === undefined) throw new PoolExhausted();
    const now = fields.now.toISOString();
    const record: KeyRecord = {
      ...fields.extra,
      email: fields.email, label: fields.label, created_at: now, status: 'pending',
      daily_limit: fields.daily_limit, daily_token_limit: fields.daily_token_limit,
      issued_by: fields.issued_by, revoked_at: null,
    };
    this.s.unused.delete(key);
    this.s.assigned.set(key, fields.email ?? '');
    this.setKey(key, record);
    this.touchedPool.add(key);
    this.touchedKeys.add(key);
    if (fields.email) {
      const user = this.s.users.get(fields.email);
      this.s.users.set(fields.email, user
        ? { ...user, name: fields.name || user.name, api_keys: [...user.api_keys, key] }
        : { email: fields.email, name: fields.name ?? '', api_keys: [key], created_at: now });
      this.touchedUsers.add(fields.email);
    }
    return { key, record };
  }

  /** Retires a key for good: it leaves its holder's list and is never handed out again. */
  revoke(key: string, now: Date): KeyRecord {
    this.fresh();
    this.version++;
    const record = this.s.keys.get(key);
    if (!record) throw new Error('revoke: unknown key');
    if (record.status === 'revoked') return record;
    const updated: KeyRecord = { ...record, status: 'revoked', revoked_at: now.toISOString() };
    this.setKey(key, updated);
    if (record.email) {
      const user = this.s.users.get(record.email);
      if (user) {
        this.s.users.set(record.email, { ...user, api_keys: user.api_keys.filter((k) => k !== key) });
        this.touchedUsers.add(record.email);
      }
    }
    this.retiring.set(key, this.s.assigned.get(key) ?? '');
    this.s.assigned.delete(key);
    this.s.retired.add(key);
    this.touchedKeys.add(key);
    this.touchedPool.add(key);
    return updated;
  }

  /** Replaces fields of a key's record (status, label, limits…); never its owner. */
  updateKey(key: string, patch: Partial<Omit<KeyRecord, 'email' | 'created_at'>>): KeyRecord {
    this.fresh();
    this.version++;
    const record = this.s.keys.get(key);
    if (!record) throw new Error('updateKey: unknown key');
    const updated = { ...record, ...patch } as KeyRecord;
    this.setKey(key, updated);
    this.touchedKeys.add(key);
    return updated;
  }

  /** Adds `count` fresh keys to the unused pool; returns their ids. */
  mint(count: number): string[] {
    this.fresh();
    this.version++;
    const ids: string[] = [];
    for (let i = 0; i < count; i++) {
      const key = newKey(this.prefix, this.nextIndex++);
      this.s.unused.add(key);
      this.touchedPool.add(key);
      const id = keyIdOf(this.prefix, key);
      this.byId.set(id, key);
      ids.push(id);
    }
    if (count > 0) {
      this.s.generatedAt = new Date().toISOString();
      this.touchedMeta = true;
    }
    return ids;
  }

  async setPreload(on: boolean): Promise<void> {
    if (this.preload === on) return;
    this.s.poolExtra = { ...this.s.poolExtra, preload: on };
    this.touchedMeta = true;
    await this.commit();
  }

  // ---- durability ----------------------------------------------------------------------------

  /**
   * Marks the moment before a change whose durability will be awaited later: commit(mark) rejects if
   * any write failed (and rolled memory back) after it.
   */
  mark(): number { this.fresh(); return this.epoch; }

  /**
   * After a failed write, memory goes back to the disk's state before anything new is changed, so a
   * change made once the disk works again is not thrown away with the failed one.
   */
  private fresh(): void {
    if (!this.stale) return;
    try { this.reloadFromDisk(); } catch { /* still unreadable: the next commit fails and says why */ }
  }

  /** Resolves when every change made before this call is on disk; rejects if it was rolled back. */
  async commit(epoch = this.epoch): Promise<void> {
    await this.nextFlush();
    if (this.epoch !== epoch) throw new CommitFailed('an earlier write failed; this change was rolled back');
  }

  /** Folds the journal into key_pool.json and user_keys.json now (after pending changes). */
  async checkpoint(): Promise<void> {
    this.checkpointWanted = true;
    await this.nextFlush();
  }

  /**
   * The two key files as a checkpoint would write them, after every change made so far is written
   * (for a backup: one moment, taken synchronously once the flush is done).
   */
  async snapshot(): Promise<{ 'key_pool.json': string; 'user_keys.json': string }> {
    await this.nextFlush();
    return { 'key_pool.json': renderPool(this.s, new Map()), 'user_keys.json': [...renderUsers(this.s)].join('') };
  }

  /** For the checkpoint job: a checkpoint if anything was journaled since the last one. */
  async checkpointIfDirty(): Promise<void> {
    if (this.journal.bytes > 0 || this.touchedKeys.size || this.touchedPool.size || this.touchedUsers.size) await this.checkpoint();
  }

  /** Writes a last checkpoint and closes the journal. */
  async close(): Promise<void> {
    await this.checkpoint().catch((err) => this.log.error({ err }, 'final checkpoint failed; the journal keeps the changes'));
    await this.journal.close();
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
    if (this.stale) this.reloadFromDisk(); // throws CommitFailed while the files cannot be read
    // Taken synchronously: the batch (and any checkpoint) show one moment, whatever changes meanwhile.
    const batch = this.takeBatch();
    const checkpoint = this.checkpointWanted || this.journal.bytes > JOURNAL_LIMIT_BYTES ? this.takeCheckpoint() : null;
    this.checkpointWanted = false;
    if (batch) {
      try {
        await this.journal.append(batch);
        this.writes++;
      } catch (err) {
        // Nothing of the batch counts: memory goes back to what is on disk, and every change made
        // since the last written batch fails its commit (it was never acknowledged).
        if (!this.storageError) this.log.error({ err }, 'appending to keys.journal failed; changes are refused until it can be written');
        this.storageError = `keys.journal cannot be written (${(err as Error).message})`;
        this.stale = true;
        try { this.reloadFromDisk(); } catch { /* tried again before the next write */ }
        throw new CommitFailed(`could not write keys.journal: ${(err as Error).message}`);
      }
      if (this.storageError) {
        this.storageError = null;
        this.log.info('keys.journal is writable again');
      }
    }
    if (checkpoint) await checkpoint();
  }

  private takeBatch(): JournalBatch | null {
    if (!this.touchedKeys.size && !this.touchedUsers.size && !this.touchedPool.size && !this.touchedMeta) return null;
    const batch: JournalBatch = { at: new Date().toISOString() };
    const { keys, users, unused, retired, assigned } = this.s;
    if (this.touchedKeys.size) batch.k = Object.fromEntries([...this.touchedKeys].map((k) => [k, keys.get(k)!]));
    if (this.touchedUsers.size) batch.u = Object.fromEntries([...this.touchedUsers].map((e) => [e, users.get(e)!]));
    if (this.touchedPool.size) {
      batch.p = {};
      for (const k of this.touchedPool) {
        batch.p[k] = (unused.has(k) ? 'u' : retired.has(k) ? 'r' : ['a', assigned.get(k) ?? '']) as Placement;
      }
    }
    if (this.touchedMeta) batch.m = { preload: this.preload, generated_at: this.s.generatedAt };
    this.touchedKeys = new Set();
    this.touchedUsers = new Set();
    this.touchedPool = new Set();
    this.touchedMeta = false;
    return batch;
  }

  /** Renders the checkpoint now and returns the writes to do; a failure leaves the journal whole. */
  private takeCheckpoint(): () => Promise<void> {
    const retiring = this.retiring;
    this.retiring = new Map();
    const first = renderPool(this.s, retiring);
    const users = renderUsers(this.s);
    const final = retiring.size ? renderPool(this.s, new Map()) : null;
    return async () => {
      try {
        await this.writeFile(this.poolDb, first);
        await this.writeFile(this.usersDb, users);
        if (final !== null) await this.writeFile(this.poolDb, final);
        await this.journal.clear();
        if (this.checkpointError) this.log.info('the key files are written again');
        this.checkpointError = null;
      } catch (err) {
        for (const [k, v] of retiring) if (!this.retiring.has(k)) this.retiring.set(k, v);
        if (!this.checkpointError) this.log.error({ err }, 'writing the key files failed; the journal still holds every change');
        this.checkpointError = `the key files cannot be written (${(err as Error).message}); keys.journal holds every change`;
      }
    };
  }

  private async writeFile<T>(db: Low<T>, content: string | Iterable<string>): Promise<void> {
    await (db.adapter as AtomicJsonFile<T>).writeText(content);
    this.writes++;
  }

  /**
   * Memory becomes what is on disk again (after a write failed). Every read must succeed: adopting
   * half of the state would let a later checkpoint write it. Until it does, nothing is written.
   */
  private reloadFromDisk(): void {
    const read = <T>(file: string): T | null => {
      try {
        return JSON.parse(readFileSync(file, 'utf8')) as T;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw new CommitFailed(`could not read ${file} back: ${(err as Error).message}`);
      }
    };
    let batches: JournalBatch[];
    try { batches = this.journal.readSync(); } catch (err) { throw new CommitFailed(`could not read keys.journal back: ${(err as Error).message}`); }
    this.adopt(read<PoolFile>(this.poolFile), read<UserKeysFile>(this.usersFile), batches);
    this.epoch++; // changes made before this moment are gone; their commits fail
    this.stale = false;
    this.touchedKeys = new Set();
    this.touchedUsers = new Set();
    this.touchedPool = new Set();
    this.touchedMeta = false;
  }

  private adopt(pool: PoolFile | null, users: UserKeysFile | null, batches: JournalBatch[]): boolean {
    const { state, repaired } = loadState({ pool, users, poolFile: this.poolFile, usersFile: this.usersFile }, batches, this.prefix, this.log);
    this.s = state;
    this.version++;
    for (const w of this.watchers) w(null, null);
    this.byId.clear();
    this.nextIndex = 1;
    for (const set of [state.unused, state.assigned.keys(), state.retired, state.keys.keys()]) {
      for (const k of set) {
        this.byId.set(keyIdOf(this.prefix, k), k);
        const i = keyIndex(this.prefix, k);
        if (i !== null && i >= this.nextIndex) this.nextIndex = i + 1;
      }
    }
    return repaired;
  }
}
