import type { Actor, Audit } from '../audit.js';
import type { Clock } from '../clock.js';
import { keyIdOf } from '../keys/format.js';
import { usedToday } from '../keys/quota.js';
import type { Logger } from '../log.js';
import type { AuditEntry } from '../store/audit.js';
import type { KeyRecord, KeysStore } from '../store/keys-store.js';
import type { UsageStore } from '../store/usage-store.js';
import type { Zone } from '../time/zone.js';
import type { AlertDocument, Webhook } from './webhook.js';

export type LimitKind = 'requests' | 'tokens';
export type AlertEvent = AlertDocument['event'];

export interface AlertsDeps {
  /** ALERT_THRESHOLD_PERCENT (0: no warnings), TIMEZONE's name, PORTAL_PUBLIC_URL. */
  threshold: number;
  portalUrl?: string;
  store: KeysStore;
  usage: UsageStore;
  zone: Zone;
  audit: Audit;
  log: Logger;
  clock: Clock;
  /** ALERT_WEBHOOK_URL's sender, when it is set. */
  webhook: Webhook | null;
}

/** A key near or at one of its daily limits, as a page tells its holder. */
export interface LimitNotice {
  key_id: string;
  kind: 'warning' | 'reached';
  limit: LimitKind;
  used: number;
  max: number;
  percent: number;
  /** When the key works again (a warning: when today's quota starts afresh). */
  resets_at: string;
}

/** What the alerts partial shows: a holder's notices, or (for an admin) how many keys are past the threshold. */
export interface PageAlerts {
  notices: LimitNotice[];
  admin: { count: number; threshold: number } | null;
}

const REASON_LIMIT: Record<string, LimitKind> = { daily_limit: 'requests', daily_token_limit: 'tokens' };

/** Whole percent, rounded down: 79.9 % has not passed 80 %. */
const percentOf = (used: number, max: number) => Math.floor((used * 100) / max);

/** A key's limits with today's counted use against each. */
function limitsOf(r: KeyRecord, used: { requests: number; tokens: number }): { limit: LimitKind; used: number; max: number }[] {
  const out: { limit: LimitKind; used: number; max: number }[] = [];
  if (r.daily_limit) out.push({ limit: 'requests', used: used.requests, max: r.daily_limit });
  if (r.daily_token_limit) out.push({ limit: 'tokens', used: used.tokens, max: r.daily_token_limit });
  return out;
}

/**
 * Alerts before and when a key's daily limit is reached. Once per key, limit and day (in TIMEZONE)
 * a key that passes ALERT_THRESHOLD_PERCENT of a limit gets a `key.limit_warning` audit entry, and a
 * key suspended for a limit (its `key.suspend` entry is the record) gets a `limit_reached`; each goes
 * to ALERT_WEBHOOK_URL too when it is set. "Once" survives a restart because it is read back from the
 * audit log at start (today's entries only): nothing else is stored.
 */
export class AlertService {
  /** `${day} ${event} ${limit} ${key id}` of the alerts made, for today only. */
  private made = new Set<string>();
  private madeDay = '';
  readonly counts: Record<AlertEvent, number> = { limit_warning: 0, limit_reached: 0 };

  constructor(private readonly d: AlertsDeps) {}

  get threshold(): number { return this.d.threshold; }

  /** Reads today's alerts back from the audit log; call before usage is counted or limits enforced. */
  async load(): Promise<void> {
    const now = this.d.clock.now();
    const start = this.d.zone.dayStart(now);
    const { entries } = await this.d.audit.page({
      offset: 0, limit: Number.MAX_SAFE_INTEGER, stop: (e) => Date.parse(e.at) < start, match: (e) => this.fromAudit(e) !== null,
    });
    for (const e of entries) {
      const a = this.fromAudit(e)!;
      this.claim(a.day, a.event, a.limit, e.key_id!);
    }
    if (entries.length) this.d.log.debug({ module: 'alerts', alerts: entries.length }, 'read today’s limit alerts back from the audit log');
  }

