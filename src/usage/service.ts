import { CliproxyError, CliproxyUnreachable } from '../cliproxy/errors.js';
import { errorCode, type ManagementClient } from '../cliproxy/management.js';
import { drainQueue, drainQueueResp, probeUsage } from '../cliproxy/usage-queue.js';
import { SubscribeUnsupported, UsageSubscription } from '../cliproxy/usage-subscribe.js';
import { readSnapshot, SeenFingerprints } from '../cliproxy/usage-snapshot.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';
import type { UsageStore } from '../store/usage-store.js';
import type { Ingestor } from './ingest.js';
import type { ReloadSignal } from '../cliproxy/reloads.js';

export type UsageMode = 'subscribe' | 'queue' | 'snapshot' | 'lpop';

export interface UsageStatus {
  source: UsageMode | null;
  /** The subscription's state in subscribe mode ('live', 'waiting', 'paused'…), else 'polling'. */
  state: string | null;
  subscribed: boolean;
  /** When the newest counted attempt started, and when usage.db last committed a batch. */
  last_usage_at: string | null;
  last_commit_at: string | null;
  last_pull_at: string | null;
  ingested_total: number;
  /** Records received and not yet written (held through a storage failure). */
  held: number;
  error: string | null;
  storage_error: string | null;
}

const SNAPSHOT_META = 'snapshot_newest';

/**
 * Where usage comes from (USAGE_SOURCE; `auto` probes as CLIPROXY.md §6 says and takes the best the
 * server offers): `subscribe` — pushed over RESP, the queue drained after every (re)connect; `queue` —
 * popped from the HTTP queue on USAGE_CRON, 100 at a time; `lpop` — the same over RESP for v6.10.0–7;
 * `snapshot` — the first generation's GET /usage, deduplicated by detail fingerprint.
 *
 * The generation is found again whenever the source stops fitting: a subscription the server no
 * longer supports, a 404 on the endpoint in use, or contact regained after CLIProxyAPI was
 * unreachable (it may have been upgraded meanwhile). While usage.db cannot be written, no records
 * are taken from CLIProxyAPI: they wait in its queue.
 */
export class UsageService {
  private mode: UsageMode | null = null;
  private subscription: UsageSubscription | null = null;
  private error: string | null = null;
  private lastPullAt: number | null = null;
  private choosing: Promise<void> | null = null;
  private lostContact = false;
  /** This CLIProxyAPI cannot push usage (no SUBSCRIBE, or RESP off): poll its queue until contact is lost. */
  private cannotSubscribe = false;
  private storageDown = false;
  private stopped = false;
  private readonly seen = new SeenFingerprints();

  constructor(private readonly d: {
    config: Config; cliproxy: ManagementClient; ingestor: Ingestor; store: UsageStore; log: Logger; clock: Clock;
    /** CLIProxyAPI reloaded its config (the subscription's refresh message). */
    onRefresh?: () => void;
    reloads?: ReloadSignal;
  }) {
    // CLIProxyAPI answers again: what failed for want of it is no longer an error, and what waited
    // in its queue meanwhile is taken at once rather than at the next tick or back-off.
    d.cliproxy.onRecovered(() => {
      if (this.error?.startsWith('cliproxy_unreachable')) this.error = null;
      if (this.stopped) return;
      if (this.subscription) this.subscription.retryNow(); else void this.pull();
    });
    d.ingestor.on('storage', (ok: boolean) => {
      this.storageDown = !ok;
      if (ok) this.subscription?.resume(); else void this.subscription?.pause();
    });
  }

  /** Aborted at stop: no pop after that, so nothing is taken that could not be stored. */
  private readonly stopping = new AbortController();

  private drain = (signal?: AbortSignal) => drainQueue(this.d.cliproxy, (records) => this.d.ingestor.accept(records),
    { signal: signal ? AbortSignal.any([signal, this.stopping.signal]) : this.stopping.signal });

  private async choose(): Promise<void> {
    const { config, cliproxy, log } = this.d;
    const wanted = config.USAGE_SOURCE;
    const probe = wanted === 'auto' ? await probeUsage(cliproxy) : null;
    if (wanted === 'snapshot' || probe === 'snapshot') {
      this.seen.newest = Number(await this.d.store.meta(SNAPSHOT_META) ?? 0);
      this.setMode('snapshot', 'v6-snapshot', 'reading usage from CLIProxyAPI’s first-generation snapshot (GET /usage)');
    } else if (probe === 'resp-only') {
      this.setMode('lpop', 'v6.10-resp', 'reading usage with RESP LPOP (CLIProxyAPI v6.10.0-v6.10.7)');
    } else if (wanted === 'queue' || this.cannotSubscribe) {
      this.setMode('queue', 'queue', 'reading usage from CLIProxyAPI’s usage queue (HTTP)');
    } else {
      this.setMode('subscribe', 'queue+subscribe', 'reading usage pushed by CLIProxyAPI (RESP SUBSCRIBE)');
      this.subscription = new UsageSubscription({
        client: cliproxy, baseUrl: config.CLIPROXY_URL, log,
        deliver: (records) => this.d.ingestor.push(records),
        drain: (signal) => this.drain(signal),
        onRefresh: this.d.onRefresh, reloads: this.d.reloads,
        onUnsupported: (reason) => {
          log.warn({ module: 'usage' }, `${reason}; polling its usage queue instead`);
          this.cannotSubscribe = true;
          this.forget();
          void this.pull(); // at once, rather than at the next USAGE_CRON tick
        },
      });
      if (this.storageDown) void this.subscription.pause(); else this.subscription.start();
    }
  }

