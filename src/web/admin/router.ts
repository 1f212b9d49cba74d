import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Router, type Request, type Response } from 'express';
import { AppError } from '../../errors.js';
import type { AuditEntry } from '../../store/audit.js';
import { StorageError } from '../../store/atomic-file.js';
import type { WebDeps } from '../http/deps.js';
import { apiOnly, pagesOnly } from '../http/errors.js';
import { actorOf, adminApi, adminPage } from '../http/guards.js';
import { pickLocale, translator } from '../http/i18n.js';
import { pageHref, pageNumber } from '../http/paging.js';
import { problem, renderPage } from '../http/render.js';
import { formToJson, parseBody, poolBody } from '../http/validate.js';
import { adminKeysRouter } from './keys.js';
import { adminPricesRouter } from './prices.js';

const AUDIT_PER_PAGE = 50;

/** The admin's sign-in, the key pool and the audit log (the keys have their own file). */
export function adminRouter(deps: WebDeps): Router {
  const { keys, auth, sessions, audit } = deps;
  const t = (req: Request) => translator(pickLocale(req));

  // ---- sign-in -------------------------------------------------------------------------------

  const session = Router();

  const signInPage = (req: Request, res: Response, extra: Record<string, unknown> = {}) =>
    renderPage(deps, req, res, 'signin', {
      title: t(req)('admin.signin.title'), area: 'admin', heading: t(req)('admin.signin.title'), action: '/admin/sign-in',
      fieldLabel: t(req)('admin.token'), fieldName: 'token', submit: t(req)('admin.signin.submit'), ...extra,
    });

  session.get('/admin', (req, res) => {
    if (auth.sessionActor(req).kind === 'admin') return res.redirect(303, '/admin/users');
    signInPage(req, res);
  });

  session.post('/admin/sign-in', async (req, res) => {
    try {
      auth.checkAddress(req);
      auth.requireCsrf(req);
      auth.signInAdmin(req, typeof req.body?.token === 'string' ? req.body.token.trim() : '');
      await sessions.signIn(req, res, { kind: 'admin', token_fp: sessions.adminFingerprint(deps.adminToken) });
    } catch (err) {
      if (!(err instanceof AppError)) throw err;
      res.set(err.headers);
      return signInPage(req, res, problem(req, err));
    }
    await audit.record('admin', 'admin.sign_in', undefined, { ip: req.ip });
    res.redirect(303, '/admin/users');
  });

  session.post('/admin/sign-out', async (req, res) => {
    auth.requireCsrf(req);
    try {
      await sessions.signOut(req, res);
    } catch (err) {
      if (!(err instanceof StorageError)) throw err;
      req.log.error({ err }, 'a sign-out could not be written: the session has ended, but would come back if the portal restarted before the disk recovers');
    }
    res.redirect(303, '/admin');
  });

  // ---- the key pool ----------------------------------------------------------------------------

  const poolApi = Router();
  poolApi.use('/admin/pool', apiOnly, adminApi(deps));
  poolApi.post('/admin/pool', async (req, res) => {
    const body = parseBody(poolBody, req.body);
    res.status(201).json(await keys.mint(body.count, actorOf(res), { preload: body.preload }));
  });

  const poolPages = Router();
  poolPages.use('/admin/pool', pagesOnly, adminPage(deps));
  const poolPage = (req: Request, res: Response, extra: Record<string, unknown> = {}) => {
    const minted = typeof req.query.minted === 'string' && /^\d{1,6}$/.test(req.query.minted) ? req.query.minted : null;
    renderPage(deps, req, res, 'admin-pool', {
      title: t(req)('admin.pool.title'), area: 'admin', nav: 'pool', pool: keys.poolStatus(), preload: keys.preload,
      notice: minted ? t(req)('admin.pool.done', { n: minted }) : null, ...extra,
    });
  };
  poolPages.get('/admin/pool', (req, res) => poolPage(req, res));
  poolPages.post('/admin/pool', async (req, res) => {
    let minted: number;
    try {
      minted = (await keys.mint(parseBody(poolBody, formToJson(req.body, { numbers: ['count'], booleans: ['preload'] })).count, actorOf(res))).minted;
    } catch (err) {
      if (!(err instanceof AppError) || err.status >= 500) throw err;
      return poolPage(req, res, problem(req, err));
    }
    res.redirect(303, `/admin/pool?minted=${minted}`);
  });

  // ---- the audit log ---------------------------------------------------------------------------

  const auditQuery = (req: Request, perPage: number) => {
    const page = pageNumber(req.query.page, 1);
    const action = typeof req.query.action === 'string' ? req.query.action.trim().slice(0, 60) : '';
    const keyId = typeof req.query.key_id === 'string' ? req.query.key_id.trim().slice(0, 20) : '';
    const match = action || keyId ? (e: AuditEntry) => (!action || e.action === action) && (!keyId || e.key_id === keyId) : undefined;
    return { page, action, keyId, read: () => audit.page({ offset: (page - 1) * perPage, limit: perPage, match }) };
  };

  const auditApi = Router();
  auditApi.get('/admin/audit', apiOnly, adminApi(deps), async (req, res) => {
    const perPage = pageNumber(req.query.per_page, AUDIT_PER_PAGE, 500);
    const q = auditQuery(req, perPage);
    const { entries, more } = await q.read();
    res.json({ entries, page: q.page, per_page: perPage, more });
  });

  const auditPages = Router();
  auditPages.get('/admin/audit', pagesOnly, adminPage(deps), async (req, res) => {
    const q = auditQuery(req, AUDIT_PER_PAGE);
    const { entries, more } = await q.read();
    const href = (n: number) => pageHref('/admin/audit', { action: q.action, key_id: q.keyId }, n);
    renderPage(deps, req, res, 'admin-audit', {
      title: t(req)('admin.audit.title'), area: 'admin', nav: 'audit', entries, filter: { action: q.action, key_id: q.keyId },
      pager: { page: q.page, pages: more ? q.page + 1 : q.page, total: null, href },
    });
  });

  // ---- backup ------------------------------------------------------------------------------------

  /** POST /admin/backup: one file, consistent while the portal keeps serving (`key-portal backup` asks for it). */
  const backupApi = Router();
  backupApi.post('/admin/backup', adminApi(deps), async (req, res) => {
    const file = path.join(deps.config.DATA_DIR, `.backup-${randomBytes(6).toString('hex')}.${process.pid}.tmp`);
    try {
      const meta = await deps.backup(file);
      await audit.record(actorOf(res), 'data.backup', undefined, { keys: meta.keys, users: meta.users });
      res.set({ 'Content-Type': 'application/octet-stream', 'Content-Disposition': `attachment; filename="key-portal-${String(meta.created_at).slice(0, 10)}.kpbackup"` });
      await pipeline(createReadStream(file), res);
    } finally {
      await rm(file, { force: true });
    }
  });

  const r = Router();
  r.use(session, poolApi, poolPages, auditApi, auditPages, backupApi, adminKeysRouter(deps), adminPricesRouter(deps));
  return r;
}
