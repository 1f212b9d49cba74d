import { createHash } from 'node:crypto';
import type { Clock } from '../clock.js';
import { PeopleCosts } from '../costs/people.js';
import type { CostSummary, PriceService } from '../costs/service.js';
import { keyIdOf, maskKey } from '../keys/format.js';
import { usedToday } from '../keys/quota.js';
import type { KeysStore, Suspension } from '../store/keys-store.js';
import { type Counts, type KeyTotals, type RequestFilter, type RequestRow, type UsageStore } from '../store/usage-store.js';
import { COUNT_FIELDS, zeroCounts } from '../store/usage-schema.js';
import type { Zone } from '../time/zone.js';
import { csvCell } from '../csv.js';

export interface KeyView {
  key_id: string;
  masked: string;
  email: string | null;
  label: string;
  status: string;
  daily_limit: number;
  daily_token_limit: number;
  expires_at: string | null;
  /** Gateway limits (0 / empty: none). */
  rpm_limit: number;
  max_concurrency: number;
  allowed_models: string[];
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

/** A trial key (no owner) on the leaderboard. */
export interface TrialRow { key_id: string; label: string; status: string; total_requests: number; total_tokens: number; last_used: string | null }

export interface Leaderboard {
  users: UserRow[];
  /** Trial keys (issued without an email), revoked ones included: their usage is in the totals too. */
  trial: { keys: TrialRow[]; total_requests: number; total_tokens: number };
  summary: { total_users: number; total_requests: number; total_tokens: number; total_keys: number };
}

/** A period of statistics: calendar days in TIMEZONE, both included, and optionally one model. */
export interface Range { from: string; to: string; model?: string; hourly?: boolean }

type DayPoint = { day: string } & Counts;
type HourPoint = { hour: string } & Counts;
/** `cost`: what the model's tokens would cost at the price table's prices (≈, in PRICE_CURRENCY); null: no price. */
type ModelPoint = { model: string; cost: number | null } & Counts;
/** What usage would cost, estimated: the currency, the sum over priced models, the models without a price. */
export type CostEstimate = { currency: string } & CostSummary;
export interface Series { by_day: DayPoint[]; by_hour: HourPoint[]; by_model: ModelPoint[]; range_totals: Counts; cost: CostEstimate }

const add = (into: Counts, c: Counts) => { for (const f of COUNT_FIELDS) into[f] += c[f]; };


/** One person on the leaderboard: the live totals of every key they ever held, and their last use as text. */
interface Owner { email: string; name: string; keyCount: number; totals: Readonly<KeyTotals>[]; lastMs: number; lastIso: string | null }

/** Read-side queries over the key store and usage.db. Never returns a full key. */
export class StatsService {
  private cache: { at: number; basis: string; value: Leaderboard; json: { body: Buffer; etag: string } | null } | null = null;
  private owners: { version: string; liveKeys: number; users: Owner[]; trial: { key_id: string; label: string; status: string; totals: Readonly<KeyTotals> }[] } | null = null;

  private readonly costs: PeopleCosts;

  constructor(private readonly d: { store: KeysStore; usage: UsageStore; zone: Zone; clock: Clock; ttlMs: number; prices: PriceService }) {
    this.costs = new PeopleCosts({ usage: d.usage, prices: d.prices, keyIdsOf: (email) => this.keyIdsOf(email) });
  }

  /** Drops the cached leaderboard (after a change an admin expects to see at once). */
  invalidate(): void { this.cache = null; }

  /** The last `days` calendar days, ending today. */
  lastDays(days: number): Range {
    const today = this.d.zone.day(this.d.clock.now());
    return { from: this.d.zone.addDays(today, -(days - 1)), to: today };
  }

