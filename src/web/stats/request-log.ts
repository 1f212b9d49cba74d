import { Router, type Request, type Response } from 'express';
import type { Actor } from '../../audit.js';
import { AppError, fail, invalidField } from '../../errors.js';
import type { RequestFilter } from '../../store/usage-store.js';
import type { WebDeps } from '../http/deps.js';
import { adminPage } from '../http/guards.js';
import { pickLocale, translator } from '../http/i18n.js';
import { pageHref } from '../http/paging.js';
import { problem, renderPage, type PageOptions } from '../http/render.js';
import { emailParam, parseCursor, parseInstant, queryInt, queryModel, queryOne } from '../http/validate.js';

/** Rows per page of the request log pages (the API's `limit` still chooses, up to 500). */
const ROWS_PER_PAGE = 50;
/** The query parameters the pages keep from one page to the next (`before` is the page itself). */
const FILTERS = ['key_id', 'email', 'model', 'failed', 'from', 'to', 'limit'] as const;

type Reader = Extract<Actor, { kind: 'user' | 'admin' }>;

/**
 * The request log's filters from a query, shared by GET /api/requests and its pages, narrowed to
 * what the reader may see: a holder the requests of every key they ever held (naming another
 * person or another person's key is refused, never answered empty), an admin everyone's, or one
 * person's (`email`) or key's (`key_id`).
 */
export function requestFilter(deps: Pick<WebDeps, 'stats' | 'zone'>, actor: Reader, q: Record<string, unknown>, defaultLimit: number): RequestFilter & { limit: number } {
  const { stats, zone } = deps;
  const email = queryOne(q, 'email');
  const wantedEmail = email === undefined ? undefined : emailParam(email);
  const wantedKey = queryOne(q, 'key_id', 20);
  let keyIds: string[] | null;
  if (actor.kind === 'user') {
    if (wantedEmail !== undefined && wantedEmail !== actor.email) throw fail('own_stats_only');
    keyIds = stats.keyIdsOf(actor.email);
    if (wantedKey !== undefined) {
      if (!keyIds.includes(wantedKey)) throw fail('key_not_found');
      keyIds = [wantedKey];
    }
  } else {
    keyIds = wantedKey !== undefined ? [wantedKey] : wantedEmail !== undefined ? stats.keyIdsOf(wantedEmail) : null;
  }
  const failed = queryOne(q, 'failed', 5);
  if (failed !== undefined && failed !== 'true' && failed !== 'false') throw invalidField('failed', 'not_boolean');
  const from = parseInstant(q, 'from', zone);
  const to = parseInstant(q, 'to', zone, true);
  // `to` is exclusive (a day's end is the next day's start): from = to is already an empty period.
  if (from !== undefined && to !== undefined && from >= to) throw invalidField('from', 'order');
  return {
    keyIds, model: queryModel(q), failed: failed === undefined ? undefined : failed === 'true', from, to, before: parseCursor(q),
    limit: queryInt(q, 'limit', 1, 500) ?? defaultLimit,
  };
}

/** The filters as the form shows them again: the text given (one string each, cut short), or ''. */
function formValues(q: Record<string, unknown>): Record<(typeof FILTERS)[number] | 'before', string> {
  const out = {} as Record<(typeof FILTERS)[number] | 'before', string>;
  for (const name of [...FILTERS, 'before'] as const) {
    const v = q[name];
    out[name] = typeof v === 'string' ? v.trim().slice(0, 254) : '';
  }
  return out;
}

/**
 * The request log as pages: /my-keys/requests for a signed-in key holder (their own keys), and
 * /admin/log for an admin (everyone's). Filters are a GET form; pages go back in time with the
 * API's `before` cursor. A filter that cannot be read shows the page again with the reason.
 */
export function requestLogPages(deps: WebDeps): Router {
  const { stats, keys, auth, zone } = deps;

  const show = (req: Request, res: Response, actor: Reader, o: { path: string; view: PageOptions }) => {
    const t = translator(pickLocale(req));
    const filter = formValues(req.query);
    let log: ReturnType<typeof stats.requestLog> = { requests: [], next: null, time_zone: zone.name };
    let refused: ReturnType<typeof problem> | null = null;
    try {
      log = stats.requestLog(requestFilter(deps, actor, req.query, ROWS_PER_PAGE));
    } catch (err) {
      if (!(err instanceof AppError) || err.status >= 500) throw err;
      refused = problem(req, err);
    }
    const owners = new Map<string, { email: string | null; label: string } | null>();
    const ownerOf = (id: string) => {
      if (!owners.has(id)) {
        const r = keys.byId(id)?.record;
        owners.set(id, r ? { email: r.email, label: r.label } : null);
      }
      return owners.get(id)!;
    };
    const rows = log.requests.map((r) => ({ ...r, time: zone.formatSeconds(Date.parse(r.at)), key: ownerOf(r.key_id) }));
    const kept = Object.fromEntries(FILTERS.map((n) => [n, filter[n]]));
    const filtered = FILTERS.some((n) => n !== 'limit' && filter[n] !== '');
    renderPage(deps, req, res, 'request-log', {
      ...o.view, rows, filter, filtered,
      admin: actor.kind === 'admin', action: o.path, timeHeader: t('log.col.time', { zone: zone.name }),
      older: log.next ? pageHref(o.path, { ...kept, before: log.next }, 1) : null,
      newest: filter.before ? pageHref(o.path, kept, 1) : null,
      ...(refused ?? {}),
    });
  };

  const pages = Router();

  pages.get('/my-keys/requests', (req, res) => {
    const actor = auth.sessionActor(req);
    if (actor.kind !== 'user') return res.redirect(303, '/my-keys');
    const t = translator(pickLocale(req));
    const mine = stats.keyIdsOf(actor.email).sort().map((id) => {
      const r = keys.byId(id)?.record;
      return { key_id: id, label: r?.label ?? '', revoked: r?.status === 'revoked' };
    });
    show(req, res, actor, { path: '/my-keys/requests', view: { title: t('log.title.mine'), nav: 'my-keys', mine, lead: t('log.lead.mine', period(deps)) } });
  });

  pages.get('/admin/log', adminPage(deps), (req, res) => {
    const t = translator(pickLocale(req));
    show(req, res, { kind: 'admin' }, { path: '/admin/log', view: { title: t('log.title.all'), area: 'admin', nav: 'log', mine: [], lead: t('log.lead.all', period(deps)) } });
  });

  return pages;
}

/** What the pages' first lines say about the times shown and how long single requests are kept. */
const period = (deps: WebDeps) => ({ zone: deps.zone.name, days: deps.config.USAGE_EVENTS_RETENTION_DAYS });
