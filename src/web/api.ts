import { Router } from 'express';
import { actorFromRequest } from './auth.js';
import type { AppDeps } from './deps.js';
import { perIpLimit } from './rate-limit.js';
import { keyRef, parseBody, registerBody } from './validate.js';

/** The user-facing JSON API (paths of the original tool). */
export function apiRouter(deps: AppDeps): Router {
  const r = Router();
  const { keys, store, config } = deps;

  r.get('/api/key-pool-status', (_req, res) => {
    res.json(store.poolStatus());
  });

  r.post('/api/register-key', perIpLimit(config.REGISTER_RATE_LIMIT, 'registrations'), async (req, res) => {
    const actor = actorFromRequest(req, deps);
    const body = parseBody(registerBody, req.body);
    const issued = await keys.register(body, actor);
    const user = store.getUser(body.email);
    res.status(201).json({
      key: issued.key,
      key_id: issued.key_id,
      email: body.email,
      name: user?.name ?? '',
      label: issued.record.label,
      status: issued.record.status,
      daily_limit: issued.record.daily_limit,
      daily_token_limit: issued.record.daily_token_limit,
      created_at: issued.record.created_at,
      base_url: config.CLIPROXY_PUBLIC_URL,
    });
  });

  r.post('/api/revoke-key', async (req, res) => {
    const actor = actorFromRequest(req, deps);
    const body = parseBody(keyRef, req.body);
    const { key_id } = await keys.revoke(body, actor);
    res.json({ revoked: true, key_id });
  });

  return r;
}
