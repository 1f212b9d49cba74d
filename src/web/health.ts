import { Router } from 'express';
import type { AppDeps } from './deps.js';

/** Liveness and the state of the link to CLIProxyAPI; open to anyone, so it names no keys. */
export function healthRouter(deps: AppDeps): Router {
  const r = Router();
  r.get('/healthz', (_req, res) => {
    const s = deps.cliproxy.status();
    const u = deps.usage.status();
    const last = deps.reconciler.last;
    res.json({
      status: 'ok',
      cliproxy: {
        reachable: s.reachable,
        authenticated: s.authenticated,
        generation: s.generation,
        version: s.version,
        last_usage_at: u.last_usage_at,
        error: s.error,
        error_code: s.error_code,
        paused_until: s.paused_until,
      },
      usage: u,
      reconcile: last && { at: last.at, ok: last.ok, was_empty: last.was_empty },
    });
  });
  return r;
}
