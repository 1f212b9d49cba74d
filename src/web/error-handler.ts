import type { NextFunction, Request, Response } from 'express';
import { AppError, notFound } from '../errors.js';
import { CommitFailed } from '../store/keys-store.js';
import type { WebDeps } from './deps.js';
import { localError, renderPage } from './render.js';

interface BodyParserError { type?: string; status?: number; expose?: boolean }

/** Maps anything thrown to an AppError; unknown errors become a 500 that hides the details. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof CommitFailed) {
    return new AppError(503, 'storage_unavailable', 'The portal cannot save changes right now (its disk is full or read-only). Nothing was changed; try again later.',
      { 'Retry-After': '30' });
  }
  const e = err as BodyParserError & Error;
  if (e?.type === 'entity.parse.failed') return new AppError(400, 'invalid_json', 'The request body is not valid JSON.');
  if (e?.type === 'entity.too.large') return new AppError(413, 'payload_too_large', 'The request body is too large.');
  if (e?.expose && typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
    return new AppError(e.status, 'bad_request', e.message);
  }
  return new AppError(500, 'internal_error', 'Something went wrong on our side. Please try again.');
}

/** Browsers get a page; API clients (anything under /api, with a bearer, or asking for JSON) get JSON. */
export function wantsPage(req: Request): boolean {
  if (req.path.startsWith('/api/') || req.get('authorization')) return false;
  return req.accepts(['json', 'html']) === 'html';
}

export function notFoundHandler(_req: Request, _res: Response, next: NextFunction): void {
  next(notFound('There is nothing at this address.'));
}

/** The one final error middleware: `{"error":{code,message}}` for the API, a readable page for people. */
export function errorHandler(deps: WebDeps) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    const appErr = toAppError(err);
    if (appErr.status >= 500 && appErr.code === 'internal_error') req.log?.error({ err }, 'unhandled error');
    if (res.headersSent) return;
    res.set(appErr.headers);
    if (wantsPage(req)) {
      try {
        return renderPage(deps, req, res, 'error', {
          title: String(appErr.status), status: appErr.status, code: appErr.code,
          message: localError(req, appErr.code, appErr.message), area: req.path.startsWith('/admin') ? 'admin' : 'user',
        });
      } catch { /* fall through to JSON */ }
    }
    res.status(appErr.status).json({ error: { code: appErr.code, message: appErr.message } });
  };
}
