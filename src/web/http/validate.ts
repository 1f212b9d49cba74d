import { domainToASCII } from 'node:url';
import { z } from 'zod';
import { fail, invalidField, type ErrorVars, type Reason } from '../../errors.js';
import { Zone } from '../../time/zone.js';
import type { Range } from '../../usage/stats.js';
import { patternKey } from '../../costs/prices.js';

// Every check here is linear in its input, and long input is refused before any other work: a
// request body may hold 16 kB, and a pattern that backtracks over it would hold the whole portal.

const CONTROL = /\p{Cc}/u;
/** Half of a surrogate pair on its own: not text. */
const LONE_SURROGATE = /\p{Cs}/u;
/** Invisible and direction-changing characters (format: U+200B, U+202E, U+2066, U+FEFF…) and line/paragraph separators. */
const INVISIBLE = /[\p{Cf}\p{Zl}\p{Zp}]/u;

export const EMAIL_MAX = 254;
const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const LOCAL_FORBIDDEN = /[\s"<>(),;:\\[\]@]/u;

/**
 * One person, one address: the email trimmed, NFKC-normalised (full-width letters, composed
 * accents), lower-cased, the domain in punycode (IDN, as mail is routed) without a trailing dot.
 * Whitespace, control and invisible characters are refused, not removed: `alice\u200b@x` is not
 * quietly made `alice@x`. Returns the normal form, or why it is not an address.
 */
export function normalizeEmail(input: string): { email: string } | { reason: Reason; vars?: ErrorVars } {
  if (input.length > EMAIL_MAX * 4) return { reason: 'too_long', vars: { max: EMAIL_MAX } };
  if (LONE_SURROGATE.test(input)) return { reason: 'email' };
  const s = input.trim().normalize('NFKC').toLowerCase();
  if (s.length > EMAIL_MAX) return { reason: 'too_long', vars: { max: EMAIL_MAX } };
  if (CONTROL.test(s) || INVISIBLE.test(s)) return { reason: 'email' };
  const at = s.lastIndexOf('@');
  if (at < 1 || at === s.length - 1) return { reason: 'email' };
  const local = s.slice(0, at);
  const domain = s.slice(at + 1).replace(/\.$/, '');
  if (local.length > 64 || LOCAL_FORBIDDEN.test(local) || local.startsWith('.') || local.endsWith('.') || local.includes('..')) return { reason: 'email' };
  if (domain.length > 253) return { reason: 'email' };
  const ascii = domainToASCII(domain);
  if (!ascii || ascii.length > 253) return { reason: 'email' };
  const labels = ascii.split('.');
  if (labels.length < 2 || !labels.every((l) => LABEL.test(l)) || /^\d+$/.test(labels.at(-1)!)) return { reason: 'email' };
  const email = `${local}@${ascii}`;
  if (email.length > EMAIL_MAX) return { reason: 'too_long', vars: { max: EMAIL_MAX } };
  return { email };
}

/** A custom refusal, carried through zod to parseBody as a catalogued reason. */
const refuse = (ctx: z.RefinementCtx, reason: Reason, vars: ErrorVars = {}) => {
  ctx.addIssue({ code: 'custom', message: reason, params: { reason, vars } });
  return z.NEVER;
};

export const email = z.string().transform((s, ctx) => {
  const n = normalizeEmail(s);
  return 'email' in n ? n.email : refuse(ctx, n.reason, n.vars);
});

/** Text a person types (names, labels): NFC, trimmed, at most `max`, no control or invisible characters. */
export const text = (max: number) => z.string().transform((raw, ctx) => {
  if (raw.length > max * 4) return refuse(ctx, 'too_long', { max });
  if (LONE_SURROGATE.test(raw)) return refuse(ctx, 'invalid');
  const s = raw.normalize('NFC').trim();
  if (s.length > max) return refuse(ctx, 'too_long', { max });
  if (CONTROL.test(s)) return refuse(ctx, 'control_chars');
  if (INVISIBLE.test(s)) return refuse(ctx, 'invisible_chars');
  return s;
});
export const text100 = text(100);

export const KEY_ID = /^[0-9a-z]{1,20}$/;
export const keyId = z.string().transform((s, ctx) => (KEY_ID.test(s.trim()) ? s.trim() : refuse(ctx, 'key_id')));

export const keyRef = z.object({
  key: z.string().max(200).transform((s) => s.trim()).optional(),
  key_id: keyId.optional(),
}).transform((v, ctx) => (v.key || v.key_id !== undefined ? v : refuse(ctx, 'key_or_id')));

/** A daily limit: a whole number, 0 meaning unlimited. */
const limit = z.number().int().min(0).max(1e15);

/** An ISO 8601 date-time with a zone or offset, normalised to UTC; null clears it. */
const expiresAt = z.unknown().transform((v, ctx): string | null => {
  if (v === null) return null;
  if (typeof v !== 'string') return refuse(ctx, 'datetime');
  const s = v.trim();
  if (s.length > 40 || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/.test(s) || Number.isNaN(Date.parse(s))) return refuse(ctx, 'datetime');
  return new Date(s).toISOString();
});

export const registerBody = z.object({ email, name: text100.optional(), label: text100.optional() });
export const labelBody = z.object({ label: text100.optional() });
export const emailBody = z.object({ email });
export const poolBody = z.object({ count: z.number().int().min(1).max(100_000), preload: z.boolean().optional() });

/** Models a key may use through the gateway: names, or prefixes ending in `*`; empty or null: any. */
const MODEL_NAME = /^[\x21-\x7e]{1,200}$/;
const modelList = z.union([z.array(z.string()), z.string(), z.null()]).transform((v, ctx): string[] => {
  const items = v === null ? [] : typeof v === 'string' ? v.split(/[,\s]+/) : v;
  const out = [...new Set(items.map((m) => m.trim()).filter(Boolean))];
  if (out.length > 100) return refuse(ctx, 'too_many', { max: 100 });
  if (!out.every((m) => MODEL_NAME.test(m))) return refuse(ctx, 'model');
  return out;
});
const gatewayLimits = { rpm_limit: limit.optional(), max_concurrency: limit.optional(), allowed_models: modelList.optional() };

export const adminKeyBody = z.object({
  ...gatewayLimits,
  label: text100.optional(), daily_limit: limit.optional(), daily_token_limit: limit.optional(), expires_at: expiresAt.optional(),
  email: email.optional(), name: text100.optional(), same_person: z.boolean().optional(),
});

/** POST /admin/keys/bulk: N trial keys (no email) with the same label and limits. */
export const BULK_MAX = 200;
export const adminBulkBody = z.object({
  ...gatewayLimits,
  count: z.number().int().min(1).max(BULK_MAX),
  label: text100.optional(), daily_limit: limit.optional(), daily_token_limit: limit.optional(), expires_at: expiresAt.optional(),
});

/** POST /admin/keys/revoke: several keys at once, by id. */
export const adminRevokeBody = z.object({ key_ids: z.array(keyId).min(1).max(BULK_MAX) });

export const adminKeyPatch = z.object({
  ...gatewayLimits,
  label: text100.optional(), daily_limit: limit.optional(), daily_token_limit: limit.optional(), expires_at: expiresAt.optional(),
  status: z.enum(['active', 'suspended']).optional(),
});

/** A price-table pattern: a model name, or a prefix ending in `*` (no other `*`). */
const PRICE_PATTERN = /^[\x21-\x29\x2b-\x7e]{1,199}\*?$/;
const pricePattern = z.string().transform((raw, ctx) => {
  const s = raw.trim();
  return PRICE_PATTERN.test(s) ? s : refuse(ctx, 'price_pattern');
});
/** USD per million tokens. */
const perMillion = z.number().min(0).max(100_000);

/** One row of the price table (the admin's form posts one at a time). */
export const priceRowBody = z.object({ pattern: pricePattern, input: perMillion, output: perMillion, cached: perMillion.nullable().optional() })
  .transform((r) => ({ pattern: r.pattern, input: r.input, output: r.output, cached: r.cached ?? null }));

/** PUT /admin/prices: `{prices:[…]}` replaces the whole table, `{reset:true}` goes back to the defaults. */
export const pricesBody = z.object({ prices: z.array(priceRowBody).max(500).optional(), reset: z.boolean().optional() })
  .transform((v, ctx) => {
    const refusePrices = (reason: Reason, vars: ErrorVars = {}) => {
      ctx.addIssue({ code: 'custom', message: reason, params: { reason, vars }, path: ['prices'] });
      return z.NEVER;
    };
    if (v.reset === true) return { reset: true as const };
    if (!v.prices) return refusePrices('required');
    const seen = new Set<string>();
    for (const r of v.prices) {
      const k = patternKey(r.pattern);
      if (seen.has(k)) return refusePrices('duplicate', { pattern: r.pattern });
      seen.add(k);
    }
    return { reset: false as const, prices: v.prices };
  });

/** The catalogued reason for zod's first complaint. */
function reasonOf(issue: z.core.$ZodIssue): { reason: Reason; vars?: ErrorVars } {
  const i = issue as z.core.$ZodIssue & { input?: unknown; expected?: string; origin?: string; maximum?: number | bigint; minimum?: number | bigint;
    values?: unknown[]; params?: { reason?: Reason; vars?: ErrorVars } };
  if (i.code === 'custom' && i.params?.reason) return { reason: i.params.reason, vars: i.params.vars };
  if (i.code === 'invalid_type') {
    if (!('input' in i) || i.input === undefined) return { reason: 'required' };
    if (i.expected === 'int') return { reason: 'not_whole' };
    const byType: Record<string, Reason> = { string: 'not_string', number: 'not_number', boolean: 'not_boolean' };
    return { reason: byType[i.expected ?? ''] ?? 'invalid' };
  }
  if (i.code === 'too_big') return i.origin === 'string' ? { reason: 'too_long', vars: { max: Number(i.maximum) } } : { reason: 'at_most', vars: { max: Number(i.maximum) } };
  if (i.code === 'too_small') return i.origin === 'string' ? { reason: 'required' } : { reason: 'at_least', vars: { min: Number(i.minimum) } };
  if (i.code === 'invalid_value') return { reason: 'one_of', vars: { values: (i.values ?? []).map(String).join(', ') } };
  return { reason: 'invalid' };
}

/**
 * Validates a JSON body: it must be an object; unknown fields are ignored (so are keys such as
 * `__proto__`: zod builds fresh objects of the known fields only); the first problem is answered
 * `400 invalid_field` naming the field and the reason.
 */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) throw fail('invalid_body');
  const result = schema.safeParse(body, { reportInput: true });
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const { reason, vars } = reasonOf(issue);
    throw invalidField(issue.path.map(String).join('.') || (reason === 'key_or_id' ? 'key' : 'body'), reason, vars);
  }
  return result.data;
}

