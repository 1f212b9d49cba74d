import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Router } from 'express';
import { z } from 'zod';
import { badRequest, forbidden, notFound, unauthorized } from '../errors.js';
import { actorFromRequest, bearerToken, matchKey, requireAdmin, requireUserOrAdmin } from './auth.js';
import { safeEqual } from '../keys/format.js';
import type { WebDeps } from './deps.js';
import { email, keyRef, parseBody, registerBody } from './validate.js';

function parseDays(raw: unknown, fallback: number): number {
  const v = raw ?? String(fallback);
  if (typeof v !== 'string' || !/^\d{1,3}$/.test(v) || Number(v) < 1 || Number(v) > 366) {
    throw badRequest('invalid_field', 'days must be a whole number from 1 to 366.');
  }
  return Number(v);
}

/** The user-facing JSON API (paths of the original tool). */
export function apiRouter(deps: WebDeps): Router {
  const r = Router();
  const { keys, store, config, stats } = deps;

  r.get('/api/key-pool-status', (_req, res) => {
    res.json(store.poolStatus());
  });

  r.post('/api/register-key', deps.limits.register, async (req, res) => {
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

  /** The caller's keys (an admin names the person with {email}); masked, with usage and limits. */
  r.post('/api/my-keys', (req, res) => {
    const actor = actorFromRequest(req, deps);
    requireUserOrAdmin(actor);
    let who: string;
    if (actor.kind === 'admin') {
      who = parseBody(z.object({ email }), req.body ?? {}).email;
      if (!store.getUser(who)) throw notFound('No such user.');
    } else {
      who = (actor as { email: string }).email;
    }
    res.json(stats.myKeys(who));
  });

  r.get('/api/user-stats/:email', async (req, res) => {
    const actor = actorFromRequest(req, deps);
    requireUserOrAdmin(actor);
    const who = String(req.params.email).trim().toLowerCase();
    if (actor.kind !== 'admin' && !(actor.kind === 'user' && actor.email === who)) throw forbidden('You may see only your own statistics.');
    const days = parseDays(req.query.days, 30);
    if (!store.getUser(who)) throw notFound('No such user.');
    res.json(await stats.userStats(who, days));
  });

  r.post('/api/sync-usage', async (req, res) => {
    requireAdmin(actorFromRequest(req, deps));
    res.json(await deps.usage.pull({ force: true }));
  });

  /** For a key holder: that key today against its limits, and its totals. */
  /** A key's own usage: any issued, unrevoked key (a trial key has no owner to sign in as). */
  r.get('/usage', (req, res) => {
    const token = bearerToken(req);
    const key = token !== undefined && !safeEqual(token, deps.adminToken) ? matchKey(store, token) : undefined;
    const record = key ? store.getKey(key) : undefined;
    if (!key || !record || record.status === 'revoked') throw unauthorized('Present your key as Authorization: Bearer <key>.');
    res.json(stats.keyUsage(key));
  });

  r.get('/api/all-users-stats', (req, res) => {
    requireAdmin(actorFromRequest(req, deps));
    const { body, etag } = stats.allUsersJson();
    res.set('ETag', etag).type('json');
    if (req.fresh) return res.status(304).end();
    res.send(body);
  });

  /** CSV by day and model: a key holder gets their own usage; an admin everyone's (or ?email=). */
  r.get('/api/usage.csv', async (req, res) => {
    const actor = actorFromRequest(req, deps);
    requireUserOrAdmin(actor);
    const days = parseDays(req.query.days, 90);
    let emails: string[] | null = actor.kind === 'user' ? [actor.email] : null;
    if (actor.kind === 'admin' && typeof req.query.email === 'string') emails = [req.query.email.trim().toLowerCase()];
    res.type('text/csv; charset=utf-8');
    res.attachment(`usage-${emails?.length === 1 ? emails[0]!.replace(/[^\w.@-]/g, '_') : 'all'}-${days}d.csv`);
    await pipeline(Readable.from(stats.csv(emails, days)), res);
  });

  return r;
}
