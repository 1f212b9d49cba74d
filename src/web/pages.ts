import { Router } from 'express';
import type { AppDeps } from './deps.js';

/** Browser pages. */
export function pagesRouter(deps: AppDeps): Router {
  const r = Router();
  r.get('/', (_req, res) => {
    res.render('index', { pool: deps.store.poolStatus(), cliproxy: deps.cliproxy.status(), baseUrl: deps.config.CLIPROXY_PUBLIC_URL });
  });
  return r;
}
