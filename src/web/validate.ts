import { z } from 'zod';
import { badRequest } from '../errors.js';
import { Zone } from '../time/zone.js';
import type { Range } from '../usage/stats.js';

// Control characters (C0, DEL, C1) and the Unicode line/paragraph separators.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/;

export const email = z.string({ message: 'must be a string' })
  .trim().toLowerCase()
  .max(254, 'must be at most 254 characters')
  .refine((s) => !CONTROL.test(s) && /^[^\s@"<>(),;:\\[\]]+@[^\s@"<>(),;:\\[\]]+\.[^\s@"<>(),;:\\[\]]+$/.test(s),
    'must be a valid email address');

/** Names and labels: trimmed, at most 100 characters, no control characters. */
export const text100 = z.string({ message: 'must be a string' })
  .trim()
  .max(100, 'must be at most 100 characters')
  .refine((s) => !CONTROL.test(s), 'must not contain control characters');

export const keyRef = z.object({
  key: z.string({ message: 'must be a string' }).trim().min(1).max(200).optional(),
  key_id: z.string({ message: 'must be a string' }).trim().regex(/^[0-9a-z]{1,20}$/, 'must be a key id such as 0042').optional(),
}).refine((v) => v.key !== undefined || v.key_id !== undefined, { message: 'give "key" or "key_id"', path: ['key'] });

export const registerBody = z.object({ email, name: text100.optional(), label: text100.optional() });
export const poolBody = z.object({
  count: z.number({ message: 'must be a number' }).int('must be a whole number').min(1, 'must be at least 1').max(100_000, 'must be at most 100000'),
  preload: z.boolean({ message: 'must be true or false' }).optional(),
});

/**
 * Validates a JSON body: it must be an object; unknown fields are ignored; the first problem is
 * reported as `400 invalid_field` naming the field.
 */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw badRequest('invalid_body', 'The request body must be a JSON object.');
  }
  const result = schema.safeParse(body);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const field = issue.path.join('.') || 'body';
    const message = issue.code === 'invalid_type' && issue.input === undefined ? 'is required' : issue.message;
    throw badRequest('invalid_field', `${field} ${message}.`);
  }
  return result.data;
}

/** A daily limit: a whole number, 0 meaning unlimited. */
const limit = z.number({ message: 'must be a number' }).int('must be a whole number').min(0, 'must be 0 (unlimited) or more')
  .max(1e15, 'is too large');

/** An ISO 8601 date-time (with a zone or offset), normalised to UTC; null clears it. */
const expiresAt = z.union([
  z.null(),
  z.string({ message: 'must be an ISO 8601 date-time or null' }).trim()
    .refine((s) => /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(s) && !Number.isNaN(Date.parse(s)),
      'must be an ISO 8601 date-time with a zone, such as 2026-12-31T18:00:00+08:00'),
]).transform((v) => (v === null ? null : new Date(v).toISOString()));

export const adminKeyBody = z.object({
  label: text100.optional(), daily_limit: limit.optional(), daily_token_limit: limit.optional(), expires_at: expiresAt.optional(),
  email: email.optional(), name: text100.optional(),
});

export const adminKeyPatch = z.object({
  label: text100.optional(), daily_limit: limit.optional(), daily_token_limit: limit.optional(), expires_at: expiresAt.optional(),
  status: z.enum(['active', 'suspended'], { message: 'must be "active" or "suspended"' }).optional(),
});

/**
 * A form's fields as the JSON API takes them: digits become numbers, an empty field is left out
 * (or, for `expires_at` when `clearable`, means "none"), and a datetime-local value is read in the
 * portal's time zone offset given.
 */
export function formToJson(body: Record<string, unknown> | undefined, o: { numbers: string[]; clearable?: string[]; zone?: Zone }): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body ?? {})) {
    if (k === '_csrf') continue;
    if (v === '') { if (o.clearable?.includes(k)) out[k] = null; continue; }
    if (o.numbers.includes(k) && typeof v === 'string' && /^\d+$/.test(v)) out[k] = Number(v);
    else if (k === 'expires_at' && typeof v === 'string' && o.zone && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/.test(v)) {
      const at = o.zone.parseWallClock(v);
      if (at === null) throw badRequest('invalid_field', `expires_at ${v} does not exist in ${o.zone.name} (a daylight-saving change skips it).`);
      out[k] = new Date(at).toISOString();
    } else out[k] = v;
  }
  return out;
}

/** A period asked for in a query: `days=N` (ending today), or `from`/`to` days; `model`; `granularity=hour`. */
export function parseRange(query: Record<string, unknown>, zone: Zone, now: number, defaultDays = 30): Range {
  const one = (name: string): string | undefined => {
    const v = query[name];
    if (v === undefined || v === '') return undefined;
    if (typeof v !== 'string') throw badRequest('invalid_field', `${name} must be given once.`);
    return v.trim();
  };
  const today = zone.day(now);
  const from = one('from');
  const to = one('to');
  const days = one('days');
  let range: Range;
  if (from !== undefined || to !== undefined) {
    for (const [name, v] of [['from', from], ['to', to]] as const) {
      if (v !== undefined && !Zone.isDay(v)) throw badRequest('invalid_field', `${name} must be a day such as 2026-11-01.`);
    }
    range = { from: from ?? zone.addDays(to ?? today, -(defaultDays - 1)), to: to ?? today };
    if (range.from > range.to) throw badRequest('invalid_field', 'from must not be after to.');
    if (zone.daysBetween(range.from, range.to).length > 400) throw badRequest('invalid_field', 'A range may span at most 400 days.');
  } else {
    if (days !== undefined && (!/^\d{1,3}$/.test(days) || Number(days) < 1 || Number(days) > 400)) {
      throw badRequest('invalid_field', 'days must be a whole number from 1 to 400.');
    }
    range = { from: zone.addDays(today, -((days ? Number(days) : defaultDays) - 1)), to: today };
  }
  const model = one('model');
  if (model !== undefined) {
    if (model.length > 200 || CONTROL.test(model)) throw badRequest('invalid_field', 'model must be a model name.');
    range.model = model;
  }
  const granularity = one('granularity');
  if (granularity !== undefined && granularity !== 'day' && granularity !== 'hour') throw badRequest('invalid_field', 'granularity must be day or hour.');
  if (granularity === 'hour') {
    if (zone.daysBetween(range.from, range.to).length > 31) throw badRequest('invalid_field', 'Hourly figures cover at most 31 days.');
    range.hourly = true;
  }
  return range;
}

/** An instant from a query: an ISO date-time with a zone, or a day (its first instant in TIMEZONE; `end` = the next day's). */
export function parseInstant(value: unknown, name: string, zone: Zone, end = false): number | undefined {
  if (value === undefined || value === '') return undefined;
  if (typeof value !== 'string') throw badRequest('invalid_field', `${name} must be given once.`);
  const v = value.trim();
  if (Zone.isDay(v)) return end ? zone.nextDayStart(zone.startOfDay(v)) : zone.startOfDay(v);
  if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(v) && Number.isFinite(Date.parse(v))) return Date.parse(v);
  throw badRequest('invalid_field', `${name} must be a day (2026-11-01) or a date-time with a zone (2026-11-01T08:00:00+08:00).`);
}