  /** The alert an audit entry stands for: a warning, or a suspension for a limit. */
  private fromAudit(e: AuditEntry): { day: string; event: AlertEvent; limit: LimitKind } | null {
    if (!e.key_id || !e.details) return null;
    if (e.action === 'key.limit_warning' && typeof e.details.day === 'string' && (e.details.limit === 'requests' || e.details.limit === 'tokens')) {
      return { day: e.details.day, event: 'limit_warning', limit: e.details.limit };
    }
    const limit = e.action === 'key.suspend' ? REASON_LIMIT[String(e.details.reason)] : undefined;
    return limit ? { day: this.d.zone.day(Date.parse(e.at)), event: 'limit_reached', limit } : null;
  }

  /** Marks an alert as made; false when it was made already today. */
  private claim(day: string, event: AlertEvent, limit: LimitKind, keyId: string): boolean {
    if (day !== this.madeDay) {
      if (day < this.madeDay) return false; // an entry of an earlier day read at start
      this.made = new Set();
      this.madeDay = day;
    }
    const id = `${day} ${event} ${limit} ${keyId}`;
    if (this.made.has(id)) return false;
    this.made.add(id);
    return true;
  }

  /**
   * After usage was counted: keys that passed the threshold of a limit today (and reached none: that
   * suspends them, which is its own alert) get their warning.
   */
  async counted(keyIds: Iterable<string>): Promise<void> {
    if (!this.d.threshold) return;
    const { store, zone, clock } = this.d;
    const now = clock.now();
    const day = zone.day(now);
    const warnings: { key: string; id: string; limit: LimitKind; used: number; max: number }[] = [];
    for (const id of keyIds) {
      const key = store.keyById(id);
      const r = key ? store.getKey(key) : undefined;
      if (!key || !r || (r.status !== 'active' && r.status !== 'pending') || (!r.daily_limit && !r.daily_token_limit)) continue;
      const limits = limitsOf(r, usedToday(this.d.usage, zone, now, id, r));
      if (limits.some((l) => l.used >= l.max)) continue;
      for (const l of limits) {
        if (l.used * 100 >= l.max * this.d.threshold && this.claim(day, 'limit_warning', l.limit, id)) warnings.push({ key, id, ...l });
      }
    }
    for (const w of warnings) {
      const doc = this.document('limit_warning', w.key, w.limit, w.used, w.max, now);
      this.counts.limit_warning++;
      await this.audit({ kind: 'system' }, 'key.limit_warning', w.id, { limit: w.limit, used: w.used, max: w.max, percent: doc.percent, threshold: this.d.threshold, day });
      this.d.webhook?.send(doc);
    }
    if (warnings.length) {
      this.d.log.info({ module: 'alerts', key_ids: warnings.map((w) => w.id) }, `${warnings.length} key(s) passed ${this.d.threshold} % of a daily limit`);
    }
  }

  /** A key was just suspended for reaching a limit (QuotaService audited it). */
  reached(keyId: string, reason: string): void {
    const limit = REASON_LIMIT[reason];
    const key = this.d.store.keyById(keyId);
    const r = key ? this.d.store.getKey(key) : undefined;
    if (!limit || !key || !r) return;
    const now = this.d.clock.now();
    if (!this.claim(this.d.zone.day(now), 'limit_reached', limit, keyId)) return;
    this.counts.limit_reached++;
    const used = usedToday(this.d.usage, this.d.zone, now, keyId, r);
    const max = limit === 'requests' ? r.daily_limit : r.daily_token_limit;
    this.d.webhook?.send(this.document('limit_reached', key, limit, limit === 'requests' ? used.requests : used.tokens, max, now));
  }

