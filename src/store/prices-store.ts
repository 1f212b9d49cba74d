import path from 'node:path';
import type { PriceRow } from '../costs/prices.js';
import { CorruptDataFile } from './atomic-file.js';
import { JsonDoc } from './json-doc.js';

interface PricesFile {
  version: '1';
  /** The admin's table; null: the defaults that come with the portal (which then follow upgrades). */
  prices: PriceRow[] | null;
  updated_at: string | null;
}

const isPrice = (v: unknown) => typeof v === 'number' && Number.isFinite(v) && v >= 0;
const isRow = (r: unknown): r is PriceRow => {
  const x = r as Partial<PriceRow> | null;
  return typeof x === 'object' && x !== null && typeof x.pattern === 'string' && x.pattern !== '' && isPrice(x.input) && isPrice(x.output)
    && (x.cached === null || isPrice(x.cached));
};

/**
 * data/prices.json: the price table once an admin has changed it (until then the file does not
 * exist and the defaults apply). Rewritten whole, atomically, on every change.
 */
export class PricesStore {
  private constructor(private readonly doc: JsonDoc<PricesFile>) {}

  static async open(dir: string): Promise<PricesStore> {
    const file = path.join(dir, 'prices.json');
    const doc = await JsonDoc.open<PricesFile>(file, () => ({ version: '1', prices: null, updated_at: null }), (raw) => {
      const r = raw as Partial<PricesFile>;
      if (r.version !== '1' || !(r.prices === null || (Array.isArray(r.prices) && r.prices.every(isRow)))) {
        throw new CorruptDataFile(file, 'it is not a version 1 price table');
      }
      return { version: '1', prices: r.prices, updated_at: typeof r.updated_at === 'string' ? r.updated_at : null };
    });
    return new PricesStore(doc);
  }

  /** The admin's table, or null for the defaults. */
  get prices(): readonly PriceRow[] | null { return this.doc.data.prices; }

  get updatedAt(): string | null { return this.doc.data.updated_at; }

  /**
   * Changes the table: `next` gets the table as it stands (null: the defaults) once the changes
   * before it are written, and returns the new one (null: back to the defaults). Resolves once it
   * is on disk; else throws StorageError and keeps the old one. What `next` throws changes nothing.
   */
  update(next: (current: readonly PriceRow[] | null) => PriceRow[] | null, at: Date): Promise<void> {
    return this.doc.change((d) => { d.prices = next(d.prices); d.updated_at = at.toISOString(); });
  }
}
