import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { AlertService } from './alerts/service.js';
import type { Webhook } from './alerts/webhook.js';
import type { ManagementClient } from './cliproxy/management.js';
import type { Events } from './events.js';
import type { FailureGuard } from './failure-guard.js';
import type { Reconciler } from './keys/reconciler.js';
import type { LogFile } from './log-file.js';
import type { KeysStore } from './store/keys-store.js';
import type { UsageService } from './usage/service.js';

export interface MetricsDeps {
  store: KeysStore;
  usage: UsageService;
  cliproxy: ManagementClient;
  reconciler: Reconciler;
  guard: FailureGuard;
  events: Events;
  logFile: LogFile | null;
  now: () => number;
  /** Daily-limit alerts, and their webhook when ALERT_WEBHOOK_URL is set. */
  alerts: AlertService;
  webhook: Webhook | null;
}

const BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

/** The gateway's metrics, kept on its own thread (scraped through Metrics.text()). */
export interface GatewayMetrics {
  /** A request's duration, by the status it was answered with. */
  timed(status: number, seconds: number): void;
  /** A request refused before it was forwarded, by the refusal's code. */
  refused(code: string): void;
}

export function gatewayMetrics(r: Registry, inflight: () => number): GatewayMetrics {
  new Gauge({ name: 'kp_gateway_inflight_requests', help: 'Gateway requests under way', registers: [r], collect() { this.set(inflight()); } });
  const durations = new StatusHistogram('kp_gateway_request_duration_seconds', 'Gateway requests, until the answer is whole', BUCKETS, r);
  const refusals = new Counter({ name: 'kp_gateway_refusals_total', help: 'Gateway requests refused before forwarding, by code', labelNames: ['code'], registers: [r] });
  return {
    timed: (status, seconds) => durations.observe(status, seconds),
    refused(code) { refusals.inc({ code }); },
  };
}

/**
 * A histogram of durations with one label, the status code, counted in place: prom-client's
 * Histogram converts, checks and hashes its labels at every observation, which cost the gateway
 * ~1 µs of CPU a request under load. Scraped through prom-client's registry (which reads a metric
 * through `get()`), with the same text as a prom-client Histogram's (test/unit/metrics.test.ts).
 */
export class StatusHistogram {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  /** By status: the count in each bucket (not cumulative; the last is past every bound), the sum, the count. */
  private readonly series = new Map<number, { buckets: Float64Array; sum: number; count: number }>();

  constructor(readonly name: string, readonly help: string, private readonly bounds: readonly number[], registry: Registry) {
    // prom-client's types name only its own classes as metrics; its registry needs no more than this class has.
    registry.registerMetric(this as unknown as Histogram);
  }

  observe(status: number, seconds: number): void {
    let s = this.series.get(status);
    if (!s) this.series.set(status, s = { buckets: new Float64Array(this.bounds.length + 1), sum: 0, count: 0 });
    let i = 0;
    while (i < this.bounds.length && seconds > this.bounds[i]!) i++;
    s.buckets[i]!++;
    s.sum += seconds;
    s.count++;
  }

