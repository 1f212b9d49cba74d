import { paginate } from './paging.js';
import { Router, type NextFunction, type Request, type Response } from 'express';
import { forbidden } from '../errors.js';
import { safeEqual } from '../keys/format.js';
import { requireCsrf, sessionActor } from './auth.js';
import type { WebDeps } from './deps.js';
import { pickLocale, translator } from './i18n.js';
import { localError, renderPage } from './render.js';

/** The admin's pages (session from the /admin sign-in form). The JSON admin API lives in admin-api.ts. */
/** Rows of the leaderboard per page: a page renders in a few milliseconds even with 10k people. */
const USERS_PER_PAGE = 100;

export function adminPagesRouter(deps: WebDeps): Router {
  const r = Router();
  const { sessions, stats, store, audit, config } = deps;
  const t = (req: Request) => translator(pickLocale(req));

  /** Pages below need an admin session: a visitor is sent to sign in, a key holder is refused. */
  const adminOnly = (req: Request, res: Response, next: NextFunction) => {
    const actor = sessionActor(req, deps);
    if (actor.kind === 'admin') return next();
    if (actor.kind === 'user') return next(forbidden('Only an admin may see this page.'));
    res.redirect(303, '/admin');
  };

  const signInPage = (req: Request, res: Response, extra: Record<string, unknown> = {}) =>
    renderPage(deps, req, res, 'signin', {
      title: t(req)('admin.signin.title'), area: 'admin', heading: t(req)('admin.signin.title'), action: '/admin/sign-in',
      fieldLabel: t(req)('admin.token'), fieldName: 'token', submit: t(req)('admin.signin.submit'), ...extra,
    });

  r.get('/admin', (req, res) => {
    if (sessionActor(req, deps).kind === 'admin') return res.redirect(303, '/admin/users');
    signInPage(req, res);
  });

  r.post('/admin/sign-in', deps.limits.signIn, async (req, res) => {
    try {
      requireCsrf(req, sessions);
    } catch (err) {
      return signInPage(req, res, { status: 403, problem: localError(req, 'csrf_failed', (err as Error).message) });
    }
    const token = typeof req.body?.token === 'string' ? req.body.token.trim() : '';
    if (!safeEqual(token, deps.adminToken)) {
      await audit.record('anonymous', 'admin.sign_in_failed', undefined, { ip: req.ip }).catch(() => undefined);
      deps.log.warn({ module: 'auth', ip: req.ip }, 'failed admin sign-in');
      return signInPage(req, res, { status: 401, problem: localError(req, 'unauthorized', 'That admin token is not valid.') });
    }
    sessions.issue(res, req, { kind: 'admin', token_fp: sessions.adminFingerprint(deps.adminToken) });
    await audit.record('admin', 'admin.sign_in', undefined, { ip: req.ip }).catch(() => undefined);
    res.redirect(303, '/admin/users');
  });

  r.post('/admin/sign-out', (req, res) => {
    requireCsrf(req, sessions);
    sessions.clear(res);
    res.redirect(303, '/admin');
  });

  r.get('/admin/users', adminOnly, (req, res) => {
    const s = deps.cliproxy.status();
    const cliproxyLine = s.error ?? (s.reachable ? t(req)('admin.cliproxy.ok', { version: s.version ?? '?' }) : t(req)('admin.cliproxy.unknown'));
    const u = deps.usage.status();
    const usageLine = u.source
      ? t(req)('admin.usage.line', { source: u.source, last: u.last_usage_at ? deps.zone.format(Date.parse(u.last_usage_at)) : t(req)('never'),
        ago: u.last_usage_at ? Math.max(0, Math.round((deps.clock.now() - Date.parse(u.last_usage_at)) / 1000)) : '–' })
      : t(req)('admin.cliproxy.unknown');
    const all = stats.allUsers();
    const q = typeof req.query.q === 'string' ? req.query.q.trim().toLowerCase().slice(0, 100) : '';
    const ranked = all.users.map((u, i) => ({ u, rank: i + 1 }));
    const matching = q ? ranked.filter(({ u }) => u.email.includes(q) || u.name.toLowerCase().includes(q)) : ranked;
    const { rows, pager } = paginate(matching, req.query.page, USERS_PER_PAGE, '/admin/users', { q });
    renderPage(deps, req, res, 'admin-users', {
      title: t(req)('admin.users.title'), area: 'admin', nav: 'users', all, board: { q, rows, pager }, unmanaged: stats.unmanaged(), cliproxyLine, usageLine,
    });
  });

  r.get('/admin/users/:email', adminOnly, async (req, res, next) => {
    const email = String(req.params.email).toLowerCase();
    if (!store.getUser(email)) return next();
    renderPage(deps, req, res, 'admin-user', { title: email, area: 'admin', nav: 'users', stats: stats.userStats(email, stats.lastDays(30)) });
  });

  r.get('/admin/pool', adminOnly, (req, res) => {
    const minted = typeof req.query.minted === 'string' && /^\d+$/.test(req.query.minted) ? req.query.minted : null;
    renderPage(deps, req, res, 'admin-pool', {
      title: t(req)('admin.pool.title'), area: 'admin', nav: 'pool', pool: store.poolStatus(),
      preload: config.PRELOAD_POOL || store.preload, notice: minted ? t(req)('admin.pool.done', { n: minted }) : null,
    });
  });

  return r;
}
