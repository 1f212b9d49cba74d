import type { RequestHandler } from 'express';
import type { AlertService } from '../../alerts/service.js';
import type { Audit } from '../../audit.js';
import type { Clock } from '../../clock.js';
import type { Config } from '../../config.js';
import type { PriceService } from '../../costs/service.js';
import type { FailureGuard } from '../../failure-guard.js';
import type { Metrics } from '../../metrics.js';
import type { HealthService } from '../../health.js';
import type { QuotaService } from '../../keys/quota.js';
import type { RegistrationService } from '../../keys/registration.js';
import type { KeyService } from '../../keys/service.js';
import type { Logger } from '../../log.js';
import type { SessionStore } from '../../store/sessions-store.js';
import type { Zone } from '../../time/zone.js';
import type { UsageService } from '../../usage/service.js';
import type { StatsService } from '../../usage/stats.js';
import type { Auth } from './auth.js';
import type { Sessions } from './session.js';

/** What the HTTP layer is handed: services only (no store, client or reconciler), plus its settings. */
export interface AppDeps {
  config: Config;
  keys: KeyService;
  registration: RegistrationService;
  quota: QuotaService;
  stats: StatsService;
  /** The price table: tokens into estimated money. */
  prices: PriceService;
  usage: UsageService;
  audit: Audit;
  health: HealthService;
  guard: FailureGuard;
  sessionStore: SessionStore;
  log: Logger;
  clock: Clock;
  /** TIMEZONE: every day, hour and time shown. */
  zone: Zone;
  adminToken: string;
  sessionSecret: string;
  metrics: Metrics;
  /** Writes a consistent backup of the data directory to a file (POST /admin/backup). */
  backup(out: string): Promise<Record<string, unknown>>;
  /** The gateway's port when GATEWAY_PORT is set: key holders are then sent there. */
  gatewayPort: number | null;
  /** Daily-limit alerts: what the alerts partial shows. */
  alerts: AlertService;
}

/** What createApp builds on top: who is calling, sessions, and the shared registration limiters. */
export interface WebDeps extends AppDeps {
  auth: Auth;
  sessions: Sessions;
  registerLimits: RequestHandler[];
}
