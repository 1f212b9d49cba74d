import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type Express } from 'express';
import helmet from 'helmet';
import { adminRouter } from './web/admin/router.js';
import { healthRouter } from './web/health/router.js';
import { homeRouter } from './web/home/router.js';
import { Auth } from './web/http/auth.js';
import type { AppDeps, WebDeps } from './web/http/deps.js';
import { errorHandler, notFoundHandler } from './web/http/errors.js';
import { registrationLimits } from './web/http/limits.js';
import { requestLog } from './web/http/request-log.js';
import { Sessions } from './web/http/session.js';
import { myKeysRouter } from './web/my-keys/router.js';
import { registrationRouter } from './web/registration/router.js';
import { statsRouter } from './web/stats/router.js';

export type { AppDeps };

/** The package root (dist/src/app.js → ../..), where views/ lives. */
export const ROOT_DIR = fileURLToPath(new URL('../..', import.meta.url));

/** Builds the Express app: shared middleware, then one router per feature. It never listens: main.ts does, and tests may too. */
export function createApp(appDeps: AppDeps): Express {
  const sessions = new Sessions(appDeps.sessionStore, appDeps.sessionSecret);
  const deps: WebDeps = {
    ...appDeps,
    sessions,
    auth: new Auth({ keys: appDeps.keys, adminToken: appDeps.adminToken, metricsToken: appDeps.config.METRICS_TOKEN, sessions, guard: appDeps.guard }),
    registerLimits: registrationLimits({ perAddress: appDeps.config.REGISTER_RATE_LIMIT, perEmail: appDeps.config.REGISTER_EMAIL_RATE_LIMIT }),
  };
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', deps.config.TRUST_PROXY);
  app.set('views', path.join(ROOT_DIR, 'views'));
  app.set('view engine', 'ejs');

  // Durations by route pattern (never the path itself: ids and emails would make a series each).
  app.use(requestLog(deps.log, (req, res, seconds) => {
    const route = req.route?.path ? String(req.baseUrl ?? '') + String(req.route.path) : req.path.startsWith('/static/') ? '/static' : 'unmatched';
    deps.metrics.http.observe({ method: req.method, route, status: String(res.statusCode) }, seconds);
  }));
  app.use(helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        'default-src': ["'self'"], 'script-src': ["'self'"], 'style-src': ["'self'"], 'img-src': ["'self'", 'data:'],
        'connect-src': ["'self'"], 'font-src': ["'self'"], 'object-src': ["'none'"], 'base-uri': ["'none'"],
        'form-action': ["'self'"], 'frame-ancestors': ["'none'"],
      },
    },
    // Intranet portals are often plain http: do not pin HTTPS on their hostnames.
    strictTransportSecurity: false,
    // No address leaves for another site, but this site's own forms keep their Origin: under
    // no-referrer a browser posts "Origin: null", and on plain http (no Sec-Fetch-Site either) every
    // form would fail the same-origin check.
    referrerPolicy: { policy: 'same-origin' },
  }));
  app.use('/static', express.static(path.join(ROOT_DIR, 'views', 'static'), { maxAge: '1h', index: false }));
  app.use((req, res, next) => {
    if (req.path.startsWith('/api/') || req.path.startsWith('/admin')) res.setHeader('Cache-Control', 'no-store');
    next();
  });
  app.use(express.json({ limit: '16kb', strict: true }));
  app.use(express.urlencoded({ limit: '16kb', extended: false }));

  app.use(healthRouter(deps));
  app.use(homeRouter(deps));
  app.use(registrationRouter(deps));
  app.use(myKeysRouter(deps));
  app.use(statsRouter(deps));
  app.use(adminRouter(deps));

  app.use(notFoundHandler);
  app.use(errorHandler(deps));
  return app;
}
