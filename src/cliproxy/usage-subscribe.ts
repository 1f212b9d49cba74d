import { CliproxyError, ManagementPaused } from './errors.js';
import type { ManagementClient } from './management.js';
import type { RespConnection } from './resp.js';
import { openAuthenticatedResp, RespUnavailable } from './resp-auth.js';
import type { Logger } from '../log.js';
import type { ReloadSignal } from './reloads.js';

/** The server cannot push usage (RESP absent, AUTH disabled in v7.1.17, or no SUBSCRIBE before v7.0.7). */
export class SubscribeUnsupported extends CliproxyError {
  override name = 'SubscribeUnsupported';
}

export interface SubscriptionDeps {
  client: ManagementClient;
  baseUrl: string;
  /** Takes records as they arrive; must not wait on anything (CLIProxyAPI drops a subscriber 256 behind). */
  deliver: (records: unknown[]) => void;
  /** Empties the queue (records go there while no subscriber is connected); resolves once they count. Stops popping when `signal` aborts. */
  drain: (signal: AbortSignal) => Promise<number>;
  /** A CLIProxyAPI config or client reload happened (`{"refresh":true}`). */
  onRefresh?: () => void;
  /** Told whether reload messages are arriving (a live subscription on v7.1.39+) and when each one does. */
  reloads?: ReloadSignal;
  onUnsupported: (reason: string) => void;
  log: Logger;
  /** Timeout of the connect, AUTH, SUBSCRIBE and each keep-alive PING (default 5000 ms). */
  timeoutMs?: number;
  /** How often a live subscription is checked with PING (default 30 s). */
  pingEveryMs?: number;
}

/**
 * `SUBSCRIBE usage` on CLIProxyAPI's port (v7.0.7+), as an explicit state machine:
 *
 *   idle → connecting → live ⇄ waiting (back-off after a failure) ; paused (storage failing) ; stopped
 *
 * - One connection at a time: any failure — AUTH, SUBSCRIBE, the queue drain after subscribing, a
 *   keep-alive PING without answer — closes that connection before the next attempt, so there is
 *   never a second subscription (each would receive every record).
 * - The message handler is installed before SUBSCRIBE is sent.
 * - Every step has a timeout; a handshake in progress is aborted by stop() and pause().
 * - After every (re)connect the queue is drained once: records go to the queue while no subscriber
 *   is connected.
 * - Paused, the connection is closed on purpose: CLIProxyAPI then keeps records in its queue (for
 *   redis-usage-queue-retention-seconds) until the portal can store them again.
 */
export class UsageSubscription {
  state: 'idle' | 'connecting' | 'live' | 'waiting' | 'paused' | 'stopped' | 'unsupported' = 'idle';
  lastMessageAt: number | null = null;
  error: string | null = null;
  private conn: RespConnection | null = null;
  private attempt: AbortController | null = null;
  /** The connect in progress (its handshake or its drain). */
  private running: Promise<void> | null = null;
  /** An UNSUBSCRIBE under way: the records before its answer are still arriving. */
  private leaving: Promise<void> | null = null;
  private backoffMs = 1000;
  private timer: NodeJS.Timeout | null = null;
  private pinger: NodeJS.Timeout | null = null;
  /** v7.1.39+ announces itself with {"support_refresh":true}; those answer PING in subscribe mode. */
  private canPing = false;

  constructor(private readonly d: SubscriptionDeps) {}

  get connected(): boolean { return this.state === 'live'; }
  get connecting(): boolean { return this.state === 'connecting'; }

  start(): void {
    if (this.state !== 'idle' && this.state !== 'waiting') return;
    this.connect();
  }

  private connect(): void {
    const run = this.connectOnce().finally(() => { if (this.running === run) this.running = null; });
    this.running = run;
  }