/**
 * A form's fields as the JSON API takes them: digits become numbers, an empty field is left out
 * (or, for a `clearable` one, means "none"), a checkbox named in `booleans` is true when ticked, and
 * a datetime-local `expires_at` is read in the portal's time zone.
 */
export function formToJson(body: Record<string, unknown> | undefined, o: { numbers?: string[]; booleans?: string[]; clearable?: string[]; zone?: Zone }): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body ?? {})) {
    if (k === '_csrf' || k === 'action' || k === 'confirm') continue;
    if (o.booleans?.includes(k)) { out[k] = v === 'on' || v === 'yes' || v === 'true'; continue; }
    if (v === '') { if (o.clearable?.includes(k)) out[k] = null; continue; }
    if (o.numbers?.includes(k) && typeof v === 'string' && /^\d{1,16}$/.test(v)) out[k] = Number(v);
    else if (k === 'expires_at' && typeof v === 'string' && o.zone && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/.test(v)) {
      const at = o.zone.parseWallClock(v);
      if (at === null) throw invalidField('expires_at', 'skipped_time', { zone: o.zone.name });
      out[k] = new Date(at).toISOString();
    } else out[k] = v;
  }
  return out;
}

/** One value of a query parameter (given twice, or as an object, it is refused). */
export function queryOne(query: Record<string, unknown>, name: string, max = 254): string | undefined {
  const v = query[name];
  if (v === undefined || v === '') return undefined;
  if (typeof v !== 'string') throw invalidField(name, 'once');
  if (v.length > max) throw invalidField(name, 'too_long', { max });
  return v.trim();
}

