import { createHash } from 'node:crypto';
import type { Clock } from '../clock.js';
import { keyIdOf, maskKey } from '../keys/format.js';
import type { KeysStore } from '../store/keys-store.js';
import type { UsageLedger } from './ledger.js';
import { usedToday } from '../keys/quota.js';
import type { Suspension } from '../store/keys-store.js';

export interface KeyView {
  key_id: string;
  masked: string;
  email: string | null;
  label: string;
  status: string;
  daily_limit: number;
  daily_token_limit: number;
  expires_at: string | null;
  created_at: string;
  issued_by: string;
  revoked_at: string | null;
  /** Why a suspended key is out of CLIProxyAPI, and when it comes back (null: when an admin says so). */
  suspension: Suspension | null;
  today: { requests: number; tokens: number };
  /** Today's use that counts against the limits (an admin reset sets earlier use aside), and what is left. */
  quota: { requests: number; tokens: number; remaining_requests: number | null; remaining_tokens: number | null; resets_at: string };
  totals: { requests: number; tokens: number; failed: number };
  last_used: string | null;
}

export interface UserRow {
  email: string; name: string; total_requests: number; total_tokens: number; key_count: number;
  share: number; last_used: string | null;
}

interface Owner { email: string; name: string; keyCount: number; slots: number[]; lastMs: number; lastIso: string | null }

export interface Leaderboard {
  users: UserRow[];
  summary: { total_users: number; total_requests: number; total_tokens: number; total_keys: number };
}

/** Read-side queries over the key store and the usage ledger. Never returns a full key. */
export class StatsService {
  private cache: { at: number; value: Leaderboard; json: { body: string; etag: string } | null } | null = null;

  constructor(private readonly d: { store: KeysStore; ledger: UsageLedger; clock: Clock; ttlMs: number }) {}

  /**
   * Every person with the ledger slots of every key they ever held; rebuilt only when the keys
   * change or a key is used for the first time. Also remembers each person's last use as text.
   */
  private owners: { version: string; liveKeys: number; users: Owner[] } | null = null;

  private ownersNow(): NonNullable<StatsService['owners']> {
    const { store, ledger } = this.d;
    const version = `${store.version}:${ledger.slotCount}`;
    if (this.owners?.version === version) return this.owners;
    const before = new Map(this.owners?.users.map((o) => [o.email, o]));
    const byEmail = new Map<string, Owner>();
    for (const [email, u] of store.userEntries()) {
      const was = before.get(email);
      byEmail.set(email, { email, name: u.name, keyCount: u.api_keys.length, slots: [], lastMs: was?.lastMs ?? -1, lastIso: was?.lastIso ?? null });
    }
    let liveKeys = 0;
    for (const [k, r] of store.entries()) {
      if (r.status !== 'revoked') liveKeys++;
      const slot = r.email ? ledger.slotIndex(keyIdOf(store.prefix, k)) : -1;
      if (slot >= 0) byEmail.get(r.email!)?.slots.push(slot);
    }
    this.owners = { version, liveKeys, users: [...byEmail.values()] };
    return this.owners;
  }

  /** Drops the cached leaderboard (after a change an admin expects to see at once). */
  invalidate(): void { this.cache = null; }

  keyView(key: string): KeyView {
    const { store, ledger, clock } = this.d;
    const r = store.getKey(key)!;
    const id = keyIdOf(store.prefix, key);
    const now = clock.now();
    const t = ledger.totals(id);
    const today = ledger.today(id, now);
    const used = usedToday(ledger, now, id, r);
    return {
      key_id: id, masked: maskKey(store.prefix, key), email: r.email, label: r.label, status: r.status,
      daily_limit: r.daily_limit, daily_token_limit: r.daily_token_limit, expires_at: r.expires_at ?? null,
      created_at: r.created_at, issued_by: r.issued_by, revoked_at: r.revoked_at, suspension: r.suspension ?? null,
      today: { requests: today.requests, tokens: today.tokens },
      quota: {
        requests: used.requests, tokens: used.tokens,
        remaining_requests: r.daily_limit ? Math.max(0, r.daily_limit - used.requests) : null,
        remaining_tokens: r.daily_token_limit ? Math.max(0, r.daily_token_limit - used.tokens) : null,
        resets_at: new Date(ledger.nextDayStart(now)).toISOString(),
      },
      totals: { requests: t.requests, tokens: t.tokens, failed: t.failed },
      last_used: t.last_used ? new Date(t.last_used).toISOString() : null,
    };
  }