  private setMode(mode: UsageMode, generation: string, message: string): void {
    this.mode = mode;
    this.d.cliproxy.setGeneration(generation);
    this.d.log.info({ module: 'usage' }, message);
  }

  /** Drops the current source: the next pull probes the server again. */
  private forget(): void {
    void this.subscription?.stop();
    this.subscription = null;
    this.mode = null;
  }

  /**
   * The USAGE_CRON job, and POST /api/sync-usage (`force`): picks the source if needed, then pops the
   * queue unless a subscription is live (records then go to it, not to the queue).
   */
  pull(o: { force?: boolean } = {}): Promise<{ ingested: number; source: UsageMode | null; duration_ms: number }> {
    // One pull at a time (the schedule and POST /api/sync-usage may meet): pops and snapshot reads
    // never overlap, so each record is reported by the pull that took it.
    const run = this.pulling.then(() => this.pullOnce(o));
    this.pulling = run.catch(() => undefined);
    return run;
  }

  private pulling: Promise<unknown> = Promise.resolve();

  private async pullOnce(o: { force?: boolean }): Promise<{ ingested: number; source: UsageMode | null; duration_ms: number }> {
    const t0 = performance.now();
    let ingested = 0;
    if (this.stopped || (this.storageDown && !o.force)) return { ingested, source: this.mode, duration_ms: 0 };
    try {
      if (!this.mode) {
        this.choosing ??= this.choose().finally(() => { this.choosing = null; });
        await this.choosing;
      }
      const sub = this.subscription;
      if (this.mode === 'lpop') {
        ingested = await drainQueueResp(this.d.cliproxy, this.d.config.CLIPROXY_URL, (records) => this.d.ingestor.accept(records), { signal: this.stopping.signal });
      } else if (this.mode === 'snapshot') {
        ingested = await this.pullSnapshot();
      } else if (this.mode === 'queue' || (sub && (o.force || (sub.state !== 'live' && sub.state !== 'connecting')))) {
        ingested = await this.drain();
      }
      if (o.force) await this.d.ingestor.settled();
      this.lastPullAt = this.d.clock.now();
      this.error = null;
      if (this.lostContact) { // CLIProxyAPI is back, maybe as a new version: find out again what it offers
        this.cannotSubscribe = false;
        if (this.mode !== 'subscribe') this.forget();
      }
      this.lostContact = false;
    } catch (err) {
      if (!(err instanceof CliproxyError)) throw err;
      this.error = `${errorCode(err)}: ${err.message}`;
      if (err instanceof CliproxyUnreachable) this.lostContact = true;
      if (err.status === 404 || err instanceof SubscribeUnsupported) this.forget();
    }
    return { ingested, source: this.mode, duration_ms: Math.round(performance.now() - t0) };
  }

  private async pullSnapshot(): Promise<number> {
    const fresh = await readSnapshot(this.d.cliproxy, this.seen);
    const ingested = await this.d.ingestor.accept(fresh);
    for (const r of fresh as { fp: string; timestamp: string }[]) this.seen.add(r.fp, Date.parse(r.timestamp));
    this.seen.prune();
    if (fresh.length) await this.d.store.meta(SNAPSHOT_META, String(this.seen.newest));
    return ingested;
  }

  /** Resolves once every record received so far is committed. */
  async settled(): Promise<void> { await this.d.ingestor.settled(); }

  status(): UsageStatus {
    const { ingestor } = this.d;
    const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
    return {
      source: this.mode,
      state: this.subscription ? this.subscription.state : this.mode ? 'polling' : null,
      subscribed: this.subscription?.connected ?? false,
      last_usage_at: iso(ingestor.lastRecordAt),
      last_commit_at: iso(ingestor.lastCommitAt),
      last_pull_at: iso(this.lastPullAt),
      ingested_total: ingestor.total,
      held: ingestor.held,
      error: this.error ?? this.subscription?.error ?? null,
      storage_error: ingestor.storageError,
    };
  }

  /**
   * Waits (bounded) for a pull or drain that was under way at stop() to finish: after the ingestor
   * has closed, whatever such a pop still brings is kept in a file, and this must happen before the
   * data directory's lock is released.
   */
  async finished(timeoutMs = 10_000): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all([this.pulling, this.subscription?.finished()]),
      new Promise((r) => { timer = setTimeout(r, timeoutMs); }),
    ]);
    clearTimeout(timer);
  }

  /** Ends the source (a subscription handshake in progress included); records on their way are still taken. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.stopping.abort();
    // A pop under way is not waited for (its batch may be held by a failing disk): the ingestor,
    // closed next, stores or keeps whatever it brings.
    await this.subscription?.stop();
  }
}
