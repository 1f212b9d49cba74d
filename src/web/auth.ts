import type { Request } from 'express';
import { AppError, forbidden, unauthorized } from '../errors.js';
import { keyIdOf, safeEqual } from '../keys/format.js';
import type { Actor } from '../keys/service.js';
import type { KeysStore } from '../store/keys-store.js';
import type { Sessions } from './session.js';

export interface AuthDeps {
  store: KeysStore;
  adminToken: string;
  sessions: Sessions;
}

export function bearerToken(req: Request): string | undefined {
  const h = req.get('authorization');
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h);
  return m ? m[1] : undefined;
}

/**
 * The key a presented secret names, compared in constant time: the public key id finds the
 * candidate, and only the full comparison decides.
 */
export function matchKey(store: KeysStore, presented: string): string | undefined {
  const candidate = store.keyById(keyIdOf(store.prefix, presented));
  return candidate !== undefined && safeEqual(candidate, presented) ? candidate : undefined;
}

/** A key that may sign its holder in: known, not revoked, and owned by someone. */
export function usableKey(store: KeysStore, key: string | undefined): { key: string; email: string } | undefined {
  const record = key ? store.getKey(key) : undefined;
  return key && record && record.status !== 'revoked' && record.email ? { key, email: record.email } : undefined;
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * Works out who is calling. `Authorization: Bearer` wins: the admin token or an active key; a
 * bearer that is neither is a 401 (a wrong credential is never ignored). Without one, a browser
 * session counts, and a state-changing request on a session must carry the CSRF token.
 */
export function actorFromRequest(req: Request, deps: AuthDeps): Actor {
  const token = bearerToken(req);
  if (token !== undefined) {
    if (safeEqual(token, deps.adminToken)) return { kind: 'admin' };
    const user = usableKey(deps.store, matchKey(deps.store, token));
    if (!user) throw unauthorized('That key is not valid.');
    return { kind: 'user', ...user };
  }
  if (req.get('authorization')) throw unauthorized('The Authorization header must be "Bearer <token>".');
  const actor = sessionActor(req, deps);
  if (actor.kind !== 'anonymous' && !SAFE_METHODS.has(req.method)) requireCsrf(req, deps.sessions);
  return actor;
}

export function sessionActor(req: Request, deps: AuthDeps): Actor {
  const s = deps.sessions.read(req);
  if (!s) return { kind: 'anonymous' };
  if (s.kind === 'admin') {
    return safeEqual(s.token_fp, deps.sessions.adminFingerprint(deps.adminToken)) ? { kind: 'admin' } : { kind: 'anonymous' };
  }
  const user = usableKey(deps.store, deps.store.keyById(s.key_id));
  return user && user.email === s.email ? { kind: 'user', ...user } : { kind: 'anonymous' };
}

export function requireCsrf(req: Request, sessions: Sessions): void {
  const presented = (req.body as Record<string, unknown> | undefined)?._csrf ?? req.get('x-csrf-token');
  if (!sessions.csrfValid(req, presented)) {
    throw new AppError(403, 'csrf_failed', 'This form has expired or did not come from this site. Reload the page and try again.');
  }
}

export function requireAdmin(actor: Actor): void {
  if (actor.kind === 'anonymous') throw unauthorized('The admin token is required.');
  if (actor.kind !== 'admin') throw forbidden('Only an admin may do that.');
}

export function requireUserOrAdmin(actor: Actor): void {
  if (actor.kind === 'anonymous') throw unauthorized('Sign in with one of your keys.');
}
