import { Router } from 'express';
import type { WebDeps } from '../http/deps.js';
import { LOCALES, pickLocale, translator } from '../http/i18n.js';
import { localPath, renderPage } from '../http/render.js';
import { LANG_COOKIE } from '../http/session.js';

/** The start page and the language switch. */
export function homeRouter(deps: WebDeps): Router {
  const r = Router();

  r.get('/', (req, res) => {
    const t = translator(pickLocale(req));
    renderPage(deps, req, res, 'index', { title: t('home.title'), pool: deps.keys.poolStatus(), mode: deps.registration.mode });
  });

  r.get('/lang/:code', (req, res) => {
    const code = (LOCALES as readonly string[]).includes(req.params.code) ? req.params.code : 'en';
    res.cookie(LANG_COOKIE, code, { sameSite: 'lax', path: '/', maxAge: 365 * 86_400_000, httpOnly: true });
    res.redirect(303, localPath(req.query.back));
  });

  return r;
}
