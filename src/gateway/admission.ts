import type { Clock } from '../clock.js';
import { usedToday } from '../keys/quota.js';
import type { DailyCounts } from '../store/usage-store.js';
import type { Zone } from '../time/zone.js';
import type { GatedRecord } from './key-table.js';
import type { Refusal } from './shapes.js';

/** Why a request is refused before it is forwarded. */
export interface Refused {
  status: number;
  kind: Refusal;
  code: string;
  message: string;
  headers: Record<string, string>;
}

/** A request let through: release it exactly once when it ends, saying whether it succeeded. */
export interface Lease {
  headers: Record<string, string>;
  release(succeeded: boolean): void;
}

interface KeyState {
  inflight: number;
  /** In-flight requests holding one unit of the daily limit. */
  reserved: number;
  /** When requests started, in the last minute (for rpm_limit), oldest first. */
  starts: StartTimes;
  /** Successes through the gateway of requests that started at or after `since`. */
  done: { since: number; count: number };
  /** Today's counted usage (since the reset, if any): cached until the ingestor counts more for this key. */
  counted: { since: number; requests: number; tokens: number } | null;
}

const MINUTE = 60_000;

/**
 * Start times, oldest first, in a ring that doubles when full: dropping the oldest and adding the
 * newest are O(1) however many a minute a key may start (an array's `shift` copies the whole array
 * once it is large enough to live in V8's large-object space).
 */
export class StartTimes {
  private ring = new Float64Array(8);
  private head = 0;
  size = 0;

  /** Forgets the starts at or before `t`. */
  dropUntil(t: number): void {
    while (this.size && this.ring[this.head]! <= t) {
      this.head = (this.head + 1) % this.ring.length;
      this.size--;
    }
  }

  /** The oldest start kept (only while `size` > 0). */
  oldest(): number { return this.ring[this.head]!; }

  push(t: number): void {
    if (this.size === this.ring.length) {
      const next = new Float64Array(this.ring.length * 2);
      for (let i = 0; i < this.size; i++) next[i] = this.ring[(this.head + i) % this.ring.length]!;
      this.ring = next;
      this.head = 0;
    }
    this.ring[(this.head + this.size) % this.ring.length] = t;
    this.size++;
  }
}

/**
 * The gateway's limits, decided in memory before a request is forwarded.
 *
 * `daily_limit` is exact under concurrency: a request in flight holds a unit, a success keeps it, a
 * failure gives it back. What has been used today is the larger of the usage counted from
 * CLIProxyAPI's records (which also sees requests that did not come through the gateway, and
 * survives a restart) and the successes this gateway saw (which are ahead of the records); the
 * units held by requests in flight come on top. `daily_token_limit` is read from counted usage (the
 * gateway does not read answers). `rpm_limit` counts requests started in the last 60 seconds,
 * `max_concurrency` requests in flight. A reset is a point in time here too.
 */
export class Admission {
  private readonly keys = new Map<string, KeyState>();
  private day = { start: 0, next: 0, nextIso: '' };

  constructor(private readonly d: { usage: DailyCounts; zone: Zone; clock: Clock }) {}

  /** The ingestor counted usage of these keys: their cached totals are stale. */
  counted(keyIds: Iterable<string>): void {
    for (const id of keyIds) { const s = this.keys.get(id); if (s) s.counted = null; }
  }

  /** Keys changed (a reset moves the point today counts from): every cached total is stale. */
  changed(): void {
    for (const s of this.keys.values()) s.counted = null;
  }

  /** Requests in flight now (all keys). */
  inflight(): number {
    let n = 0;
    for (const s of this.keys.values()) n += s.inflight;
    return n;
  }

  private dayBounds(now: number): { start: number; next: number; nextIso: string } {
    if (now >= this.day.next || now < this.day.start) {
      // A new day: what keys did yesterday is forgotten but for requests under way and minute windows.
      for (const [id, s] of this.keys) if (s.inflight === 0 && !s.starts.size) this.keys.delete(id);
      const next = this.d.zone.nextDayStart(now);
      this.day = { start: this.d.zone.dayStart(now), next, nextIso: new Date(next).toISOString() };
    }
    return this.day;
  }

  private state(keyId: string): KeyState {
    let s = this.keys.get(keyId);
    if (!s) {
      s = { inflight: 0, reserved: 0, starts: new StartTimes(), done: { since: 0, count: 0 }, counted: null };
      this.keys.set(keyId, s);
    }
    return s;
  }

