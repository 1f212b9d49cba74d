import { Router, type Request, type Response } from 'express';
import type { Actor } from '../../audit.js';
import { csvCell } from '../../csv.js';
import { AppError, fail, invalidField } from '../../errors.js';
import type { IssuedKey } from '../../keys/service.js';
import type { WebDeps } from '../http/deps.js';
import { apiOnly, pagesOnly } from '../http/errors.js';
import { actorOf, adminApi, adminPage } from '../http/guards.js';
import { pickLocale, translator } from '../http/i18n.js';
import { pageHref, pageNumber } from '../http/paging.js';
import { problem, renderPage } from '../http/render.js';
import { adminBulkBody, adminKeyBody, adminRevokeBody, adminKeyPatch, emailParam, formToJson, keyRef, parseBody, queryInt, queryOne } from '../http/validate.js';

const STATUSES = ['pending', 'active', 'suspended', 'revoked'];
const KEYS_PER_PAGE = 50;
const DONE = new Set(['update', 'suspend', 'resume', 'reset', 'revoke']);
const FORM = { numbers: ['daily_limit', 'daily_token_limit', 'rpm_limit', 'max_concurrency'], booleans: ['same_person'] };

/**
 * The admin's keys: the JSON API (Bearer ADMIN_TOKEN) and the pages on the same paths (an admin
 * session; forms post with a CSRF token). Rules live in the key and quota services.
 */
