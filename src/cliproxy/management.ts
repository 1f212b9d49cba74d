import axios, { type AxiosInstance, type Method } from 'axios';
import { z } from 'zod';
import {
  CliproxyError, CliproxyUnreachable, ManagementBadAnswer, ManagementDisabled, ManagementForbidden, ManagementKeyMissing,
  ManagementKeyRejected, ManagementPaused,
} from './errors.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';

/**
 * After a rejected management key the portal waits before it tries again: CLIProxyAPI bans an
 * address for 30 minutes after five failures, and forgets failures idle for 2 hours. Four tries in
 * the first 80 minutes, then one every 3 h 10 min (after the hourly sweep has surely forgotten the
 * earlier ones), never reach five.
 */
const REJECTED_BACKOFF_MS = [5 * 60_000, 15 * 60_000, 60 * 60_000, 190 * 60_000];
const FORBIDDEN_BACKOFF_MS = 10 * 60_000;
const DISABLED_BACKOFF_MS = 60_000;

export interface CliproxyStatus {
  /** null until the first call; then whether the last call got any answer. */
  reachable: boolean | null;
  /** The management key was accepted on the last answered call. */
  authenticated: boolean | null;
  version: string | null;
  /** Set by the usage source once it has probed (issue: usage). */
  generation: string | null;
  /** CLIProxyAPI v8 (it answers /v8/management/config/config-version), found at the first key list read. */
  v8: boolean | null;
  last_ok_at: string | null;
  error: string | null;
  error_code: string | null;
  paused_until: string | null;
}

export interface ManagementClientOptions {
  baseUrl: string;
  managementKey: string | undefined;
  log: Logger;
  clock: Clock;
  timeoutMs?: number;
  /** Tries for network errors and 5xx (default 3). */
  attempts?: number;
  retryDelayMs?: number;
}

export interface RawResponse<T = unknown> { status: number; data: T; headers: Record<string, unknown> }

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The documented answers (CLIPROXY.md §2, §5, §11): anything else is an error and is never followed by a write. */
const shapes = {
  keyList: z.object({ 'api-keys': z.array(z.string()).nullable() }),
  ok: z.object({ status: z.literal('ok') }),
  v8KeyList: z.array(z.string()),
  v8Ok: z.object({ status: z.literal('ok') }),
  queue: z.array(z.unknown()),
};

type Shape = z.ZodType;

export class ManagementClient {
  private readonly http: AxiosInstance;
  private readonly attempts: number;
  private readonly retryDelayMs: number;
  private pausedUntil = 0;
  private pauseCause: CliproxyError | null = null;
  private rejections = 0;
  /** Where the client key list is: the v0 routes (every version so far), or v8's config tree once v0's are gone. */
  private keyRoutes: 'v0' | 'v8' = 'v0';
  private readonly state: CliproxyStatus = {
    reachable: null, authenticated: null, version: null, generation: null, v8: null, last_ok_at: null,
    error: null, error_code: null, paused_until: null,
  };
  /** Calls actually sent (tests and the benchmark read it). */
  callsSent = 0;

  constructor(private readonly opts: ManagementClientOptions) {
    this.attempts = opts.attempts ?? 3;
    this.retryDelayMs = opts.retryDelayMs ?? 250;
    this.http = axios.create({
      baseURL: opts.baseUrl,
      timeout: opts.timeoutMs ?? 5000,
      proxy: false, // CLIProxyAPI sits beside the portal; an HTTP_PROXY in the environment must not apply
      validateStatus: () => true,
      // Bodies are read as text and parsed here, so an answer that is not JSON is seen as such.
      responseType: 'text',
      transformResponse: [(data: unknown) => data],
      headers: { Authorization: `Bearer ${opts.managementKey ?? ''}` },
      transitional: { clarifyTimeoutError: true },
    });
    if (!opts.managementKey) {
      this.state.error = 'CLIPROXY_MANAGEMENT_KEY is not set: keys wait as pending until it is';
      this.state.error_code = 'management_key_missing';
    }
  }

  get configured(): boolean { return Boolean(this.opts.managementKey); }

  get baseUrl(): string { return this.opts.baseUrl; }

  status(): CliproxyStatus {
    return { ...this.state, paused_until: this.pausedUntil > this.opts.clock.now() ? new Date(this.pausedUntil).toISOString() : null };
  }

