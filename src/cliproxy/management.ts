import axios, { type AxiosInstance, type Method } from 'axios';
import {
  CliproxyError, CliproxyUnreachable, ManagementDisabled, ManagementForbidden, ManagementKeyMissing,
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

export class ManagementClient {
  private readonly http: AxiosInstance;
  private readonly attempts: number;
  private readonly retryDelayMs: number;
  private pausedUntil = 0;
  private pauseCause: CliproxyError | null = null;
  private rejections = 0;
  private readonly state: CliproxyStatus = {
    reachable: null, authenticated: null, version: null, generation: null, last_ok_at: null,
    error: null, error_code: null, paused_until: null,
  };
  /** Calls actually sent (tests and the benchmark read it). */
  callsSent = 0;

  constructor(private readonly opts: ManagementClientOptions) {
    this.attempts = opts.attempts ?? 3;
    this.retryDelayMs = opts.retryDelayMs ?? 250;
    this.http = axios.create({
      baseURL: `${opts.baseUrl}/v0/management`,
      timeout: opts.timeoutMs ?? 5000,
      proxy: false, // CLIProxyAPI sits beside the portal; an HTTP_PROXY in the environment must not apply
      validateStatus: () => true,
      headers: { Authorization: `Bearer ${opts.managementKey ?? ''}` },
      transitional: { clarifyTimeoutError: true },
    });
    if (!opts.managementKey) {
      this.state.error = 'CLIPROXY_MANAGEMENT_KEY is not set: keys wait as pending until it is';
      this.state.error_code = 'management_key_missing';
    }
  }

  get configured(): boolean { return Boolean(this.opts.managementKey); }

  status(): CliproxyStatus {
    return { ...this.state, paused_until: this.pausedUntil > this.opts.clock.now() ? new Date(this.pausedUntil).toISOString() : null };
  }

  setGeneration(generation: string | null): void { this.state.generation = generation; }

  /** Lets an admin try again before the pause ends (after fixing the key on either side). */
  resume(): void { this.pausedUntil = 0; }

  // ---- client keys (CLIPROXY.md §2) -----------------------------------------------------------

  async listKeys(): Promise<string[]> {
    const res = await this.request<{ 'api-keys'?: unknown }>('GET', '/api-keys');
    const list = res.data?.['api-keys'];
    if (list === null || list === undefined) return []; // a nil Go slice when config.yaml has none
    if (!Array.isArray(list)) throw new CliproxyError('unexpected api-keys answer from CLIProxyAPI', res.status);
    return list.filter((k): k is string => typeof k === 'string');
  }

  /** Idempotent append: PATCH {old:K,new:K} appends K when it is absent. */
  async addKey(key: string): Promise<void> {
    await this.request('PATCH', '/api-keys', { data: { old: key, new: key } });
  }

  /** Removes every copy of K; absent K is fine. */
  async removeKey(key: string): Promise<void> {
    await this.request('DELETE', '/api-keys', { params: { value: key } });
  }

  /** Replaces the whole list. An empty list would switch client authentication off: refused. */
  async putKeys(keys: string[]): Promise<void> {
    if (keys.length === 0) throw new CliproxyError('refusing to send an empty api-keys list (it would open the proxy)');
    await this.request('PUT', '/api-keys', { data: keys });
  }

  // ---- the one way calls go out ---------------------------------------------------------------

  /**
   * Sends one management call. Network errors and 5xx are retried with backoff; 401/403 are never
   * retried and pause all further calls; other 4xx are returned when listed in `accept`, else thrown.
   */
  async request<T = unknown>(method: Method, path: string,
    o: { data?: unknown; params?: Record<string, string | number>; accept?: number[] } = {}): Promise<RawResponse<T>> {
    this.checkGate();
    let lastError: CliproxyError = new CliproxyUnreachable('no attempt made');
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      if (attempt > 1) await sleep(this.retryDelayMs * 3 ** (attempt - 2) * (0.75 + Math.random() / 2));
      let res;
      try {
        this.callsSent++;
        res = await this.http.request({ method, url: path, data: o.data, params: o.params });
      } catch (err) {
        lastError = new CliproxyUnreachable(`CLIProxyAPI at ${this.opts.baseUrl} is unreachable (${describeNetError(err)})`);
        this.noteFailure(lastError, false);
        continue;
      }
      const version = res.headers['x-cpa-version'];
      if (typeof version === 'string' && version) this.state.version = version;
      this.state.reachable = true;
      if (res.status < 400 || o.accept?.includes(res.status)) {
        this.noteSuccess();
        return { status: res.status, data: res.data as T, headers: res.headers as Record<string, unknown> };
      }
      const message = errorText(res.data) ?? `HTTP ${res.status}`;
      if (res.status >= 500) {
        lastError = new CliproxyError(`CLIProxyAPI answered ${res.status}: ${message}`, res.status);
        this.noteFailure(lastError, true);
        continue;
      }
      throw this.rejected(res.status, message, path);
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
    this.rejections = 0;
    this.state.authenticated = true;
    this.state.last_ok_at = new Date(this.opts.clock.now()).toISOString();
    this.state.error = this.state.error_code = null;
  }

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
    ManagementKeyMissing: 'management_key_missing',
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
