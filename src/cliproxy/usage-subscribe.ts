import { CliproxyError, ManagementPaused } from './errors.js';
import type { ManagementClient } from './management.js';
import type { RespConnection } from './resp.js';
import { openAuthenticatedResp, RespUnavailable } from './resp-auth.js';
import type { Logger } from '../log.js';

/** The server cannot push usage (RESP absent, AUTH disabled in v7.1.17, or no SUBSCRIBE before v7.0.7). */
export class SubscribeUnsupported extends CliproxyError {
  override name = 'SubscribeUnsupported';
}

export interface SubscriptionDeps {
  client: ManagementClient;
  baseUrl: string;
  /** Writes records durably and counts them (the ingestor). */
  ingest: (records: unknown[]) => Promise<number>;
  /** Empties the queue: records go there while no subscriber is connected. */
  drain: () => Promise<number>;
  log: Logger;
  onUnsupported: (reason: string) => void;
}

/**
 * `SUBSCRIBE usage` on CLIProxyAPI's port (v7.0.7+): records are pushed as they happen. CLIProxyAPI
 * drops a subscriber that falls 256 messages behind, so messages are only buffered on arrival and
 * handed to ingestion asynchronously. After every (re)connect the queue is drained once.
 */
export class UsageSubscription {
  connected = false;
  /** Between start() and the end of a connection attempt (the attempt drains the queue itself). */
  connecting = false;
  lastMessageAt: number | null = null;
  error: string | null = null;
  private conn: RespConnection | null = null;
  private stopped = false;
  private backoffMs = 1000;
  private timer: NodeJS.Timeout | null = null;
  private buffer: string[] = [];
  private flushing: Promise<void> | null = null;

  constructor(private readonly d: SubscriptionDeps) {}

  start(): void {
    this.stopped = false;
    void this.connect();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.connecting = true;
    try {
      await this.connectOnce();
      this.backoffMs = 1000;
      this.error = null;
    } catch (err) {
      if (err instanceof SubscribeUnsupported) {
        this.error = err.message;
        this.d.onUnsupported(err.message);
        return;
      }
      this.error = (err as Error).message;
      const wait = err instanceof ManagementPaused ? Math.max(1000, err.until - Date.now()) : this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, 30_000);
      this.retryIn(wait);
    } finally {
      this.connecting = false;
    }
  }

  private retryIn(ms: number): void {
    if (this.stopped || this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; void this.connect(); }, ms);
    this.timer.unref();
  }

  private async connectOnce(): Promise<void> {
    let conn: RespConnection;
    try {
      conn = await openAuthenticatedResp(this.d.client, this.d.baseUrl);
    } catch (err) {
      if (err instanceof RespUnavailable) throw new SubscribeUnsupported(err.message);
      throw err;
    }
    try {
      await conn.subscribe('usage');
    } catch (err) {
      conn.close();
      throw new SubscribeUnsupported(`this CLIProxyAPI cannot push usage (${(err as Error).message}); polling the queue instead`);
    }
    conn.on('message', (payload: string) => {
      this.lastMessageAt = Date.now();
      this.buffer.push(payload);
      this.flushing ??= this.flush();
    });
    conn.on('close', () => {
      if (this.conn !== conn) return;
      this.conn = null;
      this.connected = false;
      if (!this.stopped) {
        this.d.log.warn({ module: 'usage' }, 'usage subscription closed; reconnecting');
        this.retryIn(this.backoffMs);
      }
    });
    this.conn = conn;
    this.connected = true;
    this.d.log.info({ module: 'usage' }, 'subscribed to CLIProxyAPI usage (RESP)');
    await this.d.drain();
  }

  /** Hands buffered messages to ingestion, in order, without ever holding up the socket. */
  private async flush(): Promise<void> {
    try {
      while (this.buffer.length) {
        const batch = this.buffer;
        this.buffer = [];
        const records: unknown[] = [];
        for (const p of batch) {
          try { records.push(JSON.parse(p)); } catch { /* not JSON: not a record */ }
        }
        await this.d.ingest(records).catch((err) => { this.error = (err as Error).message; });
      }
    } finally {
      this.flushing = null;
    }
  }

  /** Resolves once everything received so far has been ingested. */
  async settled(): Promise<void> {
    while (this.flushing) await this.flushing;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.conn?.close();
    this.conn = null;
    this.connected = false;
  }
}
