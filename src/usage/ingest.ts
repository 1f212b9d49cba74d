import { createReadStream } from 'node:fs';
import { mkdir, readdir, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Low } from 'lowdb';
import type { Clock } from '../clock.js';
import { hashId, keyIdOf, keyIndex } from '../keys/format.js';
import type { Logger } from '../log.js';
import { AtomicJsonFile, writeFileAtomic } from '../store/atomic-file.js';
import type { KeysStore } from '../store/keys-store.js';
import { UsageLog, type Cursor } from '../store/usage-log.js';
import type { LedgerIndex, UsageLedger } from './ledger.js';
import { toStoredEvent, type StoredEvent } from './record.js';
import { SeenFingerprints } from '../cliproxy/usage-snapshot.js';

/**
 * usage.json: the cursor up to which the aggregates have counted, the snapshot fingerprints, the
 * ledger's key and model tables, and the names of the files holding the aggregates themselves:
 * usage/agg/totals.G.bin, and per day YYYY-MM-DD.G.d.bin (its rows) and YYYY-MM-DD.G.h.bin (its
 * hours), G being the checkpoint that wrote it. A checkpoint rewrites only what changed, then
 * usage.json, then removes the files it replaced — a crash at any point leaves a usage.json whose
 * files are whole. Days older than the charts look back stay on disk until a query or a late
 * record needs them.
 * Versions before 2 kept the aggregates as JSON (inline, or usage/aggregates-N.jsonl); they are
 * read once and rewritten.
 */
interface UsageFile {
  version: string; checkpoint_at: string; cursor: Cursor | null; snapshot_seen?: unknown;
  generation?: number; index?: LedgerIndex; totals?: string; units?: Record<string, string>;
  aggregates?: string; ledger?: unknown;
}

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
  /** Told the ids of managed keys whose usage was just counted (quota enforcement listens). */
  onCounted: ((keyIds: Set<string>) => void) | null = null;
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
    await ing.loadAggregates(saved);
    ing.seen.load(saved?.snapshot_seen);
    ing.file.data = null as never;
    const replayed = await eventLog.replayFrom(saved?.cursor ?? null, async (events) => {
      await d.ledger.warmFor(events);
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
        // Days on disk only that a late record belongs to are read first: nothing is appended that
        // could not then be counted.
        await this.d.ledger.warmFor(batch);
        await this.d.eventLog.append(batch);
        this.unwritten = [];
      } catch (err) {
        this.unwritten = batch;
        this.lastError = `could not store usage records: ${(err as Error).message}`;
        this.d.log.error({ module: 'usage', err, held: batch.length }, 'storing usage records failed; records held in memory');
        throw err;
      }
      const counted = new Set<string>();
      for (const e of batch) {
        this.d.ledger.add(e);
        this.noteCounted(e);
        if (e.x !== 1 && !e.f) counted.add(e.k);
      }
      if (counted.size) this.onCounted?.(counted);
      this.lastIngestAt = now;
      this.lastError = null;
      return events.length;
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  private generation = 0;
  /** Files named by the current usage.json, by unit ('d:DAY', 'h:DAY'; '' = totals). */
  private files = new Map<string, string>();
  private legacyFile: string | null = null;

  private get aggDir(): string { return path.join(this.d.eventLog.dir, 'agg'); }

  private async loadAggregates(saved: UsageFile | null): Promise<void> {
    const { ledger } = this.d;
    ledger.loader = async (unit) => {
      const name = this.files.get(unit);
      return name ? readFile(path.join(this.aggDir, name)) : null;
    };
    if (saved?.index && saved.totals) {
      this.generation = saved.generation ?? 0;
      ledger.restore(saved.index, await readFile(path.join(this.aggDir, path.basename(saved.totals))));
      this.files.set('', path.basename(saved.totals));
      const now = this.d.clock.now();
      for (const [unit, name] of Object.entries(saved.units ?? {})) {
        if (!/^[dh]:\d{4}-\d{2}-\d{2}$/.test(unit)) continue;
        this.files.set(unit, path.basename(name));
        if (ledger.isHot(unit, now)) ledger.loadUnit(unit, await readFile(path.join(this.aggDir, path.basename(name))));
        else ledger.registerCold(unit);
      }
    } else if (saved?.ledger) { // version 1.0: the aggregates inline
      for (const [id, raw] of Object.entries(saved.ledger as Record<string, unknown>)) ledger.loadLegacyEntry(id, raw);
    } else if (saved?.aggregates) { // version 1.1: JSON lines, one key each
      this.legacyFile = path.basename(saved.aggregates);
      const lines = createInterface({ input: createReadStream(path.join(this.d.eventLog.dir, this.legacyFile), 'utf8'), crlfDelay: Infinity });
      for await (const line of lines) {
        if (!line) continue;
        const [id, entry] = JSON.parse(line) as [string, unknown];
        ledger.loadLegacyEntry(id, entry);
      }
    }
    // Files a crash left between writing them and naming them in usage.json.
    const named = new Set(this.files.values());
    for (const name of await readdir(this.aggDir).catch(() => [] as string[])) {
      if (!named.has(name)) await unlink(path.join(this.aggDir, name)).catch(() => undefined);
    }
  }

  /**
   * Writes what changed and the totals (new files of a new generation), then usage.json naming them
   * with the cursor they count up to, then removes the files they replace.
   */
  checkpoint(): Promise<void> {
    const run = this.chain.then(async () => {
      const { ledger } = this.d;
      const now = this.d.clock.now();
      ledger.pruneHours(now);
      const today = ledger.dayHour(now).day;
      const g = ++this.generation;
      await mkdir(this.aggDir, { recursive: true, mode: 0o700 });
      const cursor = this.d.eventLog.position();
      const dirty = ledger.dirtyUnits();
      const next = new Map(this.files);
      for (const unit of ledger.takeRemoved()) next.delete(unit);
      for (const unit of dirty) {
        const name = `${unit.slice(2)}.${g}.${unit[0]}.bin`;
        await writeFileAtomic(path.join(this.aggDir, name), ledger.encodeUnit(unit, unit.slice(2) >= today));
        next.set(unit, name);
      }
      const totals = `totals.${g}.bin`;
      await writeFileAtomic(path.join(this.aggDir, totals), Buffer.from(ledger.encodeTotals().buffer));
      next.set('', totals);
      const units = Object.fromEntries([...next].filter(([unit]) => unit !== ''));
      const body: UsageFile = {
        version: '2', checkpoint_at: new Date(now).toISOString(), cursor, snapshot_seen: this.seen.toJSON(),
        generation: g, index: ledger.index(), totals, units,
      };
      await (this.file.adapter as AtomicJsonFile<UsageFile>).writeText(JSON.stringify(body));
      ledger.markClean(dirty);
      const replaced = [...this.files].filter(([unit, name]) => next.get(unit) !== name).map(([, name]) => name);
      this.files = next;
      for (const name of replaced) await unlink(path.join(this.aggDir, name)).catch(() => undefined);
      if (this.legacyFile) {
        await unlink(path.join(this.d.eventLog.dir, this.legacyFile)).catch(() => undefined);
        this.legacyFile = null;
      }
      ledger.cool(now);
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
