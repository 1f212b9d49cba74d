import type { Logger } from '../log.js';

/** What an alert webhook receives: about a key, never the key itself. */
export interface AlertDocument {
  event: 'limit_warning' | 'limit_reached';
  key_id: string;
  email: string | null;
  label: string;
  limit: 'requests' | 'tokens';
  used: number;
  max: number;
  percent: number;
  /** The day in `time_zone` the usage counts for, and when its quota starts afresh. */
  day: string;
  time_zone: string;
  resets_at: string;
  /** The key's admin page, when PORTAL_PUBLIC_URL is set. */
  portal_url?: string;
}

export interface WebhookOptions {
  url: string;
  log: Logger;
  /** How long one attempt may take, answer included (default 5 s). */
  timeoutMs?: number;
  /** Waits before the retries (default 1 s, 4 s, 16 s: four attempts in all). */
  retryDelaysMs?: number[];
}

/** Alerts waiting for their delivery at most: beyond that (a receiver down for long), new ones are dropped and counted. */
const MAX_QUEUED = 1000;

class Retryable extends Error {}

/**
 * POSTs alert documents to ALERT_WEBHOOK_URL, off every request's and ingestion's path: send()
 * returns at once, each document is tried up to four times with back-off, and a receiver that is down
 * is logged once (until it answers again) and counted, never thrown at the caller. The URL is logged
 * by its origin only: its path is often the receiver's secret.
 */
export class Webhook {
  readonly counts = { delivered: 0, retried: 0, failed: 0 };
  private readonly timeoutMs: number;
  private readonly delays: number[];
  private readonly origin: string;
  private readonly under = new Set<Promise<void>>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly stopping = new AbortController();
  /** A failure was logged and the receiver has not answered since: later failures are only counted. */
  private failing = false;

  constructor(private readonly o: WebhookOptions) {
    this.timeoutMs = o.timeoutMs ?? 5000;
    this.delays = o.retryDelaysMs ?? [1000, 4000, 16_000];
    this.origin = new URL(o.url).origin;
  }

  /** Queues one document for delivery; never waits and never throws. */
  send(doc: AlertDocument): void {
    if (this.stopping.signal.aborted) return;
    if (this.under.size >= MAX_QUEUED) {
      this.counts.failed++;
      this.reportFailure(doc, 0, 'too many alerts waiting for the webhook');
      return;
    }
    const p = this.deliver(doc).finally(() => this.under.delete(p));
    this.under.add(p);
  }

  /** Settles once every document sent so far is delivered or given up (tests, and a graceful stop). */
  async idle(): Promise<void> {
    while (this.under.size) await Promise.all([...this.under]);
  }

  /** Stops retrying and aborts attempts under way: what was not delivered is counted as failed. */
  async stop(): Promise<void> {
    this.stopping.abort();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.idle();
  }

  private async deliver(doc: AlertDocument): Promise<void> {
    const body = JSON.stringify(doc);
    for (let attempt = 0; ; attempt++) {
      try {
        await this.post(body);
        this.counts.delivered++;
        if (this.failing) {
          this.failing = false;
          this.o.log.info({ module: 'alerts', webhook: this.origin }, 'the alert webhook answers again');
        }
        return;
      } catch (err) {
        const retry = err instanceof Retryable && attempt < this.delays.length && !this.stopping.signal.aborted;
        if (!retry) {
          this.counts.failed++;
          this.reportFailure(doc, attempt + 1, (err as Error).message);
          return;
        }
        this.counts.retried++;
        this.o.log.debug({ module: 'alerts', webhook: this.origin, key_id: doc.key_id, attempt: attempt + 1, error: (err as Error).message }, 'alert webhook attempt failed; retrying');
        if (!(await this.wait(this.delays[attempt]!))) {
          this.counts.failed++;
          this.reportFailure(doc, attempt + 1, 'the portal stopped before it could retry');
          return;
        }
      }
    }
  }

  /** One POST; throws Retryable for what may pass (no answer, a timeout, 429, 5xx), Error for the rest. */
  private async post(body: string): Promise<void> {
    let res: Response;
    try {
      res = await fetch(this.o.url, {
        method: 'POST', body, redirect: 'manual',
        headers: { 'Content-Type': 'application/json', 'User-Agent': 'key-portal' },
        signal: AbortSignal.any([AbortSignal.timeout(this.timeoutMs), this.stopping.signal]),
      });
      await res.arrayBuffer(); // read whole within the timeout, so the connection is free again
    } catch (err) {
      const e = err as Error & { cause?: { code?: string } };
      const why = e.name === 'TimeoutError' ? `no answer within ${this.timeoutMs} ms` : e.cause?.code ?? e.message;
      throw new Retryable(why);
    }
    if (res.ok) return;
    const message = `answered HTTP ${res.status}`;
    throw res.status === 429 || res.status >= 500 ? new Retryable(message) : new Error(message);
  }

  /** Resolves true after `ms`, or false at once when the portal stops. */
  private wait(ms: number): Promise<boolean> {
    if (this.stopping.signal.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const onStop = () => { clearTimeout(timer); this.timers.delete(timer); resolve(false); };
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.stopping.signal.removeEventListener('abort', onStop);
        resolve(true);
      }, ms);
      timer.unref();
      this.timers.add(timer);
      this.stopping.signal.addEventListener('abort', onStop, { once: true });
    });
  }

  private reportFailure(doc: AlertDocument, attempts: number, error: string): void {
    const fields = { module: 'alerts', webhook: this.origin, event: doc.event, key_id: doc.key_id, attempts, error };
    if (this.failing) {
      this.o.log.debug(fields, 'alert webhook failed');
      return;
    }
    this.failing = true;
    this.o.log.warn(fields, 'the alert webhook could not be delivered; further failures are counted (kp_alert_webhooks_total{result="failed"}) and logged again only after it answers');
  }
}