export function adminKeysRouter(deps: WebDeps): Router {
  const { keys, quota, stats, zone, clock } = deps;
  const t = (req: Request) => translator(pickLocale(req));

  /** An expiry, when given, must lie ahead. */
  const futureOnly = (expiresAt: string | null | undefined) => {
    if (expiresAt && Date.parse(expiresAt) <= clock.now()) throw invalidField('expires_at', 'future');
  };

  const create = (raw: unknown, actor: Actor): Promise<IssuedKey> => {
    const body = parseBody(adminKeyBody, raw);
    futureOnly(body.expires_at);
    return keys.issue({
      email: body.email ?? null, name: body.name, label: body.label ?? '', issuedBy: 'admin',
      dailyLimit: body.daily_limit ?? 0, dailyTokenLimit: body.daily_token_limit ?? 0,
      extra: {
        ...(body.expires_at ? { expires_at: body.expires_at } : {}),
        ...(body.rpm_limit ? { rpm_limit: body.rpm_limit } : {}),
        ...(body.max_concurrency ? { max_concurrency: body.max_concurrency } : {}),
        ...(body.allowed_models?.length ? { allowed_models: body.allowed_models } : {}),
      }, samePerson: body.same_person,
    }, actor);
  };

  /**
   * N trial keys at once, issued a few at a time (each still waits for CLIProxyAPI to accept it, or
   * is answered pending), as CSV rows: the only time these keys are shown.
   */
  const bulk = async (raw: unknown, actor: Actor): Promise<string> => {
    const { count, ...one } = parseBody(adminBulkBody, raw);
    futureOnly(one.expires_at);
    const issued: IssuedKey[] = [];
    for (let i = 0; i < count; i += 10) {
      const batch = Array.from({ length: Math.min(10, count - i) }, (_, j) =>
        create({ ...one, label: `${one.label ?? 'trial'} ${i + j + 1}/${count}`.slice(0, 100) }, actor));
      issued.push(...await Promise.all(batch));
    }
    const rows = issued.map(({ key_id, key, record: r }) => [key_id, key, r.label, r.status, r.daily_limit, r.daily_token_limit, r.expires_at ?? '']);
    return ['key_id,key,label,status,daily_limit,daily_token_limit,expires_at', ...rows.map((r) => r.map((c) => csvCell(String(c))).join(','))].join('\n') + '\n';
  };
  /** Revokes several keys (ten at a time); keys already revoked are reported apart, not refused. */
  const revokeMany = async (raw: unknown, actor: Actor): Promise<{ revoked: string[]; already: string[] }> => {
    const ids = [...new Set(parseBody(adminRevokeBody, raw).key_ids)];
    const found = ids.map((id) => keys.resolve(id)); // every id known, or nothing is revoked
    const revoked: string[] = [];
    const already: string[] = [];
    for (let i = 0; i < found.length; i += 10) {
      await Promise.all(found.slice(i, i + 10).map(async ({ key }) => {
        if (keys.resolve(keys.idOf(key)).record.status === 'revoked') { already.push(keys.idOf(key)); return; }
        revoked.push((await keys.revoke({ key_id: keys.idOf(key) }, actor)).key_id);
      }));
    }
    return { revoked: revoked.sort(), already: already.sort() };
  };

  const sendBulk = (res: Response, csv: string) => {
    res.status(201).type('text/csv; charset=utf-8').attachment(`trial-keys-${zone.day(deps.clock.now())}.csv`).set('Cache-Control', 'no-store').send(csv);
  };

  const createdView = (issued: IssuedKey) => {
    const v = stats.keyView(issued.key);
    return { key: issued.key, key_id: issued.key_id, label: v.label, daily_limit: v.daily_limit, daily_token_limit: v.daily_token_limit,
      rpm_limit: v.rpm_limit, max_concurrency: v.max_concurrency, allowed_models: v.allowed_models,
      expires_at: v.expires_at, created_at: v.created_at, email: v.email, status: v.status };
  };

  const filterOf = (req: Request, strict: boolean) => {
    const status = queryOne(req.query, 'status', 20) ?? '';
    if (status && !STATUSES.includes(status)) {
      if (strict) throw invalidField('status', 'one_of', { values: STATUSES.join(', ') });
      return { status: '', q: queryOne(req.query, 'q', 100) ?? '' };
    }
    return { status, q: queryOne(req.query, 'q', 100) ?? '' };
  };

  // ---- the JSON API --------------------------------------------------------------------------

  const api = Router();
  api.use(['/admin/keys', '/admin/reset-usage'], apiOnly, adminApi(deps));

  api.get('/admin/keys', (req, res) => {
    const { status, q } = filterOf(req, true);
    const perPage = queryInt(req.query, 'per_page', 1, 500) ?? KEYS_PER_PAGE;
    const page = queryInt(req.query, 'page', 1, 1e9) ?? 1;
    const email = queryOne(req.query, 'email');
    const { keys: list, total } = stats.adminKeys({ status: status || undefined, q: q.toLowerCase() || undefined, email: email === undefined ? undefined : emailParam(email), offset: (page - 1) * perPage, limit: perPage });
    res.json({ keys: list, total, page, per_page: perPage, pages: Math.max(1, Math.ceil(total / perPage)) });
  });

  api.post('/admin/keys', async (req, res) => {
    res.status(201).json(createdView(await create(req.body, actorOf(res))));
  });

  api.post('/admin/keys/bulk', async (req, res) => sendBulk(res, await bulk(req.body, actorOf(res))));

  api.post('/admin/keys/revoke', async (req, res) => { res.json(await revokeMany(req.body, actorOf(res))); });

  api.get('/admin/keys/:id', (req, res) => {
    res.json(stats.keyView(keys.resolve(String(req.params.id)).key));
  });

  api.patch('/admin/keys/:id', async (req, res) => {
    const { key } = keys.resolve(String(req.params.id));
    const changes = parseBody(adminKeyPatch, req.body);
    futureOnly(changes.expires_at);
    await quota.update(key, changes, actorOf(res));
    res.json(stats.keyView(key));
  });

  api.delete('/admin/keys/:id', async (req, res) => {
    const { key } = keys.resolve(String(req.params.id));
    res.json({ revoked: true, key_id: (await keys.revoke({ key }, actorOf(res))).key_id });
  });

  api.post('/admin/keys/:id', () => { throw fail('method_not_allowed'); });

  api.post('/admin/reset-usage', async (req, res) => {
    const ref = parseBody(keyRef, req.body);
    const { key } = keys.resolve(ref.key || ref.key_id!);
    await quota.reset(key, actorOf(res));
    res.json({ reset: true, ...stats.keyUsage(key) });
  });

  // ---- the pages -------------------------------------------------------------------------------

  const pages = Router();
  pages.use(['/admin/keys', '/admin/reset-usage'], pagesOnly, adminPage(deps));

  const keysPage = (req: Request, res: Response, extra: Record<string, unknown> = {}) => {
    const { status, q } = filterOf(req, false);
    const filter = { status: status || undefined, q: q.toLowerCase() || undefined };
    // Views are built for the page shown only (a view reads usage.db; there may be 30k keys).
    const total = stats.adminKeys({ ...filter, offset: 0, limit: 0 }).total;
    const pages = Math.max(1, Math.ceil(total / KEYS_PER_PAGE));
    const page = pageNumber(req.query.page, 1, pages);
    const rows = stats.adminKeys({ ...filter, offset: (page - 1) * KEYS_PER_PAGE, limit: KEYS_PER_PAGE }).keys;
    const pager = { page, pages, total, href: (n: number) => pageHref('/admin/keys', { status, q }, n) };
    renderPage(deps, req, res, 'admin-keys', {
      title: t(req)('admin.keys.title'), area: 'admin', nav: 'keys', rows, pager, filter: { status, q }, statuses: STATUSES, ...extra,
    });
  };

  /** The page of one key (its forms; the revoke confirmation when asked). */
  const keyPage = (req: Request, res: Response, key: string, extra: { confirmRevoke: boolean } & Record<string, unknown>) => {
    const view = stats.keyView(key);
    renderPage(deps, req, res, 'admin-key', {
      title: `${t(req)('admin.keys.key')} ${view.key_id}`, area: 'admin', nav: 'keys', k: view, usage: stats.keyStats(key, stats.lastDays(30)),
      expiresLocal: view.expires_at ? zone.wallClock(Date.parse(view.expires_at)) : '', ...extra,
    });
  };

  // ?email= fills in the owner (the person page's "create a key for this person").
  pages.get('/admin/keys', (req, res) => {
    const revoked = typeof req.query.revoked === 'string' && /^\d{1,4}$/.test(req.query.revoked) ? Number(req.query.revoked) : null;
    keysPage(req, res, {
      ...(typeof req.query.email === 'string' ? { form: { email: req.query.email.slice(0, 254) } } : {}),
      ...(revoked !== null ? { notice: t(req)('admin.revoke.done', { n: revoked }) } : {}),
    });
  });

  pages.post('/admin/keys', async (req, res) => {
    let issued: IssuedKey;
    try {
      issued = await create(formToJson(req.body, { ...FORM, zone }), actorOf(res));
    } catch (err) {
      if (!(err instanceof AppError) || err.status >= 500) throw err;
      return keysPage(req, res, { ...problem(req, err), form: req.body });
    }
    renderPage(deps, req, res, 'admin-key-created', { title: t(req)('admin.keys.created'), area: 'admin', nav: 'keys', created: createdView(issued) });
  });

  /** The list's "revoke selected": a confirmation page first, then the revocations. */
  pages.post('/admin/keys/revoke', async (req, res) => {
    const ids = [req.body?.key_id ?? []].flat().map(String);
    if (req.body?.confirm !== 'yes') {
      let chosen;
      try {
        chosen = parseBody(adminRevokeBody, { key_ids: ids }).key_ids.map((id) => stats.keyView(keys.resolve(id).key));
      } catch (err) {
        if (!(err instanceof AppError) || err.status >= 500) throw err;
        return keysPage(req, res, problem(req, err));
      }
      return renderPage(deps, req, res, 'admin-keys-revoke', { title: t(req)('admin.revoke.title', { n: chosen.length }), area: 'admin', nav: 'keys', chosen });
    }
    const done = await revokeMany({ key_ids: ids }, actorOf(res));
    res.redirect(303, `/admin/keys?revoked=${done.revoked.length}`);
  });

  pages.post('/admin/keys/bulk', async (req, res) => {
    let csv: string;
    try {
      csv = await bulk(formToJson(req.body, { ...FORM, numbers: [...FORM.numbers, 'count'], zone }), actorOf(res));
    } catch (err) {
      if (!(err instanceof AppError) || err.status >= 500) throw err;
      return keysPage(req, res, { ...problem(req, err), bulkForm: req.body });
    }
    sendBulk(res, csv);
  });

  pages.get('/admin/keys/:id', (req, res) => {
    const { key } = keys.resolve(String(req.params.id));
    const done = typeof req.query.done === 'string' && DONE.has(req.query.done) ? req.query.done : null;
    keyPage(req, res, key, {
      confirmRevoke: req.query.confirm === 'revoke',
      notice: done ? t(req)(`admin.keys.done.${done as 'update'}`) : null,
    });
  });

  /** The forms of the key page: change, suspend, resume, reset, revoke (after its confirmation). */
  pages.post('/admin/keys/:id', async (req, res) => {
    const { key } = keys.resolve(String(req.params.id));
    const actor = actorOf(res);
    const action = String(req.body?.action ?? '');
    try {
      if (action === 'update') {
        const changes = parseBody(adminKeyPatch, formToJson(req.body, { ...FORM, clearable: ['expires_at', 'allowed_models'], zone }));
        futureOnly(changes.expires_at);
        await quota.update(key, changes, actor);
      } else if (action === 'suspend' || action === 'resume') {
        await quota.update(key, { status: action === 'suspend' ? 'suspended' : 'active' }, actor);
      } else if (action === 'reset') {
        await quota.reset(key, actor);
      } else if (action === 'revoke') {
        if (req.body?.confirm !== 'yes') throw fail('confirmation_required');
        await keys.revoke({ key }, actor);
      } else {
        throw invalidField('action', 'one_of', { values: 'update, suspend, resume, reset, revoke' });
      }
    } catch (err) {
      if (!(err instanceof AppError) || err.status >= 500) throw err;
      return keyPage(req, res, key, { confirmRevoke: action === 'revoke', ...problem(req, err) });
    }
    res.redirect(303, `/admin/keys/${keys.idOf(key)}?done=${action}`);
  });

  pages.post('/admin/reset-usage', async (req, res) => {
    const ref = parseBody(keyRef, formToJson(req.body, {}));
    const { key } = keys.resolve(ref.key || ref.key_id!);
    await quota.reset(key, actorOf(res));
    res.redirect(303, `/admin/keys/${keys.idOf(key)}?done=reset`);
  });

  const r = Router();
  r.use(api, pages);
  return r;
}
