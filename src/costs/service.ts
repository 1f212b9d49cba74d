import type { Actor, Audit } from '../audit.js';
import type { Clock } from '../clock.js';
import { invalidField } from '../errors.js';
import type { PricesStore } from '../store/prices-store.js';
import { costUsd, DEFAULT_PRICES, PriceMatcher, patternKey, type PriceRow, type TokenSplit } from './prices.js';

/** What some usage costs: the sum over models with a price (null when none has one), and the models without. */
export interface CostSummary { total: number | null; unpriced: string[] }

export interface PriceTable {
  /** Prices are USD per million tokens; costs are shown in `currency`, at `rate` of it per USD. */
  unit: 'USD per million tokens';
  currency: string;
  rate: number;
  source: 'defaults' | 'custom';
  updated_at: string | null;
  prices: PriceRow[];
}

/**
 * Turns tokens into money with the price table (the admin's, else the defaults), in
 * PRICE_CURRENCY at PRICE_CURRENCY_RATE per USD. Changing the table is an admin's action: it is
 * written whole before it applies, and audited.
 */
export class PriceService {
  private matcher: PriceMatcher;

  constructor(private readonly d: { store: PricesStore; audit: Audit; clock: Clock; currency: string; rate: number }) {
    this.matcher = new PriceMatcher(this.rows());
  }

  get currency(): string { return this.d.currency; }

  table(): PriceTable {
    return {
      unit: 'USD per million tokens', currency: this.d.currency, rate: this.d.rate,
      source: this.d.store.prices ? 'custom' : 'defaults', updated_at: this.d.store.updatedAt, prices: this.rows(),
    };
  }

  /** The row that prices a model, or null. */
  priceOf(model: string): PriceRow | null { return this.matcher.find(model); }

  /** What a model's tokens cost in the display currency, or null when the model has no price. */
  cost(model: string, t: TokenSplit): number | null {
    const p = this.matcher.find(model);
    return p ? costUsd(p, t) * this.d.rate : null;
  }

  /** Several models' tokens (rows of the same model may repeat); a `cost` already worked out is taken as it is. */
  summarize(items: Iterable<{ model: string; counts: TokenSplit; cost?: number | null }>): CostSummary {
    let total: number | null = null;
    const unpriced = new Set<string>();
    for (const item of items) {
      const { model, counts } = item;
      const c = item.cost !== undefined ? item.cost : this.cost(model, counts);
      if (c === null) { if (counts.input + counts.output + counts.cached > 0) unpriced.add(model); } else total = (total ?? 0) + c;
    }
    return { total, unpriced: [...unpriced].sort() };
  }

  /** Replaces the whole table (patterns already checked to be distinct). */
  replace(rows: PriceRow[], actor: Actor): Promise<void> {
    return this.save(() => rows.map((r) => ({ ...r })), actor, { change: 'prices_replace' });
  }

  /** Adds a row or changes the one with the same pattern; `replaces` names a row the new one takes the place of (a renamed pattern). */
  set(row: PriceRow, actor: Actor, replaces?: string): Promise<void> {
    const gone = new Set([patternKey(row.pattern), ...(replaces ? [patternKey(replaces)] : [])]);
    return this.save((rows) => {
      // A changed row keeps its place in the table; a new one goes last.
      const at = rows.findIndex((r) => gone.has(patternKey(r.pattern)));
      const left = rows.filter((r) => !gone.has(patternKey(r.pattern)));
      left.splice(at < 0 ? left.length : at, 0, { ...row });
      return left;
    }, actor, { change: 'prices_set', pattern: row.pattern });
  }

  remove(pattern: string, actor: Actor): Promise<void> {
    return this.save((rows) => {
      const left = rows.filter((r) => patternKey(r.pattern) !== patternKey(pattern));
      if (left.length === rows.length) throw invalidField('pattern', 'not_listed');
      return left;
    }, actor, { change: 'prices_remove', pattern });
  }

  /** Back to the defaults (which then follow the portal's upgrades). */
  reset(actor: Actor): Promise<void> {
    return this.save(() => null, actor, { change: 'prices_reset' });
  }

  private rows(current: readonly PriceRow[] | null = this.d.store.prices): PriceRow[] {
    return (current ?? DEFAULT_PRICES).map((r) => ({ ...r }));
  }

  /** Writes the table `next` makes of the current one; a change applies only once it is on disk (else StorageError: 503). */
  private async save(next: (rows: PriceRow[]) => PriceRow[] | null, actor: Actor, details: Record<string, unknown>): Promise<void> {
    await this.d.store.update((current) => next(this.rows(current)), new Date(this.d.clock.now()));
    this.matcher = new PriceMatcher(this.rows());
    await this.d.audit.record(actor, 'prices.update', undefined, { ...details, rows: this.rows().length });
  }
}
