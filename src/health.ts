import type { CliproxyStatus, ManagementClient } from './cliproxy/management.js';
import type { Config } from './config.js';
import type { Reconciler } from './keys/reconciler.js';
import type { LogFile } from './log-file.js';
import type { KeysStore } from './store/keys-store.js';
import type { UsageService, UsageStatus } from './usage/service.js';

export interface Reason { code: string; message: string }

/**
 * How the portal is doing, worked out from the live state of each part (never a remembered
 * message): a reason disappears as soon as its cause does. /healthz, the banners and the admin's
 * status lines all read it here.
 */
export class HealthService {
  constructor(private readonly d: {
    config: Config; cliproxy: ManagementClient; usage: UsageService; store: KeysStore; reconciler: Reconciler; logFile?: LogFile | null;
    /** Addresses locked out for wrong credentials (the web layer's guard), for the details. */
    lockedOut?: () => number;
  }) {}

  cliproxy(): CliproxyStatus { return this.d.cliproxy.status(); }
  usage(): UsageStatus { return this.d.usage.status(); }

  reasons(): Reason[] {
    const reasons: Reason[] = [];
    const c = this.d.cliproxy.status();
    if (c.error_code && c.error) reasons.push({ code: c.error_code, message: c.error });
    const u = this.d.usage.status();
    if (u.storage_error) reasons.push({ code: 'usage_storage', message: u.storage_error });
    if (u.error && !reasons.some((r) => u.error!.startsWith(r.code))) reasons.push({ code: 'usage_source', message: u.error });
    if (this.d.store.storageError) reasons.push({ code: 'keys_storage', message: this.d.store.storageError });
    if (this.d.store.checkpointError) reasons.push({ code: 'keys_checkpoint', message: this.d.store.checkpointError });
    if (this.d.logFile?.error) reasons.push({ code: 'log_file', message: this.d.logFile.error });
    return reasons;
  }

  /** Everything /healthz shows an admin or METRICS_TOKEN (the CLIProxyAPI address, paths, error texts). */
  details(reasons = this.reasons()): Record<string, unknown> {
    const s = this.d.cliproxy.status();
    const u = this.d.usage.status();
    const last = this.d.reconciler.last;
    const logFile = this.d.logFile;
    return {
      status: reasons.length ? 'degraded' : 'ok',
      reasons,
      cliproxy: {
        url: this.d.config.CLIPROXY_URL, reachable: s.reachable, authenticated: s.authenticated, generation: s.generation, version: s.version,
        key_api: this.d.cliproxy.keyApi, last_usage_at: u.last_usage_at, error: s.error, error_code: s.error_code, paused_until: s.paused_until,
      },
      usage: u,
      keys: { storage_error: this.d.store.storageError, checkpoint_error: this.d.store.checkpointError, pool: this.d.store.poolStatus() },
      log: logFile ? { file: logFile.file, dropped: logFile.dropped, error: logFile.error } : null,
      reconcile: last && { at: last.at, ok: last.ok, was_empty: last.was_empty, error_code: last.error_code },
      auth: { locked_out_addresses: this.d.lockedOut?.() ?? 0 },
    };
  }
}
