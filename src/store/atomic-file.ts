import { constants } from 'node:fs';
import { open, readFile, rename, unlink, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { Adapter } from 'lowdb';

/** A data file exists but cannot be used; the start stops rather than overwrite it. */
export class CorruptDataFile extends Error {
  override name = 'CorruptDataFile';
  constructor(readonly file: string, reason: string) {
    super(`${file} exists but cannot be read as JSON (${reason}). It was left untouched; ` +
      `restore it from a backup or move it away, then start again.`);
  }
}

/** fsync a directory so a rename inside it is durable, not only visible. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY);
  try { await fh.sync(); } finally { await fh.close(); }
}

/**
 * Writes `content` to `file` so that a crash at any moment leaves either the old or the new file.
 * Content given as chunks is written as it comes, so a large file never exists as one string.
 */
export async function writeFileAtomic(file: string, content: string | Buffer | Iterable<string | Uint8Array>): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    if (typeof content === 'string' || Buffer.isBuffer(content)) {
      await fh.writeFile(content);
    } else {
      let buffered: string[] = [];
      let size = 0;
      for (const chunk of content) {
        if (typeof chunk !== 'string') {
          if (buffered.length) { await fh.write(buffered.join('')); buffered = []; size = 0; }
          await fh.writeFile(chunk); // writes all of it, from the current position
          continue;
        }
        buffered.push(chunk);
        size += chunk.length;
        if (size >= 1 << 16) { await fh.write(buffered.join('')); buffered = []; size = 0; }
      }
      if (buffered.length) await fh.write(buffered.join(''));
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  try {
    await rename(tmp, file);
  } catch (err) {
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
