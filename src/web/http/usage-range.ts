import type { Request } from 'express';
import { AppError } from '../../errors.js';
import type { Range } from '../../usage/stats.js';
import type { Zone } from '../../time/zone.js';
import { problem } from './render.js';
import { parseRange, queryOne } from './validate.js';

/**
 * The period and filters a usage page was asked for (its range form: from, to, model, key; empty
 * fields mean "any"). A bad value is not an error page: the default period is shown with the
 * problem above it, answered 400.
 */
export function pageRange(req: Request, zone: Zone, now: number): { range: Range; key: string | undefined; status?: number; problem?: string } {
  const query = Object.fromEntries(Object.entries(req.query).filter(([, v]) => v !== ''));
  try {
    return { range: parseRange(query, zone, now), key: queryOne(query, 'key', 20) };
  } catch (err) {
    if (!(err instanceof AppError)) throw err;
    return { range: parseRange({}, zone, now), key: undefined, ...problem(req, err) };
  }
}
