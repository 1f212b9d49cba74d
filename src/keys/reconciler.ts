import { CliproxyError, CliproxyUnreachable, ManagementKeyMissing } from '../cliproxy/errors.js';
import { errorCode, type ManagementClient } from '../cliproxy/management.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { KeysStore } from '../store/keys-store.js';
import type { ReloadSignal } from '../cliproxy/reloads.js';
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
  /** Asks for another run after `delayMs` (a write is verified by a run after it). */
  followUp?: (delayMs: number) => void;
  /** How long after a write the follow-up checks it (default 1000 ms). */
  verifyDelayMs?: number;
  /** How soon to try again while CLIProxyAPI is unreachable (default 5000 ms). */
  retryDownMs?: number;
  /**
   * Quiet time after each write before the next one when no reload signal is available
   * (CLIPROXY_WRITE_GAP_MS, default 250 ms). CLIProxyAPI changes its list without a lock and reloads
   * it asynchronously after each save: measured against v7.2.140, 50 PATCHes sent back to back lost
   * 16-21 of them (and once the whole config.yaml); v6.9.49 reloads ~150 ms after a save.
   */
  settleMs?: number;
  /** CLIProxyAPI's reload messages (subscribe mode): the next write waits for the last one's reload. */
  reloads?: ReloadSignal;
  /** How long a targeted change waits for CLIProxyAPI to accept (or refuse) the key (default 3000 ms). */
  probeTimeoutMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Keeps CLIProxyAPI's client key list right without ever replacing it: the portal adds its keys
 * with `PATCH {old:K,new:K}` and removes them with `DELETE ?value=K` — one write at a time, with a
 * quiet gap after each — so a key an operator adds or removes meanwhile is never touched, and the
 * list is never empty (the sentinel is added before anything is removed).
 *
 * - `add(keys)` / `remove(keys)`: a known change (issue, revoke, suspend, reinstate) is written at
 *   once, with no read first, and resolves once CLIProxyAPI accepts (or refuses) the key, probed on
 *   /v1/models — so an answer never says `active` before it is true.
 * - `run()`: reads the list (validated) and repairs drift both ways: foreign ∪ sentinel ∪ live portal
 *   keys (∪ unused keys with PRELOAD_POOL). It runs on a schedule, after every CLIProxyAPI reload
 *   (the usage subscription's refresh message) and after writes, to verify them. Runs never overlap:
 *   callers during a run share the next one.
 */
export class Reconciler {
  private running: Promise<ReconcileReport> | null = null;
  private next: Promise<ReconcileReport> | null = null;
  private lastErrorCode: string | null = null;
  private warnedEmpty = false;
  /** The write chain: every management write goes through it, one at a time. */
  private writes: Promise<unknown> = Promise.resolve();
  private quietUntil = 0;
  last: ReconcileReport | null = null;

  constructor(private readonly deps: ReconcilerDeps) {}

  // ---- writes ---------------------------------------------------------------------------------

  /** Writes waiting their turn (a burst of registrations queues here). */
  private queued = 0;

  /** Roughly how long a write asked for now would wait for its turn, in ms. */
  backlogMs(): number {
    return this.queued * (this.deps.reloads?.available ? 25 : this.gapMs() + 10);
  }

  /**
   * Runs one management write after the previous one has settled: its reload seen (the refresh
   * message, when the subscription brings them) or, without that signal, a quiet gap.
   */
  private write(fn: () => Promise<boolean | void>): Promise<void> {
    this.queued++;
    const run = this.writes.then(async () => {
      this.queued--;
      const wait = this.quietUntil - Date.now();
      if (wait > 0) await sleep(wait);
      const before = this.deps.reloads?.count ?? 0;
      let wrote: boolean | void = true;
      try {
        wrote = await fn();
      } finally {
        // A write skipped (already done by someone else since it was asked for) changed nothing: no wait.
        if (wrote !== false) {
          const reloads = this.deps.reloads;
          if (reloads?.available) {
            await reloads.wait(before, 1500); // a write that changed nothing has no reload: bounded
            this.quietUntil = 0;
          } else {
            this.quietUntil = Date.now() + this.gapMs();
          }
        }
      }
    });
    this.writes = run.catch(() => undefined);
    return run;
  }

  /**
   * Keys an add() or remove() has queued and not yet written; and, for a while, when each key's last
   * write landed. A full pass reads CLIProxyAPI's list and then waits its turn behind those writes: it
   * must not write a key again that one of them has written (or will write) since its read — each such
   * write would cost CLIProxyAPI a reload, or the portal a wait for one that never comes.
   */
  private readonly underWay = new Map<string, 'add' | 'remove'>();
  private readonly landed = new Map<string, { op: 'add' | 'remove'; at: number }>();

  private writeKey(op: 'add' | 'remove', key: string, unlessLandedSince?: number): Promise<boolean> {
    let wrote = false;
    return this.write(async () => {
      const l = this.landed.get(key);
      if (unlessLandedSince !== undefined && l && l.op === op && l.at >= unlessLandedSince) return false;
      await (op === 'add' ? this.deps.client.addKey(key) : this.deps.client.removeKey(key));
      this.landed.set(key, { op, at: Date.now() });
      wrote = true;
      this.counts[op === 'add' ? 'added' : 'removed']++;
      return true;
    }).then(() => wrote);
  }

  /** add()/remove(): the key is marked under way from the call until its write is done. */
  private async ownWrite(op: 'add' | 'remove', key: string): Promise<void> {
    this.underWay.set(key, op);
    try {
      await this.writeKey(op, key);
    } finally {
      if (this.underWay.get(key) === op) this.underWay.delete(key);
    }
  }

  private gapMs(): number { return this.deps.settleMs ?? 250; }

  /** Settles once no pass is running and every write asked for so far is done (or has failed). */
  async idle(): Promise<void> {
    for (;;) {
      const { running, next, writes } = this;
      await Promise.allSettled([running, next, writes]);
      if (this.running === null && this.next === null && this.writes === writes && this.queued === 0) return;
    }
  }

  /** Waits until CLIProxyAPI answers a key the way it should (bounded); true if it did. */
  private async until(key: string, want: 'accepted' | 'refused'): Promise<boolean> {
    const end = Date.now() + (this.deps.probeTimeoutMs ?? 3000);
    for (let delay = 10; ; delay = Math.min(delay * 2, 100)) {
      if ((await this.deps.client.probeKey(key)) === want) return true;
      if (Date.now() >= end) return false;
      await sleep(delay);
    }
  }

  /**
   * Adds keys to CLIProxyAPI (a PATCH each, no read first) and marks the pending ones active once
   * CLIProxyAPI accepts them. Throws the client's error if a write fails (they stay pending; a run
   * retries).
   */
  async add(keys: string[]): Promise<void> {
    const { store } = this.deps;
    try {
      for (const key of keys) await this.ownWrite('add', key);
    } catch (err) {
      this.onError(err);
      throw err;
    }
    const accepted = await Promise.all(keys.map((k) => this.until(k, 'accepted')));
    this.activate(keys.filter((k, i) => accepted[i] && store.getKey(k)?.status === 'pending'));
    this.deps.followUp?.(this.deps.verifyDelayMs ?? 1000);
  }

  /** Takes keys out of CLIProxyAPI (a DELETE each, no read first); resolves once it refuses them (bounded). */
  async remove(keys: string[]): Promise<void> {
    try {
      for (const key of keys) await this.ownWrite('remove', key);
    } catch (err) {
      this.onError(err);
      throw err;
    }
    await Promise.all(keys.map((k) => this.until(k, 'refused')));
    this.deps.followUp?.(this.deps.verifyDelayMs ?? 1000);
  }

  /** Keys written to CLIProxyAPI, and management calls that failed, since the start (for /metrics). */
  readonly counts = { added: 0, removed: 0, errors: new Map<string, number>() };

  private onError(err: unknown): void {
    const code = err instanceof CliproxyError ? errorCode(err) : 'other';
    this.counts.errors.set(code, (this.counts.errors.get(code) ?? 0) + 1);
    // While CLIProxyAPI is down, look again sooner than the schedule, so pending keys go live soon
    // after it is back. (A rejected key pauses the client instead.)
    if (err instanceof CliproxyUnreachable) this.deps.followUp?.(this.deps.retryDownMs ?? 5000);
  }

  // ---- the full pass --------------------------------------------------------------------------

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
      activated: 0, was_empty: false, error: null, error_code: null,
    };
    const confirmed: string[] = []; // pending keys CLIProxyAPI already holds
    try {
      const readAt = Date.now();
      for (const [k, l] of this.landed) if (l.at < readAt - 600_000) this.landed.delete(k);
      const present = new Set((await client.listKeys()).map((k) => k.trim()).filter(Boolean));
      // With tens of thousands of keys, reading the answer and comparing it with the store are each
      // several milliseconds: let waiting requests in between (as if the answer had come a moment later).
      await new Promise((r) => setImmediate(r));
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
      // The sentinel first, so the list is never empty while keys are removed.
      const toAdd = [...desired].filter((k) => !present.has(k)).sort((a, b) => Number(b === sentinel) - Number(a === sentinel));
      // Only what is not wanted needs the ownership check: keys of others stay, exactly as they are.
      const toRemove: string[] = [];
      for (const k of present) {
        if (desired.has(k)) continue;
        if (store.owns(k)) toRemove.push(k); else report.foreign++;
      }
      const adding = new Set(toAdd);
      for (const k of pending) if (!adding.has(k)) confirmed.push(k);
      const written = new Set<string>();
      for (const k of toAdd) {
        if (this.underWay.get(k) === 'add' || !(await this.writeKey('add', k, readAt))) continue; // its own add() writes it
        written.add(k);
        report.added.push(this.id(k));
      }
      for (const k of toRemove) {
        if (this.underWay.get(k) === 'remove' || !(await this.writeKey('remove', k, readAt))) continue;
        report.removed.push(this.id(k));
      }
      const wasPending = new Set(pending);
      const added = [...written].filter((k) => wasPending.has(k));
      if (added.length) {
        const accepted = await Promise.all(added.map(async (k) => ((await this.until(k, 'accepted')) ? k : null)));
        confirmed.push(...accepted.filter((k): k is string => k !== null));
      }
      report.ok = true;
      if (toAdd.length || toRemove.length) this.deps.followUp?.(this.deps.verifyDelayMs ?? 1000);
    } catch (err) {
      if (!(err instanceof CliproxyError)) throw err;
      report.error = err.message;
      report.error_code = errorCode(err);
      this.onError(err);
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
        removed_count: r.removed.length, activated: r.activated, foreign: r.foreign },
      `reconciled CLIProxyAPI keys: +${r.added.length} -${r.removed.length}`);
    }
  }
}
