import type { Actor, Audit } from '../audit.js';
import type { Clock } from '../clock.js';
import { fail } from '../errors.js';
import type { Events } from '../events.js';
import type { Logger } from '../log.js';
import type { KeyRecord, KeysStore, Suspension } from '../store/keys-store.js';
import type { DailyCounts, UsageStore } from '../store/usage-store.js';
import type { Zone } from '../time/zone.js';
import { keyIdOf } from './format.js';
import type { Reconciler } from './reconciler.js';
import type { KeyService } from './service.js';

export interface QuotaDeps {
  store: KeysStore;
  usage: UsageStore;
  zone: Zone;
  keys: KeyService;
  reconciler: Reconciler;
  audit: Audit;
  events: Events;
  log: Logger;
  clock: Clock;
}

export interface KeyChanges {
  label?: string;
  daily_limit?: number;
  daily_token_limit?: number;
  expires_at?: string | null;
  status?: 'active' | 'suspended';
  rpm_limit?: number;
  max_concurrency?: number;
  allowed_models?: string[];
}

const QUOTA_REASONS = new Set(['daily_limit', 'daily_token_limit']);

/** A field a record may lack, as its absence reads (so setting it to that is no change). */
function defaultOf(field: string): unknown {
  return field === 'allowed_models' ? [] : field === 'rpm_limit' || field === 'max_concurrency' ? 0 : field === 'expires_at' ? null : undefined;
}

/** Suspended for reaching a daily limit (not by an admin's hand): what midnight, resets and raised limits lift. */
export function limitSuspended(r: { status: string; suspension?: { reason: string } | null }): boolean {
  return r.status === 'suspended' && !!r.suspension && QUOTA_REASONS.has(r.suspension.reason);
}

/**
 * What counts against a key's limits today: the requests that started today in TIMEZONE — after the
 * admin's reset, if there was one today. A reset is a point in time: a request made before it never
 * counts against the fresh quota, even when its record arrives later.
 */
export function usedToday(usage: DailyCounts, zone: Zone, now: number, keyId: string, record: Pick<KeyRecord, 'quota_reset'> | undefined): { requests: number; tokens: number } {
  const dayStart = zone.dayStart(now);
  const reset = record?.quota_reset;
  const resetAt = reset?.at ? Date.parse(reset.at) : NaN;
  if (resetAt >= dayStart) {
    const s = usage.since(keyId, resetAt + 1); // a request that started at the reset's millisecond was before it
    return { requests: s.requests, tokens: s.tokens };
  }
  const t = usage.day([keyId], zone.day(now));
  if (reset && !reset.at && reset.day === zone.day(now)) { // a reset written by 0.1.0
    return { requests: Math.max(0, t.requests - (reset.requests ?? 0)), tokens: Math.max(0, t.tokens - (reset.tokens ?? 0)) };
  }
  return { requests: t.requests, tokens: t.tokens };
}

/**
 * Daily limits, enforced through CLIProxyAPI: a key whose counted usage today reaches its limit is
 * suspended (the reconciler takes it out of CLIProxyAPI's list) and reinstated at the next midnight
 * in TIMEZONE, on an admin reset, or when its limit is raised. Keys past `expires_at` are revoked.
 * Usage history is never touched: a reset only moves the point today's quota counts from.
 */
export class QuotaService {
  constructor(private readonly d: QuotaDeps) {}

  private get store(): KeysStore { return this.d.store; }

  usedToday(key: string, record = this.store.getKey(key)): { requests: number; tokens: number } {
    return usedToday(this.d.usage, this.d.zone, this.d.clock.now(), keyIdOf(this.store.prefix, key), record);
  }

  /** The limit a key has reached today, if any. */
  reached(key: string, record: KeyRecord): 'daily_limit' | 'daily_token_limit' | null {
    if (!record.daily_limit && !record.daily_token_limit) return null;
    const used = this.usedToday(key, record);
    if (record.daily_limit && used.requests >= record.daily_limit) return 'daily_limit';
    if (record.daily_token_limit && used.tokens >= record.daily_token_limit) return 'daily_token_limit';
    return null;
  }

  /** When a quota suspension made now lifts: the next midnight in TIMEZONE. */
  private nextMidnight(): string {
    return new Date(this.d.zone.nextDayStart(this.d.clock.now())).toISOString();
  }

