import { z } from 'zod';
import { badRequest } from '../errors.js';

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
export function formToJson(body: Record<string, unknown> | undefined, o: { numbers: string[]; clearable?: string[]; offset?: string }): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body ?? {})) {
    if (k === '_csrf') continue;
    if (v === '') { if (o.clearable?.includes(k)) out[k] = null; continue; }
    if (o.numbers.includes(k) && typeof v === 'string' && /^\d+$/.test(v)) out[k] = Number(v);
    else if (k === 'expires_at' && typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$/.test(v) && o.offset) out[k] = `${v}${o.offset}`;
    else out[k] = v;
  }
  return out;
}
