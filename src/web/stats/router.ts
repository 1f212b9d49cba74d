import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Router, type Request } from 'express';
import { fail } from '../../errors.js';
import { requireAdmin, requireSignedIn } from '../http/auth.js';
import type { WebDeps } from '../http/deps.js';
import { apiOnly, pagesOnly } from '../http/errors.js';
import { adminApi, adminPage } from '../http/guards.js';
import { pickLocale, translator, type MessageKey } from '../http/i18n.js';
import { paginate } from '../http/paging.js';
import { reasonText, renderPage } from '../http/render.js';
import { pageRange } from '../http/usage-range.js';
import { emailParam, parseRange, queryOne } from '../http/validate.js';
import { requestFilter, requestLogPages } from './request-log.js';

const REQUESTS_PER_PAGE = 100;
/** Rows of the leaderboard per page: a page renders in a few milliseconds even with 10k people. */
const USERS_PER_PAGE = 100;

/**
 * Who used how much: per person, per key, the request log, CSV, the leaderboard (JSON and the
 * admin's /admin/users pages), today's usage (/admin/usage), and pulling usage now.
 */
export function statsRouter(deps: WebDeps): Router {
  const { stats, keys, auth, zone, clock } = deps;
  const t = (req: Request) => translator(pickLocale(req));

  // ---- the JSON API --------------------------------------------------------------------------

  const api = Router();

  api.get('/api/user-stats/:email', (req, res) => {
    const actor = auth.actor(req);
    requireSignedIn(actor);
    const who = emailParam(String(req.params.email));
    if (actor.kind === 'user' && actor.email !== who) throw fail('own_stats_only');
    const range = parseRange(req.query, zone, clock.now());
    if (!keys.user(who)) throw fail('user_not_found');
    res.json(stats.userStats(who, range));
  });

  /** One key over a range: its owner, or an admin. */
  api.get('/api/key-stats/:id', (req, res) => {
    const actor = auth.actor(req);
    requireSignedIn(actor);
    const found = keys.byId(String(req.params.id));
    if (!found || (actor.kind === 'user' && found.record.email !== actor.email)) throw fail('key_not_found');
    res.json(stats.keyStats(found.key, parseRange(req.query, zone, clock.now())));
  });

  /**
   * The request log, newest first: a holder sees the requests of every key they ever held; an admin
   * everyone's, or one person's (`email`) or key's (`key_id`). Filters: model, failed, from, to.
   */
  api.get('/api/requests', (req, res) => {
    const actor = auth.actor(req);
    requireSignedIn(actor);
    res.json(stats.requestLog(requestFilter(deps, actor, req.query, REQUESTS_PER_PAGE)));
  });

  /** CSV by day and model: a key holder gets their own usage; an admin everyone's (or ?email=). */
  api.get('/api/usage.csv', async (req, res) => {
    const actor = auth.actor(req);
    requireSignedIn(actor);
    const range = parseRange(req.query, zone, clock.now(), 90);
    const email = queryOne(req.query, 'email');
    const emails = actor.kind === 'user' ? [actor.email] : email !== undefined ? [emailParam(email)] : null;
    res.type('text/csv; charset=utf-8');
    res.attachment(`usage-${emails?.length === 1 ? emails[0]!.replace(/[^\w.@-]/g, '_') : 'all'}-${range.from}-${range.to}.csv`);
    await pipeline(Readable.from(stats.csv(emails, range)), res);
  });

  api.get('/api/all-users-stats', (req, res) => {
    requireAdmin(auth.actor(req));
    const { body, etag } = stats.allUsersJson();
    res.set('ETag', etag).type('json');
    if (req.fresh) return res.status(304).end();
    res.send(body);
  });

  api.post('/api/sync-usage', async (req, res) => {
    requireAdmin(auth.actor(req));
    res.json(await deps.usage.pull({ force: true }));
  });

  const adminJson = Router();
  adminJson.get('/admin/usage', apiOnly, adminApi(deps), (_req, res) => { res.json(stats.todayUsage()); });

  // ---- the admin's pages -----------------------------------------------------------------------

  const pages = Router();
  pages.use('/admin/usage', pagesOnly);
  pages.use(['/admin/usage', '/admin/users'], adminPage(deps));

  pages.get('/admin/usage', (req, res) => {
    renderPage(deps, req, res, 'admin-usage', { title: t(req)('admin.usage.title'), area: 'admin', nav: 'usage', today: stats.todayUsage() });
  });

  pages.get('/admin/users', (req, res) => {
    const s = deps.health.cliproxy();
    const cliproxyLine = s.error ? reasonText(t(req), s.error_code, s.error) : s.reachable ? t(req)('admin.cliproxy.ok', { version: s.version ?? '?' }) : t(req)('admin.cliproxy.unknown');
    const u = deps.health.usage();
    const usageLine = u.source
      ? t(req)('admin.usage.line', { source: t(req)(`source.${u.source}` as MessageKey), last: u.last_usage_at ? zone.format(Date.parse(u.last_usage_at)) : t(req)('never'),
        ago: u.last_usage_at ? Math.max(0, Math.round((clock.now() - Date.parse(u.last_usage_at)) / 1000)) : '–' })
      : t(req)('admin.cliproxy.unknown');
    const all = stats.allUsers();
    const q = typeof req.query.q === 'string' ? req.query.q.trim().toLowerCase().slice(0, 100) : '';
    const ranked = all.users.map((u, i) => ({ u, rank: i + 1 }));
    const matching = q ? ranked.filter(({ u }) => u.email.includes(q) || u.name.toLowerCase().includes(q)) : ranked;
    const { rows, pager } = paginate(matching, req.query.page, USERS_PER_PAGE, '/admin/users', { q });
    // Costs for the people shown only: all time, from their keys' totals per model.
    const costs = stats.peopleCosts(rows.map(({ u }) => u.email));
    const unpriced = [...new Set([...costs.values()].flatMap((c) => c.unpriced))].sort();
    renderPage(deps, req, res, 'admin-users', {
      title: t(req)('admin.users.title'), area: 'admin', nav: 'users', all, board: { q, rows, pager, costs, unpriced }, unmanaged: stats.unmanaged(), cliproxyLine, usageLine,
    });
  });

  pages.get('/admin/users/:email', (req, res) => {
    const email = emailParam(String(req.params.email));
    if (!keys.user(email)) throw fail('user_not_found');
    const { range, key, ...bad } = pageRange(req, zone, clock.now());
    renderPage(deps, req, res, 'admin-user', { title: email, area: 'admin', nav: 'users', stats: stats.userStats(email, range, key), range: { ...range, key }, ...bad });
  });

  const r = Router();
  r.use(api, adminJson, pages, requestLogPages(deps));
  return r;
}
