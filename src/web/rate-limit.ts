import type { RequestHandler } from 'express';
import { rateLimit } from 'express-rate-limit';
import { AppError } from '../errors.js';
import type { RateLimitSetting } from '../config.js';

/** Per-IP limiter that answers with the portal's 429 error (and Retry-After); limit 0 = off. */
export function perIpLimit(setting: RateLimitSetting, what: string): RequestHandler {
  if (setting.limit === 0) return (_req, _res, next) => next();
  return rateLimit({
    windowMs: setting.windowMs,
    limit: setting.limit,
    standardHeaders: 'draft-7',
    legacyHeaders: false,
    handler: (req, _res, next) => {
      const reset = (req as { rateLimit?: { resetTime?: Date } }).rateLimit?.resetTime;
      const retryAfter = Math.max(1, Math.ceil(((reset?.getTime() ?? Date.now() + setting.windowMs) - Date.now()) / 1000));
      next(new AppError(429, 'rate_limited', `Too many ${what} from this address. Try again in ${retryAfter} s.`,
        { 'Retry-After': String(retryAfter) }));
    },
  });
}
