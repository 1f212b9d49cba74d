/**
 * The one error type that carries an HTTP status and a stable snake_case code. Services throw it;
 * the final middleware turns it into `{"error":{"code","message"}}` or an error page.
 */
export class AppError extends Error {
  override name = 'AppError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

export const badRequest = (code: string, message: string) => new AppError(400, code, message);
export const unauthorized = (message = 'Missing or invalid credentials.') =>
  new AppError(401, 'unauthorized', message, { 'WWW-Authenticate': 'Bearer' });
export const forbidden = (message = 'You may not do that.') => new AppError(403, 'forbidden', message);
export const notFound = (message = 'Not found.') => new AppError(404, 'not_found', message);
export const conflict = (code: string, message: string) => new AppError(409, code, message);
export const unavailable = (code: string, message: string, retryAfterS?: number) =>
  new AppError(503, code, message, retryAfterS ? { 'Retry-After': String(retryAfterS) } : {});