  setGeneration(generation: string | null): void { this.state.generation = generation; }

  /** Which routes hold the client key list ('v8' once CLIProxyAPI no longer serves v0's). */
  get keyApi(): 'v0' | 'v8' { return this.keyRoutes; }

  // ---- client keys (CLIPROXY.md §2, §11) ------------------------------------------------------

  /** CLIProxyAPI's client key list as saved (an absent list is empty). */
  async listKeys(): Promise<string[]> {
    if (this.state.v8 === null) {
      this.state.v8 = await this.isV8();
      if (this.state.v8) this.opts.log.info('CLIProxyAPI is v8: its v0 management routes are used while it serves them');
    }
    if (this.keyRoutes === 'v8') return this.listKeysV8();
    const res = await this.request<{ 'api-keys': string[] | null }>('GET', '/v0/management/api-keys', { expect: shapes.keyList, accept: [404] });
    if (res.status === 404) {
      // v8 still serves v0's routes, but may stop: then the config tree holds the list.
      if (await this.isV8()) {
        this.keyRoutes = 'v8';
        this.opts.log.warn('CLIProxyAPI v8 no longer serves /v0/management/api-keys: using its config routes (a whole-list write, see the README)');
        return this.listKeysV8();
      }
      throw this.rejected(404, 'not found', '/api-keys');
    }
    return res.data['api-keys'] ?? []; // null: config.yaml has no api-keys
  }

  /** Adds K: PATCH {old:K,new:K} appends it when absent and changes nothing when present. */
  async addKey(key: string): Promise<void> {
    if (this.keyRoutes === 'v8') return this.rewriteV8((list) => (list.includes(key) ? null : [...list, key]));
    await this.request('PATCH', '/v0/management/api-keys', { data: { old: key, new: key }, expect: shapes.ok });
  }

  /** Removes every copy of K (trimmed, as CLIProxyAPI compares); an absent K is fine. */
  async removeKey(key: string): Promise<void> {
    if (this.keyRoutes === 'v8') return this.rewriteV8((list) => (list.some((k) => k.trim() === key) ? list.filter((k) => k.trim() !== key) : null));
    await this.request('DELETE', '/v0/management/api-keys', { params: { value: key }, expect: shapes.ok });
  }

  /** v8: `GET /v8/management/config/config-version` answers 8 (v7 has no such route). */
  private async isV8(): Promise<boolean> {
    const res = await this.request<unknown>('GET', '/v8/management/config/config-version', { accept: [404] });
    return res.status === 200 && Number(res.data) === 8;
  }

  private async listKeysV8(): Promise<string[]> {
    const res = await this.request<string[]>('GET', '/v8/management/config/access/api-keys', { expect: shapes.v8KeyList, accept: [404] });
    return res.status === 404 ? [] : res.data;
  }

  /**
   * v8 has no append or remove: read the list, change it, write it back at once, and read it again
   * to verify. An edit someone makes between the read and the write is lost (CLIPROXY.md §11.2); the
   * reconciler's next pass restores the portal's own keys, never anyone else's.
   */
  private async rewriteV8(change: (list: string[]) => string[] | null): Promise<void> {
    const next = change(await this.listKeysV8());
    if (next === null) return;
    if (next.every((k) => !k.trim())) throw new CliproxyError('refusing to leave CLIProxyAPI without client keys (it would open the proxy)');
    await this.request('PUT', '/v8/management/config/access/api-keys', { data: next, expect: shapes.v8Ok });
  }

  /** The usage queue's route: v0's, or v8's once v0's routes are gone. */
  get queuePath(): string {
    return this.keyRoutes === 'v8' ? '/v8/management/observability/usage/queue' : '/v0/management/usage-queue';
  }

  /**
   * Pops up to `count` usage records. Destructive, so never retried, and given a long time to answer:
   * a pop that timed out or was retried after a lost answer would have handed records to nobody.
   */
  async popUsage(count: number): Promise<unknown[]> {
    return (await this.request<unknown[]>('GET', this.queuePath, { params: { count }, expect: shapes.queue, once: true, timeoutMs: 30_000 })).data;
  }

