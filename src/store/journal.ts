import { open, readFile, type FileHandle } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { CorruptDataFile } from './atomic-file.js';

/**
 * An append-only JSON-lines file: one line per committed batch, fsync'd before the batch counts as
 * written. A crash can only tear the last line (it never reached the disk whole, so it was never
 * acknowledged); reading skips it. Any other line that does not parse is corruption.
 */
export class Journal<T> {
  private fh: FileHandle | null = null;
  /** Bytes in the file now (what the next checkpoint will clear). */
  bytes = 0;

  constructor(readonly file: string) {}

  /** Reads every whole entry; a torn last line is dropped. */
  async read(): Promise<T[]> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return this.parse(text);
  }

  readSync(): T[] {
    try {
      return this.parse(readFileSync(this.file, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  private parse(text: string): T[] {
    const lines = text.split('\n');
    const entries: T[] = [];
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if (line === '') continue;
      try {
        entries.push(JSON.parse(line) as T);
      } catch (err) {
        const last = i === lines.length - 1 || lines.slice(i + 1).every((l) => l === '');
        if (last) break; // torn by a crash mid-append: never acknowledged
        throw new CorruptDataFile(this.file, `line ${i + 1}: ${(err as Error).message}`);
      }
    }
    this.bytes = Buffer.byteLength(text);
    return entries;
  }

  /** Appends one entry and syncs it to disk. */
  async append(entry: T): Promise<number> {
    const line = JSON.stringify(entry) + '\n';
    this.fh ??= await open(this.file, 'a', 0o600);
    await this.fh.write(line);
    await this.fh.datasync();
    const n = Buffer.byteLength(line);
    this.bytes += n;
    return n;
  }

  /** Empties the file once its entries are safe in a checkpoint. */
  async clear(): Promise<void> {
    this.fh ??= await open(this.file, 'a', 0o600);
    await this.fh.truncate(0);
    await this.fh.datasync();
    this.bytes = 0;
  }

  async close(): Promise<void> {
    await this.fh?.close();
    this.fh = null;
  }
}
