import { AppError, conflict, forbidden, notFound, unauthorized, unavailable } from '../errors.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { AuditActor, AuditLog } from '../store/audit.js';
import { PoolExhausted, type KeyRecord, type KeysStore } from '../store/keys-store.js';
import { keyIdOf, maskKey } from './format.js';
import type { Reconciler } from './reconciler.js';

/** Who is asking. Routes work this out from credentials; the service decides what they may do. */
export type Actor =
  | { kind: 'anonymous' }
  | { kind: 'user'; email: string; key: string }
  | { kind: 'admin' }
  | { kind: 'system' };

export function auditActor(actor: Actor): AuditActor {
  return actor.kind === 'user' ? `user:${actor.email}` : actor.kind;
}

/**
 * Appends to the audit log. The change it records is already durable, so a failing audit disk is
 * logged loudly rather than turned into an error for a request that succeeded.
 */
export async function recordAudit(d: { audit: AuditLog; log: Logger }, actor: Actor, action: string, keyId?: string, details?: Record<string, unknown>): Promise<void> {
  try {
    await d.audit.record(auditActor(actor), action, keyId, details);
  } catch (err) {
    d.log.error({ module: 'audit', err, action, key_id: keyId }, 'could not write the audit log');
  }
}

export interface IssuedKey {
  key: string;
  key_id: string;
  record: KeyRecord;
}

export interface KeyServiceDeps {
  config: Config;
  store: KeysStore;
  reconciler: Reconciler;
  audit: AuditLog;
  log: Logger;
  clock: Clock;
  /** How long an issue or revoke waits for CLIProxyAPI before answering (default 2500 ms). */
  pushWaitMs?: number;
}

/** The key lifecycle: issue, revoke, mint. Holds the rules; never sees HTTP. */
export class KeyService {
  constructor(private readonly deps: KeyServiceDeps) {}

  private get store(): KeysStore { return this.deps.store; }

  /** Self-service registration: a new email gets a key; an existing holder needs their key or admin. */
  async register(input: { email: string; name?: string; label?: string }, actor: Actor): Promise<IssuedKey> {
    const { config } = this.deps;
    const domain = input.email.slice(input.email.lastIndexOf('@') + 1);
    if (config.ALLOWED_EMAIL_DOMAINS.length && actor.kind !== 'admin' &&
        !config.ALLOWED_EMAIL_DOMAINS.some((d) => domain === d || domain.endsWith(`.${d}`))) {
      throw new AppError(403, 'email_domain_not_allowed',
        `Registration is open to ${config.ALLOWED_EMAIL_DOMAINS.map((d) => '@' + d).join(', ')} addresses only.`);
    }
    const existing = this.store.getUser(input.email);
    if (existing && existing.api_keys.length > 0) {
      const isOwner = actor.kind === 'user' && actor.email === input.email;
      if (!isOwner && actor.kind !== 'admin') {
        throw conflict('email_registered',
          'This email already has a key. Sign in with one of its keys to add another, or ask an admin.');
      }
    }
    return this.issue({
      email: input.email, name: input.name, label: input.label ?? '', issuedBy: actor.kind === 'admin' ? 'admin' : 'self',
      dailyLimit: config.DEFAULT_DAILY_LIMIT, dailyTokenLimit: config.DEFAULT_DAILY_TOKEN_LIMIT,
    }, actor);
  }

