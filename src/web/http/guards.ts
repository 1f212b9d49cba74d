import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Actor } from '../../audit.js';
import { fail } from '../../errors.js';
import { requireAdmin } from './auth.js';
import type { WebDeps } from './deps.js';

/** The caller a guard found, for the handlers after it. */
export function actorOf(res: Response): Actor {
  return (res.locals.actor as Actor | undefined) ?? { kind: 'anonymous' };
}

/** JSON admin routes: the admin token as Bearer (or an admin session, with CSRF on changes). */
export function adminApi(deps: WebDeps): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const actor = deps.auth.actor(req);
    requireAdmin(actor);
    res.locals.actor = actor;
    next();
  };
}

/**
 * Admin pages: an admin session; a visitor is sent to the sign-in page, a key holder refused.
 * Forms that change something must come from this site with the session's CSRF token.
 */
export function adminPage(deps: WebDeps): RequestHandler {
  return (req: Request, res: Response, next: NextFunction) => {
    const actor = deps.auth.sessionActor(req);
    if (actor.kind === 'user' || actor.kind === 'holder') return next(fail('admin_only'));
    if (actor.kind !== 'admin') return res.redirect(303, '/admin');
    if (req.method !== 'GET' && req.method !== 'HEAD') deps.auth.requireCsrf(req);
    res.locals.actor = actor;
    next();
  };
}
