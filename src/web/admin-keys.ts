import { Router, type NextFunction, type Request, type Response } from 'express';
import { AppError, badRequest, forbidden, notFound } from '../errors.js';
import { keyIdOf } from '../keys/format.js';
import type { Actor } from '../keys/service.js';
import type { AuditEntry } from '../store/audit.js';
import { actorFromRequest, matchKey, requireAdmin, requireCsrf, sessionActor } from './auth.js';
import type { WebDeps } from './deps.js';
import { errorMessage, pickLocale, translator } from './i18n.js';
import { pageHref, queryInt } from './paging.js';
import { renderPage } from './render.js';
import { wantsPage } from './error-handler.js';
import { adminKeyBody, adminKeyPatch, formToJson, keyRef, parseBody } from './validate.js';

const STATUSES = new Set(['pending', 'active', 'suspended', 'revoked']);
const KEYS_PER_PAGE = 50;
const DONE = new Set(['update', 'suspend', 'resume', 'reset', 'revoke']);
type Done = 'update' | 'suspend' | 'resume' | 'reset' | 'revoke';
const AUDIT_PER_PAGE = 50;

/**
 * The trial-key admin API (Bearer ADMIN_TOKEN, JSON) and the admin pages on the same paths: a
 * script gets JSON; a browser (admin session) gets the page, and its forms post to POST /admin/keys and POST /admin/keys/:id with a CSRF token.
 */
