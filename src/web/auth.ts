import type { Request } from 'express';
import { unauthorized, forbidden } from '../errors.js';
import { keyIdOf, safeEqual } from '../keys/format.js';
import type { Actor } from '../keys/service.js';
import type { KeysStore } from '../store/keys-store.js';

export interface AuthDeps {
  store: KeysStore;
  adminToken: string;
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

/**
 * Works out who is calling from `Authorization: Bearer`. No header → anonymous; a header that is
 * neither the admin token nor a key still in use → 401 (a wrong credential is never ignored).
 */
export function actorFromRequest(req: Request, deps: AuthDeps): Actor {
  const token = bearerToken(req);
  if (token === undefined) {
    if (req.get('authorization')) throw unauthorized('The Authorization header must be "Bearer <token>".');
    return { kind: 'anonymous' };
  }
  if (safeEqual(token, deps.adminToken)) return { kind: 'admin' };
  const key = matchKey(deps.store, token);
  const record = key ? deps.store.getKey(key) : undefined;
  if (!key || !record || record.status === 'revoked' || !record.email) throw unauthorized('That key is not valid.');
  return { kind: 'user', email: record.email, key };
}

export function requireAdmin(actor: Actor): void {
  if (actor.kind === 'anonymous') throw unauthorized('The admin token is required.');
  if (actor.kind !== 'admin') throw forbidden('Only an admin may do that.');
}
