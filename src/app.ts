import path from 'node:path';
import { fileURLToPath } from 'node:url';
import express, { type Express } from 'express';
import { adminApiRouter } from './web/admin-api.js';
import { apiRouter } from './web/api.js';
import type { AppDeps } from './web/deps.js';
import { errorHandler, notFoundHandler } from './web/error-handler.js';
import { healthRouter } from './web/health.js';
import { pagesRouter } from './web/pages.js';
import { requestLog } from './web/request-log.js';

export type { AppDeps };

/** The package root (dist/src/app.js → ../..), where views/ lives. */
export const ROOT_DIR = fileURLToPath(new URL('../..', import.meta.url));

/** Builds the Express app. It never listens: main.ts does, and tests may too. */
export function createApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', deps.config.TRUST_PROXY);
  app.set('views', path.join(ROOT_DIR, 'views'));
  app.set('view engine', 'ejs');

  app.use(requestLog(deps.log));
  app.use((req, res, next) => {
    if (req.path.startsWith('/api/') || req.path.startsWith('/admin')) res.setHeader('Cache-Control', 'no-store');
    next();
  });
  app.use(express.json({ limit: '16kb', strict: true }));

  app.use(healthRouter(deps));
  app.use(apiRouter(deps));
  app.use(adminApiRouter(deps));
  app.use(pagesRouter(deps));

  app.use(notFoundHandler);
  app.use(errorHandler);
  return app;
}