export function adminKeysRouter(deps: WebDeps): Router {
  const r = Router();
  const { keys, quota, stats, store, audit, zone, clock } = deps;
  const t = (req: Request) => translator(pickLocale(req));
  /** Scripts (a bearer, or not asking for HTML) get JSON and a 401 without the token; browsers get pages. */
  const isApi = (req: Request) => !wantsPage(req) || req.method === 'PATCH' || req.method === 'DELETE';

  /** The admin behind an API call, or (for pages) behind the session; a page visitor is sent to sign in. */
  const admin = (req: Request, res: Response): Actor | null => {
    if (isApi(req)) {
      const actor = actorFromRequest(req, deps);
      requireAdmin(actor);
      return actor;
    }
    const actor = sessionActor(req, deps);
    if (actor.kind === 'user') throw forbidden('Only an admin may see this page.');
    if (actor.kind !== 'admin') { res.redirect(303, '/admin'); return null; }
    if (req.method !== 'GET') requireCsrf(req, deps.sessions);
    return actor;
  };

  /** `:id` is a key id, or a full key (compared in constant time). Unused pool keys are not "keys" here. */
  const resolve = (id: string): string => {
    const key = id.includes('_') ? matchKey(store, id) : store.keyById(id);
    const record = key ? store.getKey(key) : undefined;
    if (!key || !record) throw notFound('No such key.');
    return key;
  };

  /** An expiry, when given, must lie ahead. */
  const futureOnly = (expiresAt: string | null | undefined) => {
    if (expiresAt && Date.parse(expiresAt) <= clock.now()) throw badRequest('invalid_field', 'expires_at must be in the future.');
  };

  /** The page of one key (its forms; the revoke confirmation when asked). */
  const keyPage = (req: Request, res: Response, key: string, extra: { confirmRevoke: boolean } & Record<string, unknown>) => {
    const view = stats.keyView(key);
    renderPage(deps, req, res, 'admin-key', {
      title: `${t(req)('admin.keys.key')} ${view.key_id}`, area: 'admin', nav: 'keys', k: view,
      expiresLocal: view.expires_at ? zone.wallClock(Date.parse(view.expires_at)) : '', ...extra,
    });
  };

  const listQuery = (req: Request) => {
    const status = typeof req.query.status === 'string' && STATUSES.has(req.query.status) ? req.query.status : '';
    const q = typeof req.query.q === 'string' ? req.query.q.trim().slice(0, 100) : '';
    return { status, q };
  };

  const createdView = (issued: { key: string; key_id: string }) => {
    const v = stats.keyView(issued.key);
    return { key: issued.key, key_id: issued.key_id, label: v.label, daily_limit: v.daily_limit, daily_token_limit: v.daily_token_limit,
      expires_at: v.expires_at, created_at: v.created_at, email: v.email, status: v.status };
  };

  const create = async (raw: unknown, actor: Actor) => {
    const body = parseBody(adminKeyBody, raw);
    futureOnly(body.expires_at);
    const issued = await keys.issue({
      email: body.email ?? null, name: body.name, label: body.label ?? '', issuedBy: 'admin',
      dailyLimit: body.daily_limit ?? 0, dailyTokenLimit: body.daily_token_limit ?? 0,
      extra: body.expires_at ? { expires_at: body.expires_at } : undefined,
    }, actor);
    stats.invalidate();
    return issued;
  };

  const keysPage = (req: Request, res: Response, extra: Record<string, unknown> = {}) => {
    const { status, q } = listQuery(req);
    // Views are built for the page shown only (a view reads usage.db; there may be 30k keys).
    const first = stats.adminKeys({ status: status || undefined, q: q || undefined, offset: 0, limit: 0 });
    const pages = Math.max(1, Math.ceil(first.total / KEYS_PER_PAGE));
    const page = queryInt(req.query.page, 1, pages);
    const rows = stats.adminKeys({ status: status || undefined, q: q || undefined, offset: (page - 1) * KEYS_PER_PAGE, limit: KEYS_PER_PAGE }).keys;
    const pager = { page, pages, total: first.total, href: (n: number) => pageHref('/admin/keys', { status, q }, n) };
    renderPage(deps, req, res, 'admin-keys', {
      title: t(req)('admin.keys.title'), area: 'admin', nav: 'keys', rows, pager, filter: { status, q }, statuses: [...STATUSES], ...extra,
    });
  };

  r.get('/admin/keys', (req, res) => {
    if (!admin(req, res)) return;
    if (!isApi(req)) return keysPage(req, res);
    const { status, q } = listQuery(req);
    if (typeof req.query.status === 'string' && !status) throw badRequest('invalid_query', 'status must be pending, active, suspended or revoked.');
    const perPage = queryInt(req.query.per_page, KEYS_PER_PAGE, 500);
    const page = queryInt(req.query.page, 1);
    const email = typeof req.query.email === 'string' ? req.query.email.trim().toLowerCase() : undefined;
    const { keys: list, total } = stats.adminKeys({ status: status || undefined, q: q || undefined, email, offset: (page - 1) * perPage, limit: perPage });
    res.json({ keys: list, total, page, per_page: perPage, pages: Math.max(1, Math.ceil(total / perPage)) });
  });

  r.post('/admin/keys', async (req, res) => {
    const actor = admin(req, res);
    if (!actor) return;
    if (isApi(req)) return res.status(201).json(createdView(await create(req.body, actor)));
    try {
      const issued = await create(formToJson(req.body, { numbers: ['daily_limit', 'daily_token_limit'], zone }), actor);
      renderPage(deps, req, res, 'admin-key-created', { title: t(req)('admin.keys.created'), area: 'admin', nav: 'keys', created: createdView(issued) });
    } catch (err) {
      if (!(err instanceof AppError) || err.status >= 500) throw err;
      keysPage(req, res, { status: err.status, problem: errorMessage(pickLocale(req), err.code, err.message), form: req.body });
    }
  });

  r.get('/admin/keys/:id', (req, res) => {
    if (!admin(req, res)) return;
    const key = resolve(String(req.params.id));
    if (isApi(req)) return res.json(stats.keyView(key));
    keyPage(req, res, key, {
      confirmRevoke: req.query.confirm === 'revoke',
      notice: typeof req.query.done === 'string' && DONE.has(req.query.done) ? t(req)(`admin.keys.done.${req.query.done as Done}`) : null,
    });
  });

  r.patch('/admin/keys/:id', async (req, res) => {
    const actor = admin(req, res);
    if (!actor) return;
    const key = resolve(String(req.params.id));
    const changes = parseBody(adminKeyPatch, req.body);
    futureOnly(changes.expires_at);
    await quota.update(key, changes, actor);
    stats.invalidate();
    res.json(stats.keyView(key));
  });

  r.delete('/admin/keys/:id', async (req, res) => {
    const actor = admin(req, res);
    if (!actor) return;
    const key = resolve(String(req.params.id));
    const result = await keys.revoke({ key }, actor);
    stats.invalidate();
    res.json({ revoked: true, key_id: result.key_id });
  });

  /** The forms of the key page: change, suspend, resume, reset, revoke (after its confirmation). */
  r.post('/admin/keys/:id', async (req, res, next: NextFunction) => {
    if (isApi(req)) return next(new AppError(405, 'method_not_allowed', 'Use PATCH or DELETE on /admin/keys/:id.'));
    const actor = admin(req, res);
    if (!actor) return;
    const key = resolve(String(req.params.id));
    const id = keyIdOf(store.prefix, key);
    const action = String(req.body?.action ?? '');
    try {
      if (action === 'update') {
        const raw = formToJson(req.body, { numbers: ['daily_limit', 'daily_token_limit'], clearable: ['expires_at'], zone });
        delete raw.action;
        const changes = parseBody(adminKeyPatch, raw);
        futureOnly(changes.expires_at);
        await quota.update(key, changes, actor);
      } else if (action === 'suspend' || action === 'resume') {
        await quota.update(key, { status: action === 'suspend' ? 'suspended' : 'active' }, actor);
      } else if (action === 'reset') {
        await quota.reset(key, actor);
      } else if (action === 'revoke') {
        if (req.body?.confirm !== 'yes') throw badRequest('confirmation_required', 'Tick the box to confirm the revocation.');
        await keys.revoke({ key }, actor);
      } else {
        throw badRequest('invalid_field', 'action must be update, suspend, resume, reset or revoke.');
      }
    } catch (err) {
      if (!(err instanceof AppError) || err.status >= 500) throw err;
      return keyPage(req, res, key, { confirmRevoke: action === 'revoke', status: err.status, problem: errorMessage(pickLocale(req), err.code, err.message) });
    }
    stats.invalidate();
    res.redirect(303, `/admin/keys/${id}?done=${action}`);
  });

  r.get('/admin/usage', (req, res) => {
    if (!admin(req, res)) return;
    const today = stats.todayUsage();
    if (isApi(req)) return res.json(today);
    renderPage(deps, req, res, 'admin-usage', { title: t(req)('admin.usage.title'), area: 'admin', nav: 'usage', today });
  });

  r.post('/admin/reset-usage', async (req, res) => {
    const actor = admin(req, res);
    if (!actor) return;
    const ref = parseBody(keyRef, isApi(req) ? req.body : formToJson(req.body, { numbers: [] }));
    const key = resolve(ref.key ?? ref.key_id!);
    await quota.reset(key, actor);
    stats.invalidate();
    if (!isApi(req)) return res.redirect(303, `/admin/keys/${keyIdOf(store.prefix, key)}?done=reset`);
    res.json({ reset: true, ...stats.keyUsage(key) });
  });

  r.get('/admin/audit', async (req, res) => {
    if (!admin(req, res)) return;
    const perPage = isApi(req) ? queryInt(req.query.per_page, AUDIT_PER_PAGE, 500) : AUDIT_PER_PAGE;
    const page = queryInt(req.query.page, 1);
    const action = typeof req.query.action === 'string' ? req.query.action.trim().slice(0, 60) : '';
    const keyId = typeof req.query.key_id === 'string' ? req.query.key_id.trim().slice(0, 20) : '';
    const match = action || keyId ? (e: AuditEntry) => (!action || e.action === action) && (!keyId || e.key_id === keyId) : undefined;
    const { entries, more } = await audit.page({ offset: (page - 1) * perPage, limit: perPage, match });
    if (isApi(req)) return res.json({ entries, page, per_page: perPage, more });
    const href = (n: number) => pageHref('/admin/audit', { action, key_id: keyId }, n);
    renderPage(deps, req, res, 'admin-audit', {
      title: t(req)('admin.audit.title'), area: 'admin', nav: 'audit', entries, filter: { action, key_id: keyId },
      pager: { page, pages: more ? page + 1 : page, total: null, href },
    });
  });

  return r;
}
