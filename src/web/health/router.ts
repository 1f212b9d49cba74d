import { Router } from 'express';
import { BEARER, fail } from '../../errors.js';
import type { WebDeps } from '../http/deps.js';

/**
 * GET /healthz: 200 `ok`, or 503 `degraded` with the reasons' codes — CLIProxyAPI unreachable or
 * refusing the management key, storage that cannot be written, a log file that cannot be written.
 * Anyone sees the status and the codes; an admin (token or session) or METRICS_TOKEN also sees the
 * details (the CLIProxyAPI address, paths and error texts stay private). `?probe=live` answers 200
 * while the process serves at all (a container's liveness check: a degraded portal is still up).
 */
export function healthRouter(deps: WebDeps): Router {
  const r = Router();
  r.get('/healthz', (req, res) => {
    if (req.query.probe === 'live') return res.json({ status: 'live' });
    const reasons = deps.health.reasons();
    res.status(reasons.length ? 503 : 200);
    if (!deps.auth.privileged(req)) return res.json({ status: reasons.length ? 'degraded' : 'ok', reasons: reasons.map((x) => x.code) });
    res.json(deps.health.details(reasons));
  });

  /** GET /metrics: Prometheus text format, for the admin token (or session) or METRICS_TOKEN. */
  r.get('/metrics', async (req, res) => {
    if (!deps.auth.privileged(req)) throw fail('metrics_token_required', {}, BEARER);
    res.set('Content-Type', deps.metrics.contentType).send(await deps.metrics.text());
  });
  return r;
}
