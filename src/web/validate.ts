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
