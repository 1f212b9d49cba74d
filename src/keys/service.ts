import type { Audit, Actor } from '../audit.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import { fail } from '../errors.js';
import type { Events } from '../events.js';
import type { Logger } from '../log.js';
import { PoolExhausted, type KeyRecord, type KeysStore, type PoolStatus, type UserRecord } from '../store/keys-store.js';
import { keyIdOf, keyIndex, maskKey, sameKey } from './format.js';
import type { Reconciler } from './reconciler.js';

export type { Actor };

export interface IssuedKey {
  key: string;
  key_id: string;
  record: KeyRecord;
}

export interface KeyServiceDeps {
  config: Config;
  store: KeysStore;
  reconciler: Reconciler;
  audit: Audit;
  events: Events;
  log: Logger;
  clock: Clock;
  /** How long an issue or revoke waits for CLIProxyAPI before answering (default 2500 ms). */
  pushWaitMs?: number;
}

/** The key lifecycle: issue, revoke, mint, and the lookups the web layer needs. Holds the rules; never sees HTTP. */
export class KeyService {
  constructor(private readonly deps: KeyServiceDeps) {}

  private get store(): KeysStore { return this.deps.store; }

  // ---- reads ------------------------------------------------------------------------------------

  poolStatus(): PoolStatus { return this.store.poolStatus(); }
  user(email: string): UserRecord | undefined { return this.store.getUser(email); }
  get prefix(): string { return this.store.prefix; }
  get preload(): boolean { return this.deps.config.PRELOAD_POOL || this.store.preload; }

  /**
   * The issued key a presented secret is, compared in constant time (the public key id finds the
   * candidate; only the full comparison decides). Unused pool keys are not issued keys.
   */
  match(secret: string): { key: string; record: KeyRecord } | undefined {
    const candidate = this.store.keyById(keyIdOf(this.store.prefix, secret));
    const record = candidate !== undefined ? this.store.getKey(candidate) : undefined;
    return candidate !== undefined && record && sameKey(candidate, secret) ? { key: candidate, record } : undefined;
  }

  /**
   * The key id a presented secret claims to be, when it has the portal's format and that id
   * exists — for the audit of a wrong credential, which must name what was tried without keeping it.
   */
  claimedId(secret: string): string | undefined {
    if (keyIndex(this.store.prefix, secret) === null) return undefined;
    const id = keyIdOf(this.store.prefix, secret);
    return this.store.keyById(id) !== undefined ? id : undefined;
  }

  /** The key a request names: by id, or (compared in constant time) in full. */
  find(ref: { key?: string; key_id?: string }): { key: string; record: KeyRecord } {
    const found = ref.key !== undefined ? this.match(ref.key) : this.byId(ref.key_id ?? '');
    if (!found) throw fail('key_not_found');
    return found;
  }

  /** An issued key named by its id or (compared in constant time) in full; 404 otherwise. */
  resolve(idOrKey: string): { key: string; record: KeyRecord } {
    const found = idOrKey.includes('_') ? this.match(idOrKey) : this.byId(idOrKey);
    if (!found) throw fail('key_not_found');
    return found;
  }

  byId(id: string): { key: string; record: KeyRecord } | undefined {
    const key = this.store.keyById(id);
    const record = key ? this.store.getKey(key) : undefined;
    return key && record ? { key, record } : undefined;
  }

  /** Masked view of a key for lists. */
  mask(key: string): string { return maskKey(this.store.prefix, key); }

  /** A key's public id. */
  idOf(key: string): string { return keyIdOf(this.store.prefix, key); }

  // ---- changes ----------------------------------------------------------------------------------

  /**
   * Takes a key from the pool, records it durably, and pushes it to CLIProxyAPI. An admin giving a
   * key to an email that already holds self-registered keys must say it is the same person: otherwise
   * whoever registered that email first would hold (and could revoke) the admin's key.
   */
  async issue(o: { email: string | null; name?: string; label: string; issuedBy: 'self' | 'admin' | 'approval'; dailyLimit: number;
    dailyTokenLimit: number; extra?: Record<string, unknown>; samePerson?: boolean }, actor: Actor): Promise<IssuedKey> {
    const { config, clock } = this.deps;
    const existing = o.email ? this.store.getUser(o.email) : undefined;
    if (existing && config.MAX_KEYS_PER_USER > 0 && existing.api_keys.length >= config.MAX_KEYS_PER_USER && actor.kind !== 'admin') {
      throw fail('max_keys_reached', { max: config.MAX_KEYS_PER_USER });
    }
    if (existing && existing.api_keys.length > 0 && actor.kind === 'admin' && o.issuedBy === 'admin' && !o.samePerson) {
      const selfRegistered = existing.api_keys.some((k) => this.store.getKey(k)?.issued_by === 'self');
      if (selfRegistered) throw fail('email_taken');
    }
    let issued: { key: string; record: KeyRecord };
    const mark = this.store.mark();
    try {
      issued = this.store.assignNext({
        email: o.email, name: o.name, label: o.label, issued_by: o.issuedBy, daily_limit: o.dailyLimit,
        daily_token_limit: o.dailyTokenLimit, now: new Date(clock.now()), extra: o.extra,
      });
    } catch (err) {
      if (err instanceof PoolExhausted) {
        this.deps.log.error({ module: 'keys' }, 'the key pool is empty: run generate-keys or set POOL_AUTO_REFILL');
        throw fail('pool_exhausted', {}, { 'Retry-After': '300' });
      }
      throw err;
    }
    this.refillIfLow();
    // The push and the durable write run side by side. Pushing a key before it is on disk is safe:
    // nobody has been shown it yet, and if the write never lands the key is an unused pool key again,
    // which the reconciler takes back out of CLIProxyAPI. The key is answered `active` only once
    // CLIProxyAPI accepts it; the flip rides along with the next write.
    await Promise.all([this.pushNow(() => this.deps.reconciler.add([issued.key])), this.store.commit(mark)]);
    const keyId = keyIdOf(this.store.prefix, issued.key);
    await this.deps.audit.record(actor, 'key.issue', keyId, { email: o.email, label: o.label, issued_by: o.issuedBy });
    this.deps.log.info({ module: 'keys', key_id: keyId, issued_by: o.issuedBy }, 'key issued');
    this.deps.events.emit('keys.changed');
    return { key: issued.key, key_id: keyId, record: this.store.getKey(issued.key) ?? issued.record };
  }

