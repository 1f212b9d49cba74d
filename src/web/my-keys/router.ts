import { Router, type Request, type Response } from 'express';
import { AppError, fail } from '../../errors.js';
import type { IssuedKey } from '../../keys/service.js';
import { StorageError } from '../../store/atomic-file.js';
import { requireSignedIn } from '../http/auth.js';
import type { WebDeps } from '../http/deps.js';
import { pickLocale, translator } from '../http/i18n.js';
import { problem, renderPage } from '../http/render.js';
import { emailBody, formToJson, KEY_ID, keyRef, labelBody, parseBody } from '../http/validate.js';
import { pageRange } from '../http/usage-range.js';

/**
 * A key holder's own keys: the /my-keys pages (sign in with a key, usage, add, revoke, sign out),
 * POST /api/my-keys, POST /api/revoke-key, and GET /usage for any key, trial keys included.
 */
export function myKeysRouter(deps: WebDeps): Router {
  const { keys, stats, auth, sessions, registration } = deps;
  const t = (req: Request) => translator(pickLocale(req));

  // ---- the JSON API --------------------------------------------------------------------------

  const api = Router();

  /** The caller's keys (an admin names the person with {email}); masked, with usage and limits. */
  api.post('/api/my-keys', (req, res) => {
    const actor = auth.actor(req);
    requireSignedIn(actor);
    const who = actor.kind === 'admin' ? parseBody(emailBody, req.body ?? {}).email : actor.email;
    if (!keys.user(who)) throw fail('user_not_found');
    res.json(stats.myKeys(who));
  });

  api.post('/api/revoke-key', async (req, res) => {
    const actor = auth.actor(req);
    const { key_id } = await keys.revoke(parseBody(keyRef, req.body), actor);
    res.json({ revoked: true, key_id });
  });

  /** A key's own usage: any issued key that is not revoked (a trial key has no owner to sign in as). */
  api.get('/usage', (req, res) => {
    res.json(stats.keyUsage(auth.keyHolder(req).key));
  });

  // ---- the pages -------------------------------------------------------------------------------

  const pages = Router();

  const signInPage = (req: Request, res: Response, extra: Record<string, unknown> = {}) =>
    renderPage(deps, req, res, 'signin', {
      title: t(req)('signin.title'), nav: 'my-keys', heading: t(req)('signin.title'), action: '/my-keys/sign-in',
      fieldLabel: t(req)('signin.key'), fieldName: 'key', submit: t(req)('signin.submit'), why: t(req)('signin.why'), ...extra,
    });

  const showIssued = (req: Request, res: Response, issued: IssuedKey) =>
    renderPage(deps, req, res, 'key-result', {
      title: t(req)('result.title'), nav: 'my-keys', next: '/my-keys', issued: { key: issued.key, key_id: issued.key_id, status: issued.record.status },
    });

  /** The signed-in holder; anyone else is sent to the sign-in page. */
  const holder = (req: Request, res: Response) => {
    const actor = auth.sessionActor(req);
    if (actor.kind === 'user') return actor;
    res.redirect(303, '/my-keys');
    return null;
  };

  pages.get('/my-keys', (req, res) => {
    const actor = auth.sessionActor(req);
    // A trial key's holder: today's use, the limits and when they reset.
    if (actor.kind === 'holder') {
      return renderPage(deps, req, res, 'trial-usage', { title: t(req)('trial.title'), nav: 'my-keys', usage: stats.keyUsage(actor.key), keyView: stats.keyView(actor.key) });
    }
    if (actor.kind !== 'user') return signInPage(req, res);
    const revoked = typeof req.query.revoked === 'string' && KEY_ID.test(req.query.revoked) ? req.query.revoked : null;
    const { range, key, ...bad } = pageRange(req, deps.zone, deps.clock.now());
    renderPage(deps, req, res, 'my-keys', {
      title: t(req)('mykeys.title'), nav: 'my-keys', mine: stats.myKeys(actor.email), stats: stats.userStats(actor.email, range, key),
      range: { ...range, key }, notice: revoked ? t(req)('revoke.done', { id: revoked }) : null, ...bad,
    });
  });

  pages.post('/my-keys/sign-in', async (req, res) => {
    try {
      auth.checkAddress(req);
      auth.requireCsrf(req);
      const presented = typeof req.body?.key === 'string' ? req.body.key.trim() : '';
      const found = auth.signInKey(req, presented);
      await sessions.signIn(req, res, found.email === null
        ? { kind: 'holder', key_id: keys.idOf(found.key) }
        : { kind: 'user', key_id: keys.idOf(found.key), email: found.email });
    } catch (err) {
      if (!(err instanceof AppError)) throw err;
      res.set(err.headers);
      return signInPage(req, res, problem(req, err));
    }
    res.redirect(303, '/my-keys');
  });

  pages.post('/my-keys/sign-out', async (req, res) => {
    auth.requireCsrf(req);
    await signOut(req, res);
    res.redirect(303, '/my-keys');
  });

  /** Ends the session; on a full disk it has still ended in this process (logged, not refused). */
  const signOut = async (req: Request, res: Response) => {
    try {
      await sessions.signOut(req, res);
    } catch (err) {
      if (!(err instanceof StorageError)) throw err;
      req.log.error({ err }, 'a sign-out could not be written: the session has ended, but would come back if the portal restarted before the disk recovers');
    }
  };

  pages.post('/my-keys/add', async (req, res) => {
    const actor = holder(req, res);
    if (!actor) return;
    auth.requireCsrf(req);
    const { label } = parseBody(labelBody, formToJson(req.body, {}));
    const result = await registration.register({ email: actor.email, label }, actor);
    if (result.kind !== 'issued') throw fail('internal_error'); // a holder adding a key never needs an approval
    showIssued(req, res, result.issued);
  });

  /** One of the signed-in holder's own keys; anybody else's is "not found". */
  const ownKey = (req: Request, email: string) => {
    const found = keys.byId(String(req.params.id));
    if (!found || found.record.email !== email || found.record.status === 'revoked') throw fail('key_not_found');
    return found;
  };

  pages.get('/my-keys/revoke/:id', (req, res) => {
    const actor = holder(req, res);
    if (!actor) return;
    const { key } = ownKey(req, actor.email);
    renderPage(deps, req, res, 'revoke-confirm', {
      title: t(req)('revoke.title', { id: keys.idOf(key) }), nav: 'my-keys', keyView: stats.keyView(key),
      action: `/my-keys/revoke/${keys.idOf(key)}`, back: '/my-keys',
    });
  });

  pages.post('/my-keys/revoke/:id', async (req, res) => {
    const actor = holder(req, res);
    if (!actor) return;
    const { key } = ownKey(req, actor.email);
    auth.requireCsrf(req);
    const { key_id } = await keys.revoke({ key_id: keys.idOf(key) }, actor);
    // Revoking the key this browser signed in with moves the session to another of the person's keys.
    const session = sessions.read(req);
    const other = keys.user(actor.email)?.api_keys[0];
    if (session?.kind === 'user' && session.key_id === key_id) {
      if (other) await sessions.signIn(req, res, { kind: 'user', key_id: keys.idOf(other), email: actor.email });
      else await signOut(req, res);
    }
    res.redirect(303, `/my-keys?revoked=${key_id}`);
  });

  const r = Router();
  r.use(api, pages);
  return r;
}