  /** Lets a request of `keyId` through, holding its units, or says why not. */
  admit(keyId: string, record: GatedRecord): Lease | Refused {
    const now = this.d.clock.now();
    const { start, next, nextIso } = this.dayBounds(now);
    const resetAt = record.quota_reset?.at ? Date.parse(record.quota_reset.at) : NaN;
    const since = resetAt >= start ? resetAt + 1 : start;
    const s = this.state(keyId);
    if (s.done.since !== since) s.done = { since, count: 0 };
    const resetIn = Math.max(1, Math.ceil((next - now) / 1000));

    const dailyLimit = record.daily_limit || 0;
    const tokenLimit = record.daily_token_limit || 0;
    let used = 0;
    if (dailyLimit || tokenLimit) {
      if (!s.counted || s.counted.since !== since) {
        const u = usedToday(this.d.usage, this.d.zone, now, keyId, record);
        s.counted = { since, requests: u.requests, tokens: u.tokens };
      }
      used = Math.max(s.counted.requests, s.done.count) + s.reserved;
      if (dailyLimit && used >= dailyLimit) return limitReached('daily_limit', dailyLimit, next, now, this.d.zone);
      if (tokenLimit && s.counted.tokens >= tokenLimit) return limitReached('daily_token_limit', tokenLimit, next, now, this.d.zone);
    }

    const rpm = record.rpm_limit || 0;
    if (rpm) {
      s.starts.dropUntil(now - MINUTE);
      if (s.starts.size >= rpm) {
        const wait = Math.max(1, Math.ceil((s.starts.oldest() + MINUTE - now) / 1000));
        return refuse(429, 'rpm_limit_reached', `This key may start ${rpm} requests a minute. Try again in ${wait} s.`,
          { 'retry-after': String(wait), ...rateHeaders(rpm, 0, wait) });
      }
    }
    const concurrency = record.max_concurrency || 0;
    if (concurrency && s.inflight >= concurrency) return tooManyAtOnce(concurrency);

    // Admitted: hold the units.
    s.inflight++;
    if (dailyLimit) s.reserved++;
    if (rpm) s.starts.push(now);
    const headers = dailyLimit ? rateHeaders(dailyLimit, dailyLimit - used - 1, resetIn)
      : rpm ? rateHeaders(rpm, rpm - s.starts.size, Math.max(1, Math.ceil((s.starts.oldest() + MINUTE - now) / 1000))) : {};
    if (dailyLimit) headers['x-ratelimit-reset-requests-at'] = nextIso;
    let released = false;
    return {
      headers,
      release: (succeeded) => {
        if (released) return;
        released = true;
        s.inflight--;
        if (dailyLimit) s.reserved--;
        if (succeeded && s.done.since === since) s.done.count++;
        // Nothing to remember (a success is: a limit set later today counts it before its record is counted).
        if (s.inflight === 0 && !s.starts.size && !s.done.count && !dailyLimit && !tokenLimit) this.keys.delete(keyId);
      },
    };
  }

  /** A connection that lasts (a WebSocket): only the concurrency limit applies, for as long as it is open. */
  hold(keyId: string, record: GatedRecord): Lease | Refused {
    const s = this.state(keyId);
    const concurrency = record.max_concurrency || 0;
    if (concurrency && s.inflight >= concurrency) return tooManyAtOnce(concurrency);
    s.inflight++;
    let released = false;
    return { headers: {}, release: () => { if (!released) { released = true; s.inflight--; } } };
  }
}

/**
 * A daily limit reached, said the same way whether the gateway counted it or the key was already
 * suspended for it: when it resets (in TIMEZONE), Retry-After until then, and the rate headers.
 */
export function limitReached(kind: 'daily_limit' | 'daily_token_limit', limit: number, resetsAt: number | null, now: number, zone: Zone): Refused {
  const wait = resetsAt === null ? 3600 : Math.max(1, Math.ceil((resetsAt - now) / 1000));
  const what = kind === 'daily_limit' ? `${limit} requests` : `${limit} tokens`;
  const when = resetsAt === null ? 'midnight' : zone.format(resetsAt);
  const requests = kind === 'daily_limit' && limit;
  return refuse(429, `${kind}_reached`, `This key's daily limit of ${what} is reached. It resets at ${when}.`, {
    'retry-after': String(wait),
    ...(requests ? rateHeaders(limit, 0, wait) : {}),
    // As on the answers let through: when the limit is whole again, as a time.
    ...(requests && resetsAt !== null ? { 'x-ratelimit-reset-requests-at': new Date(resetsAt).toISOString() } : {}),
  });
}

function tooManyAtOnce(concurrency: number): Refused {
  return refuse(429, 'concurrency_limit_reached', `This key may have ${concurrency} requests under way at once. Try again when one has finished.`, { 'retry-after': '1' });
}

function refuse(status: number, code: string, message: string, headers: Record<string, string>): Refused {
  return { status, kind: 'rate_limit', code, message, headers };
}

/** OpenAI's request headers: the limit, what is left, and when it is whole again (`1h2m3s`). */
export function rateHeaders(limit: number, remaining: number, resetSeconds: number): Record<string, string> {
  return {
    'x-ratelimit-limit-requests': String(limit),
    'x-ratelimit-remaining-requests': String(Math.max(0, remaining)),
    'x-ratelimit-reset-requests': duration(resetSeconds),
  };
}

export function duration(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const sec = seconds % 60;
  return `${h ? `${h}h` : ''}${h || m ? `${m}m` : ''}${sec}s`;
}

export function isRefused(x: Lease | Refused): x is Refused {
  return 'status' in x;
}
