import type { Clock } from '../clock.js';
import { keyIdOf, maskKey } from '../keys/format.js';
import type { KeysStore } from '../store/keys-store.js';
import type { UsageLedger } from './ledger.js';

export interface KeyView {
  key_id: string;
  masked: string;
  label: string;
  status: string;
  daily_limit: number;
  daily_token_limit: number;
  created_at: string;
  today: { requests: number; tokens: number };
  totals: { requests: number; tokens: number; failed: number };
  last_used: string | null;
}

export interface UserRow {
  email: string; name: string; total_requests: number; total_tokens: number; key_count: number;
  share: number; last_used: string | null;
}

/** Read-side queries over the key store and the usage ledger. Never returns a full key. */
export class StatsService {
  private cache: { at: number; value: { users: UserRow[]; summary: Record<string, number> } } | null = null;

  constructor(private readonly d: { store: KeysStore; ledger: UsageLedger; clock: Clock; ttlMs: number }) {}

  keyView(key: string): KeyView {
    const { store, ledger, clock } = this.d;
    const r = store.getKey(key)!;
    const id = keyIdOf(store.prefix, key);
    const t = ledger.totals(id);
    const today = ledger.today(id, clock.now());
    return {
      key_id: id, masked: maskKey(store.prefix, key), label: r.label, status: r.status,
      daily_limit: r.daily_limit, daily_token_limit: r.daily_token_limit, created_at: r.created_at,
      today: { requests: today.requests, tokens: today.tokens },
      totals: { requests: t.requests, tokens: t.tokens, failed: t.failed },
      last_used: t.last_used ? new Date(t.last_used).toISOString() : null,
    };
  }

  /** GET /usage: one key today against its limits (0 = unlimited → remaining null), and its totals. */
  keyUsage(key: string) {
    const { store, ledger, clock } = this.d;
    const r = store.getKey(key)!;
    const id = keyIdOf(store.prefix, key);
    const now = clock.now();
    const today = ledger.today(id, now);
    const t = ledger.totals(id);
    return {
      key_id: id, status: r.status, day: ledger.dayHour(now).day, time_zone: ledger.timeZone,
      today: { requests: today.requests, tokens: today.tokens, failed: today.failed },
      limits: { daily_limit: r.daily_limit, daily_token_limit: r.daily_token_limit },
      remaining: {
        requests: r.daily_limit ? Math.max(0, r.daily_limit - today.requests) : null,
        tokens: r.daily_token_limit ? Math.max(0, r.daily_token_limit - today.tokens) : null,
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

  userStats(email: string, days: number) {
    const { store, ledger, clock } = this.d;
    const keys = this.allKeysOf(email);
    const ids = keys.map((k) => keyIdOf(store.prefix, k));
    const series = ledger.series(ids, days, clock.now());
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
  *csv(emails: string[] | null, days: number): IterableIterator<string> {
    const { store, ledger, clock } = this.d;
    const now = clock.now();
    const cell = (v: string | number) => {
      let s = String(v);
      if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
      return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    };
    yield 'date,email,key_id,model,requests,failed,tokens,input_tokens,output_tokens,reasoning_tokens,cached_tokens\n';
    const wanted = emails ? new Set(emails) : null;
    for (const [k, r] of store.entries()) {
      if (!r.email || (wanted && !wanted.has(r.email))) continue;
      const id = keyIdOf(store.prefix, k);
      for (const row of ledger.dayRows(id, days, now)) {
        yield [row.day, r.email, id, row.model, row.requests, row.failed, row.tokens, row.input, row.output, row.reasoning, row.cached].map(cell).join(',') + '\n';
      }
    }
  }

  /** The leaderboard: everyone by tokens, with their share; cached for STATS_TTL_MS. */
  allUsers(): { users: UserRow[]; summary: { total_users: number; total_requests: number; total_tokens: number; total_keys: number } } {
    const now = this.d.clock.now();
    if (this.cache && now - this.cache.at < this.d.ttlMs) return this.cache.value as never;
    const { store, ledger } = this.d;
    const rows = new Map<string, UserRow>();
    for (const [email, u] of store.userEntries()) {
      rows.set(email, { email, name: u.name, total_requests: 0, total_tokens: 0, key_count: u.api_keys.length, share: 0, last_used: null });
    }
    let totalKeys = 0;
    for (const [k, r] of store.entries()) {
      if (r.status !== 'revoked') totalKeys++;
      const row = r.email ? rows.get(r.email) : undefined;
      if (!row) continue;
      const t = ledger.totals(keyIdOf(store.prefix, k));
      row.total_requests += t.requests;
      row.total_tokens += t.tokens;
      if (t.last_used && (!row.last_used || t.last_used > Date.parse(row.last_used))) row.last_used = new Date(t.last_used).toISOString();
    }
    const users = [...rows.values()].sort((a, b) => b.total_tokens - a.total_tokens || b.total_requests - a.total_requests || a.email.localeCompare(b.email));
    const totalTokens = users.reduce((s, u) => s + u.total_tokens, 0);
    const totalRequests = users.reduce((s, u) => s + u.total_requests, 0);
    for (const u of users) u.share = totalTokens ? Math.round((u.total_tokens / totalTokens) * 10_000) / 10_000 : 0;
    const value = { users, summary: { total_users: users.length, total_requests: totalRequests, total_tokens: totalTokens, total_keys: totalKeys } };
    this.cache = { at: now, value };
    return value;
  }
}