  /**
   * Revokes a key for good. Presenting the full key proves you hold it; naming it by id needs the
   * owner's key or admin. A fresh key is minted so the pool keeps its spare count.
   */
  async revoke(ref: { key?: string; key_id?: string }, actor: Actor, reason?: string): Promise<{ key_id: string }> {
    if (ref.key === undefined && actor.kind === 'anonymous') throw fail('sign_in_required');
    const { key, record } = this.find(ref);
    const heldByActor = ref.key !== undefined;
    const ownedByActor = actor.kind === 'user' && record.email !== null && actor.email === record.email;
    if (!heldByActor && !ownedByActor && actor.kind !== 'admin' && actor.kind !== 'system') throw fail('not_yours');
    const keyId = keyIdOf(this.store.prefix, key);
    if (record.status === 'revoked') throw fail('key_revoked');
    this.store.revoke(key, new Date(this.deps.clock.now()));
    this.store.mint(1);
    await this.store.commit();
    await this.deps.audit.record(actor, 'key.revoke', keyId, { email: record.email, ...(reason ? { reason } : {}) });
    this.deps.log.info({ module: 'keys', key_id: keyId }, 'key revoked');
    this.deps.events.emit('keys.changed');
    await this.pushNow(() => this.deps.reconciler.remove([key])); // answered once CLIProxyAPI refuses it (bounded)
    return { key_id: keyId };
  }

  /** Adds keys to the pool (generate-keys, POST /admin/pool); `preload` keeps unused keys live in CLIProxyAPI from then on. */
  async mint(count: number, actor: Actor, o: { preload?: boolean } = {}): Promise<{ minted: number; first_id: string | null; last_id: string | null;
    pool: PoolStatus; preload: boolean; push: { ok: boolean; added: number; error: string | null } | null }> {
    if (o.preload) await this.store.setPreload(true);
    const ids = this.store.mint(count);
    await this.store.commit();
    await this.deps.audit.record(actor, 'pool.generate', undefined, { count, ...(o.preload ? { preload: true } : {}) });
    this.deps.log.info({ module: 'keys', count }, 'pool keys generated');
    this.deps.events.emit('keys.changed');
    let push: { ok: boolean; added: number; error: string | null } | null = null;
    if (this.preload) {
      const r = await this.deps.reconciler.run();
      push = { ok: r.ok, added: r.added.length, error: r.error };
    }
    return { minted: ids.length, first_id: ids[0] ?? null, last_id: ids.at(-1) ?? null, pool: this.store.poolStatus(), preload: this.preload, push };
  }

  private refillIfLow(): void {
    const { POOL_AUTO_REFILL, POOL_SIZE } = this.deps.config;
    const { unused } = this.store.poolStatus();
    if (POOL_AUTO_REFILL > 0 && unused < POOL_AUTO_REFILL && POOL_SIZE > unused) {
      const ids = this.store.mint(POOL_SIZE - unused);
      this.deps.log.info({ module: 'keys', count: ids.length }, 'pool refilled');
      void this.deps.audit.record({ kind: 'system' }, 'pool.refill', undefined, { count: ids.length });
    }
  }

  /**
   * Applies a change in CLIProxyAPI and waits a little for it, so a key is usually live (or gone)
   * when the answer arrives; if CLIProxyAPI is slow or down the key stays pending and the reconciler
   * finishes the job later.
   */
  private async pushNow(push: () => Promise<unknown>): Promise<void> {
    const wait = this.deps.pushWaitMs ?? 2500;
    // In a burst the writes queue (one at a time: CLIProxyAPI loses writes that overlap its reloads):
    // when this one could not be done in time anyway, answer at once, as pending.
    if (this.deps.reconciler.backlogMs() > wait) { void push().catch(() => undefined); return; }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      push().catch(() => undefined),
      new Promise((r) => { timer = setTimeout(r, wait); }),
    ]);
    clearTimeout(timer);
  }
}
