import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Router } from 'express';
import { z } from 'zod';
import { badRequest, forbidden, notFound, unauthorized } from '../errors.js';
import { actorFromRequest, bearerToken, matchKey, requireAdmin, requireUserOrAdmin } from './auth.js';
import { safeEqual } from '../keys/format.js';
import type { WebDeps } from './deps.js';
import { email, keyRef, parseBody, parseInstant, parseRange, registerBody } from './validate.js';
import { keyIdOf } from '../keys/format.js';

const REQUESTS_PER_PAGE = 100;

/** `before=<ms>_<id>`: the cursor of the request log's next page. */
function parseCursor(v: unknown): { at: number; id: number } | undefined {
  if (v === undefined || v === '') return undefined;
  const m = typeof v === 'string' ? /^(\d{1,15})_(\d{1,15})$/.exec(v) : null;
  if (!m) throw badRequest('invalid_field', 'before must be the cursor a previous page returned.');
  return { at: Number(m[1]), id: Number(m[2]) };
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
    const range = parseRange(req.query, deps.zone, deps.clock.now());
    if (!store.getUser(who)) throw notFound('No such user.');
    res.json(stats.userStats(who, range));
  });

  /** One key over a range: its owner, or an admin. */
  r.get('/api/key-stats/:id', (req, res) => {
    const actor = actorFromRequest(req, deps);
    requireUserOrAdmin(actor);
    const key = store.keyById(String(req.params.id));
    const record = key ? store.getKey(key) : undefined;
    if (!key || !record || (actor.kind !== 'admin' && !(actor.kind === 'user' && record.email === actor.email))) throw notFound('No such key.');
    res.json(stats.keyStats(key, parseRange(req.query, deps.zone, deps.clock.now())));
  });

  /**
   * The request log, newest first: a holder sees the requests of every key they ever held; an admin
   * everyone's, or one person's (`email`) or key's (`key_id`). Filters: model, failed, from, to.
   */
  r.get('/api/requests', (req, res) => {
    const actor = actorFromRequest(req, deps);
    requireUserOrAdmin(actor);
    const q = req.query;
    const str = (name: string): string | undefined => {
      const v = q[name];
      if (v === undefined || v === '') return undefined;
      if (typeof v !== 'string' || v.length > 254) throw badRequest('invalid_field', `${name} must be given once.`);
      return v.trim();
    };
    const idsOf = (who: string) => stats.allKeysOf(who).map((k) => keyIdOf(store.prefix, k));
    let keyIds: string[] | null;
    const wantedEmail = str('email')?.toLowerCase();
    const wantedKey = str('key_id');
    if (actor.kind === 'user') {
      if (wantedEmail !== undefined && wantedEmail !== actor.email) throw forbidden('You may see only your own requests.');
      keyIds = idsOf(actor.email);
      if (wantedKey !== undefined) {
        if (!keyIds.includes(wantedKey)) throw notFound('No such key.');
        keyIds = [wantedKey];
      }
    } else {
      keyIds = wantedKey !== undefined ? [wantedKey] : wantedEmail !== undefined ? idsOf(wantedEmail) : null;
    }
    const failed = str('failed');
    if (failed !== undefined && failed !== 'true' && failed !== 'false') throw badRequest('invalid_field', 'failed must be true or false.');
    const limitText = str('limit');
    if (limitText !== undefined && (!/^\d{1,3}$/.test(limitText) || Number(limitText) < 1 || Number(limitText) > 500)) {
      throw badRequest('invalid_field', 'limit must be a whole number from 1 to 500.');
    }
    const model = str('model');
    if (model !== undefined && model.length > 200) throw badRequest('invalid_field', 'model must be a model name.');
    const limit = limitText ? Number(limitText) : REQUESTS_PER_PAGE;
    const rows = deps.usageStore.requests({
      keyIds, model, failed: failed === undefined ? undefined : failed === 'true',
      from: parseInstant(q.from, 'from', deps.zone), to: parseInstant(q.to, 'to', deps.zone, true),
      before: parseCursor(q.before), limit: limit + 1,
    });
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    res.json({
      requests: page.map(({ id: _id, at, ...r }) => ({ at: new Date(at).toISOString(), ...r })),
      next: rows.length > limit && last ? `${last.at}_${last.id}` : null,
      time_zone: deps.zone.name,
    });
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
    const range = parseRange(req.query, deps.zone, deps.clock.now(), 90);
    let emails: string[] | null = actor.kind === 'user' ? [actor.email] : null;
    if (actor.kind === 'admin' && typeof req.query.email === 'string') emails = [req.query.email.trim().toLowerCase()];
    res.type('text/csv; charset=utf-8');
    res.attachment(`usage-${emails?.length === 1 ? emails[0]!.replace(/[^\w.@-]/g, '_') : 'all'}-${range.from}-${range.to}.csv`);
    await pipeline(Readable.from(stats.csv(emails, range)), res);
  });

  return r;
}
