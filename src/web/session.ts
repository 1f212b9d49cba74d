import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { Request, Response } from 'express';
import { safeEqual } from '../keys/format.js';

/**
 * Browser sessions are signed cookies (HMAC-SHA256 with SESSION_SECRET), so nothing is stored per
 * session. A user session names the key id it signed in with and ends when that key stops being
 * usable; an admin session is bound to a fingerprint of ADMIN_TOKEN and ends when the token changes.
 */
export type SessionData = { kind: 'user'; key_id: string; email: string } | { kind: 'admin'; token_fp: string };
export type Session = SessionData & { exp: number };

export const SESSION_COOKIE = 'kp_session';
export const CSRF_COOKIE = 'kp_csrf';
export const LANG_COOKIE = 'kp_lang';
export const SESSION_TTL_MS = 12 * 3_600_000;

export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!header) return out;
  for (const part of header.split(';')) {
    const i = part.indexOf('=');
    if (i < 0) continue;
    const name = part.slice(0, i).trim();
    try { out[name] = decodeURIComponent(part.slice(i + 1).trim()); } catch { /* ignore a malformed cookie */ }
  }
  return out;
}

export function cookies(req: Request): Record<string, string> {
  const r = req as Request & { kpCookies?: Record<string, string> };
  return (r.kpCookies ??= parseCookies(req.headers.cookie));
}

export class Sessions {
  constructor(private readonly secret: string, private readonly now: () => number) {}

  private sign(payload: string): string {
    return createHmac('sha256', this.secret).update(payload).digest('base64url');
  }

  adminFingerprint(adminToken: string): string {
    return createHash('sha256').update(`kp-admin:${adminToken}`).digest('base64url').slice(0, 22);
  }

  issue(res: Response, req: Request, session: SessionData): void {
    const full: Session = { ...session, exp: this.now() + SESSION_TTL_MS };
    const payload = Buffer.from(JSON.stringify(full)).toString('base64url');
    res.cookie(SESSION_COOKIE, `${payload}.${this.sign(payload)}`, {
      httpOnly: true, sameSite: 'strict', secure: req.secure, path: '/', maxAge: SESSION_TTL_MS,
    });
  }

  clear(res: Response): void {
    res.clearCookie(SESSION_COOKIE, { path: '/' });
  }

  /** The session a request carries, if its signature holds and it has not expired. */
  read(req: Request): Session | null {
    const raw = cookies(req)[SESSION_COOKIE];
    if (!raw) return null;
    const dot = raw.lastIndexOf('.');
    if (dot < 1) return null;
    const payload = raw.slice(0, dot);
    if (!safeEqual(raw.slice(dot + 1), this.sign(payload))) return null;
    try {
      const s = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Session;
      return typeof s.exp === 'number' && s.exp > this.now() ? s : null;
    } catch {
      return null;
    }
  }

  /**
   * CSRF: a random per-browser cookie, and forms carry an HMAC of it. A cross-site page can make the
   * browser send the cookie (not with SameSite=Strict, but defence in depth) yet cannot read it to
   * compute the field.
   */
  csrfToken(req: Request, res: Response): string {
    let seed = cookies(req)[CSRF_COOKIE];
    if (!seed || !/^[A-Za-z0-9_-]{32,64}$/.test(seed)) {
      seed = randomBytes(24).toString('base64url');
      cookies(req)[CSRF_COOKIE] = seed;
      res.cookie(CSRF_COOKIE, seed, { httpOnly: true, sameSite: 'strict', secure: req.secure, path: '/' });
    }
    return this.sign(`csrf:${seed}`);
  }

  csrfValid(req: Request, presented: unknown): boolean {
    const seed = cookies(req)[CSRF_COOKIE];
    return typeof presented === 'string' && !!seed && safeEqual(presented, this.sign(`csrf:${seed}`));
  }
}
