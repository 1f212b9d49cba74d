import v8 from 'node:v8';
import { MessageChannel, Worker } from 'node:worker_threads';
import { type Clock, systemClock } from '../clock.js';
import type { Config } from '../config.js';
import type { Events } from '../events.js';
import type { Logger } from '../log.js';
import type { KeysStore } from '../store/keys-store.js';
import { ChangeSender } from './changes.js';
import { gated } from './key-table.js';
import type { GatewayWorkerData, HostChange, HostRequest, WorkerReport } from './worker.js';

/**
 * The gateway's young generation (V8's semi-space, MB): V8's own default on 64-bit systems. The
 * portal runs with a small one (package.json), which made every forwarded request pay for
 * scavenges of the portal's objects; on a thread of its own the gateway gets this one.
 */
const GATEWAY_SEMI_SPACE_MB = 16;

/** How long a stopped gateway thread waits before it is started again, at most. */
const RESTART_MAX_MS = 30_000;

export interface GatewayHostDeps {
  config: Pick<Config, 'CLIPROXY_URL' | 'KEY_PREFIX' | 'TIMEZONE' | 'HOST' | 'GATEWAY_CONNECT_TIMEOUT_MS' | 'GATEWAY_HEADERS_TIMEOUT_MS' | 'GATEWAY_BODY_TIMEOUT_MS'>;
  port: number;
  usageFile: string;
  store: KeysStore;
  events: Events;
  clock?: Clock;
  log: Logger;
}

/**
 * The gateway (GATEWAY_PORT), run on a worker thread of its own, seen from the main thread.
 *
 * The key store stays here; the thread keeps a copy of what it reads of each issued key. Every
 * change is posted to it as it is made in memory, then counted in shared memory, and the thread
 * applies every change counted before it looks at a request's key: a key revoked, suspended or
 * limited here is refused by the gateway from the moment the change is made, as if it ran on
 * this thread. A thread that stops is started again on the same port, with every key.
 */
export class GatewayHost {
  private worker: Worker | null = null;
  private changes: ChangeSender<HostChange> | null = null;
  private readonly clockOffset = new SharedArrayBuffer(8);
  private readonly offset = new Float64Array(this.clockOffset);
  private readonly clock: Clock;
  private readonly waiting = new Map<number, (text: string) => void>();
  private nextId = 1;
  private stopping = false;
  private restarts = 0;
  private restartTimer: NodeJS.Timeout | null = null;
  private readonly unwatch: () => void;
  /** The port it listens on (the one found the first time, when GATEWAY_PORT was 0). */
  port: number;

  private constructor(private readonly d: GatewayHostDeps) {
    this.port = d.port;
    this.clock = d.clock ?? systemClock;
    this.unwatch = d.store.watch((key, record) => {
      if (key === null || record === null) this.post(this.everyKey());
      else this.post({ t: 'key', key, record: gated(record) });
    });
    d.events.on('keys.changed', this.onKeysChanged);
    d.events.on('usage.counted', this.onCounted);
  }

  private readonly onKeysChanged = () => this.post({ t: 'changed' });
  private readonly onCounted = (ids: Set<string>) => this.post({ t: 'counted', ids: [...ids] });

  /** Starts the thread; resolves once it listens (rejects if it cannot). */
  static async start(d: GatewayHostDeps): Promise<GatewayHost> {
    const host = new GatewayHost(d);
    try {
      host.port = await host.spawn();
    } catch (err) {
      host.detach();
      throw err;
    }
    return host;
  }

  private everyKey(): HostChange {
    const keys: [string, ReturnType<typeof gated>][] = [];
    for (const [k, r] of this.d.store.entries()) keys.push([k, gated(r)]);
    return { t: 'all', keys };
  }

  /** Tells the thread (none now: the next one starts with every key). */
  private post(m: HostChange): void {
    if (!this.changes) return;
    if (this.clock !== systemClock) this.offset[0] = this.clock.now() - Date.now();
    this.changes.post(m);
  }