  private async connectOnce(): Promise<void> {
    this.clearTimers();
    this.state = 'connecting';
    const attempt = new AbortController();
    this.attempt = attempt;
    const timeoutMs = this.d.timeoutMs ?? 5000;
    let conn: RespConnection | null = null;
    try {
      try {
        conn = await openAuthenticatedResp(this.d.client, this.d.baseUrl, { signal: attempt.signal, timeoutMs });
      } catch (err) {
        throw err instanceof RespUnavailable ? new SubscribeUnsupported(err.message) : err;
      }
      if (attempt.signal.aborted) throw new Error('stopped');
      this.canPing = false;
      try {
        const c = conn;
        await c.abortable(attempt.signal, () => c.subscribe('usage', (payload) => this.onPayload(payload), timeoutMs));
      } catch (err) {
        if (conn.isClosed || attempt.signal.aborted) throw err;
        throw new SubscribeUnsupported(`this CLIProxyAPI cannot push usage (${(err as Error).message})`);
      }
      if (attempt.signal.aborted) throw new Error('stopped');
      const live = conn;
      this.conn = live;
      this.state = 'live';
      live.on('close', () => this.onClose(live));
      this.d.log.info({ module: 'usage' }, 'subscribed to CLIProxyAPI usage (RESP)');
      await this.d.drain(attempt.signal);
      if (this.conn !== live) return; // closed while draining: onClose has scheduled the retry
      this.error = null;
      this.backoffMs = 1000;
      this.schedulePing(live);
    } catch (err) {
      conn?.close();
      if (this.conn === conn) this.conn = null;
      if (this.ended()) return;
      if (err instanceof SubscribeUnsupported) {
        this.state = 'unsupported';
        this.error = err.message;
        this.d.onUnsupported(err.message);
        return;
      }
      this.error = (err as Error).message;
      this.retry(err instanceof ManagementPaused ? Math.max(1000, err.until - Date.now()) : this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, 30_000);
    } finally {
      if (this.attempt === attempt) this.attempt = null;
    }
  }

  /** Stopped or paused: nothing is to be retried. (A method, so TypeScript does not narrow `state` across awaits.) */
  private ended(): boolean { return this.state === 'stopped' || this.state === 'paused'; }

  private onPayload(payload: string): void {
    this.lastMessageAt = Date.now();
    let record: unknown;
    try { record = JSON.parse(payload); } catch { return; } // not JSON: not a record
    const r = record as { refresh?: unknown; support_refresh?: unknown; timestamp?: unknown } | null;
    if (r && typeof r === 'object' && r.timestamp === undefined) {
      if (r.support_refresh === true) { this.canPing = true; if (this.d.reloads) this.d.reloads.available = true; }
      if (r.refresh === true) { this.d.reloads?.seen(); this.d.onRefresh?.(); }
      return;
    }
    this.d.deliver([record]);
  }

  private onClose(conn: RespConnection): void {
    if (this.reloads) this.reloads.available = false;
    if (this.conn !== conn) return;
    this.conn = null;
    this.clearTimers();
    if (this.state !== 'live' && this.state !== 'connecting') return;
    this.d.log.warn({ module: 'usage' }, 'usage subscription closed; reconnecting');
    this.retry(100); // at once: records go to the queue meanwhile, and the drain after it takes them

  }

  /** PING every so often: a subscription whose peer vanished without a reset is noticed and replaced. */
  private schedulePing(conn: RespConnection): void {
    if (!this.canPing) return;
    this.pinger = setTimeout(() => {
      this.pinger = null;
      conn.command(['PING']).then(() => { if (this.conn === conn) this.schedulePing(conn); }, () => conn.close());
    }, this.d.pingEveryMs ?? 30_000);
    this.pinger.unref();
  }

  private retry(ms: number): void {
    this.clearTimers();
    this.state = 'waiting';
    this.timer = setTimeout(() => { this.timer = null; if (this.state === 'waiting') this.connect(); }, ms);
    this.timer.unref();
  }

  private clearTimers(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.pinger) clearTimeout(this.pinger);
    this.timer = this.pinger = null;
  }

  private get reloads(): ReloadSignal | undefined { return this.d.reloads; }

  private async end(state: 'paused' | 'stopped'): Promise<void> {
    if (this.reloads) this.reloads.available = false;
    this.state = state;
    this.clearTimers();
    this.attempt?.abort();
    this.attempt = null;
    const conn = this.conn;
    this.conn = null;
    if (conn) this.leaving = conn.unsubscribe().finally(() => { this.leaving = null; });
    await this.leaving; // also an UNSUBSCRIBE a pause began: stop() returns once its records are in
  }

  /** Resolves once a connect (and the drain after it) that was under way has ended. */
  async finished(): Promise<void> {
    await this.running?.catch(() => undefined);
  }

  /** Tries again now if waiting out a back-off (CLIProxyAPI was found reachable again). */
  retryNow(): void {
    if (this.state !== 'waiting') return;
    this.backoffMs = 1000;
    this.connect();
  }

  /** Leaves the subscription until resume(): records wait in CLIProxyAPI's queue meanwhile. */
  async pause(): Promise<void> { if (this.state !== 'stopped' && this.state !== 'unsupported') await this.end('paused'); }

  resume(): void {
    if (this.state !== 'paused') return;
    this.state = 'idle';
    this.backoffMs = 1000;
    this.connect();
  }

  /**
   * Ends everything, a handshake in progress included. A live subscription is left with UNSUBSCRIBE,
   * so the records already on their way are delivered before this resolves; none after.
   */
  async stop(): Promise<void> { await this.end('stopped'); }
}
