import { Router, type Request, type Response } from 'express';
import { AppError } from '../errors.js';
import { keyIdOf } from '../keys/format.js';
import type { IssuedKey } from '../keys/service.js';
import { matchKey, requireCsrf, sessionActor, usableKey } from './auth.js';
import type { WebDeps } from './deps.js';
import { translator, pickLocale, LOCALES } from './i18n.js';
import { localError, localPath, renderPage } from './render.js';
import { LANG_COOKIE } from './session.js';
import { parseBody, registerBody, text100 } from './validate.js';
import { z } from 'zod';

/** The key-holder's pages: home, registration, my keys. Forms post here; the JSON API lives in api.ts. */
export function pagesRouter(deps: WebDeps): Router {
  const r = Router();
  const { keys, store, stats, sessions } = deps;
  const t = (req: Request) => translator(pickLocale(req));

  const showIssued = (req: Request, res: Response, issued: IssuedKey, next: string) =>
    renderPage(deps, req, res, 'key-result', {
      title: t(req)('result.title'), nav: 'register', next,
      issued: { key: issued.key, key_id: issued.key_id, status: issued.record.status },
    });

  r.get('/', (req, res) => {
    renderPage(deps, req, res, 'index', { title: t(req)('home.title'), pool: store.poolStatus() });
  });

  r.get('/lang/:code', (req, res) => {
    const code = (LOCALES as readonly string[]).includes(req.params.code) ? req.params.code : 'en';
    res.cookie(LANG_COOKIE, code, { sameSite: 'lax', path: '/', maxAge: 365 * 86_400_000, httpOnly: true });
    res.redirect(303, localPath(req.query.back));
  });

  r.get('/register', (req, res) => {
    renderPage(deps, req, res, 'register', { title: t(req)('register.title'), nav: 'register', form: {} });
  });

  r.post('/register', deps.limits.register, async (req, res) => {
    const form = (req.body ?? {}) as Record<string, string>;
    try {
      requireCsrf(req, sessions);
      const body = parseBody(registerBody, form);
      const issued = await keys.register(body, sessionActor(req, deps));
      showIssued(req, res, issued, '/my-keys');
    } catch (err) {
      if (!(err instanceof AppError)) throw err;
      renderPage(deps, req, res, 'register', {
        title: t(req)('register.title'), nav: 'register', status: err.status, form,
        problem: localError(req, err.code, err.message),
      });
    }
  });

  const signInPage = (req: Request, res: Response, extra: Record<string, unknown> = {}) =>
    renderPage(deps, req, res, 'signin', {
      title: t(req)('signin.title'), nav: 'my-keys', heading: t(req)('signin.title'), action: '/my-keys/sign-in',
      fieldLabel: t(req)('signin.key'), fieldName: 'key', submit: t(req)('signin.submit'), why: t(req)('signin.why'), ...extra,
    });

  r.get('/my-keys', async (req, res) => {
    const actor = sessionActor(req, deps);
    if (actor.kind !== 'user') return signInPage(req, res);
    const revoked = typeof req.query.revoked === 'string' && /^[0-9a-z]{1,20}$/.test(req.query.revoked) ? req.query.revoked : null;
    renderPage(deps, req, res, 'my-keys', {
      title: t(req)('mykeys.title'), nav: 'my-keys', mine: stats.myKeys(actor.email), stats: stats.userStats(actor.email, stats.lastDays(30)),
      notice: revoked ? t(req)('revoke.done', { id: revoked }) : null,
    });
  });

  r.post('/my-keys/sign-in', deps.limits.signIn, (req, res) => {
    try {
      requireCsrf(req, sessions);
    } catch (err) {
      return signInPage(req, res, { status: 403, problem: localError(req, 'csrf_failed', (err as Error).message) });
    }
    const presented = typeof req.body?.key === 'string' ? req.body.key.trim() : '';
    const user = usableKey(store, presented ? matchKey(store, presented) : undefined);
    if (!user) return signInPage(req, res, { status: 401, problem: localError(req, 'unauthorized', 'That key is not valid (or was revoked).') });
    sessions.issue(res, req, { kind: 'user', key_id: keyIdOf(store.prefix, user.key), email: user.email });
    res.redirect(303, '/my-keys');
  });

  r.post('/my-keys/sign-out', (req, res) => {
    requireCsrf(req, sessions);
    sessions.clear(res);
    res.redirect(303, '/my-keys');
  });

  r.post('/my-keys/add', async (req, res) => {
    const actor = sessionActor(req, deps);
    if (actor.kind !== 'user') return res.redirect(303, '/my-keys');
    requireCsrf(req, sessions);
    const { label } = parseBody(z.object({ label: text100.optional() }), req.body ?? {});
    const issued = await keys.register({ email: actor.email, label }, actor);
    showIssued(req, res, issued, '/my-keys');
  });

  const ownKey = (req: Request) => {
    const actor = sessionActor(req, deps);
    if (actor.kind !== 'user') return null;
    const { key, record } = keys.find({ key_id: String(req.params.id) });
    if (record.email !== actor.email || record.status === 'revoked') throw new AppError(404, 'not_found', 'No such key.');
    return { actor, key };
  };

  r.get('/my-keys/revoke/:id', (req, res) => {
    const own = ownKey(req);
    if (!own) return res.redirect(303, '/my-keys');
    renderPage(deps, req, res, 'revoke-confirm', {
      title: t(req)('revoke.title', { id: req.params.id }), nav: 'my-keys', keyView: stats.keyView(own.key),
      action: `/my-keys/revoke/${encodeURIComponent(req.params.id)}`, back: '/my-keys',
    });
  });

  r.post('/my-keys/revoke/:id', async (req, res) => {
    const own = ownKey(req);
    if (!own) return res.redirect(303, '/my-keys');
    requireCsrf(req, sessions);
    const { key_id } = await keys.revoke({ key_id: String(req.params.id) }, own.actor);
    // Revoking the key this browser signed in with moves the session to another of the person's keys.
    const session = sessions.read(req);
    const other = store.getUser(own.actor.email)?.api_keys[0];
    if (session?.kind === 'user' && session.key_id === key_id && other) {
      sessions.issue(res, req, { kind: 'user', key_id: keyIdOf(store.prefix, other), email: own.actor.email });
    }
    res.redirect(303, `/my-keys?revoked=${key_id}`);
  });

  return r;
}
