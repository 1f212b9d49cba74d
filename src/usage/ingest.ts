import { createReadStream } from 'node:fs';
import { mkdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Low } from 'lowdb';
import type { Clock } from '../clock.js';
import { hashId, keyIdOf, keyIndex } from '../keys/format.js';
import type { Logger } from '../log.js';
import { AtomicJsonFile, writeFileAtomic } from '../store/atomic-file.js';
import type { KeysStore } from '../store/keys-store.js';
import { UsageLog, type Cursor } from '../store/usage-log.js';
import type { UsageLedger } from './ledger.js';
import { toStoredEvent, type StoredEvent } from './record.js';
import { SeenFingerprints } from '../cliproxy/usage-snapshot.js';

/**
 * usage.json: the cursor, the snapshot fingerprints, and the name of the aggregates file it goes with.
 * The aggregates themselves are JSON lines (one key per line) in usage/aggregates-N.jsonl, streamed in
 * and out: with tens of thousands of keys × 90 days they are larger than a JavaScript string may be.
 */
interface UsageFile { version: string; checkpoint_at: string; cursor: Cursor | null; aggregates?: string; ledger?: unknown; snapshot_seen?: unknown }

/**
 * The ingestion pipeline: records from any source → StoredEvents (key ids, no secrets) → appended and
 * fsync'd to the event log → counted in the ledger. data/usage.json checkpoints the ledger with the
 * cursor up to which it counted; opening loads it and replays the log after the cursor, so a kill -9
 * loses no flushed record and counts none twice.
 */
export class Ingestor {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly file: Low<UsageFile>;
  /** Events whose append failed: kept and written first next time (popped records cannot be re-read). */
  private unwritten: StoredEvent[] = [];
  /** Fingerprints of first-generation records already counted (rebuilt from the log after a crash). */
  readonly seen = new SeenFingerprints();
  lastRecordAt: number | null = null;
  lastIngestAt: number | null = null;
  lastError: string | null = null;
  total = 0;

  private constructor(private readonly d: { dataDir: string; store: KeysStore; ledger: UsageLedger; log: Logger; clock: Clock; eventLog: UsageLog }) {
    this.file = new Low(new AtomicJsonFile<UsageFile>(path.join(d.dataDir, 'usage.json')), null as unknown as UsageFile);
  }

  static async open(d: { dataDir: string; store: KeysStore; ledger: UsageLedger; log: Logger; clock: Clock }): Promise<Ingestor> {
    const eventLog = new UsageLog(d.dataDir, () => d.clock.now());
    const ing = new Ingestor({ ...d, eventLog });
    await ing.file.read();
    const saved = ing.file.data;
    if (saved?.ledger) d.ledger.load(saved.ledger); // a checkpoint written before aggregates had their own file
    if (saved?.aggregates) await ing.loadAggregates(saved.aggregates);
    ing.seen.load(saved?.snapshot_seen);
    ing.file.data = null as never;
    const replayed = await eventLog.replayFrom(saved?.cursor ?? null, (events) => {
      for (const e of events) { d.ledger.add(e); ing.noteCounted(e); }
    });
    if (replayed) d.log.info({ module: 'usage', replayed }, 'replayed usage events written after the last checkpoint');
    return ing;
  }

  /** Maps a client key to the id stored with its usage; keys the portal does not own get a hash id. */
  private resolve = (apiKey: string): { id: string; managed: boolean } => {
    const { store } = this.d;
    if (!apiKey) return { id: '', managed: false };
    if (keyIndex(store.prefix, apiKey) !== null && store.getKey(apiKey)) return { id: keyIdOf(store.prefix, apiKey), managed: true };
    return { id: hashId(apiKey), managed: false };
  };

  private noteCounted(e: StoredEvent): void {
    this.total++;
    if (e.fp) this.seen.add(e.fp, e.t);
    if (this.lastRecordAt === null || e.t > this.lastRecordAt) this.lastRecordAt = e.t;
  }

  /** Ingests raw records in arrival order; resolves with how many were usage records, once they count. */
  ingest(raws: unknown[]): Promise<number> {
    const run = this.chain.then(async () => {
      const now = this.d.clock.now();
      const events = raws.map((r) => toStoredEvent(r, this.resolve, now))
        .filter((e): e is StoredEvent => e !== null && !(e.fp && !this.seen.isNew(e.fp, e.t)));
      const batch = this.unwritten.length ? [...this.unwritten, ...events] : events;
      try {
        await this.d.eventLog.append(batch);
        this.unwritten = [];
      } catch (err) {
        this.unwritten = batch;
        this.lastError = `could not write the usage log: ${(err as Error).message}`;
        this.d.log.error({ module: 'usage', err, held: batch.length }, 'usage log append failed; records held in memory');
        throw err;
      }
      for (const e of batch) { this.d.ledger.add(e); this.noteCounted(e); }
      this.lastIngestAt = now;
      this.lastError = null;
      return events.length;
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Writes the ledger and the cursor it has counted up to (usage.json, atomic replacement). */
  private aggregatesFile: string | null = null;

  private async loadAggregates(name: string): Promise<void> {
    const file = path.join(this.d.eventLog.dir, path.basename(name));
    const lines = createInterface({ input: createReadStream(file, 'utf8'), crlfDelay: Infinity });
    for await (const line of lines) {
      if (!line) continue;
      const [id, entry] = JSON.parse(line) as [string, unknown];
      this.d.ledger.loadEntry(id, entry);
    }
    this.aggregatesFile = path.basename(name);
  }

  /**
   * Writes the aggregates (a new generation of usage/aggregates-N.jsonl), then usage.json naming it
   * with the cursor it counted up to, then removes the previous generation: a crash at any point
   * leaves a usage.json whose aggregates file is whole.
   */
  checkpoint(): Promise<void> {
    const run = this.chain.then(async () => {
      const now = this.d.clock.now();
      this.d.ledger.pruneHours(now);
      const generation = Number(/aggregates-(\d+)\.jsonl$/.exec(this.aggregatesFile ?? '')?.[1] ?? 0) + 1;
      const name = `aggregates-${generation}.jsonl`;
      await mkdir(this.d.eventLog.dir, { recursive: true, mode: 0o700 });
      const cursor = this.d.eventLog.position();
      await writeFileAtomic(path.join(this.d.eventLog.dir, name), this.d.ledger.entryLines());
      const body: UsageFile = {
        version: '1.1', checkpoint_at: new Date(now).toISOString(), cursor, aggregates: name, snapshot_seen: this.seen.toJSON(),
      };
      await (this.file.adapter as AtomicJsonFile<UsageFile>).writeText(JSON.stringify(body));
      const previous = this.aggregatesFile;
      this.aggregatesFile = name;
      if (previous && previous !== name) await unlink(path.join(this.d.eventLog.dir, previous)).catch(() => undefined);
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  removeOldEvents(days: number): Promise<string[]> { return this.d.eventLog.removeOlderThan(days); }

  async close(): Promise<void> {
    await this.checkpoint().catch((err) => this.d.log.error({ module: 'usage', err }, 'usage checkpoint failed; the event log keeps everything'));
    await this.d.eventLog.close();
  }
}