  keyView(key: string): KeyView {
    const { store, usage, zone, clock } = this.d;
    const r = store.getKey(key)!;
    const id = keyIdOf(store.prefix, key);
    const now = clock.now();
    const t = usage.totals(id);
    const today = usage.day([id], zone.day(now));
    const used = usedToday(usage, zone, now, id, r);
    return {
      key_id: id, masked: maskKey(store.prefix, key), email: r.email, label: r.label, status: r.status,
      daily_limit: r.daily_limit, daily_token_limit: r.daily_token_limit, expires_at: r.expires_at ?? null,
      rpm_limit: r.rpm_limit ?? 0, max_concurrency: r.max_concurrency ?? 0, allowed_models: [...(r.allowed_models ?? [])],
      created_at: r.created_at, issued_by: r.issued_by, revoked_at: r.revoked_at, suspension: r.suspension ?? null,
      today: { requests: today.requests, tokens: today.tokens },
      quota: {
        requests: used.requests, tokens: used.tokens,
        remaining_requests: r.daily_limit ? Math.max(0, r.daily_limit - used.requests) : null,
        remaining_tokens: r.daily_token_limit ? Math.max(0, r.daily_token_limit - used.tokens) : null,
        resets_at: new Date(zone.nextDayStart(now)).toISOString(),
      },
      totals: { requests: t.requests, tokens: t.tokens, failed: t.failed },
      last_used: t.last_used === null ? null : new Date(t.last_used).toISOString(),
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

  /** GET /admin/usage: every key used today (tokens descending), the day's totals, and what it would cost (≈). */
  todayUsage() {
    const { store, usage, zone, clock, prices } = this.d;
    const now = clock.now();
    const day = zone.day(now);
    const keys: { key_id: string; email: string | null; label: string; status: string; requests: number; tokens: number; failed: number; cost: number | null;
      daily_limit: number; daily_token_limit: number; quota_requests: number; quota_tokens: number }[] = [];
    const unmanaged: { id: string; requests: number; tokens: number; failed: number; cost: number | null }[] = [];
    const totals = { requests: 0, tokens: 0, failed: 0, cost: null as number | null };
    // One row per key and model: the cost of each model's tokens, summed per key.
    const byKey = new Map<string, { unmanaged: boolean; counts: Counts; models: { model: string; counts: Counts }[] }>();
    for (const { key_id: id, unmanaged: isUnmanaged, model, counts } of usage.rowsOfDay(day, null)) {
      const k = byKey.get(id) ?? byKey.set(id, { unmanaged: isUnmanaged, counts: zeroCounts(), models: [] }).get(id)!;
      add(k.counts, counts);
      k.models.push({ model, counts });
    }
    const unpriced = new Set<string>();
    for (const [id, { unmanaged: isUnmanaged, counts: c, models }] of byKey) {
      const { total: cost, unpriced: missing } = prices.summarize(models);
      for (const m of missing) unpriced.add(m);
      totals.requests += c.requests;
      totals.tokens += c.tokens;
      totals.failed += c.failed;
      if (cost !== null) totals.cost = (totals.cost ?? 0) + cost;
      const key = isUnmanaged ? undefined : store.keyById(id);
      const r = key ? store.getKey(key) : undefined;
      if (!key || !r) { unmanaged.push({ id, requests: c.requests, tokens: c.tokens, failed: c.failed, cost }); continue; }
      const used = usedToday(usage, zone, now, id, r);
      keys.push({ key_id: id, email: r.email, label: r.label, status: r.status, requests: c.requests, tokens: c.tokens, failed: c.failed, cost,
        daily_limit: r.daily_limit, daily_token_limit: r.daily_token_limit, quota_requests: used.requests, quota_tokens: used.tokens });
    }
    keys.sort((a, b) => b.tokens - a.tokens || b.requests - a.requests);
    return { day, time_zone: zone.name, reset_at: new Date(zone.nextDayStart(now)).toISOString(), currency: prices.currency, totals, keys, unmanaged,
      unpriced: [...unpriced].sort() };
  }

  /**
   * GET /usage: one key today against its limits (0 = unlimited → remaining null), its status (with
   * the suspension and when it lifts), and its totals. `counted_*` is what the limits see today.
   */
  keyUsage(key: string) {
    const { store, usage, zone, clock } = this.d;
    const r = store.getKey(key)!;
    const id = keyIdOf(store.prefix, key);
    const now = clock.now();
    const today = usage.day([id], zone.day(now));
    const used = usedToday(usage, zone, now, id, r);
    const t = usage.totals(id);
    return {
      key_id: id, status: r.status, suspension: r.suspension ?? null, expires_at: r.expires_at ?? null,
      day: zone.day(now), time_zone: zone.name,
      today: { requests: today.requests, tokens: today.tokens, failed: today.failed, counted_requests: used.requests, counted_tokens: used.tokens },
      limits: { daily_limit: r.daily_limit, daily_token_limit: r.daily_token_limit },
      remaining: {
        requests: r.daily_limit ? Math.max(0, r.daily_limit - used.requests) : null,
        tokens: r.daily_token_limit ? Math.max(0, r.daily_token_limit - used.tokens) : null,
      },
      reset_at: new Date(zone.nextDayStart(now)).toISOString(),
      totals: { requests: t.requests, tokens: t.tokens, failed: t.failed, last_used: t.last_used === null ? null : new Date(t.last_used).toISOString() },
    };
  }

  /**
   * A person's live keys, and totals over every key they ever held: a revoked key leaves the list
   * but its usage stays in the totals, as in the charts and on the leaderboard.
   */
  myKeys(email: string): { email: string; name: string; keys: KeyView[]; revoked: number;
    totals: { requests: number; tokens: number; today_requests: number; today_tokens: number } } {
    const { store, usage, zone, clock } = this.d;
    const user = store.getUser(email);
    const keys = (user?.api_keys ?? []).map((k) => this.keyView(k));
    const ever = this.keyIdsOf(email);
    const totals = { requests: 0, tokens: 0, today_requests: 0, today_tokens: 0 };
    for (const id of ever) {
      const t = usage.totals(id);
      totals.requests += t.requests;
      totals.tokens += t.tokens;
    }
    const today = usage.day(ever, zone.day(clock.now()));
    totals.today_requests = today.requests;
    totals.today_tokens = today.tokens;
    return { email, name: user?.name ?? '', keys, revoked: ever.length - keys.length, totals };
  }

  /** Every key a person ever held, revoked ones included (their usage still counts). */
  allKeysOf(email: string): string[] {
    const { store } = this.d;
    if (this.heldBy?.version !== store.version) {
      const byEmail = new Map<string, string[]>();
      for (const [k, r] of store.entries()) if (r.email) (byEmail.get(r.email) ?? byEmail.set(r.email, []).get(r.email)!).push(k);
      this.heldBy = { version: store.version, byEmail };
    }
    return this.heldBy.byEmail.get(email) ?? [];
  }

  /** The ids of every key a person ever held. */
  keyIdsOf(email: string): string[] {
    return this.allKeysOf(email).map((k) => keyIdOf(this.d.store.prefix, k));
  }

  /**
   * One page of the request log, newest first, with the cursor of the next page
   * (`before=<ms>_<id>`) or null at the end.
   */
  requestLog(f: Omit<RequestFilter, 'limit'> & { limit: number }): { requests: (Omit<RequestRow, 'id' | 'at'> & { at: string })[]; next: string | null; time_zone: string } {
    const rows = this.d.usage.requests({ ...f, limit: f.limit + 1 });
    const page = rows.slice(0, f.limit);
    const last = page.at(-1);
    return {
      requests: page.map(({ id: _id, at, ...r }) => ({ at: new Date(at).toISOString(), ...r })),
      next: rows.length > f.limit && last ? `${last.at}_${last.id}` : null,
      time_zone: this.d.zone.name,
    };
  }

  /** Who held which keys, rebuilt when the keys change. */
  private heldBy: { version: number; byEmail: Map<string, string[]> } | null = null;

  /**
   * Several keys over a range: every day of it (zeros included), by model, and by hour — over the
   * range when `hourly`, else the last 48 hours — with the range's totals.
   */
  series(ids: readonly string[], range: Range): Series {
    const { usage, zone, clock } = this.d;
    const days = new Map(zone.daysBetween(range.from, range.to).map((day) => [day, { day, ...zeroCounts() }]));
    const models = new Map<string, ModelPoint>();
    const range_totals = zeroCounts();
    for (const r of usage.byDay(ids, range.from, range.to, range.model)) {
      const d = days.get(r.day);
      if (d) add(d, r.counts);
      add(models.get(r.model) ?? models.set(r.model, { model: r.model, cost: null, ...zeroCounts() }).get(r.model)!, r.counts);
      add(range_totals, r.counts);
    }
    const now = clock.now();
    const [hFrom, hTo] = range.hourly
      ? [zone.startOfDay(range.from), Math.min(now, zone.nextDayStart(zone.startOfDay(range.to)) - 1)]
      : [now - 47 * 3_600_000, now];
    const hours = new Map(zone.hoursBetween(hFrom, hTo).map((hour) => [hour, { hour, ...zeroCounts() }]));
    const hourKeys = [...hours.keys()];
    if (hourKeys.length) {
      for (const r of usage.byHour(ids, hourKeys[0]!, hourKeys.at(-1)!, range.model)) {
        const h = hours.get(r.hour);
        if (h) add(h, r.counts);
      }
    }
    const { prices } = this.d;
    for (const m of models.values()) m.cost = prices.cost(m.model, m);
    return {
      by_day: [...days.values()], by_hour: [...hours.values()],
      by_model: [...models.values()].sort((a, b) => b.tokens - a.tokens || b.requests - a.requests), range_totals,
      cost: { currency: prices.currency, ...prices.summarize([...models.values()].map((m) => ({ model: m.model, counts: m, cost: m.cost }))) },
    };
  }

  /** A person's statistics over a range (default: the last 30 days), with their keys. */
  userStats(email: string, range: Range, onlyKeyId?: string) {
    const { store, usage } = this.d;
    const keys = this.allKeysOf(email);
    const all = keys.map((k) => keyIdOf(store.prefix, k));
    // One of their keys, if asked (the series and models; the totals stay the person's).
    const ids = onlyKeyId !== undefined && all.includes(onlyKeyId) ? [onlyKeyId] : all;
    const totals = { requests: 0, tokens: 0, failed: 0 };
    for (const id of all) {
      const t = usage.totals(id);
      totals.requests += t.requests;
      totals.tokens += t.tokens;
      totals.failed += t.failed;
    }
    const days = this.d.zone.daysBetween(range.from, range.to).length;
    return {
      email, name: store.getUser(email)?.name ?? '', from: range.from, to: range.to, days, model: range.model ?? null,
      totals, ...this.series(ids, range), models: usage.models(all), keys: keys.map((k) => this.keyView(k)),
    };
  }

  /** One key's statistics over a range. */
  keyStats(key: string, range: Range) {
    const id = keyIdOf(this.d.store.prefix, key);
    const view = this.keyView(key);
    return { key: view, from: range.from, to: range.to, model: range.model ?? null, ...this.series([id], range), models: this.d.usage.models([id]) };
  }

  /** Usage of keys the portal does not manage (hash ids; '' = CLIProxyAPI with auth off). */
  unmanaged(): { keys: { id: string; requests: number; tokens: number; failed: number; last_used: string | null }[]; total_requests: number; total_tokens: number } {
    const keys = this.d.usage.unmanagedIds().map((id) => {
      const t = this.d.usage.totals(id);
      return { id, requests: t.requests, tokens: t.tokens, failed: t.failed, last_used: t.last_used === null ? null : new Date(t.last_used).toISOString() };
    }).sort((a, b) => b.tokens - a.tokens);
    return { keys, total_requests: keys.reduce((s, k) => s + k.requests, 0), total_tokens: keys.reduce((s, k) => s + k.tokens, 0) };
  }

  /**
   * CSV by day and model: one person's keys, or everyone's, with the estimated cost in the last
   * column (named after PRICE_CURRENCY; empty for a model without a price). Cells that a spreadsheet
   * would run as a formula (= + - @) are quoted as text. Read a day at a time.
   */
  async *csv(emails: string[] | null, range: Range): AsyncIterableIterator<string> {
    const { store, usage, zone, prices } = this.d;
    yield `date,email,key_id,model,requests,failed,tokens,input_tokens,output_tokens,reasoning_tokens,cached_tokens,cost_${prices.currency.toLowerCase()}\n`;
    const wanted = emails ? new Set(emails) : null;
    // Everyone's export has the trial keys too (no email); a person's has only their keys.
    const owner = new Map<string, string>();
    for (const [k, r] of store.entries()) {
      if (r.email ? wanted && !wanted.has(r.email) : wanted) continue;
      owner.set(keyIdOf(store.prefix, k), r.email ?? '');
    }
    const ids = wanted ? [...owner.keys()] : null;
    for (const day of zone.daysBetween(range.from, range.to)) {
      const lines: string[] = [];
      for (const { key_id, model, counts: c } of usage.rowsOfDay(day, ids)) {
        const email = owner.get(key_id);
        if (email === undefined || (range.model && model !== range.model)) continue;
        const cost = prices.cost(model, c);
        lines.push([day, email, key_id, model, c.requests, c.failed, c.tokens, c.input, c.output, c.reasoning, c.cached, cost === null ? '' : String(Number(cost.toFixed(6)))]
          .map(csvCell).join(',') + '\n');
      }
      for (let i = 0; i < lines.length; i += 1000) yield lines.slice(i, i + 1000).join('');
      await new Promise((r) => setImmediate(r)); // a long export never holds up other requests for long
    }
  }

  /** What each of these people's usage would cost over all time (≈): the leaderboard's page of people. */
  peopleCosts(emails: readonly string[]): Map<string, CostSummary> { return this.costs.of(emails); }

  /** Every model name seen in usage. */
  modelsSeen(): string[] { return this.d.usage.models(null); }

  /** The leaderboard: everyone by tokens, with their share; cached for STATS_TTL_MS. */
  allUsers(): Leaderboard {
    return this.board().value;
  }

  /**
   * GET /api/all-users-stats as a finished body with its ETag, cached with the leaderboard: with
   * 10k people the JSON is over a megabyte, and serialising it per request would cost more than
   * computing it.
   */
  allUsersJson(): { body: Buffer; etag: string } {
    // Stale while revalidating: once the TTL is up, the last body is still served and the next one
    // is built right after, off the request's path (an admin's change invalidates at once instead) —
    // but never a body older than two TTLs: after a quiet spell the first reader waits for a fresh one.
    // Nothing is rebuilt while neither the keys nor the usage changed.
    const c = this.renewed();
    const age = c ? this.d.clock.now() - c.at : 0;
    if (c?.json && age >= this.d.ttlMs && age < 2 * this.d.ttlMs) {
      if (!this.rebuilding) {
        this.rebuilding = true;
        setImmediate(() => { this.rebuilding = false; if (this.cache === c) this.jsonOf(this.board()); });
      }
      return c.json;
    }
    return this.jsonOf(this.board());
  }

  private rebuilding = false;

  /** What the leaderboard is computed from: it cannot differ while this stays the same. */
  private basis(): string { return `${this.d.store.version}:${this.d.usage.version}`; }

  /** The cached leaderboard, its age reset if what it was computed from has not changed since. */
  private renewed(): StatsService['cache'] {
    const c = this.cache;
    if (c && this.d.clock.now() - c.at >= this.d.ttlMs && c.basis === this.basis()) c.at = this.d.clock.now();
    return c;
  }

  private jsonOf(b: NonNullable<StatsService['cache']>): { body: Buffer; etag: string } {
    if (!b.json) {
      // Kept as bytes: a string of over a megabyte would be encoded again for every response.
      const body = Buffer.from(JSON.stringify({ ...b.value, unmanaged: this.unmanaged() }));
      b.json = { body, etag: `"${createHash('sha1').update(body).digest('base64url')}"` };
    }
    return b.json;
  }

  /**
   * Every person with the live totals of every key they ever held; rebuilt only when the keys
   * change or a key is used for the first time. A person's last use keeps its text between builds.
   */
  private ownersNow(): NonNullable<StatsService['owners']> {
    const { store, usage } = this.d;
    const version = `${store.version}:${usage.keysUsed}`;
    if (this.owners?.version === version) return this.owners;
    const before = new Map(this.owners?.users.map((o) => [o.email, o]));
    const byEmail = new Map<string, Owner>();
    for (const [email, u] of store.userEntries()) {
      const was = before.get(email);
      byEmail.set(email, { email, name: u.name, keyCount: u.api_keys.length, totals: [], lastMs: was?.lastMs ?? -1, lastIso: was?.lastIso ?? null });
    }
    let liveKeys = 0;
    const trial: NonNullable<StatsService['owners']>['trial'] = [];
    for (const [k, r] of store.entries()) {
      if (r.status !== 'revoked') liveKeys++;
      const id = keyIdOf(store.prefix, k);
      const t = usage.liveTotals(id);
      if (r.email) { if (t) byEmail.get(r.email)?.totals.push(t); } else trial.push({ key_id: id, label: r.label, status: r.status, totals: t ?? usage.totals(id) });
    }
    this.owners = { version, liveKeys, users: [...byEmail.values()], trial };
    return this.owners;
  }

  private board(): NonNullable<StatsService['cache']> {
    const now = this.d.clock.now();
    const cached = this.renewed();
    if (cached && now - cached.at < this.d.ttlMs) return cached;
    const basis = this.basis();
    const owners = this.ownersNow();
    let totalTokens = 0;
    let totalRequests = 0;
    const users: UserRow[] = owners.users.map((o) => {
      let requests = 0;
      let tokens = 0;
      let last = -1;
      for (const t of o.totals) {
        requests += t.requests;
        tokens += t.tokens;
        if (t.last_used !== null && t.last_used > last) last = t.last_used;
      }
      totalTokens += tokens;
      totalRequests += requests;
      if (last !== o.lastMs) { o.lastMs = last; o.lastIso = last >= 0 ? new Date(last).toISOString() : null; }
      return { email: o.email, name: o.name, total_requests: requests, total_tokens: tokens, key_count: o.keyCount, share: 0, last_used: o.lastIso };
    });
    const trialKeys: TrialRow[] = owners.trial.map(({ key_id, label, status, totals: t }) => ({
      key_id, label, status, total_requests: t.requests, total_tokens: t.tokens, last_used: t.last_used === null ? null : new Date(t.last_used).toISOString(),
    })).sort((a, b) => b.total_tokens - a.total_tokens || b.total_requests - a.total_requests || (a.key_id < b.key_id ? -1 : 1));
    const trial = { keys: trialKeys, total_requests: trialKeys.reduce((n, k) => n + k.total_requests, 0), total_tokens: trialKeys.reduce((n, k) => n + k.total_tokens, 0) };
    totalTokens += trial.total_tokens;
    totalRequests += trial.total_requests;
    users.sort((a, b) => b.total_tokens - a.total_tokens || b.total_requests - a.total_requests || (a.email < b.email ? -1 : a.email > b.email ? 1 : 0));
    for (const u of users) u.share = totalTokens ? Math.round((u.total_tokens / totalTokens) * 10_000) / 10_000 : 0;
    const value = { users, trial, summary: { total_users: users.length, total_requests: totalRequests, total_tokens: totalTokens, total_keys: owners.liveKeys } };
    this.cache = { at: now, basis, value, json: null };
    return this.cache;
  }
}
