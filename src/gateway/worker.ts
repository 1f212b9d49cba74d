// The gateway's thread: its own event loop and its own heap (a young generation sized for
// forwarding, apart from the portal's), so the portal's work and garbage do not slow the requests
// it forwards, nor they the portal. What it knows of keys and usage comes from the main thread
// (host.ts) by message, and it reads today's counts from usage.db on a connection of its own.
import { type MessagePort, parentPort, workerData } from 'node:worker_threads';
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { gatewayMetrics } from '../metrics.js';
import { DailyCountsReader } from '../store/usage-store.js';
import { Zone } from '../time/zone.js';
import { Admission } from './admission.js';
import { ChangeReceiver } from './changes.js';
import { type GatedRecord, KeyTable } from './key-table.js';
import { Gateway } from './server.js';

export interface GatewayWorkerData {
  upstream: string;
  prefix: string;
  timezone: string;
  usageFile: string;
  host: string;
  port: number;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  /** The portal's clock minus the system clock, ms (Float64; 0 but in tests that move the clock). */
  clockOffset: SharedArrayBuffer;
  /** The changes (HostChange, in order), and their counter (ChangeSender). */
  changes: MessagePort;
  posted: SharedArrayBuffer;
}

/** What the main thread tells the gateway's thread, in the order it happened. */
export type HostChange =
  | { t: 'all'; keys: [string, GatedRecord][] }
  | { t: 'key'; key: string; record: GatedRecord }
  /** keys.changed: every cached count is stale (a reset moves the point today counts from). */
  | { t: 'changed' }
  /** usage.counted: these keys' cached counts are stale. */
  | { t: 'counted'; ids: string[] };

/** Requests of the main thread, on parentPort. */
export type HostRequest = { t: 'metrics'; id: number } | { t: 'close' };

/** What this thread tells the main thread, on parentPort. */
export type WorkerReport =
  | { t: 'listening'; port: number }
  | { t: 'listen-failed'; message: string; code?: string }
  | { t: 'log'; level: string; args: unknown[] }
  | { t: 'metrics'; id: number; text: string };

const d = workerData as GatewayWorkerData;
const report = (m: WorkerReport) => parentPort!.postMessage(m);
const offset = new Float64Array(d.clockOffset);
const clock = { now: () => Date.now() + offset[0]! };
const zone = new Zone(d.timezone);
const keys = new KeyTable(d.prefix);
const usage = new DailyCountsReader(d.usageFile);
const admission = new Admission({ usage, zone, clock });
const registry = new Registry();
// Log lines are written by the main thread's logger (its file, its scrubbing of keys).
const log = pino({
  level: 'info',
  hooks: { logMethod(args, _method, level) { report({ t: 'log', level: pino.levels.labels[level] ?? 'info', args }); } },
});

function apply(m: HostChange): void {
  switch (m.t) {
    case 'all': keys.replace(m.keys); admission.changed(); break;
    case 'key': keys.set(m.key, m.record); break;
    case 'changed': admission.changed(); break;
    case 'counted': admission.counted(m.ids); break;
  }
}

// Every change the main thread made before a request arrived is applied before its key is looked at.
const changes = new ChangeReceiver<HostChange>(d.posted, d.changes, apply);

const gateway = new Gateway({
  upstream: d.upstream, keys, admission, log, zone, clock, metrics: gatewayMetrics(registry, () => admission.inflight()),
  connectTimeoutMs: d.connectTimeoutMs, headersTimeoutMs: d.headersTimeoutMs, bodyTimeoutMs: d.bodyTimeoutMs, beforeRequest: () => changes.catchUp(),
});

parentPort!.on('message', (m: HostRequest) => {
  if (m.t === 'metrics') {
    registry.metrics().then((text) => report({ t: 'metrics', id: m.id, text }), () => report({ t: 'metrics', id: m.id, text: '' }));
  } else if (m.t === 'close') {
    void gateway.close().finally(() => {
      usage.close();
      changes.close();
      parentPort!.close();
    });
  }
});

gateway.listen(d.port, d.host).then(
  (port) => report({ t: 'listening', port }),
  (err: NodeJS.ErrnoException) => { report({ t: 'listen-failed', message: err.message, code: err.code }); parentPort!.close(); changes.close(); usage.close(); },
);
