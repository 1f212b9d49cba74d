import type { Request } from 'express';
import type { Actor } from '../../audit.js';
import { AppError, BEARER, fail } from '../../errors.js';
import { safeEqual } from '../../keys/format.js';
import type { KeyService } from '../../keys/service.js';
import type { KeyRecord } from '../../store/keys-store.js';
import type { FailureGuard, Via } from '../../failure-guard.js';
import { sameOrigin, type Sessions } from './session.js';

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export interface AuthDeps {
  keys: KeyService;
  adminToken: string;
  metricsToken?: string;
  sessions: Sessions;
  guard: FailureGuard;
}

type Credential = { kind: 'admin' } | { kind: 'key'; key: string; record: KeyRecord };

/**
 * Who is calling, from the credentials a request carries. Every secret presented anywhere goes
 * through `credential()`: compared in constant time, refused unchecked from a locked-out address,
 * and counted (and audited) when wrong.
 */
export class Auth {
  constructor(private readonly d: AuthDeps) {}

  get sessions(): Sessions { return this.d.sessions; }

  /** The Bearer token, or undefined without an Authorization header; another form of the header is a 401. */
  private bearer(req: Request): string | undefined {
    const h = req.get('authorization');
    if (h === undefined) return undefined;
    const m = /^Bearer[ \t]+(\S{1,512})[ \t]*$/i.exec(h);
    if (!m) throw fail('authorization_malformed', {}, BEARER);
    return m[1];
  }

  private credential(req: Request, secret: string, via: Via): Credential | null {
    this.d.guard.check(req.ip ?? '');
    if (safeEqual(secret, this.d.adminToken)) return { kind: 'admin' };
    const found = this.d.keys.match(secret);
    if (found && found.record.status !== 'revoked') return { kind: 'key', ...found };
    this.d.guard.failed(req.ip ?? '', via, this.d.keys.claimedId(secret));
    return null;
  }

  /**
   * The caller of an API route or page: `Authorization: Bearer` (the admin token, or a key that is
   * not revoked) wins, and a wrong one is a 401, never ignored; else the browser session, whose
   * state-changing requests must come from this site and carry the session's CSRF token.
   */
  actor(req: Request): Actor {
    const token = this.bearer(req);
    if (token !== undefined) {
      const c = this.credential(req, token, 'bearer');
      if (!c) throw fail('unauthorized', {}, BEARER);
      if (c.kind === 'admin') return { kind: 'admin' };
      return c.record.email ? { kind: 'user', email: c.record.email, key: c.key } : { kind: 'holder', key: c.key };
    }
    const actor = this.sessionActor(req);
    if (actor.kind !== 'anonymous' && !SAFE_METHODS.has(req.method)) this.requireCsrf(req);
    return actor;
  }

  /** Who the browser session is (anonymous without one, or when its key or the admin token changed). */
  sessionActor(req: Request): Actor {
    const s = this.d.sessions.read(req);
    if (!s) return { kind: 'anonymous' };
    if (s.kind === 'admin') {
      return safeEqual(s.token_fp, this.d.sessions.adminFingerprint(this.d.adminToken)) ? { kind: 'admin' } : { kind: 'anonymous' };
    }
    const found = this.d.keys.byId(s.key_id);
    if (!found || found.record.status === 'revoked') return { kind: 'anonymous' };
    if (s.kind === 'holder') return found.record.email ? { kind: 'anonymous' } : { kind: 'holder', key: found.key };
    return found.record.email === s.email ? { kind: 'user', email: s.email, key: found.key } : { kind: 'anonymous' };
  }

  /** A form (or a session's API call) that changes something: from this site, with this session's token. */
  requireCsrf(req: Request): void {
    const presented = (req.body as Record<string, unknown> | undefined)?._csrf ?? req.get('x-csrf-token');
    if (!sameOrigin(req) || !this.d.sessions.csrfValid(req, presented)) throw fail('csrf_failed');
  }

  /** GET /usage: the key presented as Bearer — any issued key that is not revoked, trial keys too. */
  keyHolder(req: Request): { key: string; record: KeyRecord } {
    const token = this.bearer(req);
    if (token === undefined) throw fail('key_required', {}, BEARER);
    const c = this.credential(req, token, 'usage');
    if (!c) throw fail('key_invalid', {}, BEARER);
    if (c.kind === 'admin') throw fail('key_required', {}, BEARER);
    return c;
  }

  /** Refuses an address locked out for wrong credentials (sign-in forms say so before anything else). */
  checkAddress(req: Request): void { this.d.guard.check(req.ip ?? ''); }

  /** The /my-keys sign-in form: a key that is not revoked (a trial key signs in as itself, with no email). */
  signInKey(req: Request, presented: string): { key: string; record: KeyRecord; email: string | null } {
    const c = presented ? this.credential(req, presented, 'sign_in') : null;
    if (!c || c.kind === 'admin') throw fail('key_invalid');
    return { ...c, email: c.record.email };
  }

  /** The /admin sign-in form. */
  signInAdmin(req: Request, token: string): void {
    this.d.guard.check(req.ip ?? '');
    if (token && safeEqual(token, this.d.adminToken)) return;
    this.d.guard.failed(req.ip ?? '', 'admin_sign_in', undefined);
    throw fail('admin_token_invalid');
  }

  /** A registration's claim code, a secret like a key: refused unchecked when locked out, counted when wrong. */
  async claim<T>(req: Request, code: string, look: (code: string) => Promise<T>): Promise<T> {
    this.d.guard.check(req.ip ?? '');
    try {
      return await look(code);
    } catch (err) {
      if (err instanceof AppError && err.code === 'claim_not_found') this.d.guard.failed(req.ip ?? '', 'claim', undefined);
      throw err;
    }
  }

  /** /healthz details: the admin (token or session) or METRICS_TOKEN. A wrong token counts as a failure. */
  privileged(req: Request): boolean {
    let token: string | undefined;
    try { token = this.bearer(req); } catch { return false; }
    if (token === undefined) return this.sessionActor(req).kind === 'admin';
    this.d.guard.check(req.ip ?? '');
    if (safeEqual(token, this.d.adminToken) || (this.d.metricsToken !== undefined && safeEqual(token, this.d.metricsToken))) return true;
    const key = this.d.keys.match(token);
    if (!key || key.record.status === 'revoked') this.d.guard.failed(req.ip ?? '', 'healthz', this.d.keys.claimedId(token));
    return false;
  }
}

export function requireAdmin(actor: Actor): void {
  if (actor.kind === 'anonymous') throw fail('admin_token_required', {}, BEARER);
  if (actor.kind !== 'admin') throw fail('admin_only');
}

/** A key holder signed in (or by Bearer key) or the admin; a trial key has no one to be. */
export function requireSignedIn(actor: Actor): asserts actor is Extract<Actor, { kind: 'user' | 'admin' }> {
  if (actor.kind === 'anonymous') throw fail('sign_in_required', {}, BEARER);
  if (actor.kind === 'holder') throw fail('trial_key');
  if (actor.kind !== 'user' && actor.kind !== 'admin') throw fail('forbidden');
}