  /** Takes a key from the pool, records it durably, and pushes it to CLIProxyAPI. */
  async issue(o: { email: string | null; name?: string; label: string; issuedBy: string; dailyLimit: number;
    dailyTokenLimit: number; extra?: Record<string, unknown> }, actor: Actor): Promise<IssuedKey> {
    const { config, clock } = this.deps;
    const existing = o.email ? this.store.getUser(o.email) : undefined;
    if (existing && config.MAX_KEYS_PER_USER > 0 && existing.api_keys.length >= config.MAX_KEYS_PER_USER && actor.kind !== 'admin') {
      throw conflict('max_keys_reached', `Each person may hold at most ${config.MAX_KEYS_PER_USER} keys; revoke one first.`);
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
        throw unavailable('pool_exhausted', 'No keys are left in the pool. An admin needs to generate more.', 300);
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
    await this.audit(actor, 'key.issue', keyId, { email: o.email, label: o.label, issued_by: o.issuedBy });
    this.deps.log.info({ module: 'keys', key_id: keyId, issued_by: o.issuedBy }, 'key issued');
    return { key: issued.key, key_id: keyId, record: this.store.getKey(issued.key) ?? issued.record };
  }

  /** Resolves the key a request names, by full key or by id. */
  find(ref: { key?: string; key_id?: string }): { key: string; record: KeyRecord } {
    const key = ref.key ?? (ref.key_id !== undefined ? this.store.keyById(ref.key_id) : undefined);
    const record = key ? this.store.getKey(key) : undefined;
    if (!key || !record) throw notFound('No such key.');
    return { key, record };
  }

  /**
   * Revokes a key for good. Presenting the full key proves you hold it; naming it by id needs the
   * owner's key or admin. A fresh key is minted so the pool keeps its spare count.
   */
  async revoke(ref: { key?: string; key_id?: string }, actor: Actor, reason?: string): Promise<{ key_id: string }> {
    if (ref.key === undefined && actor.kind === 'anonymous') throw unauthorized('Present the key, or sign in, to revoke it.');
    const { key, record } = this.find(ref);
    const heldByActor = ref.key !== undefined;
    const ownedByActor = actor.kind === 'user' && record.email !== null && actor.email === record.email;
    if (!heldByActor && !ownedByActor && actor.kind !== 'admin' && actor.kind !== 'system') {
      throw forbidden('That key is not yours.');
    }
    const keyId = keyIdOf(this.store.prefix, key);
    if (record.status === 'revoked') throw conflict('already_revoked', 'That key was already revoked.');
    this.store.revoke(key, new Date(this.deps.clock.now()));
    this.store.mint(1);
    await this.store.commit();
    await this.audit(actor, 'key.revoke', keyId, { email: record.email, ...(reason ? { reason } : {}) });
    this.deps.log.info({ module: 'keys', key_id: keyId }, 'key revoked');
    await this.pushNow(() => this.deps.reconciler.remove([key])); // answered once CLIProxyAPI refuses it (bounded)
    return { key_id: keyId };
  }

  /** Adds keys to the pool (generate-keys and POST /admin/pool). */
  async mint(count: number, actor: Actor): Promise<{ minted: number; first_id: string | null; last_id: string | null }> {
    const ids = this.store.mint(count);
    await this.store.commit();
    await this.audit(actor, 'pool.generate', undefined, { count });
    this.deps.log.info({ module: 'keys', count }, 'pool keys generated');
    if (this.deps.config.PRELOAD_POOL || this.store.preload) await this.pushNow(() => this.deps.reconciler.run());
    return { minted: ids.length, first_id: ids[0] ?? null, last_id: ids.at(-1) ?? null };
  }

  private audit(actor: Actor, action: string, keyId?: string, details?: Record<string, unknown>): Promise<void> {
    return recordAudit(this.deps, actor, action, keyId, details);
  }

  /** Masked view of a key for lists. */
  mask(key: string): string { return maskKey(this.store.prefix, key); }

  private refillIfLow(): void {
    const { POOL_AUTO_REFILL, POOL_SIZE } = this.deps.config;
    const { unused } = this.store.poolStatus();
    if (POOL_AUTO_REFILL > 0 && unused < POOL_AUTO_REFILL && POOL_SIZE > unused) {
      const ids = this.store.mint(POOL_SIZE - unused);
      this.deps.log.info({ module: 'keys', count: ids.length }, 'pool refilled');
      void this.audit({ kind: 'system' }, 'pool.refill', undefined, { count: ids.length });
    }
  }

  /**
   * Applies a change in CLIProxyAPI and waits a little for it, so a key is usually live (or gone)
   * when the answer arrives; if CLIProxyAPI is slow or down the key stays pending and the reconciler
   * finishes the job later.
   */
  private async pushNow(push: () => Promise<unknown>): Promise<void> {
    const wait = this.deps.pushWaitMs ?? 2500;
    // In a burst the writes queue (one at a time, CLIProxyAPI loses writes that come too close):
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
