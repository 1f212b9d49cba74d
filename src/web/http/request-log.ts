import { randomUUID } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { requestContext, type Logger } from '../../log.js';

declare module 'express-serve-static-core' {
  interface Request { id: string; log: Logger }
}

/**
 * A request id per request (echoed as X-Request-Id), and when it ends one access line and `ended`
 * (its duration, for metrics): one listener a request.
 */
export function requestLog(log: Logger, ended: (req: Request, res: Response, seconds: number) => void = () => undefined) {
  const http = log.child({ module: 'http' });
  return (req: Request, res: Response, next: NextFunction) => {
    const incoming = req.get('x-request-id');
    req.id = incoming && /^[\w.-]{1,64}$/.test(incoming) ? incoming : randomUUID();
    req.log = http;
    res.setHeader('X-Request-Id', req.id);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      // The path only: query strings may carry credentials (?key=, ?auth_token=).
      const line = { method: req.method, path: req.path, status: res.statusCode, ms: Math.round(ms * 10) / 10 };
      // A 503 is a condition the portal reports once (storage, CLIProxyAPI), not a failure per request.
      if (res.statusCode >= 500 && res.statusCode !== 503) req.log.error(line, 'request failed');
      else if (req.path === '/healthz' || req.path.startsWith('/static/')) req.log.debug(line, 'request');
      else req.log.info(line, 'request');
      ended(req, res, ms / 1000);
    });
    requestContext.run(req.id, next);
  };
}
