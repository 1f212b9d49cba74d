import { CliproxyError } from '../cliproxy/errors.js';
import { errorCode, type ManagementClient } from '../cliproxy/management.js';
import { drainQueue, probeUsage } from '../cliproxy/usage-queue.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { Ingestor } from './ingest.js';

export interface UsageStatus {
  source: string | null;
  last_usage_at: string | null;
  last_pull_at: string | null;
  lag_ms: number | null;
  ingested_total: number;
  error: string | null;
}

/**
 * Chooses where usage comes from (USAGE_SOURCE, or the probe with `auto`) and pulls it. This version
 * reads the HTTP queue of CLIProxyAPI v6.10.8+ / v7; the RESP subscription and the first generation's
 * snapshot are reported as not available yet rather than guessed at.
 */
export class UsageService {
  private source: 'queue' | null = null;
  private error: string | null = null;
  private lastPullAt: number | null = null;

  constructor(private readonly d: { config: Config; cliproxy: ManagementClient; ingestor: Ingestor; log: Logger; clock: Clock }) {}

  private async chooseSource(): Promise<'queue' | null> {
    if (this.source) return this.source;
    const wanted = this.d.config.USAGE_SOURCE;
    if (wanted === 'subscribe' || wanted === 'snapshot') {
      this.error = `USAGE_SOURCE=${wanted} is not available in this version of key-portal; use queue or auto`;
      return null;
    }
    const probe = wanted === 'queue' ? 'queue' : await probeUsage(this.d.cliproxy);
    if (probe !== 'queue') {
      this.error = probe === 'snapshot'
        ? 'this CLIProxyAPI (≤ v6.9.49) only has the first-generation usage snapshot, which this version does not read yet'
        : 'this CLIProxyAPI (v6.10.0-v6.10.7) offers usage only over RESP, which this version does not read yet';
      this.d.cliproxy.setGeneration(probe === 'snapshot' ? 'v6-snapshot' : 'v6.10-resp');
      return null;
    }
    this.d.cliproxy.setGeneration('queue');
    this.d.log.info({ module: 'usage' }, 'reading usage from CLIProxyAPI’s usage queue (HTTP)');
    return (this.source = 'queue');
  }

  /** Pulls what is waiting now; returns how many records were ingested. Errors are kept for /healthz. */
  async pull(): Promise<{ ingested: number; source: string | null; duration_ms: number }> {
    const started = this.d.clock.now();
    const t0 = performance.now();
    let ingested = 0;
    try {
      const source = await this.chooseSource();
      if (source === 'queue') {
        ingested = await drainQueue(this.d.cliproxy, (records) => this.d.ingestor.ingest(records));
        this.error = null;
      }
      this.lastPullAt = started;
    } catch (err) {
      if (!(err instanceof CliproxyError)) throw err;
      this.error = `${errorCode(err)}: ${err.message}`;
    }
    return { ingested, source: this.source, duration_ms: Math.round(performance.now() - t0) };
  }

  status(): UsageStatus {
    const { ingestor } = this.d;
    return {
      source: this.source,
      last_usage_at: ingestor.lastRecordAt ? new Date(ingestor.lastRecordAt).toISOString() : null,
      last_pull_at: this.lastPullAt ? new Date(this.lastPullAt).toISOString() : null,
      lag_ms: ingestor.lastRecordAt && ingestor.lastIngestAt ? Math.max(0, ingestor.lastIngestAt - ingestor.lastRecordAt) : null,
      ingested_total: ingestor.total,
      error: this.error ?? ingestor.lastError,
    };
  }
}