/** A model name from a query: printable, at most 200 characters. */
function modelName(v: string, name = 'model'): string {
  if (v.length > 200) throw invalidField(name, 'too_long', { max: 200 });
  if (CONTROL.test(v) || INVISIBLE.test(v)) throw invalidField(name, 'control_chars');
  return v;
}

export function queryModel(query: Record<string, unknown>): string | undefined {
  const v = queryOne(query, 'model', 200);
  return v === undefined ? undefined : modelName(v);
}

/** An email from a query or path, normalised as registration does. */
export function emailParam(v: string, name = 'email'): string {
  const n = normalizeEmail(v);
  if (!('email' in n)) throw invalidField(name, n.reason, n.vars);
  return n.email;
}

/** A whole number from a query, within [min, max]. */
export function queryInt(query: Record<string, unknown>, name: string, min: number, max: number): number | undefined {
  const v = queryOne(query, name, 16);
  if (v === undefined) return undefined;
  if (!/^\d{1,9}$/.test(v)) throw invalidField(name, 'not_whole');
  const n = Number(v);
  if (n < min) throw invalidField(name, 'at_least', { min });
  if (n > max) throw invalidField(name, 'at_most', { max });
  return n;
}

/** A period asked for in a query: `days=N` (ending today), or `from`/`to` days; `model`; `granularity=hour`. */
export function parseRange(query: Record<string, unknown>, zone: Zone, now: number, defaultDays = 30): Range {
  const today = zone.day(now);
  const from = queryOne(query, 'from', 10);
  const to = queryOne(query, 'to', 10);
  let range: Range;
  if (from !== undefined || to !== undefined) {
    for (const [name, v] of [['from', from], ['to', to]] as const) if (v !== undefined && !Zone.isDay(v)) throw invalidField(name, 'day');
    range = { from: from ?? zone.addDays(to ?? today, -(defaultDays - 1)), to: to ?? today };
    if (range.from > range.to) throw invalidField('from', 'order');
    if (zone.daysBetween(range.from, range.to).length > 400) throw invalidField('from', 'span', { max: 400 });
  } else {
    const days = queryInt(query, 'days', 1, 400);
    range = { from: zone.addDays(today, -((days ?? defaultDays) - 1)), to: today };
  }
  const model = queryModel(query);
  if (model !== undefined) range.model = model;
  const granularity = queryOne(query, 'granularity', 10);
  if (granularity !== undefined && granularity !== 'day' && granularity !== 'hour') throw invalidField('granularity', 'one_of', { values: 'day, hour' });
  if (granularity === 'hour') {
    if (zone.daysBetween(range.from, range.to).length > 31) throw invalidField('granularity', 'span', { max: 31 });
    range.hourly = true;
  }
  return range;
}

/** An instant from a query: an ISO date-time with a zone, or a day (its first instant in TIMEZONE; `end` = the next day's). */
export function parseInstant(query: Record<string, unknown>, name: string, zone: Zone, end = false): number | undefined {
  const v = queryOne(query, name, 40);
  if (v === undefined) return undefined;
  if (Zone.isDay(v)) return end ? zone.nextDayStart(zone.startOfDay(v)) : zone.startOfDay(v);
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/.test(v) && Number.isFinite(Date.parse(v))) return Date.parse(v);
  throw invalidField(name, 'day_or_datetime');
}

/** `before=<ms>_<id>`: the cursor of the request log's next page. */
export function parseCursor(query: Record<string, unknown>): { at: number; id: number } | undefined {
  const v = queryOne(query, 'before', 40);
  if (v === undefined) return undefined;
  const m = /^(\d{1,15})_(\d{1,15})$/.exec(v);
  if (!m) throw invalidField('before', 'cursor');
  return { at: Number(m[1]), id: Number(m[2]) };
}
