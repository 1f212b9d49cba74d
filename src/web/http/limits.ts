import type { Request, RequestHandler } from 'express';
import { rateLimit } from 'express-rate-limit';
import type { RateLimitSetting } from '../../config.js';
import { fail } from '../../errors.js';
import { normalizeEmail } from './validate.js';

/** A limiter answering the portal's `429 rate_limited` with Retry-After; a limit of 0 turns it off. */
function limiter(setting: RateLimitSetting, what: { en: string; zh: string }, key?: (req: Request) => string | null): RequestHandler {
  if (setting.limit === 0) return (_req, _res, next) => next();
  return rateLimit({
    windowMs: setting.windowMs,
    limit: setting.limit,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    ...(key ? { keyGenerator: (req: Request) => key(req) ?? '', skip: (req: Request) => key(req) === null } : {}),
    handler: (req, _res, next) => {
      const reset = (req as { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime;
      const seconds = Math.max(1, Math.ceil(((reset?.getTime() ?? Date.now() + setting.windowMs) - Date.now()) / 1000));
      next(fail('rate_limited', { what: what.en, what_zh: what.zh, seconds }, { 'Retry-After': String(seconds) }));
    },
  });
}

/** The email an anonymous registration names, in its normal form (unreadable ones are left to validation; a caller with a key or the admin token is not limited per email). */
function registeringEmail(req: Request): string | null {
  if (req.get('authorization') !== undefined) return null;
  const raw = (req.body as Record<string, unknown> | undefined)?.email;
  if (typeof raw !== 'string') return null;
  const n = normalizeEmail(raw);
  return 'email' in n ? `email:${n.email}` : null;
}

/**
 * Registrations are limited per address (REGISTER_RATE_LIMIT, default 100 per 10 minutes: a team of
 * 50 behind one NAT or proxy registers in a minute) and per email (REGISTER_EMAIL_RATE_LIMIT,
 * default 5 per hour). Both limiters are shared by the API and the form.
 */
export function registrationLimits(o: { perAddress: RateLimitSetting; perEmail: RateLimitSetting }): RequestHandler[] {
  return [
    limiter(o.perAddress, { en: 'registrations from this address', zh: '此地址的注册' }),
    limiter(o.perEmail, { en: 'registrations for this email', zh: '该邮箱的注册' }, registeringEmail),
  ];
}