  /**
   * After usage was counted: suspends the live keys among `keyIds` that reached a limit, and takes
   * them out of CLIProxyAPI. Returns the ids suspended.
   */
  async enforce(keyIds: Iterable<string>): Promise<string[]> {
    const suspended: { key: string; id: string; reason: Suspension['reason']; until: string }[] = [];
    for (const id of keyIds) {
      const key = this.store.keyById(id);
      const record = key ? this.store.getKey(key) : undefined;
      if (!key || !record || (record.status !== 'active' && record.status !== 'pending')) continue;
      const reason = this.reached(key, record);
      if (!reason) continue;
      const suspension: Suspension = { reason, at: new Date(this.d.clock.now()).toISOString(), until: this.nextMidnight() };
      this.store.updateKey(key, { status: 'suspended', suspension });
      suspended.push({ key, id, reason, until: suspension.until! });
    }
    if (!suspended.length) return [];
    await this.store.commit();
    this.d.events.emit('keys.changed');
    for (const s of suspended) this.d.events.emit('quota.suspended', 1, s.reason);
    for (const s of suspended) {
      const record = this.store.getKey(s.key)!;
      await this.audit({ kind: 'system' }, 'key.suspend', s.id, { reason: s.reason, until: s.until, used: this.usedToday(s.key, record),
        daily_limit: record.daily_limit, daily_token_limit: record.daily_token_limit });
    }
    for (const s of suspended) this.d.events.emit('quota.reached', s.id, s.reason);
    this.d.log.info({ module: 'quota', key_ids: suspended.map((s) => s.id) }, `suspended ${suspended.length} key(s) that reached a daily limit`);
    // One DELETE each, nothing read first: every management call costs CLIProxyAPI a bcrypt check
    // with a secret-key, and each one is time in which the key still works.
    await this.d.reconciler.remove(suspended.map((s) => s.key)).catch(() => undefined); // a run retries
    return suspended.map((s) => s.id);
  }

  /** Midnight (and the sweep after a start that missed it): quota suspensions whose time has come lift. */
  async reinstateDue(): Promise<string[]> {
    const now = this.d.clock.now();
    const due: string[] = [];
    for (const key of this.watched()) {
      const r = this.store.getKey(key);
      if (r && limitSuspended(r) && r.suspension!.until && Date.parse(r.suspension!.until) <= now) due.push(key);
    }
    return this.reinstate(due, { kind: 'system' }, 'midnight');
  }

  /**
   * The keys the sweep looks at — with an expiry or a limit suspension — found again only when the
   * keys change: with 30k keys the sweep every 5 s would otherwise walk all of them.
   */
  private watched(): string[] {
    if (this.watch?.version !== this.store.version) {
      const keys: string[] = [];
      for (const [key, r] of this.store.entries()) if ((r.expires_at && r.status !== 'revoked') || limitSuspended(r)) keys.push(key);
      this.watch = { version: this.store.version, keys };
    }
    return this.watch.keys;
  }

  private watch: { version: number; keys: string[] } | null = null;
  private swept = false;

  private async reinstate(keys: string[], actor: Actor, why: string): Promise<string[]> {
    if (!keys.length) return [];
    for (const key of keys) this.store.updateKey(key, { status: 'pending', suspension: null });
    await this.store.commit();
    this.d.events.emit('keys.changed');
    const ids = keys.map((k) => keyIdOf(this.store.prefix, k));
    for (const id of ids) await this.audit(actor, 'key.reinstate', id, { reason: why });
    this.d.log.info({ module: 'quota', key_ids: ids.slice(0, 50), reason: why }, `reinstated ${ids.length} key(s)`);
    await this.d.reconciler.add(keys).catch(() => undefined); // a run retries
    return ids;
  }

  /** Revokes keys whose `expires_at` has passed. */
  async expireDue(): Promise<string[]> {
    const now = this.d.clock.now();
    const due: string[] = [];
    for (const key of this.watched()) {
      const r = this.store.getKey(key);
      if (r?.expires_at && r.status !== 'revoked' && Date.parse(r.expires_at) <= now) due.push(key);
    }
    const ids: string[] = [];
    for (const key of due) ids.push((await this.d.keys.revoke({ key }, { kind: 'system' }, 'expired')).key_id);
    return ids;
  }

