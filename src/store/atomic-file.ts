import { constants } from 'node:fs';
import { open, readFile, rename, unlink, readdir, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import type { Adapter } from 'lowdb';

/** A change could not be written (a full or read-only disk): nothing of it was kept. Answered 503. */
export class StorageError extends Error {
  override name = 'StorageError';
}

/** A data file exists but cannot be used; the start stops rather than overwrite it. */
export class CorruptDataFile extends Error {
  override name = 'CorruptDataFile';
  constructor(readonly file: string, reason: string) {
    super(`${file} exists but cannot be read as JSON (${reason}). It was left untouched; ` +
      `restore it from a backup or move it away, then start again.`);
  }
}

/**
 * Writes every byte of `data` at `position` (or the handle's position), looping over short writes —
 * a full disk can accept part of a write and return its count without an error. Throws if the rest
 * cannot be written; never returns having written less. This is the one way the portal writes its
 * files (key files, journal, audit log, secrets).
 */
export async function writeAll(fh: FileHandle, data: string | Uint8Array, position?: number): Promise<number> {
  const buf = typeof data === 'string' ? Buffer.from(data) : data;
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off, position === undefined ? null : position + off);
    if (bytesWritten === 0) throw Object.assign(new Error('no space left on device (0 bytes written)'), { code: 'ENOSPC' });
    off += bytesWritten;
  }
  return buf.length;
}

/** fsync a directory so a rename inside it is durable, not only visible. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY);
  try { await fh.sync(); } finally { await fh.close(); }
}

/**
 * Writes `content` to `file` so that a crash or a failure at any moment leaves either the old file
 * or the whole new one: a temp file is written fully (short writes looped), synced, checked to have
 * every byte, renamed over the old one, and the directory synced. On any failure the temp file is
 * removed and the old file is untouched. Content given as chunks is written as it comes, so a large
 * file never exists as one string.
 */
export async function writeFileAtomic(file: string, content: string | Buffer | Iterable<string | Uint8Array>): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  let fh: FileHandle | null = null;
  try {
    fh = await open(tmp, 'w', 0o600);
    let bytes = 0;
    if (typeof content === 'string' || Buffer.isBuffer(content)) {
      bytes = await writeAll(fh, content);
    } else {
      let buffered: string[] = [];
      let size = 0;
      const flush = async () => { if (buffered.length) { bytes += await writeAll(fh!, buffered.join('')); buffered = []; size = 0; } };
      for (const chunk of content) {
        if (typeof chunk !== 'string') { await flush(); bytes += await writeAll(fh, chunk); continue; }
        buffered.push(chunk);
        size += chunk.length;
        if (size >= 1 << 16) await flush();
      }
      await flush();
    }
    await fh.sync();
    const { size } = await fh.stat();
    if (size !== bytes) throw new Error(`${tmp} holds ${size} bytes after writing ${bytes}`);
    await fh.close();
    fh = null;
    await rename(tmp, file);
  } catch (err) {
    await fh?.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await syncDir(path.dirname(file));
}

/** Temp files left by a process killed mid-write are garbage: the real file is intact. */
export async function removeStaleTempFiles(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (/\.\d+\.tmp$/.test(name)) await unlink(path.join(dir, name)).catch(() => undefined);
  }
}

/**
 * lowdb adapter: JSON in a 0600 file, replaced atomically and durably. `read()` answers null for a
 * missing file and throws CorruptDataFile for one that does not parse.
 */
export class AtomicJsonFile<T> implements Adapter<T> {
  constructor(readonly file: string, private readonly indent = 0) {}

  async read(): Promise<T | null> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    try {
      return JSON.parse(text) as T;
    } catch (err) {
      throw new CorruptDataFile(this.file, (err as Error).message);
    }
  }

  async write(data: T): Promise<void> {
    await this.writeText(JSON.stringify(data, null, this.indent || undefined));
  }

  /** Writes JSON its owner renders itself, whole or in chunks (the key store streams large files). */
  async writeText(text: string | Iterable<string>): Promise<void> {
    await writeFileAtomic(this.file, text);
  }
}
