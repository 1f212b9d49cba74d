import { Router, type Request } from 'express';
import { safeEqual } from '../keys/format.js';
import { bearerToken, sessionActor } from './auth.js';
import type { WebDeps } from './deps.js';

export interface Reason { code: string; message: string }

/**
 * What is wrong right now, worked out from the live state of each part (never a remembered
 * message): an error disappears as soon as its cause does.
 */
export function healthReasons(deps: WebDeps): Reason[] {
  const reasons: Reason[] = [];
  const c = deps.cliproxy.status();
  if (c.error_code && c.error) reasons.push({ code: c.error_code, message: c.error });
  const u = deps.usage.status();
  if (u.storage_error) reasons.push({ code: 'usage_storage', message: u.storage_error });
  if (u.error && !reasons.some((r) => u.error!.startsWith(r.code))) reasons.push({ code: 'usage_source', message: u.error });
  if (deps.store.storageError) reasons.push({ code: 'keys_storage', message: deps.store.storageError });
  if (deps.store.checkpointError) reasons.push({ code: 'keys_checkpoint', message: deps.store.checkpointError });
  if (deps.logFile?.error) reasons.push({ code: 'log_file', message: deps.logFile.error });
  return reasons;
}

/** Whether the caller may see the details: an admin (token or session) or METRICS_TOKEN. */
function privileged(req: Request, deps: WebDeps): boolean {
  const token = bearerToken(req);
  if (token !== undefined) {
    return safeEqual(token, deps.adminToken) || (deps.config.METRICS_TOKEN !== undefined && safeEqual(token, deps.config.METRICS_TOKEN));
  }
  try { return sessionActor(req, deps).kind === 'admin'; } catch { return false; }
}

/**
 * GET /healthz: 200 `ok`, or 503 `degraded` with the reasons' codes — CLIProxyAPI unreachable or
 * refusing the management key, storage that cannot be written, a log file that cannot be written.
 * Anyone sees the status and the codes; an admin or METRICS_TOKEN also sees the details (the
 * CLIProxyAPI address and error texts stay private). `?probe=live` answers 200 while the process
 * serves at all (a container's liveness check: a degraded portal is still up).
 */
export function healthRouter(deps: WebDeps): Router {
  const r = Router();
  r.get('/healthz', (req, res) => {
    if (req.query.probe === 'live') return res.json({ status: 'live' });
    const reasons = healthReasons(deps);
    const status = reasons.length ? 'degraded' : 'ok';
    res.status(reasons.length ? 503 : 200);
    if (!privileged(req, deps)) return res.json({ status, reasons: reasons.map((x) => x.code) });
    const s = deps.cliproxy.status();
    const u = deps.usage.status();
    const last = deps.reconciler.last;
    res.json({
      status,
      reasons,
      cliproxy: {
        url: deps.config.CLIPROXY_URL,
        reachable: s.reachable,
        authenticated: s.authenticated,
        generation: s.generation,
        version: s.version,
        key_api: deps.cliproxy.keyApi,
        last_usage_at: u.last_usage_at,
        error: s.error,
        error_code: s.error_code,
        paused_until: s.paused_until,
      },
      usage: u,
      keys: { storage_error: deps.store.storageError, checkpoint_error: deps.store.checkpointError, pool: deps.store.poolStatus() },
      log: deps.logFile ? { file: deps.logFile.file, dropped: deps.logFile.dropped, error: deps.logFile.error } : null,
      reconcile: last && { at: last.at, ok: last.ok, was_empty: last.was_empty, error_code: last.error_code },
    });
  });
  return r;
}
