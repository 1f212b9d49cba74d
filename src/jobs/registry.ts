import cron, { type ScheduledTask } from 'node-cron';
import type { Logger } from '../log.js';

/** A timed job: a plain async function, callable directly by tests and the CLI. */
export interface Job {
  name: string;
  /** node-cron expression (six fields allow seconds). */
  schedule: string;
  /** IANA zone the schedule is read in (midnight resets); default the config's TIMEZONE. */
  timezone?: string;
  run: () => Promise<unknown>;
}

/**
 * The portal's scheduled work — reconcile, checkpoint, usage pulls, retention, the quota midnight
 * and sweep — as named jobs: runs of a job never overlap, errors are caught and logged here, and
 * `stop()` ends them all. Timers that belong to one connection or one operation live with their
 * owner and end with it: the usage subscription's reconnect and keepalive, the ingestor's storage
 * retry, the log file's recovery check, and the time limits of single calls.
 */
export class JobRegistry {
  private readonly jobs = new Map<string, Job>();
  private readonly tasks: ScheduledTask[] = [];
  private readonly busy = new Map<string, Promise<void>>();
  private readonly soon = new Map<string, NodeJS.Timeout>();
  private stopped = false;

  constructor(private readonly log: Logger, private readonly timezone: string) {}

  add(job: Job): void {
    if (this.jobs.has(job.name)) throw new Error(`job ${job.name} registered twice`);
    this.jobs.set(job.name, job);
  }

  /** A registered job (its schedule and zone), for tests and the status page. */
  get(name: string): Job | undefined { return this.jobs.get(name); }

  /** Runs a job now (skipped if it is already running), logging instead of throwing. */
  runNow(name: string): Promise<void> {
    const job = this.jobs.get(name);
    if (!job) throw new Error(`no job named ${name}`);
    const running = this.busy.get(name);
    if (running) return running;
    const p = (async () => {
      try {
        await job.run();
      } catch (err) {
        this.log.error({ module: 'jobs', job: name, err }, `job ${name} failed`);
      } finally {
        this.busy.delete(name);
      }
    })();
    this.busy.set(name, p);
    return p;
  }

  /** Whether a run of `name` is set for soon (runSoon) and has not started yet. */
  dueSoon(name: string): boolean { return this.soon.has(name); }

  /** Runs a job once after `delayMs` (a follow-up), unless one is already due; cancelled by stop(). */
  runSoon(name: string, delayMs: number): void {
    if (this.stopped || this.soon.has(name)) return;
    const timer = setTimeout(() => { this.soon.delete(name); void this.runNow(name); }, delayMs);
    timer.unref();
    this.soon.set(name, timer);
  }

  start(): void {
    for (const job of this.jobs.values()) {
      const task = cron.schedule(job.schedule, () => this.runNow(job.name), {
        name: job.name, timezone: job.timezone ?? this.timezone, noOverlap: true,
      });
      // node-cron warns on the console for every run missed while the event loop was busy (a flood
      // for per-second jobs); a missed run is harmless here (each job catches up on its next run):
      // counted, and logged at most once a minute per job.
      task.on('execution:missed', () => this.noteMissed(job.name));
      this.tasks.push(task);
    }
  }

  private readonly missed = new Map<string, { count: number; loggedAt: number }>();

  private noteMissed(name: string): void {
    const m = this.missed.get(name) ?? { count: 0, loggedAt: 0 };
    m.count++;
    this.missed.set(name, m);
    const now = Date.now();
    if (now - m.loggedAt >= 60_000) {
      this.log.warn({ module: 'jobs', job: name, missed: m.count }, `job ${name} missed runs while the portal was busy (${m.count} so far)`);
      m.loggedAt = now;
    }
  }

  /** Runs each job missed because the event loop was busy, since start (the metrics read it). */
  missedRuns(): Record<string, number> {
    return Object.fromEntries([...this.missed].map(([name, m]) => [name, m.count]));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.soon.values()) clearTimeout(t);
    this.soon.clear();
    for (const t of this.tasks.splice(0)) await t.destroy();
    await Promise.all(this.busy.values());
  }

  names(): string[] { return [...this.jobs.keys()]; }
}