  async get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] }> {
    const bucket = `${this.name}_bucket`;
    const values = [];
    for (const [status, s] of this.series) {
      let below = 0;
      for (let i = 0; i < this.bounds.length; i++) values.push({ labels: { le: this.bounds[i]!, status }, value: below += s.buckets[i]!, metricName: bucket });
      values.push({ labels: { le: '+Inf', status }, value: s.count, metricName: bucket },
        { labels: { status }, value: s.sum, metricName: `${this.name}_sum` }, { labels: { status }, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    this.series.clear();
  }
}

/** A counter whose value lives elsewhere (a service's own count): set from it at each scrape. */
function mirrored(c: Counter<string>, labels: Record<string, string>, value: number): void {
  c.reset();
  c.inc(labels, value);
}

/**
 * GET /metrics (Prometheus text format, prom-client): keys by state, the pool, usage ingestion,
 * CLIProxyAPI's reachability and management errors, reconciler writes, HTTP and gateway request
 * durations, suspensions, storage errors. Gauges are read from the services when scraped; nothing
 * here is on a request's path but the two histograms.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly http: Histogram<'method' | 'route' | 'status'>;
  /** Metrics kept elsewhere (the gateway's thread), in the text format, appended to this registry's. */
  private readonly sources: (() => Promise<string>)[] = [];

  constructor(d: MetricsDeps) {
    const r = this.registry;
    collectDefaultMetrics({ register: r, prefix: 'kp_' });
    this.http = new Histogram({ name: 'kp_http_request_duration_seconds', help: 'Portal pages and API, by route', labelNames: ['method', 'route', 'status'], buckets: BUCKETS, registers: [r] });
    const suspensions = new Counter({ name: 'kp_suspensions_total', help: 'Keys suspended for reaching a daily limit', labelNames: ['reason'], registers: [r] });
    d.events.on('quota.suspended', (n, reason) => suspensions.inc({ reason }, n));
    new Counter({
      name: 'kp_limit_alerts_total', help: 'Daily-limit alerts made (once per key, limit and day), by event', labelNames: ['event'], registers: [r],
      collect() { this.reset(); for (const [event, n] of Object.entries(d.alerts.counts)) this.inc({ event }, n); },
    });
    new Counter({
      name: 'kp_alert_webhooks_total', help: 'Alert webhook deliveries: delivered, retried (an attempt failed and was tried again), failed (given up)',
      labelNames: ['result'], registers: [r],
      collect() { this.reset(); for (const [result, n] of Object.entries(d.webhook?.counts ?? { delivered: 0, retried: 0, failed: 0 })) this.inc({ result }, n); },
    });

    new Gauge({
      name: 'kp_keys', help: 'Issued keys by state', labelNames: ['state'], registers: [r],
      collect() {
        const by = new Map<string, number>([['active', 0], ['pending', 0], ['suspended', 0], ['revoked', 0]]);
        for (const [, rec] of d.store.entries()) by.set(rec.status, (by.get(rec.status) ?? 0) + 1);
        this.reset();
        for (const [state, n] of by) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'kp_pool_keys', help: 'Pool keys by state (unused: spare keys left to hand out)', labelNames: ['state'], registers: [r],
      collect() { const p = d.store.poolStatus(); for (const s of ['unused', 'assigned', 'retired'] as const) this.set({ state: s }, p[s]); },
    });
    new Counter({
      name: 'kp_usage_records_ingested_total', help: 'Usage records counted since the start', registers: [r],
      collect() { mirrored(this, {}, d.usage.status().ingested_total); },
    });
    new Gauge({
      name: 'kp_usage_last_record_age_seconds', help: 'Time since the newest usage record (not a lag when nobody is using the proxy)', registers: [r],
      collect() { const at = d.usage.status().last_usage_at; this.set(at ? (d.now() - Date.parse(at)) / 1000 : -1); },
    });
    new Gauge({
      name: 'kp_usage_source', help: 'The usage source in use (1 for the current one)', labelNames: ['source', 'state'], registers: [r],
      collect() { const u = d.usage.status(); this.reset(); this.set({ source: u.source ?? 'none', state: u.state ?? 'none' }, 1); },
    });
    new Gauge({
      name: 'kp_cliproxy_up', help: 'CLIProxyAPI reachable (1) or not (0), and the management key accepted', labelNames: ['check'], registers: [r],
      collect() { const s = d.cliproxy.status(); this.set({ check: 'reachable' }, s.reachable ? 1 : 0); this.set({ check: 'authenticated' }, s.authenticated ? 1 : 0); },
    });
    new Counter({
      name: 'kp_cliproxy_management_errors_total', help: 'Management calls of the reconciler that failed, by error code', labelNames: ['code'], registers: [r],
      collect() { this.reset(); for (const [code, n] of d.reconciler.counts.errors) this.inc({ code }, n); },
    });
    new Counter({
      name: 'kp_reconciler_writes_total', help: 'Keys added to or removed from CLIProxyAPI', labelNames: ['action'], registers: [r],
      collect() { this.reset(); this.inc({ action: 'add' }, d.reconciler.counts.added); this.inc({ action: 'remove' }, d.reconciler.counts.removed); },
    });
    new Gauge({
      name: 'kp_storage_error', help: 'A store that cannot write now (1)', labelNames: ['store'], registers: [r],
      collect() {
        const u = d.usage.status();
        this.set({ store: 'keys' }, d.store.storageError ? 1 : 0);
        this.set({ store: 'keys_checkpoint' }, d.store.checkpointError ? 1 : 0);
        this.set({ store: 'usage' }, u.storage_error ? 1 : 0);
        this.set({ store: 'log' }, d.logFile?.error ? 1 : 0);
      },
    });
    new Gauge({
      name: 'kp_auth_locked_out_addresses', help: 'Addresses locked out for wrong credentials', registers: [r],
      collect() { this.set(d.guard.lockedOut()); },
    });
  }

  /** Adds metrics kept elsewhere (the text format, families not in this registry) to every scrape. */
  addSource(source: () => Promise<string>): void { this.sources.push(source); }

  get contentType(): string { return this.registry.contentType; }

  /** Everything, in the Prometheus text format. */
  async text(): Promise<string> {
    const parts = [await this.registry.metrics(), ...await Promise.all(this.sources.map((s) => s()))];
    return parts.join('');
  }
}
