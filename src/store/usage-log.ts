import { mkdir, open, readdir, readFile, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { StoredEvent } from '../usage/record.js';

export interface Cursor { file: string; offset: number }

/**
 * data/usage/events-YYYY-MM-DD.jsonl (UTC day of ingestion): the durable log of every ingested
 * usage record. A batch is appended and fsync'd before its records are counted; a cursor (file,
 * byte offset) says how far a checkpoint of the aggregates has counted.
 */
export class UsageLog {
  readonly dir: string;
  private fh: FileHandle | null = null;
  private file = '';
  private offset = 0;

  constructor(dataDir: string, private readonly now: () => number) {
    this.dir = path.join(dataDir, 'usage');
  }

  private static nameFor(ms: number): string {
    return `events-${new Date(ms).toISOString().slice(0, 10)}.jsonl`;
  }

  /** Where the next append goes: the end of everything written so far. */
  position(): Cursor { return { file: this.file, offset: this.offset }; }

  async append(events: StoredEvent[]): Promise<void> {
    if (events.length === 0) return;
    const name = UsageLog.nameFor(this.now());
    if (name !== this.file || !this.fh) {
      await this.fh?.close();
      await mkdir(this.dir, { recursive: true, mode: 0o700 });
      this.fh = await open(path.join(this.dir, name), 'a', 0o600);
      this.file = name;
      this.offset = (await this.fh.stat()).size;
    }
    const text = events.map((e) => JSON.stringify(e)).join('\n') + '\n';
    await this.fh.write(text);
    await this.fh.datasync();
    this.offset += Buffer.byteLength(text);
  }

  /**
   * The events after `cursor`, file by file, oldest first. A line torn by a crash (the last one of
   * the newest file) was never counted and is skipped; the next append starts after the whole lines.
   */
  async replayFrom(cursor: Cursor | null, each: (events: StoredEvent[]) => void | Promise<void>): Promise<number> {
    const files = (await readdir(this.dir).catch(() => [] as string[])).filter((f) => /^events-\d{4}-\d{2}-\d{2}\.jsonl$/.test(f)).sort();
    let n = 0;
    for (const f of files) {
      if (cursor?.file && f < cursor.file) continue;
      const buf = await readFile(path.join(this.dir, f));
      let start = cursor?.file === f ? cursor.offset : 0;
      const batch: StoredEvent[] = [];
      while (start < buf.length) {
        const nl = buf.indexOf(10, start);
        if (nl < 0) break; // torn tail
        try { batch.push(JSON.parse(buf.subarray(start, nl).toString('utf8')) as StoredEvent); } catch { /* a damaged line is skipped */ }
        start = nl + 1;
      }
      await each(batch);
      n += batch.length;
      // Appends continue after the last whole line of the newest file.
      this.file = f;
      this.offset = start;
    }
    if (this.file) {
      this.fh = await open(path.join(this.dir, this.file), 'r+');
      await this.fh.truncate(this.offset);
      await this.fh.close();
      this.fh = null;
    }
    return n;
  }

  /** Deletes event files older than `days` days (USAGE_EVENTS_RETENTION_DAYS). */
  async removeOlderThan(days: number): Promise<string[]> {
    const oldest = UsageLog.nameFor(this.now() - days * 86_400_000);
    const removed: string[] = [];
    for (const f of await readdir(this.dir).catch(() => [] as string[])) {
      if (/^events-\d{4}-\d{2}-\d{2}\.jsonl$/.test(f) && f < oldest && f !== this.file) {
        await unlink(path.join(this.dir, f));
        removed.push(f);
      }
    }
    return removed;
  }

  async close(): Promise<void> {
    await this.fh?.close();
    this.fh = null;
  }
}