  /**
   * GET /admin/keys: issued keys (never unused pool keys), newest first, filtered by status and by a
   * search over key id, label and owner, one page at a time.
   */
  adminKeys(o: { status?: string; q?: string; email?: string; offset: number; limit: number }): { keys: KeyView[]; total: number } {
    const { store } = this.d;
    const q = o.q?.toLowerCase();
    const matching: string[] = [];
    for (const [k, r] of store.entries()) {
      if (o.status && r.status !== o.status) continue;
      if (o.email && r.email !== o.email) continue;
      if (q && !(keyIdOf(store.prefix, k).includes(q) || r.label.toLowerCase().includes(q) || (r.email ?? '').includes(q))) continue;
      matching.push(k);
    }
    // Newest first: the pool index grows with every key minted.
    matching.sort((a, b) => Number(keyIdOf(store.prefix, b)) - Number(keyIdOf(store.prefix, a)));
    return { keys: matching.slice(o.offset, o.offset + o.limit).map((k) => this.keyView(k)), total: matching.length };
  }

  /** GET /admin/usage: every key used today (tokens descending) and the day's totals. */
  todayUsage() {
    const { store, ledger, clock } = this.d;
    const now = clock.now();
    const keys: { key_id: string; email: string | null; label: string; status: string; requests: number; tokens: number; failed: number;
      daily_limit: number; daily_token_limit: number; quota_requests: number; quota_tokens: number }[] = [];
    const unmanaged: { id: string; requests: number; tokens: number; failed: number }[] = [];
    const totals = { requests: 0, tokens: 0, failed: 0 };
    ledger.todayByKey(now, (id, c, isUnmanaged) => {
      totals.requests += c.requests;
      totals.tokens += c.tokens;
      totals.failed += c.failed;
      const key = isUnmanaged ? undefined : store.keyById(id);
      const r = key ? store.getKey(key) : undefined;
      if (!key || !r) { unmanaged.push({ id, requests: c.requests, tokens: c.tokens, failed: c.failed }); return; }
      const used = usedToday(ledger, now, id, r);
      keys.push({ key_id: id, email: r.email, label: r.label, status: r.status, requests: c.requests, tokens: c.tokens, failed: c.failed,
        daily_limit: r.daily_limit, daily_token_limit: r.daily_token_limit, quota_requests: used.requests, quota_tokens: used.tokens });
    });
    keys.sort((a, b) => b.tokens - a.tokens || b.requests - a.requests);
    return { day: ledger.dayHour(now).day, time_zone: ledger.timeZone, reset_at: new Date(ledger.nextDayStart(now)).toISOString(), totals, keys, unmanaged };
  }

  /**
   * GET /usage: one key today against its limits (0 = unlimited → remaining null), its status (with
   * the suspension and when it lifts), and its totals. `counted` is what the limits see today.
   */
  keyUsage(key: string) {
    const { store, ledger, clock } = this.d;
    const r = store.getKey(key)!;
    const id = keyIdOf(store.prefix, key);
    const now = clock.now();
    const today = ledger.today(id, now);
    const used = usedToday(ledger, now, id, r);
    const t = ledger.totals(id);
    return {
      key_id: id, status: r.status, suspension: r.suspension ?? null, expires_at: r.expires_at ?? null,
      day: ledger.dayHour(now).day, time_zone: ledger.timeZone,
      today: { requests: today.requests, tokens: today.tokens, failed: today.failed, counted_requests: used.requests, counted_tokens: used.tokens },
      limits: { daily_limit: r.daily_limit, daily_token_limit: r.daily_token_limit },
      remaining: {
        requests: r.daily_limit ? Math.max(0, r.daily_limit - used.requests) : null,
        tokens: r.daily_token_limit ? Math.max(0, r.daily_token_limit - used.tokens) : null,
      },
      reset_at: new Date(ledger.nextDayStart(now)).toISOString(),
      totals: { requests: t.requests, tokens: t.tokens, failed: t.failed, last_used: t.last_used ? new Date(t.last_used).toISOString() : null },
    };
  }

  /** A person's keys (live ones; revoked keys keep their history in the stats) and totals. */
  myKeys(email: string): { email: string; name: string; keys: KeyView[]; totals: { requests: number; tokens: number; today_requests: number; today_tokens: number } } {
    const user = this.d.store.getUser(email);
    const keys = (user?.api_keys ?? []).map((k) => this.keyView(k));
    const totals = { requests: 0, tokens: 0, today_requests: 0, today_tokens: 0 };
    for (const k of keys) {
      totals.requests += k.totals.requests;
      totals.tokens += k.totals.tokens;
      totals.today_requests += k.today.requests;
      totals.today_tokens += k.today.tokens;
    }
    return { email, name: user?.name ?? '', keys, totals };
  }

  /** Every key a person ever held, revoked ones included (their usage still counts). */
  private allKeysOf(email: string): string[] {
    const out: string[] = [];
    for (const [k, r] of this.d.store.entries()) if (r.email === email) out.push(k);
    return out;
  }