  /**
   * Whether CLIProxyAPI accepts a client key right now: GET /v1/models with it (no management call,
   * no usage record). 'refused' is its 401; anything else that answers means the key got past auth.
   */
  async probeKey(key: string, timeoutMs = 2000): Promise<'accepted' | 'refused' | 'unknown'> {
    try {
      const res = await this.http.request({ method: 'GET', url: '/v1/models', headers: { Authorization: `Bearer ${key}` }, timeout: timeoutMs });
      return res.status === 401 ? 'refused' : res.status < 500 ? 'accepted' : 'unknown';
    } catch {
      return 'unknown';
    }
  }

  // ---- the one way management calls go out ----------------------------------------------------

  /**
   * Sends one management call. Network errors and 5xx are retried with backoff; 401/403 are never
   * retried and pause all further calls; other 4xx are returned when listed in `accept`, else thrown.
   * A 2xx answer must parse and, when `expect` is given, have that shape: else ManagementBadAnswer.
   */
  async request<T = unknown>(method: Method, path: string,
    o: { data?: unknown; params?: Record<string, string | number>; accept?: number[]; expect?: Shape; once?: boolean; timeoutMs?: number } = {}): Promise<RawResponse<T>> {
    this.checkGate();
    let lastError: CliproxyError = new CliproxyUnreachable('no attempt made');
    for (let attempt = 1; attempt <= (o.once ? 1 : this.attempts); attempt++) {
      if (attempt > 1) await sleep(this.retryDelayMs * 3 ** (attempt - 2) * (0.75 + Math.random() / 2));
      let res;
      try {
        this.callsSent++;
        res = await this.http.request({ method, url: path, data: o.data, params: o.params, ...(o.timeoutMs ? { timeout: o.timeoutMs } : {}) });
      } catch (err) {
        lastError = new CliproxyUnreachable(`CLIProxyAPI at ${this.opts.baseUrl} is unreachable (${describeNetError(err)})`);
        this.noteFailure(lastError, false);
        continue;
      }
      const version = res.headers['x-cpa-version'];
      if (typeof version === 'string' && version) this.state.version = version;
      this.state.reachable = true;
      const text = typeof res.data === 'string' ? res.data : '';
      let body: unknown;
      try { body = text.trim() === '' ? undefined : JSON.parse(text); } catch { body = text; }
      if (res.status < 300 && o.expect) {
        const checked = o.expect.safeParse(body);
        if (!checked.success) {
          const err = new ManagementBadAnswer(`CLIProxyAPI answered ${method} ${path} with something unexpected (${describeBody(text)}); nothing was changed`, res.status);
          this.noteFailure(err, true);
          this.opts.log.error({ status: res.status, path }, err.message);
          throw err;
        }
      }
      if (res.status < 400 || o.accept?.includes(res.status)) {
        this.noteSuccess();
        return { status: res.status, data: body as T, headers: res.headers as Record<string, unknown> };
      }
      const message = errorText(body) ?? `HTTP ${res.status}`;
      if (res.status >= 500) {
        lastError = new CliproxyError(`CLIProxyAPI answered ${res.status}: ${message}`, res.status);
        this.noteFailure(lastError, true);
        continue;
      }
      throw this.rejected(res.status, message, path.replace(/^\/v[08]\/management/, ''));
    }
    throw lastError;
  }

  /** Throws ManagementPaused while calls are paused (RESP uses the same gate: the ban is shared). */
  checkGate(): void {
    if (!this.opts.managementKey) throw new ManagementKeyMissing('CLIPROXY_MANAGEMENT_KEY is not set');
    if (this.pausedUntil > this.opts.clock.now() && this.pauseCause) {
      throw new ManagementPaused(`management calls paused until ${new Date(this.pausedUntil).toISOString()}: ${this.pauseCause.message}`,
        this.pausedUntil, this.pauseCause);
    }
  }

  /** A RESP AUTH refusal counts like an HTTP one: it pauses every management call. */
  respRejected(message: string): CliproxyError {
    const status = /invalid|missing/i.test(message) ? 401 : 403;
    return this.rejected(status, message, 'resp');
  }

  get key(): string { return this.opts.managementKey ?? ''; }

