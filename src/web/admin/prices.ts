import { Router, type Request, type Response } from 'express';
import { AppError, fail, invalidField } from '../../errors.js';
import type { WebDeps } from '../http/deps.js';
import { apiOnly, pagesOnly } from '../http/errors.js';
import { actorOf, adminApi, adminPage } from '../http/guards.js';
import { pickLocale, translator, type MessageKey } from '../http/i18n.js';
import { problem, renderPage } from '../http/render.js';
import { parseBody, priceRowBody, pricesBody } from '../http/validate.js';

const DONE = new Set(['set', 'remove', 'reset']);
const DECIMAL = /^\d{1,9}(\.\d{1,9})?$/;

/** The price form's fields as the JSON row: decimals become numbers, an empty cached price means none. */
function priceForm(body: Record<string, unknown> | undefined): Record<string, unknown> {
  const out: Record<string, unknown> = { pattern: body?.pattern };
  for (const f of ['input', 'output', 'cached']) {
    const v = typeof body?.[f] === 'string' ? (body[f] as string).trim() : body?.[f];
    if (v === '' || v === undefined) { if (f === 'cached') out[f] = null; continue; }
    out[f] = typeof v === 'string' && DECIMAL.test(v) ? Number(v) : v;
  }
  return out;
}

/**
 * The price table costs are estimated with: GET/PUT /admin/prices for the admin token, and the
 * /admin/prices page (an admin session; its forms carry the CSRF token) to add, change or remove a
 * row or go back to the defaults. A refused change leaves the table as it was.
 */
export function adminPricesRouter(deps: WebDeps): Router {
  const { prices, stats } = deps;
  const t = (req: Request) => translator(pickLocale(req));

  const api = Router();
  api.use('/admin/prices', apiOnly, adminApi(deps));
  api.get('/admin/prices', (_req, res) => { res.json(prices.table()); });
  api.put('/admin/prices', async (req, res) => {
    const body = parseBody(pricesBody, req.body);
    if (body.reset) await prices.reset(actorOf(res));
    else await prices.replace(body.prices, actorOf(res));
    res.json(prices.table());
  });

  const pages = Router();
  pages.use('/admin/prices', pagesOnly, adminPage(deps));

  const pricesPage = (req: Request, res: Response, extra: Record<string, unknown> = {}) => {
    const table = prices.table();
    const edit = typeof req.query.edit === 'string' ? table.prices.find((r) => r.pattern === req.query.edit) : undefined;
    // A model seen in usage without a price can be added from the list (?pattern= fills the form in).
    const fill = typeof req.query.pattern === 'string' ? { pattern: req.query.pattern.slice(0, 200) } : null;
    const done = typeof req.query.done === 'string' && DONE.has(req.query.done) ? req.query.done : null;
    renderPage(deps, req, res, 'admin-prices', {
      title: t(req)('prices.title'), area: 'admin', nav: 'prices', table,
      unpriced: stats.modelsSeen().filter((m) => prices.priceOf(m) === null),
      form: edit ? { ...edit, replaces: edit.pattern } : fill ?? {}, editing: Boolean(edit),
      notice: done ? t(req)(`prices.done.${done}` as MessageKey) : null, ...extra,
    });
  };

  pages.get('/admin/prices', (req, res) => pricesPage(req, res));

  pages.post('/admin/prices', async (req, res) => {
    const actor = actorOf(res);
    const action = String(req.body?.action ?? '');
    try {
      if (action === 'set') {
        const replaces = typeof req.body?.replaces === 'string' && req.body.replaces ? req.body.replaces : undefined;
        await prices.set(parseBody(priceRowBody, priceForm(req.body)), actor, replaces);
      } else if (action === 'remove') {
        if (typeof req.body?.pattern !== 'string' || !req.body.pattern) throw invalidField('pattern', 'required');
        await prices.remove(req.body.pattern, actor);
      } else if (action === 'reset') {
        if (req.body?.confirm !== 'yes') throw fail('confirmation_required');
        await prices.reset(actor);
      } else {
        throw invalidField('action', 'one_of', { values: 'set, remove, reset' });
      }
    } catch (err) {
      if (!(err instanceof AppError) || err.status >= 500) throw err;
      return pricesPage(req, res, { ...problem(req, err), form: action === 'set' ? req.body : {}, editing: action === 'set' && Boolean(req.body?.replaces) });
    }
    res.redirect(303, `/admin/prices?done=${action}`);
  });

  const r = Router();
  r.use(api, pages);
  return r;
}
