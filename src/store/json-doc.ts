import { Low } from 'lowdb';
import { AtomicJsonFile, StorageError } from './atomic-file.js';

/**
 * A small JSON document of the data directory (registration requests, sessions), read once and
 * rewritten whole on every change through lowdb and AtomicJsonFile. Changes are written one at a
 * time, in the order they were made. `change()` resolves once the file holding the change is on
 * disk; if it cannot be written the change is undone in memory and StorageError is thrown, so what
 * a caller was told happened is always what the file says.
 */
export class JsonDoc<T> {
  private readonly db: Low<T>;
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(readonly file: string, empty: T) {
    this.db = new Low(new AtomicJsonFile<T>(file), empty);
  }

  /** Opens `file` (an empty document when it does not exist); `check` upgrades or refuses what it holds. */
  static async open<T>(file: string, empty: () => T, check: (raw: unknown) => T): Promise<JsonDoc<T>> {
    const doc = new JsonDoc<T>(file, empty());
    await doc.db.read(); // CorruptDataFile for a file that does not parse: the start stops, the file stays
    doc.db.data = doc.db.data === null || doc.db.data === undefined ? empty() : check(doc.db.data);
    return doc;
  }

  /** The document as it stands in memory (everything in it was acknowledged or is being written). */
  get data(): Readonly<T> { return this.db.data; }

  /**
   * Applies `mutate` to a copy, writes the copy and only then makes it the document. With
   * `keepOnFailure` (a change that must hold at once, such as ending a session) the change stays in
   * memory when the write fails, and the next successful write carries it; the StorageError is
   * still thrown.
   */
  change<R>(mutate: (draft: T) => R, o: { keepOnFailure?: boolean } = {}): Promise<R> {
    const run = async (): Promise<R> => {
      const before = this.db.data;
      const draft = structuredClone(before);
      const result = mutate(draft);
      if (o.keepOnFailure) this.db.data = draft;
      try {
        await this.db.adapter.write(draft);
      } catch (err) {
        if (!o.keepOnFailure) this.db.data = before;
        throw new StorageError(`${this.file} cannot be written: ${(err as Error).message}`);
      }
      this.db.data = draft;
      return result;
    };
    const p = this.tail.then(run, run);
    this.tail = p.catch(() => undefined);
    return p;
  }

  /** Settles once every change made so far is written (or has failed). */
  async idle(): Promise<void> { await this.tail; }
}
