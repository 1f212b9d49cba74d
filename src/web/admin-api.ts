import { Router } from 'express';
import { actorFromRequest, requireAdmin } from './auth.js';
import type { AppDeps } from './deps.js';
import { parseBody, poolBody } from './validate.js';

/** Admin JSON API (Bearer ADMIN_TOKEN). */
export function adminApiRouter(deps: AppDeps): Router {
  const r = Router();
  const { keys, store } = deps;

  r.post('/admin/pool', async (req, res) => {
    const actor = actorFromRequest(req, deps);
    requireAdmin(actor);
    const body = parseBody(poolBody, req.body);
    if (body.preload) await store.setPreload(true);
    const result = await keys.mint(body.count, actor);
    const pushed = body.preload || deps.config.PRELOAD_POOL ? await deps.reconciler.run() : null;
    res.status(201).json({
      ...result,
      pool: store.poolStatus(),
      preload: deps.config.PRELOAD_POOL || store.preload,
      push: pushed && { ok: pushed.ok, added: pushed.added.length, error: pushed.error },
    });
  });

  return r;
}