  private document(event: AlertEvent, key: string, limit: LimitKind, used: number, max: number, now: number): AlertDocument {
    const { store, zone } = this.d;
    const r = store.getKey(key)!;
    const id = keyIdOf(store.prefix, key);
    const doc: AlertDocument = {
      event, key_id: id, email: r.email, label: r.label, limit, used, max, percent: percentOf(used, max),
      day: zone.day(now), time_zone: zone.name, resets_at: new Date(zone.nextDayStart(now)).toISOString(),
    };
    if (this.d.portalUrl) doc.portal_url = `${this.d.portalUrl}/admin/keys/${id}`;
    return doc;
  }

  private audit(actor: Actor, action: string, keyId: string, details: Record<string, unknown>): Promise<void> {
    return this.d.audit.record(actor, action, keyId, details);
  }

  // ---- what pages show -------------------------------------------------------------------------

  /**
   * Notices for these keys: each limit a live key has passed the threshold of (none when the
   * threshold is 0), and a key suspended for a limit, until when.
   */
  notices(keys: readonly string[]): LimitNotice[] {
    const { store, zone, clock } = this.d;
    const now = clock.now();
    const out: LimitNotice[] = [];
    for (const key of keys) {
      const r = store.getKey(key);
      if (!r) continue;
      const id = keyIdOf(store.prefix, key);
      const used = usedToday(this.d.usage, zone, now, id, r);
      const limits = limitsOf(r, used);
      const reason = r.status === 'suspended' ? REASON_LIMIT[r.suspension?.reason ?? ''] : undefined;
      if (reason) {
        const l = limits.find((x) => x.limit === reason);
        const max = l?.max ?? 0;
        out.push({ key_id: id, kind: 'reached', limit: reason, used: l?.used ?? 0, max, percent: max ? percentOf(l!.used, max) : 100,
          resets_at: r.suspension!.until ?? new Date(zone.nextDayStart(now)).toISOString() });
        continue;
      }
      if (!this.d.threshold || (r.status !== 'active' && r.status !== 'pending')) continue;
      for (const l of limits) {
        if (l.used * 100 < l.max * this.d.threshold) continue;
        out.push({ key_id: id, kind: 'warning', ...l, percent: Math.min(100, percentOf(l.used, l.max)), resets_at: new Date(zone.nextDayStart(now)).toISOString() });
      }
    }
    return out;
  }

  /** pastThreshold's last answer, and what it was computed from (it cannot differ while that holds). */
  private past: { basis: string; count: number } | null = null;

  /**
   * Keys (not revoked) whose counted use today is at or past the threshold of a limit. Read from
   * the day's rollup (tens of ms with 30k keys used), so kept until the day, the usage or the keys change.
   */
  pastThreshold(): number {
    if (!this.d.threshold) return 0;
    const { store, usage, zone, clock } = this.d;
    const now = clock.now();
    const basis = `${zone.day(now)}|${usage.version}|${store.version}`;
    if (this.past?.basis === basis) return this.past.count;
    let n = 0;
    // Only keys used today can be past it: the day's rollup names them.
    for (const { key_id: id, unmanaged, counts } of usage.dayByKey(zone.day(now))) {
      const key = unmanaged ? undefined : store.keyById(id);
      const r = key ? store.getKey(key) : undefined;
      if (!r || r.status === 'revoked' || (!r.daily_limit && !r.daily_token_limit)) continue;
      const used = r.quota_reset ? usedToday(usage, zone, now, id, r) : counts;
      if (limitsOf(r, used).some((l) => l.used * 100 >= l.max * this.d.threshold)) n++;
    }
    this.past = { basis, count: n };
    return n;
  }

  /** The alerts partial's content for whoever reads the page. */
  forPage(actor: Actor, area: string): PageAlerts {
    if (actor.kind === 'admin' && area === 'admin') {
      return { notices: [], admin: this.d.threshold ? { count: this.pastThreshold(), threshold: this.d.threshold } : null };
    }
    if (actor.kind === 'user') return { notices: this.notices(this.d.store.getUser(actor.email)?.api_keys ?? []), admin: null };
    if (actor.kind === 'holder') return { notices: this.notices([actor.key]), admin: null };
    return { notices: [], admin: null };
  }
}
