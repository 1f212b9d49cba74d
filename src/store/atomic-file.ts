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

/** Writes `text` to `file` so that a crash at any moment leaves either the old or the new file. */
export async function writeFileAtomic(file: string, text: string | Buffer): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.writeFile(text);
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
    await writeFileAtomic(this.file, JSON.stringify(data, null, this.indent || undefined));
  }
}
