import { Router, type Request, type Response } from 'express';
import { z } from 'zod';
import { AppError, fail } from '../../errors.js';
import type { ClaimResult, RegistrationResult } from '../../keys/registration.js';
import type { IssuedKey } from '../../keys/service.js';
import type { RegistrationRequest } from '../../store/requests-store.js';
import type { WebDeps } from '../http/deps.js';
import { apiOnly, pagesOnly } from '../http/errors.js';
import { actorOf, adminApi, adminPage } from '../http/guards.js';
import { pickLocale, translator } from '../http/i18n.js';
import { clientBaseUrl, problem, renderPage } from '../http/render.js';
import { formToJson, parseBody, registerBody } from '../http/validate.js';

const claimBody = z.object({ claim: z.string().max(100).transform((s) => s.trim()) });

/** A request as an admin sees it (never the claim's hash, nor the key it holds). */
const requestView = (r: RegistrationRequest) => ({
  id: r.id, email: r.email, name: r.name, label: r.label, status: r.status, created_at: r.created_at, decided_at: r.decided_at, key_id: r.key_id,
});

/**
 * Getting a key by oneself: POST /api/register-key and the /register form, under REGISTRATION
 * (`open`, `domains`, or `approval` by an admin, whose requests are claimed with a code shown once),
 * and the admin's list of requests to approve or deny.
 */
