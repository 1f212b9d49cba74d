import { createHash, createHmac, randomBytes } from 'node:crypto';
import type { Request, Response } from 'express';
import { safeEqual } from '../../keys/format.js';
import type { SessionData, SessionStore, StoredSession } from '../../store/sessions-store.js';

export const SESSION_COOKIE = 'kp_session';
export const LANG_COOKIE = 'kp_lang';
export const SESSION_TTL_MS = 12 * 3_600_000;

export function parseCookies(header: string | undefined): Record<string, string> {
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
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

type Tagged = Request & { kpSid?: string | null };

/**
 * Browser sessions. Every browser gets a random session id in a signed cookie, the first time a
 * page with a form is shown; signing in creates a new id (the old one is never promoted, so an id
 * planted before sign-in is worthless) and records it in the SessionStore, and signing out deletes
 * it there: a copy of the cookie stops working at that moment. CSRF tokens are an HMAC of the
 * session id, so a token is good for one session only — not for a cookie the client chose.
 */
export class Sessions {
  constructor(private readonly store: SessionStore, private readonly secret: string) {}

  private sign(purpose: string, value: string): string {
    return createHmac('sha256', this.secret).update(`${purpose}:${value}`).digest('base64url');
  }

  /** Admin sessions hold a fingerprint of ADMIN_TOKEN: changing the token ends them. */
  adminFingerprint(adminToken: string): string {
    return createHash('sha256').update(`kp-admin:${adminToken}`).digest('base64url').slice(0, 22);
  }

  /** The session id the request's cookie carries, if its signature holds. */
  private sid(req: Request): string | null {
    const r = req as Tagged;
    if (r.kpSid !== undefined) return r.kpSid;
    const raw = cookies(req)[SESSION_COOKIE];
    const dot = raw ? raw.lastIndexOf('.') : -1;
    const sid = raw && dot > 0 && raw.length <= 200 ? raw.slice(0, dot) : null;
    r.kpSid = sid && safeEqual(raw!.slice(dot + 1), this.sign('sid', sid)) ? sid : null;
    return r.kpSid;
  }

  private setCookie(req: Request, res: Response, sid: string, maxAge?: number): void {
    (req as Tagged).kpSid = sid;
    res.cookie(SESSION_COOKIE, `${sid}.${this.sign('sid', sid)}`, {
      httpOnly: true, sameSite: 'strict', secure: req.secure, path: '/', ...(maxAge ? { maxAge } : {}),
    });
  }

  /** The signed-in session of this request, if any. */
  read(req: Request): StoredSession | null {
    const sid = this.sid(req);
    return (sid && this.store.get(sid)) || null;
  }

  /** Signs the browser in under a fresh session id (on disk before the cookie is set). */
  async signIn(req: Request, res: Response, data: SessionData): Promise<void> {
    const old = this.sid(req);
    const sid = await this.store.create(data, SESSION_TTL_MS);
    if (old) await this.store.end(old).catch(() => undefined);
    this.setCookie(req, res, sid, SESSION_TTL_MS);
  }

  /**
   * Ends the session everywhere (server-side) and gives the browser a fresh, signed-out id. The end
   * holds at once even on a full disk; the StorageError then surfaces (a restart before the disk
   * recovers could bring the session back, and the caller says so).
   */
  async signOut(req: Request, res: Response): Promise<void> {
    const sid = this.sid(req);
    this.setCookie(req, res, randomBytes(24).toString('base64url'));
    if (sid) await this.store.end(sid);
  }

  /** The CSRF token of this browser's session, giving the browser a session id first if it has none. */
  csrfToken(req: Request, res: Response): string {
    let sid = this.sid(req);
    if (!sid) {
      sid = randomBytes(24).toString('base64url');
      this.setCookie(req, res, sid);
    }
    return this.sign('csrf', sid);
  }

  csrfValid(req: Request, presented: unknown): boolean {
    const sid = this.sid(req);
    return typeof presented === 'string' && presented.length <= 100 && !!sid && safeEqual(presented, this.sign('csrf', sid));
  }
}

/**
 * Whether a state-changing browser request came from this site: the browser's own
 * `Sec-Fetch-Site` when it sends one, else the `Origin` against the Host; a request with neither
 * (not a browser, or a very old one) is let through to the CSRF token check.
 */
export function sameOrigin(req: Request): boolean {
  const site = req.get('sec-fetch-site');
  if (site) return site === 'same-origin' || site === 'none';
  const origin = req.get('origin');
  if (!origin) return true;
  if (origin === 'null') return false;
  try { return new URL(origin).host === req.get('host'); } catch { return false; }
}
