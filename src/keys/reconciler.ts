import { CliproxyError, CliproxyUnreachable, ManagementKeyMissing } from '../cliproxy/errors.js';
import { errorCode, type ManagementClient } from '../cliproxy/management.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { KeysStore } from '../store/keys-store.js';
import { keyIdOf } from './format.js';

export interface ReconcileReport {
  ok: boolean;
  at: string;
  /** Portal keys added to / removed from CLIProxyAPI (ids only; the sentinel shows as "sentinel"). */
  added: string[];
  removed: string[];
  /** Keys in CLIProxyAPI that the portal does not own and left alone. */
  foreign: number;
  /** Pending keys that became active. */
  activated: number;
  method: 'none' | 'patch' | 'put';
  /** The list was empty when read: CLIProxyAPI was open to anyone. */
  was_empty: boolean;
  error: string | null;
  error_code: string | null;
}

export interface ReconcilerDeps {
  store: KeysStore;
  client: ManagementClient;
  sentinel: string;
  /** Unused keys are live too (PRELOAD_POOL or generate-keys --preload). */
  preloadPool: () => boolean;
  log: Logger;
  clock: Clock;
  /**
   * Asks for another run after `delayMs`. A run that wrote is checked by a follow-up: CLIProxyAPI
   * reloads its config asynchronously after each save, and a write that lands inside another write's
   * reload can be lost (the reload installs the older file). The follow-up re-reads and re-applies.
   */
  followUp?: (delayMs: number) => void;
  /** How long after a write the follow-up checks it (default 1000 ms). */
  verifyDelayMs?: number;
  /** How soon to try again while CLIProxyAPI is unreachable (default 5000 ms). */
  retryDownMs?: number;
}

/**
 * Makes CLIProxyAPI's api-keys equal to foreign ∪ sentinel ∪ live portal keys (∪ unused keys with
 * PRELOAD_POOL). Runs never overlap: a request while one runs gets the run after it, shared by
 * every caller that asked meanwhile, so a burst of registrations costs two runs, not a hundred.
 */
export class Reconciler {
  private running: Promise<ReconcileReport> | null = null;
  private next: Promise<ReconcileReport> | null = null;
  private lastErrorCode: string | null = null;
  private warnedEmpty = false;
  last: ReconcileReport | null = null;

  constructor(private readonly deps: ReconcilerDeps) {}

  run(): Promise<ReconcileReport> {
    if (!this.running) return this.start();
    this.next ??= this.running.then(() => { this.next = null; return this.start(); });
    return this.next;
  }

  private start(): Promise<ReconcileReport> {
    const p = this.once().finally(() => { if (this.running === p) this.running = null; });
    this.running = p;
    return p;
  }

  private async once(): Promise<ReconcileReport> {
    const { store, client, sentinel, log } = this.deps;
    const report: ReconcileReport = {
      ok: false, at: new Date(this.deps.clock.now()).toISOString(), added: [], removed: [], foreign: 0,
      activated: 0, method: 'none', was_empty: false, error: null, error_code: null,
    };
    const confirmed: string[] = []; // pending keys now known to be in CLIProxyAPI
    try {
      const current = await client.listKeys();
      const present = new Set(current.map((k) => k.trim()).filter(Boolean));
      report.was_empty = present.size === 0;
      if (report.was_empty && !this.warnedEmpty) {
        this.warnedEmpty = true;
        log.warn({ module: 'reconciler' }, 'CLIProxyAPI had an empty api-keys list, which lets anyone use it; adding the portal sentinel key');
      }

      const desired = new Set<string>([sentinel]);
      const pending: string[] = [];
      for (const [k, r] of store.entries()) {
        if (r.status !== 'active' && r.status !== 'pending') continue;
        desired.add(k);
        if (r.status === 'pending') pending.push(k);
      }
      if (this.deps.preloadPool()) for (const k of store.unusedKeys()) desired.add(k);
      const toAdd: string[] = [];
      for (const k of desired) if (!present.has(k)) toAdd.push(k);
      // Only what is not wanted needs the ownership check: keys of others stay, exactly as they are.
      const toRemove: string[] = [];
      for (const k of present) {
        if (desired.has(k)) continue;
        if (store.owns(k)) toRemove.push(k); else report.foreign++;
      }
      const adding = new Set(toAdd);
      for (const k of pending) if (!adding.has(k)) confirmed.push(k);

      // One write per run: several writes in a row can overtake each other's reloads in CLIProxyAPI.
      const changes = toAdd.length + toRemove.length;
      if (changes > 1) {
        report.method = 'put';
        const removing = new Set(toRemove);
        await client.putKeys([...current.filter((k) => !removing.has(k.trim())), ...toAdd]);
        report.added = toAdd.map((k) => this.id(k));
        report.removed = toRemove.map((k) => this.id(k));
      } else if (toAdd.length === 1) {
        report.method = 'patch';
        await client.addKey(toAdd[0]!);
        report.added.push(this.id(toAdd[0]!));
      } else if (toRemove.length === 1) {
        // The sentinel is never removed, so the list keeps at least one key.
        report.method = 'patch';
        await client.removeKey(toRemove[0]!);
        report.removed.push(this.id(toRemove[0]!));
      }
      for (const k of pending) if (adding.has(k)) confirmed.push(k);
      report.ok = true;
      if (changes > 0) this.deps.followUp?.(this.deps.verifyDelayMs ?? 1000);
    } catch (err) {
      if (!(err instanceof CliproxyError)) throw err;
      report.error = err.message;
      report.error_code = errorCode(err);
      // While CLIProxyAPI is down, look again sooner than the schedule, so pending keys go live soon
      // after it is back. (A rejected key pauses the client instead; nothing to do here.)
      if (err instanceof CliproxyUnreachable) this.deps.followUp?.(this.deps.retryDownMs ?? 5000);
    } finally {
      report.activated = this.activate(confirmed);
    }
    this.logReport(report);
    this.last = report;
    return report;
  }

  /**
   * Pending keys that CLIProxyAPI now holds become active. The flip is written with the next batch
   * rather than awaited: it only records what CLIProxyAPI's list already says, and a run re-derives
   * it after a crash.
   */
  private activate(confirmed: string[]): number {
    const { store } = this.deps;
    let n = 0;
    for (const k of confirmed) {
      if (store.getKey(k)?.status === 'pending') { store.updateKey(k, { status: 'active' }); n++; }
    }
    if (n > 0) store.commit().catch((err) => this.deps.log.error({ module: 'reconciler', err }, 'could not record activations'));
    return n;
  }

  private id(key: string): string {
    return key === this.deps.sentinel ? 'sentinel' : keyIdOf(this.deps.store.prefix, key);
  }

  private logReport(r: ReconcileReport): void {
    const log = this.deps.log.child({ module: 'reconciler' });
    if (r.error_code) {
      // Log a failure when it starts or changes, not on every cycle while CLIProxyAPI stays down.
      if (r.error_code !== this.lastErrorCode && r.error_code !== errorCode(new ManagementKeyMissing(''))) {
        log.warn({ error_code: r.error_code }, `reconcile failed: ${r.error}`);
      }
    } else if (this.lastErrorCode) {
      log.info('CLIProxyAPI is reachable again');
    }
    this.lastErrorCode = r.error_code;
    if (r.added.length || r.removed.length || r.activated) {
      log.info({ added: r.added.slice(0, 50), removed: r.removed.slice(0, 50), added_count: r.added.length,
        removed_count: r.removed.length, activated: r.activated, foreign: r.foreign, method: r.method },
      `reconciled CLIProxyAPI keys: +${r.added.length} -${r.removed.length}`);
    }
  }
}
