import type { RequestHandler } from 'express';
import type { ManagementClient } from '../cliproxy/management.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Reconciler } from '../keys/reconciler.js';
import type { KeyService } from '../keys/service.js';
import type { Logger } from '../log.js';
import type { LogFile } from '../log-file.js';
import type { AuditLog } from '../store/audit.js';
import type { KeysStore } from '../store/keys-store.js';
import type { StatsService } from '../usage/stats.js';
import type { QuotaService } from '../keys/quota.js';
import type { UsageStore } from '../store/usage-store.js';
import type { Zone } from '../time/zone.js';
import type { UsageService } from '../usage/service.js';
import type { Sessions } from './session.js';

/** Everything the HTTP layer is handed; tests build it with a temp data dir and a fake CLIProxyAPI. */
export interface AppDeps {
  config: Config;
  store: KeysStore;
  keys: KeyService;
  reconciler: Reconciler;
  cliproxy: ManagementClient;
  audit: AuditLog;
  log: Logger;
  clock: Clock;
  adminToken: string;
  sessionSecret: string;
  /** TIMEZONE: every day, hour and time shown. */
  zone: Zone;
  usageStore: UsageStore;
  /** The log file, when there is one (its failures show in /healthz). */
  logFile?: LogFile | null;
  stats: StatsService;
  quota: QuotaService;
  usage: UsageService;
}

/** What the HTTP layer builds on top of AppDeps (sessions are signed with SESSION_SECRET). */
export interface WebDeps extends AppDeps {
  sessions: Sessions;
  /** Per-address limiters, each shared by every route it guards (API and form alike). */
  limits: { register: RequestHandler; signIn: RequestHandler };
}
