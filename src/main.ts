import { networkInterfaces } from 'node:os';
import { chmod, mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { createApp } from './app.js';
import { ManagementClient } from './cliproxy/management.js';
import { systemClock, type Clock } from './clock.js';
import { describeConfig, type Config } from './config.js';
import { newSecret, SENTINEL_PREFIX } from './keys/format.js';
import { Reconciler } from './keys/reconciler.js';
import { ReloadSignal } from './cliproxy/reloads.js';
import { KeyService } from './keys/service.js';
import { JobRegistry } from './jobs/registry.js';
import { createLogger, type Logger } from './log.js';
import { LogFile } from './log-file.js';
import { removeStaleTempFiles } from './store/atomic-file.js';
import { AuditLog } from './store/audit.js';
import { KeysStore } from './store/keys-store.js';
import { DataDirLock } from './store/lock.js';
import { fileSecret } from './store/secrets.js';
import type { AppDeps } from './web/http/deps.js';
import { Audit } from './audit.js';
import { Events } from './events.js';
import { FailureGuard } from './failure-guard.js';
import { GatewayHost } from './gateway/host.js';
import { Metrics } from './metrics.js';
import { writeBackup } from './store/backup.js';
import { HealthService } from './health.js';
import { RegistrationService } from './keys/registration.js';
import { RequestsStore } from './store/requests-store.js';
import { PricesStore } from './store/prices-store.js';
import { PriceService } from './costs/service.js';
import { SessionStore } from './store/sessions-store.js';
import type { ManagementClient as Client } from './cliproxy/management.js';
import type { UsageStore as Usage } from './store/usage-store.js';
import { StatsService } from './usage/stats.js';
import { Ingestor } from './usage/ingest.js';
import { QuotaService } from './keys/quota.js';
import { UsageService } from './usage/service.js';
import { importLegacyUsage } from './store/usage-legacy.js';
import { UsageStore } from './store/usage-store.js';
import { Zone } from './time/zone.js';
import { AlertService } from './alerts/service.js';
import { Webhook } from './alerts/webhook.js';

/** The running portal: what the web layer gets, and the parts below it (for the CLI and tests). */
export interface Portal extends AppDeps {
  store: KeysStore;
  reconciler: Reconciler;
  cliproxy: Client;
  usageStore: Usage;
  requests: RequestsStore;
  events: Events;
  logFile: LogFile | null;
  server: Server;
  port: number;
  /** The gateway (on a thread of its own), when GATEWAY_PORT is set. */
  gateway: GatewayHost | null;
  url: string;
  jobs: JobRegistry;
  sentinel: string;
  /** Settles when the start-up reconcile has run (the server answers before that). */
  ready: Promise<void>;
  stop(): Promise<void>;
}

export interface StartOptions {
  log?: Logger;
  clock?: Clock;
  /** Where the one-time admin token notice goes (default stdout; never the log). */
  announce?: (line: string) => void;
  /** Do not start the cron schedules (tests drive jobs by hand). */
  noSchedules?: boolean;
  /** Passed to the key service: how long issue/revoke wait for CLIProxyAPI. */
  pushWaitMs?: number;
  /** Passed to the reconciler instead of CLIPROXY_WRITE_GAP_MS (tests against the fake shorten it). */
  settleMs?: number;
}

/** Opens the data directory (and its lock), every store and service, and listens. */
export async function startPortal(config: Config, opts: StartOptions = {}): Promise<Portal> {
  const clock = opts.clock ?? systemClock;
  const logFile = opts.log || !config.LOG_FILE ? null : new LogFile(config.LOG_FILE, {
    onError: (err) => process.stderr.write(`key-portal: the log file ${config.LOG_FILE} cannot be written (${err.message}); going on without it until it can\n`),
  });
  const log = opts.log ?? createLogger({ level: config.LOG_LEVEL, file: logFile, keyPrefix: config.KEY_PREFIX });
  const announce = opts.announce ?? ((line: string) => process.stdout.write(line + '\n'));

  await mkdir(config.DATA_DIR, { recursive: true, mode: 0o700 });
  await chmod(config.DATA_DIR, 0o700);
  const lock = DataDirLock.acquire(config.DATA_DIR);
  const cleanups: (() => Promise<void> | void)[] = [() => lock.release()];
  const cleanup = async () => { for (const c of cleanups.splice(0).reverse()) await c(); };

  try {
    await removeStaleTempFiles(config.DATA_DIR);
    const store = await KeysStore.open(config.DATA_DIR, config.KEY_PREFIX, log.child({ module: 'store' }));
    cleanups.push(() => store.close());
    const auditLog = new AuditLog(config.DATA_DIR, clock);
    cleanups.push(() => auditLog.close());
    const audit = new Audit(auditLog, log);
    const events = new Events();
    const requests = await RequestsStore.open(config.DATA_DIR);
    const sessionStore = await SessionStore.open(config.DATA_DIR, () => clock.now());
    const sentinel = (await fileSecret(config.DATA_DIR, '.sentinel', () => SENTINEL_PREFIX + newSecret())).value;
    const adminToken = config.ADMIN_TOKEN ?? await generatedAdminToken(config.DATA_DIR, announce);
    const sessionSecret = config.SESSION_SECRET ?? (await fileSecret(config.DATA_DIR, '.session-secret')).value;

    const cliproxy = new ManagementClient({
      baseUrl: config.CLIPROXY_URL, managementKey: config.CLIPROXY_MANAGEMENT_KEY, log: log.child({ module: 'cliproxy' }), clock,
    });
    const jobs = new JobRegistry(log, config.TIMEZONE);
    const reloads = new ReloadSignal();
    const reconciler = new Reconciler({
      store, client: cliproxy, sentinel, log, clock, preloadPool: () => config.PRELOAD_POOL || store.preload,
      followUp: (ms) => jobs.runSoon('reconcile', ms), settleMs: opts.settleMs ?? config.CLIPROXY_WRITE_GAP_MS, reloads,
    });
    const keys = new KeyService({ config, store, reconciler, audit, events, log, clock, pushWaitMs: opts.pushWaitMs });
    const registration = new RegistrationService({ config, keys, requests, audit, events, clock });

    if (store.isNew) {
      const { minted } = await keys.mint(config.POOL_SIZE, { kind: 'system' });
      await store.checkpoint(); // the files exist from the first start on
      log.info({ module: 'keys' }, `first start: generated a pool of ${minted} keys in ${store.poolFile}`);
    }

    jobs.add({ name: 'reconcile', schedule: config.RECONCILE_CRON, run: () => reconciler.run() });
    // The key files trail the journal by at most a second while changes arrive.
    jobs.add({ name: 'checkpoint', schedule: '* * * * * *', run: () => store.checkpointIfDirty() });

    const zone = new Zone(config.TIMEZONE);
    importLegacyUsage(config.DATA_DIR, zone, log);
    const usageStore = await UsageStore.open(config.DATA_DIR, log);
    cleanups.push(() => usageStore.close());
    // Stopping runs the cleanups backwards: the server, the usage source, the ingestor's last write,
    // then the jobs, and only then the usage writer and the stores (no write after the lock is released).
    cleanups.push(() => jobs.stop());
    const ingestor = new Ingestor({ dataDir: config.DATA_DIR, store: usageStore, keys: store, zone, log, clock });
    await ingestor.recoverHeld();
    const usage = new UsageService({
      config, cliproxy, ingestor, store: usageStore, log, clock,
      // CLIProxyAPI reloaded its config: someone may have edited the key list.
      onRefresh: () => jobs.runSoon('reconcile', 250), reloads,
    });
    cleanups.push(() => usage.finished()); // (last of the three) a pop under way ends, into a file, before the lock goes
    cleanups.push(() => ingestor.close());
    cleanups.push(() => usage.stop());
    jobs.add({ name: 'usage', schedule: config.USAGE_CRON, run: () => usage.pull() });
    jobs.add({
      name: 'usage-retention', schedule: '17 3 * * *', run: () => {
        const now = clock.now();
        return usageStore.prune(now - config.USAGE_EVENTS_RETENTION_DAYS * 86_400_000, zone.hour(now - config.HOURLY_RETENTION_DAYS * 86_400_000));
      },
    });
    const prices = new PriceService({ store: await PricesStore.open(config.DATA_DIR), audit, clock, currency: config.PRICE_CURRENCY, rate: config.PRICE_CURRENCY_RATE });
    const stats = new StatsService({ store, usage: usageStore, zone, clock, ttlMs: config.STATS_TTL_MS, prices });
    const quota = new QuotaService({ store, usage: usageStore, zone, keys, reconciler, audit, events, log, clock });
    // Services tell each other through events: a key change drops the cached leaderboard (an admin
    // expects to see it at once); counted usage is checked against the limits of its keys.
    events.on('keys.changed', () => stats.invalidate());
    events.on('usage.counted', (ids) => {
      quota.enforce(ids).catch((err) => log.error({ module: 'quota', err }, 'could not enforce daily limits'));
    });
    ingestor.onCounted = (ids) => events.emit('usage.counted', ids);
    // Alerts before and when a limit is reached; "once a day" is read back from today's audit log
    // before any usage is counted. The webhook is never waited for.
    const webhook = config.ALERT_WEBHOOK_URL ? new Webhook({ url: config.ALERT_WEBHOOK_URL, log }) : null;
    if (webhook) cleanups.push(() => webhook.stop());
    const alerts = new AlertService({
      threshold: config.ALERT_THRESHOLD_PERCENT, portalUrl: config.PORTAL_PUBLIC_URL, store, usage: usageStore, zone, audit, log, clock, webhook,
    });
    await alerts.load();
    events.on('usage.counted', (ids) => {
      alerts.counted(ids).catch((err) => log.error({ module: 'alerts', err }, 'could not check usage against the alert threshold'));
    });
    events.on('quota.reached', (id, reason) => {
      try { alerts.reached(id, reason); } catch (err) { log.error({ module: 'alerts', err, key_id: id }, 'could not send a limit alert'); }
    });
    // Quota suspensions lift at midnight in TIMEZONE; the sweep catches expiries and a missed midnight.
    jobs.add({ name: 'quota-midnight', schedule: '0 0 0 * * *', timezone: config.TIMEZONE, run: () => quota.reinstateDue() });
    jobs.add({ name: 'quota-sweep', schedule: '*/5 * * * * *', run: () => quota.sweep() });
    const guard = new FailureGuard({ setting: config.AUTH_FAILURE_LIMIT, now: () => clock.now(), audit, log });
    const health = new HealthService({ config, cliproxy, usage, store, reconciler, logFile, lockedOut: () => guard.lockedOut() });
    const metrics = new Metrics({ store, usage, cliproxy, reconciler, guard, events, logFile, now: () => clock.now(), alerts, webhook });
    // The gateway (GATEWAY_PORT): CLIProxyAPI's client APIs with the limits checked before forwarding.
    let gateway: GatewayHost | null = null;
    if (config.GATEWAY_PORT !== undefined) {
      const g = gateway = await GatewayHost.start({
        config, port: config.GATEWAY_PORT, usageFile: usageStore.file, store, events, clock, log, // its lines name their module
      });
      cleanups.push(() => g.close());
      metrics.addSource(() => g.metricsText());
      log.info({ module: 'gateway', port: g.port }, `gateway listening on ${config.HOST}:${g.port}, forwarding to ${config.CLIPROXY_URL}`);
    }
    const gatewayPort = gateway?.port ?? null;
    const deps: AppDeps = {
      config, keys, registration, quota, stats, prices, usage, audit, health, guard, sessionStore, log, clock, zone, adminToken, sessionSecret, gatewayPort, metrics, alerts,
      backup: async (out) => {
        await audit.flushed();
        return writeBackup({
          dataDir: config.DATA_DIR, keyFiles: () => store.snapshot(), usage: (dest) => usageStore.backupTo(dest),
          meta: { keys: store.keyCount(), users: store.userCount(), pool: store.poolStatus(), via: 'portal' },
        }, out);
      },
    };
    const app = createApp(deps);
    const server = await listen(app, config.PORT, config.HOST);
    cleanups.push(() => closeServer(server));
    const port = (server.address() as AddressInfo).port;
    lock.setAddress(config.HOST, port);


    log.info({ module: 'main', config: describeConfig(config) }, 'configuration');
    if (!cliproxy.configured) {
      log.warn({ module: 'main' }, 'CLIPROXY_MANAGEMENT_KEY is not set: keys are issued as pending and pushed to CLIProxyAPI once it is');
    }
    if (!opts.noSchedules) jobs.start();
    const ready = jobs.runNow('reconcile');
    // The usage source is picked (and subscribed) after the first reconcile has answered: a wrong
    // management key then costs one failed login, not one per parallel first call.
    void ready.then(() => Promise.all([jobs.runNow('usage'), jobs.runNow('quota-sweep'), jobs.runNow('usage-retention')]));
    const everywhere = config.HOST === '0.0.0.0' || config.HOST === '::';
    const url = `http://${everywhere ? '127.0.0.1' : config.HOST}:${port}`;
    // Bound to every interface: say so, with the addresses colleagues can use.
    const where = everywhere ? `every interface, port ${port} (${reachableAt(port).join(', ')})` : url;
    log.info({ module: 'main', port, host: config.HOST, pool: store.poolStatus() }, `key-portal listening on ${where}`);

    return {
      ...deps, store, reconciler, cliproxy, usageStore, requests, events, logFile, server, port, url, jobs, sentinel, ready, gateway,
      async stop() {
        await cleanup();
        log.info({ module: 'main' }, 'stopped');
        log.flush?.();
        await logFile?.close();
      },
    };
  } catch (err) {
    await cleanup();
    await logFile?.close();
    throw err;
  }
}

/** http://<address>:<port> for each IPv4 address of this machine, loopback first. */
function reachableAt(port: number): string[] {
  const out = ['127.0.0.1'];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) out.push(a.address);
  }
  return out.map((a) => `http://${a}:${port}`);
}

async function generatedAdminToken(dataDir: string, announce: (line: string) => void): Promise<string> {
  const { value, created } = await fileSecret(dataDir, '.admin-token');
  if (created) {
    announce(`\nADMIN_TOKEN was not set, so one was generated and saved in ${dataDir}/.admin-token (shown only now):\n\n    ${value}\n`);
  }
  return value;
}

function listen(app: ReturnType<typeof createApp>, port: number, host: string): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = app.listen(port, host);
    server.once('listening', () => resolve(server));
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'EADDRINUSE' ? new Error(`Port ${port} on ${host} is already in use: set PORT to a free port`) : err);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
    setTimeout(() => server.closeAllConnections(), 2000).unref();
  });
}
