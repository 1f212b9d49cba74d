import type { NextFunction, Request, Response } from 'express';
import { AppError, fail } from '../../errors.js';
import { StorageError } from '../../store/atomic-file.js';
import type { WebDeps } from './deps.js';
import { pickLocale } from './i18n.js';
import { renderPage } from './render.js';

interface HttpError { type?: string; status?: number; expose?: boolean }

/** Anything thrown, as a catalogued error; what is not one is a 500 that hides its details. */
export function toAppError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  if (err instanceof StorageError) return fail('storage_unavailable', {}, { 'Retry-After': '30' });
  const e = err as HttpError;
  if (e?.type === 'entity.parse.failed') return fail('invalid_json');
  if (e?.type === 'entity.too.large') return fail('payload_too_large');
  if (e?.type === 'charset.unsupported' || e?.type === 'encoding.unsupported') return fail('unsupported_body');
  // The router could not decode a path parameter (%xx that is not UTF-8).
  if (err instanceof URIError) return fail('malformed_path');
  if (e?.expose && typeof e.status === 'number' && e.status >= 400 && e.status < 500) return fail('bad_request');
  return fail('internal_error');
}

/** Browsers get a page; API clients (anything under /api, with a bearer, or asking for JSON) get JSON. */
export function wantsPage(req: Request): boolean {
  if (req.path.startsWith('/api/') || req.get('authorization')) return false;
  return req.accepts(['json', 'html']) === 'html';
}

/**
 * Mounted before a feature's JSON routes that share paths with its pages: a browser's request
 * skips the API router (`next('router')`) and reaches the pages.
 */
export function apiOnly(req: Request, _res: Response, next: NextFunction): void {
  next(wantsPage(req) && req.method !== 'PATCH' && req.method !== 'DELETE' ? 'router' : undefined);
}

/** …and the pages' router skips API requests. */
export function pagesOnly(req: Request, _res: Response, next: NextFunction): void {
  next(wantsPage(req) ? undefined : 'router');
}

export function notFoundHandler(_req: Request, _res: Response, next: NextFunction): void {
  next(fail('not_found'));
}

/** The one final error middleware: `{"error":{code,message}}` for the API, a page in the reader's language for people. */
export function errorHandler(deps: WebDeps) {
  return (err: unknown, req: Request, res: Response, _next: NextFunction): void => {
    const appErr = toAppError(err);
    if (appErr.code === 'internal_error') req.log?.error({ err }, 'unhandled error');
    if (res.headersSent) { res.end(); return; }
    res.set(appErr.headers);
    if (wantsPage(req)) {
      try {
        return renderPage(deps, req, res, 'error', {
          title: String(appErr.status), status: appErr.status, code: appErr.code,
          message: appErr.text(pickLocale(req)), area: req.path.startsWith('/admin') ? 'admin' : 'user',
        });
      } catch { /* fall through to JSON */ }
    }
    res.status(appErr.status).json({ error: { code: appErr.code, message: appErr.message } });
  };
}