  private rejected(status: number, message: string, path = ''): CliproxyError {
    const now = this.opts.clock.now();
    let err: CliproxyError;
    if (status === 401) {
      this.state.authenticated = false;
      this.rejections++;
      const wait = REJECTED_BACKOFF_MS[Math.min(this.rejections - 1, REJECTED_BACKOFF_MS.length - 1)]!;
      err = new ManagementKeyRejected(`CLIProxyAPI rejected the management key (${message}); check CLIPROXY_MANAGEMENT_KEY`, status);
      this.pause(err, now + wait);
    } else if (status === 403) {
      const banned = /banned/i.test(message);
      const wait = banned ? parseGoDuration(message) + 60_000 : FORBIDDEN_BACKOFF_MS;
      err = new ManagementForbidden(banned
        ? `CLIProxyAPI has banned this address after failed management logins (${message})`
        : `CLIProxyAPI refused management access (${message}); set MANAGEMENT_PASSWORD or remote-management.allow-remote`, status);
      this.pause(err, now + wait);
    } else if (status === 404 && path === '/api-keys') {
      // api-keys exists in every version: a 404 there means management is switched off.
      err = new ManagementDisabled('CLIProxyAPI has no management API (404): set remote-management.secret-key or MANAGEMENT_PASSWORD', status);
      this.pause(err, now + DISABLED_BACKOFF_MS);
    } else if (status === 404) {
      return new CliproxyError(`this CLIProxyAPI has no ${path} endpoint (404)`, status);
    } else {
      return new CliproxyError(`CLIProxyAPI answered ${status}: ${message}`, status);
    }
    this.setError(err);
    return err;
  }

  private pause(cause: CliproxyError, until: number): void {
    this.pausedUntil = until;
    this.pauseCause = cause;
    this.opts.log.error({ paused_until: new Date(until).toISOString() },
      `${cause.message}; no further management calls until then`);
  }

  private noteSuccess(): void {
    const recovered = this.state.error_code !== null;
    this.rejections = 0;
    this.state.authenticated = true;
    this.state.last_ok_at = new Date(this.opts.clock.now()).toISOString();
    this.state.error = this.state.error_code = null;
    if (recovered) for (const fn of this.recoveryListeners) fn();
  }

  private readonly recoveryListeners: (() => void)[] = [];

  /** Called when a management call succeeds after a failure: whoever waited on CLIProxyAPI may go on at once. */
  onRecovered(fn: () => void): void { this.recoveryListeners.push(fn); }

  private noteFailure(err: CliproxyError, reachable: boolean): void {
    this.state.reachable = reachable;
    this.setError(err);
  }

  private setError(err: CliproxyError): void {
    this.state.error = err.message;
    this.state.error_code = errorCode(err);
  }
}

export function errorCode(err: CliproxyError): string {
  if (err instanceof ManagementPaused) return errorCode(err.cause);
  return ({
    CliproxyUnreachable: 'cliproxy_unreachable', ManagementKeyRejected: 'management_key_rejected',
    ManagementForbidden: 'management_forbidden', ManagementDisabled: 'management_disabled',
    ManagementKeyMissing: 'management_key_missing', ManagementBadAnswer: 'cliproxy_bad_answer',
  } as Record<string, string>)[err.name] ?? 'cliproxy_error';
}

function errorText(data: unknown): string | undefined {
  if (data && typeof data === 'object' && 'error' in data) {
    const e = (data as { error: unknown }).error;
    if (typeof e === 'string') return e;
  }
  if (typeof data === 'string' && data.trim()) return data.trim().slice(0, 200);
  return undefined;
}

/** A short, safe description of an answer that was not what was expected. */
function describeBody(text: string): string {
  const t = text.trim();
  if (!t) return 'an empty body';
  if (t.startsWith('<')) return 'HTML';
  return `"${t.slice(0, 60).replace(/[^\x20-\x7e]/g, '?')}${t.length > 60 ? '…' : ''}"`;
}

function describeNetError(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code ?? e.message ?? 'network error';
}

/** "Try again in 29m12s" → milliseconds (Go's time.Duration format); 30 minutes if unreadable. */
export function parseGoDuration(text: string): number {
  const m = /in\s+((?:\d+(?:\.\d+)?(?:h|m|s|ms))+)/.exec(text);
  if (!m) return 30 * 60_000;
  let ms = 0;
  for (const [, n, unit] of m[1]!.matchAll(/(\d+(?:\.\d+)?)(ms|h|m|s)/g)) {
    ms += Number(n) * ({ h: 3_600_000, m: 60_000, s: 1000, ms: 1 } as Record<string, number>)[unit!]!;
  }
  return ms;
}
