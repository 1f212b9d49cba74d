import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type Express } from 'express';
import helmet from 'helmet';
import { adminApiRouter } from './web/admin-api.js';
import { adminKeysRouter } from './web/admin-keys.js';
import { adminPagesRouter } from './web/admin-pages.js';
import { apiRouter } from './web/api.js';
import type { AppDeps, WebDeps } from './web/deps.js';
import { errorHandler, notFoundHandler } from './web/error-handler.js';
import { healthRouter } from './web/health.js';
import { pagesRouter } from './web/pages.js';
import { perIpLimit } from './web/rate-limit.js';
import { requestLog } from './web/request-log.js';
import { Sessions } from './web/session.js';

export type { AppDeps };

/** The package root (dist/src/app.js → ../..), where views/ lives. */
export const ROOT_DIR = fileURLToPath(new URL('../..', import.meta.url));

/** Builds the Express app. It never listens: main.ts does, and tests may too. */
export function createApp(appDeps: AppDeps): Express {
  const deps: WebDeps = {
    ...appDeps,
    sessions: new Sessions(appDeps.sessionSecret, () => appDeps.clock.now()),
    limits: {
      register: perIpLimit(appDeps.config.REGISTER_RATE_LIMIT, 'registrations'),
      signIn: perIpLimit(appDeps.config.LOGIN_RATE_LIMIT, 'sign-in attempts'),
    },
  };
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', deps.config.TRUST_PROXY);
  app.set('views', path.join(ROOT_DIR, 'views'));
  app.set('view engine', 'ejs');

  app.use(requestLog(deps.log));
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
  }));
  app.use('/static', express.static(path.join(ROOT_DIR, 'views', 'static'), { maxAge: '1h', index: false }));
  app.use((req, res, next) => {
    if (req.path.startsWith('/api/') || req.path.startsWith('/admin')) res.setHeader('Cache-Control', 'no-store');
    next();
  });
  app.use(express.json({ limit: '16kb', strict: true }));
  app.use(express.urlencoded({ limit: '16kb', extended: false }));

  app.use(healthRouter(deps));
  app.use(apiRouter(deps));
  app.use(adminApiRouter(deps));
  app.use(adminKeysRouter(deps));
  app.use(pagesRouter(deps));
  app.use(adminPagesRouter(deps));

  app.use(notFoundHandler);
  app.use(errorHandler(deps));
  return app;
}
