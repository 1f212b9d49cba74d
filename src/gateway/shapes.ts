/** Which API a request speaks, judged by its path, so that refusals come in the shape its client reads. */
export type Dialect = 'openai' | 'anthropic' | 'gemini';

export function dialectOf(path: string): Dialect {
  if (path.startsWith('/v1beta/')) return 'gemini';
  if (path === '/v1/messages' || path.startsWith('/v1/messages/') || path.startsWith('/v1/messages?')) return 'anthropic';
  return 'openai';
}

/** What kind of refusal, for the type fields of each API's error body. */
export type Refusal = 'authentication' | 'permission' | 'rate_limit' | 'not_found' | 'invalid_request' | 'unavailable' | 'timeout';

const OPENAI_TYPE: Record<Refusal, string> = {
  authentication: 'invalid_request_error', permission: 'invalid_request_error', rate_limit: 'rate_limit_exceeded',
  not_found: 'invalid_request_error', invalid_request: 'invalid_request_error', unavailable: 'server_error', timeout: 'server_error',
};
const ANTHROPIC_TYPE: Record<Refusal, string> = {
  authentication: 'authentication_error', permission: 'permission_error', rate_limit: 'rate_limit_error',
  not_found: 'not_found_error', invalid_request: 'invalid_request_error', unavailable: 'api_error', timeout: 'api_error',
};
const GEMINI_STATUS: Record<Refusal, string> = {
  authentication: 'UNAUTHENTICATED', permission: 'PERMISSION_DENIED', rate_limit: 'RESOURCE_EXHAUSTED',
  not_found: 'NOT_FOUND', invalid_request: 'INVALID_ARGUMENT', unavailable: 'UNAVAILABLE', timeout: 'DEADLINE_EXCEEDED',
};

/**
 * An error body as each API writes its own: OpenAI `{error:{message,type,param,code}}`, Anthropic
 * `{type:"error",error:{type,message}}`, Gemini `{error:{code,message,status}}`.
 */
export function errorBody(dialect: Dialect, status: number, kind: Refusal, code: string, message: string): string {
  switch (dialect) {
    case 'anthropic': return JSON.stringify({ type: 'error', error: { type: ANTHROPIC_TYPE[kind], message } });
    case 'gemini': return JSON.stringify({ error: { code: status, message, status: GEMINI_STATUS[kind] } });
    default: return JSON.stringify({ error: { message, type: OPENAI_TYPE[kind], param: null, code } });
  }
}
