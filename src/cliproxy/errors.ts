/** Errors of the CLIProxyAPI client. Nothing outside src/cliproxy sees an axios error. */
export class CliproxyError extends Error {
  override name = 'CliproxyError';
  constructor(message: string, readonly status?: number) {
    super(message);
  }
}
/** No answer: connection refused, reset, timed out, DNS. */
export class CliproxyUnreachable extends CliproxyError {
  override name = 'CliproxyUnreachable';
}
/** 401 from the management API: the key is wrong. Retrying would get the portal banned. */
export class ManagementKeyRejected extends CliproxyError {
  override name = 'ManagementKeyRejected';
}
/** 403: the portal's address is banned, or remote management is off. */
export class ManagementForbidden extends CliproxyError {
  override name = 'ManagementForbidden';
}
/** 404 on a management route: management is not enabled on that CLIProxyAPI. */
export class ManagementDisabled extends CliproxyError {
  override name = 'ManagementDisabled';
}
/** An answer that is not the documented one (HTML, `{}`, truncated JSON…): never acted on. */
export class ManagementBadAnswer extends CliproxyError {
  override name = 'ManagementBadAnswer';
}
/** CLIPROXY_MANAGEMENT_KEY is not set, so the portal does not call at all. */
export class ManagementKeyMissing extends CliproxyError {
  override name = 'ManagementKeyMissing';
}
/** Calls are paused after a rejection until `until` (ms since epoch). */
export class ManagementPaused extends CliproxyError {
  override name = 'ManagementPaused';
  constructor(message: string, readonly until: number, override readonly cause: CliproxyError) {
    super(message);
  }
}
