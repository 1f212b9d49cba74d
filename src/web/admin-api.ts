import { Router } from 'express';
import { actorFromRequest, requireAdmin } from './auth.js';
import type { WebDeps } from './deps.js';
import { parseBody, poolBody } from './validate.js';

/** Admin JSON API (Bearer ADMIN_TOKEN; the admin pages' forms post here too, with session and CSRF). */
export function adminApiRouter(deps: WebDeps): Router {
  const r = Router();
  const { keys, store } = deps;

  r.post('/admin/pool', async (req, res) => {
    const actor = actorFromRequest(req, deps);
    requireAdmin(actor);
    const fromForm = req.is('application/x-www-form-urlencoded') === 'application/x-www-form-urlencoded';
    const raw = fromForm ? { count: /^\d+$/.test(String(req.body?.count)) ? Number(req.body.count) : req.body?.count } : req.body;
    const body = parseBody(poolBody, raw);
    if (body.preload) await store.setPreload(true);
    const result = await keys.mint(body.count, actor);
    const pushed = body.preload || deps.config.PRELOAD_POOL ? await deps.reconciler.run() : null;
    if (fromForm) return res.redirect(303, `/admin/pool?minted=${result.minted}`);
    res.status(201).json({
      ...result,
      pool: store.poolStatus(),
      preload: deps.config.PRELOAD_POOL || store.preload,
      push: pushed && { ok: pushed.ok, added: pushed.added.length, error: pushed.error },
    });
  });

  return r;
}
