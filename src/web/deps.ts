import type { ManagementClient } from '../cliproxy/management.js';
import type { Clock } from '../clock.js';
import type { Config } from '../config.js';
import type { Reconciler } from '../keys/reconciler.js';
import type { KeyService } from '../keys/service.js';
import type { Logger } from '../log.js';
import type { AuditLog } from '../store/audit.js';
import type { KeysStore } from '../store/keys-store.js';

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
}