  async userStats(email: string, days: number) {
    const { store, ledger, clock } = this.d;
    const keys = this.allKeysOf(email);
    const ids = keys.map((k) => keyIdOf(store.prefix, k));
    const series = await ledger.series(ids, days, clock.now());
    const totals = { requests: 0, tokens: 0, failed: 0 };
    for (const id of ids) {
      const t = ledger.totals(id);
      totals.requests += t.requests;
      totals.tokens += t.tokens;
      totals.failed += t.failed;
    }
    return { email, name: store.getUser(email)?.name ?? '', days, totals, ...series, keys: keys.map((k) => this.keyView(k)) };
  }

  /** Usage of keys the portal does not manage (hash ids; '' = CLIProxyAPI with auth off). */
  unmanaged(): { keys: { id: string; requests: number; tokens: number; failed: number; last_used: string | null }[]; total_requests: number; total_tokens: number } {
    const keys = this.d.ledger.unmanagedIds().map((id) => {
      const t = this.d.ledger.totals(id);
      return { id, requests: t.requests, tokens: t.tokens, failed: t.failed, last_used: t.last_used ? new Date(t.last_used).toISOString() : null };
    }).sort((a, b) => b.tokens - a.tokens);
    return { keys, total_requests: keys.reduce((s, k) => s + k.requests, 0), total_tokens: keys.reduce((s, k) => s + k.tokens, 0) };
  }

  /**
   * CSV by day and model: one person's keys, or everyone's. Cells that a spreadsheet would run as a
   * formula (= + - @) are quoted as text.
   */
  async *csv(emails: string[] | null, days: number): AsyncIterableIterator<string> {
    const { store, ledger, clock } = this.d;
    const cell = (v: string | number) => {
      let s = String(v);
      if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
      return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    };
    yield 'date,email,key_id,model,requests,failed,tokens,input_tokens,output_tokens,reasoning_tokens,cached_tokens\n';
    const wanted = emails ? new Set(emails) : null;
    const ids: string[] = [];
    const owner = new Map<string, string>();
    for (const [k, r] of store.entries()) {
      if (!r.email || (wanted && !wanted.has(r.email))) continue;
      const id = keyIdOf(store.prefix, k);
      ids.push(id);
      owner.set(id, r.email);
    }
    // Day by day (a day on disk is read once), each day's rows in the order of the keys.
    const days_ = ledger.daysWithin(days, clock.now());
    for (const day of days_) {
      const lines: string[] = [];
      await ledger.eachDay([day], (_d, block) => ledger.rowsOf(block, ids, (id, model, c) => {
        lines.push([day, owner.get(id)!, id, model, c.requests, c.failed, c.tokens, c.input, c.output, c.reasoning, c.cached].map(cell).join(',') + '\n');
      }));
      for (let i = 0; i < lines.length; i += 1000) yield lines.slice(i, i + 1000).join('');
    }
  }

  /** The leaderboard: everyone by tokens, with their share; cached for STATS_TTL_MS. */
  allUsers(): Leaderboard {
    return this.board().value;
  }

  /**
   * GET /api/all-users-stats as a finished body with its ETag, cached with the leaderboard: with
   * 10k people the JSON is over a megabyte, and serialising it per request would cost more than
   * computing it.
   */
  allUsersJson(): { body: string; etag: string } {
    const b = this.board();
    if (!b.json) {
      const body = JSON.stringify({ ...b.value, unmanaged: this.unmanaged() });
      b.json = { body, etag: `"${createHash('sha1').update(body).digest('base64url')}"` };
    }
    return b.json;
  }

  private board(): NonNullable<StatsService['cache']> {
    const now = this.d.clock.now();
    if (this.cache && now - this.cache.at < this.d.ttlMs) return this.cache;
    const { ledger } = this.d;
    const owners = this.ownersNow();
    const t = new Float64Array(3);
    let totalTokens = 0;
    let totalRequests = 0;
    const users: UserRow[] = owners.users.map((o) => {
      let requests = 0;
      let tokens = 0;
      let last = -1;
      for (const slot of o.slots) {
        ledger.slotTotals(slot, t);
        requests += t[0]!;
        tokens += t[1]!;
        if (t[2]! > last) last = t[2]!; // NaN (never used) compares false
      }
      if (last !== o.lastMs) { o.lastMs = last; o.lastIso = last >= 0 ? new Date(last).toISOString() : null; }
      totalTokens += tokens;
      totalRequests += requests;
      return { email: o.email, name: o.name, total_requests: requests, total_tokens: tokens, key_count: o.keyCount, share: 0, last_used: o.lastIso };
    });
    const totalKeys = owners.liveKeys;
    users.sort((a, b) => b.total_tokens - a.total_tokens || b.total_requests - a.total_requests || (a.email < b.email ? -1 : a.email > b.email ? 1 : 0));
    for (const u of users) u.share = totalTokens ? Math.round((u.total_tokens / totalTokens) * 10_000) / 10_000 : 0;
    const value = { users, summary: { total_users: users.length, total_requests: totalRequests, total_tokens: totalTokens, total_keys: totalKeys } };
    this.cache = { at: now, value, json: null };
    return this.cache;
  }
}