export function registrationRouter(deps: WebDeps): Router {
  const { registration, config, keys, auth } = deps;
  const t = (req: Request) => translator(pickLocale(req));

  const issuedJson = (req: Request, issued: IssuedKey) => ({
    key: issued.key, key_id: issued.key_id, email: issued.record.email, name: keys.user(issued.record.email ?? '')?.name ?? '',
    label: issued.record.label, status: issued.record.status, daily_limit: issued.record.daily_limit,
    daily_token_limit: issued.record.daily_token_limit, created_at: issued.record.created_at, base_url: clientBaseUrl(deps, req),
  });
  const claimOf = (req: Request) => auth.claim(req, parseBody(claimBody, req.body).claim, (code) => registration.claim(code));

  // ---- the JSON API --------------------------------------------------------------------------

  const api = Router();
  /** How many keys are left to hand out. */
  api.get('/api/key-pool-status', (_req, res) => { res.json(keys.poolStatus()); });

  api.post('/api/register-key', ...deps.registerLimits, async (req, res) => {
    const actor = auth.actor(req);
    const result: RegistrationResult = await registration.register(parseBody(registerBody, req.body), actor);
    if (result.kind === 'issued') return res.status(201).json(issuedJson(req, result.issued));
    res.status(202).json({ status: 'awaiting_approval', request_id: result.request.id, email: result.request.email, claim: result.claim });
  });

  /** Where an approval-mode request stands; the key itself, once, after an admin approved it. */
  api.post('/api/claim-key', async (req, res) => {
    auth.actor(req); // a wrong key or token is a 401 here too, never ignored
    const c: ClaimResult = await claimOf(req);
    if (c.state === 'issued') return res.status(201).json(issuedJson(req, c.issued));
    if (c.state === 'pending') return res.status(202).json({ status: 'awaiting_approval', request_id: c.request.id });
    throw fail(c.state === 'denied' ? 'registration_denied' : 'registration_claimed');
  });

  const adminJson = Router();
  adminJson.use('/admin/requests', apiOnly, adminApi(deps));
  adminJson.get('/admin/requests', (_req, res) => {
    res.json({ mode: registration.mode, requests: registration.requests().map(requestView) });
  });
  adminJson.post('/admin/requests/:id/:decision', async (req, res) => {
    const decided = await decide(String(req.params.id), String(req.params.decision), res);
    res.json(requestView(decided));
  });

  const decide = (id: string, decision: string, res: Response) => {
    if (decision === 'approve') return registration.approve(id, actorOf(res));
    if (decision === 'deny') return registration.deny(id, actorOf(res));
    throw fail('not_found');
  };

  // ---- the pages -------------------------------------------------------------------------------

  const pages = Router();
  const registerPage = (req: Request, res: Response, extra: Record<string, unknown> = {}) =>
    renderPage(deps, req, res, 'register', { title: t(req)('register.title'), nav: 'register', form: {}, mode: registration.mode, domains: config.ALLOWED_EMAIL_DOMAINS, ...extra });
  /**
   * The new key, shown once, with this browser signed in as its holder (as if the key had been
   * pasted into the sign-in form), so "Go to my keys" needs no second step. A session that cannot
   * be saved (a full disk) only costs that: the key is shown all the same.
   */
  const showIssued = async (req: Request, res: Response, issued: IssuedKey) => {
    const { email } = issued.record;
    let signedInAsAdmin = false;
    try { signedInAsAdmin = auth.sessionActor(req).kind === 'admin'; } catch { /* no valid session */ }
    // An admin's session stays (an admin trying the public form keeps their pages).
    if (!signedInAsAdmin) {
      try {
        await deps.sessions.signIn(req, res, email === null ? { kind: 'holder', key_id: issued.key_id } : { kind: 'user', key_id: issued.key_id, email });
      } catch (err) {
        deps.log.warn({ module: 'registration', key_id: issued.key_id, err: (err as Error).message }, 'could not sign the new key in');
      }
    }
    renderPage(deps, req, res, 'key-result', {
      title: t(req)('result.title'), nav: 'register', next: '/my-keys', issued: { key: issued.key, key_id: issued.key_id, status: issued.record.status },
    });
  };
  const showWaiting = (req: Request, res: Response, o: { claim?: string; request: RegistrationRequest; status?: number }) =>
    renderPage(deps, req, res, 'register-waiting', { title: t(req)('waiting.title'), nav: 'register', status: o.status ?? 202, claim: o.claim ?? null, request: o.request });

  pages.get('/register', (req, res) => registerPage(req, res));

  pages.post('/register', ...deps.registerLimits, async (req, res) => {
    const form = (req.body ?? {}) as Record<string, unknown>;
    try {
      auth.requireCsrf(req);
      const result = await registration.register(parseBody(registerBody, formToJson(form, {})), auth.sessionActor(req));
      if (result.kind === 'issued') return await showIssued(req, res, result.issued);
      showWaiting(req, res, { claim: result.claim, request: result.request });
    } catch (err) {
      if (!(err instanceof AppError) || err.status >= 500) throw err;
      registerPage(req, res, { ...problem(req, err), form });
    }
  });

  const claimPage = (req: Request, res: Response, extra: Record<string, unknown> = {}) =>
    renderPage(deps, req, res, 'register-claim', { title: t(req)('claim.title'), nav: 'register', ...extra });

  pages.get('/register/claim', (req, res) => claimPage(req, res));

  pages.post('/register/claim', async (req, res) => {
    try {
      auth.requireCsrf(req);
      const c = await claimOf(req);
      if (c.state === 'issued') return await showIssued(req, res, c.issued);
      if (c.state === 'pending') return showWaiting(req, res, { request: c.request, claim: String(req.body.claim).trim() });
      throw fail(c.state === 'denied' ? 'registration_denied' : 'registration_claimed');
    } catch (err) {
      if (!(err instanceof AppError) || err.status >= 500) throw err;
      claimPage(req, res, problem(req, err));
    }
  });

  const adminPages = Router();
  adminPages.use('/admin/requests', pagesOnly, adminPage(deps));
  adminPages.get('/admin/requests', (req, res) => {
    const done = typeof req.query.done === 'string' && ['approve', 'deny'].includes(req.query.done) ? req.query.done : null;
    renderPage(deps, req, res, 'admin-requests', {
      title: t(req)('admin.requests.title'), area: 'admin', nav: 'requests', mode: registration.mode,
      requests: registration.requests().map(requestView), notice: done ? t(req)(done === 'approve' ? 'admin.requests.approved' : 'admin.requests.denied') : null,
    });
  });
  adminPages.post('/admin/requests/:id/:decision', async (req, res) => {
    await decide(String(req.params.id), String(req.params.decision), res);
    res.redirect(303, `/admin/requests?done=${req.params.decision === 'approve' ? 'approve' : 'deny'}`);
  });

  const r = Router();
  r.use(api, adminJson, pages, adminPages);
  return r;
}