  /**
   * The sweep job: expiries, and suspensions that should have lifted (a midnight the portal was down
   * for). Its first run also catches limits reached by usage counted before a restart; after that,
   * every counted batch and every change of a limit is checked as it happens.
   */
  async sweep(): Promise<void> {
    await this.expireDue();
    await this.reinstateDue();
    if (this.swept) return;
    this.swept = true;
    const limited: string[] = [];
    for (const [key, r] of this.store.entries()) {
      if ((r.status === 'active' || r.status === 'pending') && (r.daily_limit || r.daily_token_limit)) limited.push(keyIdOf(this.store.prefix, key));
    }
    await this.enforce(limited);
  }

  /**
   * POST /admin/reset-usage: today's usage so far stops counting against the key's limits (the
   * history keeps it), and a quota suspension lifts.
   */
  async reset(key: string, actor: Actor): Promise<KeyRecord> {
    const record = this.store.getKey(key)!;
    if (record.status === 'revoked') throw fail('key_revoked');
    const before = this.usedToday(key, record);
    this.store.updateKey(key, { quota_reset: { at: new Date(this.d.clock.now()).toISOString() } });
    await this.store.commit();
    this.d.events.emit('keys.changed');
    await this.audit(actor, 'key.reset_usage', keyIdOf(this.store.prefix, key), { requests: before.requests, tokens: before.tokens });
    const after = this.store.getKey(key)!;
    if (limitSuspended(after)) await this.reinstate([key], actor, 'reset');
    return this.store.getKey(key)!;
  }

  /**
   * PATCH /admin/keys/:id: label, limits, expiry, and suspend/resume by hand. Limits are applied at
   * once: raised past today's use, a quota suspension lifts; lowered under it, the key is suspended.
   */
  async update(key: string, changes: KeyChanges, actor: Actor): Promise<KeyRecord> {
    const before = this.store.getKey(key)!;
    if (before.status === 'revoked') throw fail('key_revoked');
    const id = keyIdOf(this.store.prefix, key);
    const { status, ...fields } = changes;
    const patch: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(fields)) {
      if (v !== undefined && JSON.stringify((before as Record<string, unknown>)[k] ?? defaultOf(k)) !== JSON.stringify(v)) patch[k] = v;
    }
    if (status === 'active' && limitSuspended(before) &&
        this.reached(key, { ...before, ...patch } as KeyRecord)) {
      throw fail('over_limit');
    }
    // An admin's suspension outranks a limit's: a key suspended for its limit and then by hand stays
    // out at midnight and after a reset, until an admin resumes it.
    if (status === 'suspended' && (before.status !== 'suspended' || before.suspension?.reason !== 'admin')) {
      patch.status = 'suspended';
      patch.suspension = { reason: 'admin', at: new Date(this.d.clock.now()).toISOString(), until: null } satisfies Suspension;
    }
    if (status === 'active' && before.status === 'suspended') { patch.status = 'pending'; patch.suspension = null; }
    if (Object.keys(patch).length) {
      this.store.updateKey(key, patch as Partial<KeyRecord>);
      await this.store.commit();
      this.d.events.emit('keys.changed');
      const shown = Object.fromEntries(Object.entries(patch).filter(([k]) => k !== 'suspension'));
      const details: Record<string, unknown> = { changes: shown, before: Object.fromEntries(Object.keys(shown).map((k) => [k, (before as Record<string, unknown>)[k] ?? null])) };
      if (patch.suspension && before.suspension) details.replaces = before.suspension.reason; // a limit suspension made an admin's
      await this.audit(actor, patch.status === 'suspended' ? 'key.suspend' : patch.status === 'pending' ? 'key.reinstate' : 'key.update', id, details);
    }
    // The limits as they now stand decide: lifted, or (newly) reached.
    const now = this.store.getKey(key)!;
    if (limitSuspended(now) && !this.reached(key, now)) {
      await this.reinstate([key], actor, 'limit_raised');
    } else if (now.status === 'active' || now.status === 'pending') {
      await this.enforce([id]);
    }
    if (patch.status === 'suspended') await this.d.reconciler.remove([key]).catch(() => undefined);
    if (patch.status === 'pending') await this.d.reconciler.add([key]).catch(() => undefined);
    return this.store.getKey(key)!;
  }

  private audit(actor: Actor, action: string, keyId: string, details: Record<string, unknown>): Promise<void> {
    return this.d.audit.record(actor, action, keyId, details);
  }
}
