import { open, readFile, type FileHandle } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { CorruptDataFile, writeAll } from './atomic-file.js';

/**
 * An append-only JSON-lines file: one line per committed batch, written whole (short writes looped)
 * and fsync'd before the batch counts as written. A crash can only tear the last line (it never
 * reached the disk whole, so it was never acknowledged); reading skips it. Any other line that does
 * not parse is corruption.
 *
 * A failed append (a full disk) leaves no torn line behind: the file is cut back to its last whole
 * line before anything else is appended; until that succeeds, every append fails.
 */
export class Journal<T> {
  private fh: FileHandle | null = null;
  /** Bytes in the file now (what the next checkpoint will clear): always the end of a whole line. */
  bytes = 0;
  /** A failed append may have left part of a line after `bytes`: cut it off before the next append. */
  private torn = false;

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
      const text = readFileSync(this.file, 'utf8');
      // After a failed append that could not be cut off, only what was acknowledged counts.
      return this.parse(this.torn ? Buffer.from(text).subarray(0, this.bytes).toString('utf8') : text, this.torn);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
  }

  private parse(text: string, keepTorn = false): T[] {
    const lines = text.split('\n');
    const entries: T[] = [];
    let whole = 0; // bytes up to the end of the last whole entry
    // The last element is what follows the last newline: a line cut short, never acknowledged.
    for (let i = 0; i < lines.length - 1; i++) {
      const line = lines[i]!;
      const end = whole + Buffer.byteLength(line) + 1;
      if (line === '') { whole = end; continue; }
      try {
        entries.push(JSON.parse(line) as T);
        whole = end;
      } catch (err) {
        const last = lines.slice(i + 1).every((l) => l === '');
        if (last) break; // torn by a crash mid-append: never acknowledged
        throw new CorruptDataFile(this.file, `line ${i + 1}: ${(err as Error).message}`);
      }
    }
    // A torn tail is cut off before the next append, so it never ends up between two whole lines.
    this.bytes = whole;
    this.torn = keepTorn || whole < Buffer.byteLength(text);
    return entries;
  }

  /** Appends one entry and syncs it to disk; resolves only when the whole line is there. */
  async append(entry: T): Promise<number> {
    const line = Buffer.from(JSON.stringify(entry) + '\n');
    this.fh ??= await open(this.file, 'r+', 0o600).catch(() => open(this.file, 'w+', 0o600));
    if (this.torn) {
      await this.fh.truncate(this.bytes);
      await this.fh.datasync();
      this.torn = false;
    }
    try {
      await writeAll(this.fh, line, this.bytes);
      await this.fh.datasync();
    } catch (err) {
      // Not acknowledged, so not kept, even if some or all of it reached the file.
      this.torn = true;
      try { await this.fh.truncate(this.bytes); this.torn = false; } catch { /* cut off before the next append */ }
      throw err;
    }
    this.bytes += line.length;
    return line.length;
  }

  /** Empties the file once its entries are safe in a checkpoint. */
  async clear(): Promise<void> {
    this.fh ??= await open(this.file, 'r+', 0o600).catch(() => open(this.file, 'w+', 0o600));
    await this.fh.truncate(0);
    await this.fh.datasync();
    this.bytes = 0;
    this.torn = false;
  }

  async close(): Promise<void> {
    await this.fh?.close();
    this.fh = null;
  }
}
