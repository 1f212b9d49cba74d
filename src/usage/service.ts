import { CliproxyError } from '../cliproxy/errors.js';
import { errorCode, type ManagementClient } from '../cliproxy/management.js';
import { drainQueue, drainQueueResp, probeUsage } from '../cliproxy/usage-queue.js';
import { UsageSubscription } from '../cliproxy/usage-subscribe.js';
import { readSnapshot } from '../cliproxy/usage-snapshot.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Ingestor } from './ingest.js';

export interface UsageStatus {
  source: 'subscribe' | 'queue' | 'snapshot' | 'lpop' | null;
  subscribed: boolean;
  last_usage_at: string | null;
  last_pull_at: string | null;
  lag_ms: number | null;
  ingested_total: number;
  error: string | null;
}

/**
 * Where usage comes from (USAGE_SOURCE; `auto` probes as CLIPROXY.md §6 says and takes the best the
 * server offers): `subscribe` — pushed over RESP, with the queue drained after every (re)connect;
 * `queue` — popped from the HTTP queue on USAGE_CRON; `snapshot` — the first generation's GET /usage
 * (≤ v6.9.49), read on USAGE_CRON and deduplicated by detail fingerprint.
 */
export class UsageService {
  private mode: 'subscribe' | 'queue' | 'snapshot' | 'lpop' | null = null;
  private subscription: UsageSubscription | null = null;
  private error: string | null = null;
  private lastPullAt: number | null = null;
  private choosing: Promise<void> | null = null;

  constructor(private readonly d: { config: Config; cliproxy: ManagementClient; ingestor: Ingestor; log: Logger; clock: Clock }) {}

  private drain = () => drainQueue(this.d.cliproxy, (records) => this.d.ingestor.ingest(records));

  private async choose(): Promise<void> {
    const wanted = this.d.config.USAGE_SOURCE;
    const probe = wanted === 'auto' ? await probeUsage(this.d.cliproxy) : null;
    if (wanted === 'snapshot' || probe === 'snapshot') {
      this.mode = 'snapshot';
      this.d.cliproxy.setGeneration('v6-snapshot');
      this.d.log.info({ module: 'usage' }, 'reading usage from CLIProxyAPI’s first-generation snapshot (GET /usage)');
      return;
    }
    if (probe === 'resp-only') {
      // v6.10.0-v6.10.7: the queue exists only over RESP, and there is no SUBSCRIBE yet.
      this.mode = 'lpop';
      this.d.cliproxy.setGeneration('v6.10-resp');
      this.d.log.info({ module: 'usage' }, 'reading usage with RESP LPOP (CLIProxyAPI v6.10.0-v6.10.7)');
      return;
    }
    if (wanted !== 'queue') {
      this.mode = 'subscribe';
      this.d.cliproxy.setGeneration('queue+subscribe');
      this.subscription = new UsageSubscription({
        client: this.d.cliproxy, baseUrl: this.d.config.CLIPROXY_URL, log: this.d.log,
        ingest: (records) => this.d.ingestor.ingest(records), drain: this.drain,
        onUnsupported: (reason) => {
          this.d.log.warn({ module: 'usage' }, `${reason}; polling the usage queue instead`);
          this.mode = 'queue';
          this.d.cliproxy.setGeneration('queue');
        },
      });
      this.subscription.start();
      return;
    }
    this.mode = 'queue';
    this.d.cliproxy.setGeneration('queue');
    this.d.log.info({ module: 'usage' }, 'reading usage from CLIProxyAPI’s usage queue (HTTP)');
  }

  /**
   * The USAGE_CRON job, and POST /api/sync-usage (`force`): picks the source once, then pops the queue
   * unless a subscription is live (records then go to it, not to the queue).
   */
  async pull(o: { force?: boolean } = {}): Promise<{ ingested: number; source: string | null; duration_ms: number }> {
    const t0 = performance.now();
    let ingested = 0;
    try {
      if (!this.mode && !this.choosing) this.choosing = this.choose().finally(() => { this.choosing = null; });
      await this.choosing;
      if (this.mode === 'lpop') {
        ingested = await drainQueueResp(this.d.cliproxy, this.d.config.CLIPROXY_URL, (records) => this.d.ingestor.ingest(records));
        this.error = null;
      }
      if (this.mode === 'snapshot') {
        ingested = await this.d.ingestor.ingest(await readSnapshot(this.d.cliproxy, this.d.ingestor.seen));
        this.error = null;
      }
      const sub = this.subscription;
      const subscriptionIdle = !!sub && !sub.connected && !sub.connecting;
      if (this.mode === 'queue' || (this.mode === 'subscribe' && (o.force || subscriptionIdle))) {
        ingested = await this.drain();
        if (this.mode === 'queue') this.error = null;
      }
      if (o.force) await this.subscription?.settled();
      this.lastPullAt = this.d.clock.now();
    } catch (err) {
      if (!(err instanceof CliproxyError)) throw err;
      this.error = `${errorCode(err)}: ${err.message}`;
    }
    return { ingested, source: this.mode, duration_ms: Math.round(performance.now() - t0) };
  }

  /** Resolves once every record received by the subscription so far counts. */
  async settled(): Promise<void> { await this.subscription?.settled(); }

  status(): UsageStatus {
    const { ingestor } = this.d;
    return {
      source: this.mode,
      subscribed: this.subscription?.connected ?? false,
      last_usage_at: ingestor.lastRecordAt ? new Date(ingestor.lastRecordAt).toISOString() : null,
      last_pull_at: this.lastPullAt ? new Date(this.lastPullAt).toISOString() : null,
      lag_ms: ingestor.lastRecordAt && ingestor.lastIngestAt ? Math.max(0, ingestor.lastIngestAt - ingestor.lastRecordAt) : null,
      ingested_total: ingestor.total,
      error: this.error ?? this.subscription?.error ?? ingestor.lastError,
    };
  }

  stop(): void { this.subscription?.stop(); }
}
