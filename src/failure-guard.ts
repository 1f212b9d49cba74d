import type { Audit } from './audit.js';
import type { RateLimitSetting } from './config.js';
import { fail } from './errors.js';
import type { Logger } from './log.js';

/** How a wrong credential was presented. */
export type Via = 'bearer' | 'sign_in' | 'admin_sign_in' | 'usage' | 'healthz' | 'claim';

interface AddressState {
  /** Times of the failures inside the current window (at most `limit` of them). */
  failures: number[];
  lockedUntil: number;
  /** Lockouts so far; each one lasts twice the one before. Forgotten after a day without one. */
  strikes: number;
  lastStrikeAt: number;
}

const MAX_LOCKOUT_MS = 24 * 3_600_000;
const FORGET_STRIKES_MS = 24 * 3_600_000;

/**
 * Failed credentials of every kind — a wrong key or admin token as Bearer, on a sign-in form, on
 * GET /usage — share one budget per address (AUTH_FAILURE_LIMIT, default 20 per 15 minutes).
 * Spending it locks the address out: every credential it presents is then answered
 * `429 too_many_failures` with Retry-After *without being checked*, so guessing stops, right or
 * wrong. The first lockout lasts one window; each further one (within a day) twice the last, up to
 * a day. Sessions already signed in keep working: they are not guesses. Each failure is audited as
 * `auth.failed` with the key id it claimed, or "unknown" — never what was presented — and each
 * lockout as `auth.lockout`; a locked address's further attempts are not written one by one.
 */
export class FailureGuard {
  private readonly addresses = new Map<string, AddressState>();

  constructor(private readonly d: { setting: RateLimitSetting; now: () => number; audit: Audit; log: Logger; maxAddresses?: number }) {}

  private get on(): boolean { return this.d.setting.limit > 0; }

  /** Milliseconds this address stays locked out (0: not locked). */
  lockedFor(ip: string): number {
    const s = this.addresses.get(ip);
    return s ? Math.max(0, s.lockedUntil - this.d.now()) : 0;
  }

  /** Refuses a locked-out address before its credential is looked at. */
  check(ip: string): void {
    const ms = this.lockedFor(ip);
    if (ms > 0) {
      const seconds = Math.ceil(ms / 1000);
      throw fail('too_many_failures', { seconds }, { 'Retry-After': String(seconds) });
    }
  }

  /** Counts a wrong credential from `ip` (the caller still answers it 401); the last of the budget locks the address. */
  failed(ip: string, via: Via, keyId: string | undefined): void {
    const now = this.d.now();
    void this.d.audit.record('anonymous', 'auth.failed', keyId ?? 'unknown', { ip, via });
    this.d.log.warn({ module: 'auth', ip, via, key_id: keyId ?? 'unknown' }, 'a wrong credential was presented');
    if (!this.on) return;
    const { limit, windowMs } = this.d.setting;
    let s = this.addresses.get(ip);
    if (s) this.addresses.delete(ip); // re-inserted last: the map's order is least recently failed first
    s ??= { failures: [], lockedUntil: 0, strikes: 0, lastStrikeAt: 0 };
    this.addresses.set(ip, s);
    s.failures = s.failures.filter((t) => t > now - windowMs);
    s.failures.push(now);
    if (s.failures.length >= limit) {
      if (now - s.lastStrikeAt > FORGET_STRIKES_MS) s.strikes = 0;
      const lockMs = Math.min(MAX_LOCKOUT_MS, windowMs * 2 ** s.strikes);
      s.strikes++;
      s.lastStrikeAt = now;
      s.lockedUntil = now + lockMs;
      s.failures = [];
      const until = new Date(s.lockedUntil).toISOString();
      void this.d.audit.record('system', 'auth.lockout', undefined, { ip, failures: limit, until, lockout: s.strikes });
      this.d.log.warn({ module: 'auth', ip, until, lockout: s.strikes }, `address locked out after ${limit} wrong credentials`);
    }
    this.trim(now);
  }

  /** Keeps memory bounded when many addresses fail: the longest-quiet unlocked ones are forgotten first. */
  private trim(now: number): void {
    const max = this.d.maxAddresses ?? 50_000;
    if (this.addresses.size <= max) return;
    for (const [ip, s] of this.addresses) {
      if (this.addresses.size <= max * 0.9) break;
      if (s.lockedUntil <= now) this.addresses.delete(ip);
    }
  }

  /** Addresses locked out right now (for /healthz details and the metrics). */
  lockedOut(): number {
    const now = this.d.now();
    let n = 0;
    for (const s of this.addresses.values()) if (s.lockedUntil > now) n++;
    return n;
  }
}