  private spawn(): Promise<number> {
    const { config: c } = this.d;
    const channel = new MessageChannel();
    const changes = new ChangeSender<HostChange>(channel.port1);
    const data: GatewayWorkerData = {
      upstream: c.CLIPROXY_URL, prefix: c.KEY_PREFIX, timezone: c.TIMEZONE, usageFile: this.d.usageFile, host: c.HOST, port: this.port,
      connectTimeoutMs: c.GATEWAY_CONNECT_TIMEOUT_MS, headersTimeoutMs: c.GATEWAY_HEADERS_TIMEOUT_MS, bodyTimeoutMs: c.GATEWAY_BODY_TIMEOUT_MS,
      clockOffset: this.clockOffset, changes: channel.port2, posted: changes.shared,
    };
    // A V8 flag is read when a heap is made: set for the thread's heap, then put back.
    const portal = semiSpaceFlag([...process.execArgv, ...(process.env.NODE_OPTIONS ?? '').split(/\s+/)]);
    v8.setFlagsFromString(`--max-semi-space-size=${Math.max(GATEWAY_SEMI_SPACE_MB, portal)}`);
    let worker: Worker;
    try {
      worker = new Worker(new URL('./worker.js', import.meta.url), { workerData: data, transferList: [channel.port2] });
    } catch (err) {
      v8.setFlagsFromString(`--max-semi-space-size=${portal}`);
      throw err;
    }
    let restored = false;
    const restore = () => { if (!restored) { restored = true; v8.setFlagsFromString(`--max-semi-space-size=${portal}`); } };
    worker.once('online', restore);
    this.worker = worker;
    this.changes = changes;
    if (this.clock !== systemClock) this.offset[0] = this.clock.now() - Date.now();
    this.post(this.everyKey());

    return new Promise<number>((resolve, reject) => {
      let listening = false;
      worker.on('message', (m: WorkerReport) => {
        switch (m.t) {
          case 'listening': listening = true; this.restarts = 0; resolve(m.port); break;
          case 'listen-failed': reject(Object.assign(new Error(m.code === 'EADDRINUSE'
            ? `Port ${this.port} on ${c.HOST} is already in use: set GATEWAY_PORT to a free port` : `the gateway cannot listen: ${m.message}`), { code: m.code })); break;
          case 'log': this.log(m.level, m.args); break;
          case 'metrics': this.waiting.get(m.id)?.(m.text); this.waiting.delete(m.id); break;
        }
      });
      worker.on('error', (err) => {
        this.d.log.error({ module: 'gateway', err }, 'the gateway thread failed');
        if (!listening) reject(err);
      });
      worker.once('exit', (code) => {
        restore();
        if (this.worker !== worker) return;
        this.worker = null;
        this.changes?.close();
        this.changes = null;
        for (const answer of this.waiting.values()) answer('');
        this.waiting.clear();
        if (!listening) { reject(new Error(`the gateway thread stopped before it listened (exit code ${code})`)); return; }
        if (this.stopping) return; // close() asked it to
        this.d.log.error({ module: 'gateway', exit_code: code }, 'the gateway thread stopped');
        this.restart();
      });
    });
  }

  /** Starts the thread again after a while (longer after each failure, up to RESTART_MAX_MS), until it listens. */
  private restart(): void {
    if (this.stopping) return;
    const wait = Math.min(RESTART_MAX_MS, 1000 * 2 ** this.restarts++);
    this.d.log.warn({ module: 'gateway' }, `starting the gateway thread again in ${wait / 1000} s`);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      this.spawn().catch((err: Error) => {
        this.d.log.error({ module: 'gateway', err }, 'the gateway thread could not be started again');
        this.restart();
      });
    }, wait);
  }

  private log(level: string, args: unknown[]): void {
    const method = (this.d.log as unknown as Record<string, (...a: unknown[]) => void>)[level];
    if (typeof method === 'function') method.apply(this.d.log, args);
  }

  /** The thread's metrics in the text format ('' while it is not running). */
  metricsText(): Promise<string> {
    const worker = this.worker;
    if (!worker) return Promise.resolve('');
    const id = this.nextId++;
    return new Promise<string>((resolve) => {
      const timer = setTimeout(() => { this.waiting.delete(id); resolve(''); }, 2000);
      this.waiting.set(id, (text) => { clearTimeout(timer); resolve(text); });
      worker.postMessage({ t: 'metrics', id } satisfies HostRequest);
    });
  }

  /** For tests: the thread as it runs now. */
  get thread(): Worker | null { return this.worker; }

  private detach(): void {
    this.unwatch();
    this.d.events.off('keys.changed', this.onKeysChanged);
    this.d.events.off('usage.counted', this.onCounted);
  }

  /** Stops listening, lets requests under way end (5 s at most), and ends the thread. */
  async close(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.detach();
    const worker = this.worker;
    if (!worker) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage({ t: 'close' } satisfies HostRequest);
    const timer = setTimeout(() => void worker.terminate(), 10_000);
    await exited;
    clearTimeout(timer);
  }
}

/** The semi-space size node's arguments set (MB; 0: V8's default), the last one winning as in V8. */
export function semiSpaceFlag(args: readonly string[]): number {
  let mb = 0;
  for (let i = 0; i < args.length; i++) {
    const m = /^--max[-_]semi[-_]space[-_]size(?:=(\d+))?$/.exec(args[i]!);
    if (m) mb = Number(m[1] ?? args[i + 1]) || 0;
  }
  return mb;
}
