import { open, rename, statfs, type FileHandle } from 'node:fs/promises';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

export interface LogFileOptions {
  /** Rotate when the file would grow past this (default 10 MiB). */
  maxBytes?: number;
  /** Rotated files kept besides the live one: portal.log.1 … portal.log.N (default 5). */
  keep?: number;
  /** Lines waiting in memory beyond this are dropped (default 4 MiB). */
  bufferBytes?: number;
  /** How long to wait before trying a failed file again (default 5 s). */
  retryMs?: number;
  /**
   * Free space the log never takes: below it, lines are dropped so the data files keep room to be
   * written (default 5% of the file system, at most 64 MiB).
   */
  reserveBytes?: number;
  /** Told once per outage (the portal prints it on stderr and shows it in /healthz). */
  onError?: (err: Error) => void;
}

/**
 * The log file as a pino destination that can never stop or crash the portal. pino's own file
 * destination (sonic-boom) retries a failing write and then throws: with a full disk that froze
 * every request for 15 s and then killed the process. Here a write only queues the line; one async
 * loop appends queued lines (short writes looped), rotates by size, and when the file cannot be
 * written drops what is queued, counts it, reports once, and tries again after a pause. The total
 * on disk is bounded by maxBytes × (keep + 1).
 */
export class LogFile {
  private queue: string[] = [];
  private queued = 0;
  private fh: FileHandle | null = null;
  private size = 0;
  private writing: Promise<void> | null = null;
  private failingUntil = 0;
  private readonly o: Required<Omit<LogFileOptions, 'onError'>> & Pick<LogFileOptions, 'onError'>;
  /** Lines lost to a failing file or a full buffer, since start. */
  dropped = 0;
  /** Why the file cannot be written now (null when it can). */
  error: string | null = null;

  constructor(readonly file: string, o: LogFileOptions = {}) {
    this.o = { maxBytes: o.maxBytes ?? 10 << 20, keep: Math.max(1, o.keep ?? 5), bufferBytes: o.bufferBytes ?? 4 << 20, retryMs: o.retryMs ?? 5000,
      reserveBytes: o.reserveBytes ?? -1, onError: o.onError };
    mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  }

  /** pino's destination interface: takes one line (with its newline) and never blocks. */
  write(line: string): boolean {
    if (this.queued + line.length > this.o.bufferBytes) {
      this.dropped++;
      return true;
    }
    this.queue.push(line);
    this.queued += line.length;
    this.kick();
    return true;
  }

  private kick(): void {
    // A line queued while the loop was finishing is picked up by a new loop, never left waiting.
    this.writing ??= this.drain().finally(() => { this.writing = null; if (this.queue.length) this.kick(); });
  }

  private async drain(): Promise<void> {
    while (this.queue.length) {
      if (Date.now() < this.failingUntil) {
        this.dropped += this.queue.length;
        this.queue = [];
        this.queued = 0;
        return;
      }
      const text = this.queue.join('');
      const lines = this.queue.length;
      this.queue = [];
      this.queued = 0;
      try {
        const buf = Buffer.from(text);
        await this.checkSpace(buf.length);
        if (this.fh && this.size > 0 && this.size + buf.length > this.o.maxBytes) await this.rotate();
        this.fh ??= await this.openFile();
        for (let off = 0; off < buf.length;) off += (await this.fh.write(buf, off)).bytesWritten;
        this.size += buf.length;
        if (this.error) this.error = null;
      } catch (err) {
        this.dropped += lines;
        this.failingUntil = Date.now() + this.o.retryMs;
        await this.fh?.close().catch(() => undefined);
        this.fh = null;
        if (!this.error) {
          this.error = `the log file ${this.file} cannot be written (${(err as Error).message}); log lines are dropped until it can`;
          this.o.onError?.(err as Error);
          this.watchRecovery();
        }
      }
    }
  }

  /** While failing, look again now and then even if nothing is logged, so the error goes with its cause. */
  private watchRecovery(): void {
    const timer = setTimeout(async () => {
      if (!this.error) return;
      try {
        this.spaceCheckedAt = 0;
        await this.checkSpace(0);
        this.fh ??= await this.openFile();
        this.error = null;
        this.failingUntil = 0;
      } catch {
        this.watchRecovery();
      }
    }, this.o.retryMs);
    timer.unref();
  }

  private spaceCheckedAt = 0;

  /** Refuses to write into the last free space of the disk (checked at most once a second). */
  private async checkSpace(bytes: number): Promise<void> {
    if (Date.now() - this.spaceCheckedAt < 1000) return;
    this.spaceCheckedAt = Date.now();
    const fsInfo = await statfs(path.dirname(this.file));
    const reserve = this.o.reserveBytes >= 0 ? this.o.reserveBytes : Math.min(64 << 20, fsInfo.blocks * fsInfo.bsize * 0.05);
    if (fsInfo.bavail * fsInfo.bsize - bytes < reserve) {
      this.spaceCheckedAt = 0; // look again next time
      throw Object.assign(new Error('the disk is nearly full; its last free space is kept for the data'), { code: 'ENOSPC' });
    }
  }

  private async openFile(): Promise<FileHandle> {
    const fh = await open(this.file, 'a', 0o600);
    this.size = (await fh.stat()).size;
    return fh;
  }

  /** portal.log → portal.log.1 → … → portal.log.N (the oldest goes). */
  private async rotate(): Promise<void> {
    await this.fh?.close();
    this.fh = null;
    for (let i = this.o.keep - 1; i >= 1; i--) await rename(`${this.file}.${i}`, `${this.file}.${i + 1}`).catch(() => undefined);
    if (this.o.keep > 0) await rename(this.file, `${this.file}.1`);
    this.size = 0;
  }

  /** Resolves once everything queued so far is written (or dropped). */
  async flush(): Promise<void> {
    while (this.writing) await this.writing;
  }

  async close(): Promise<void> {
    await this.flush();
    await this.fh?.close().catch(() => undefined);
    this.fh = null;
  }
}
