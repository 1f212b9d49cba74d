import type { Counts, KeyTotals, UsageStore } from '../store/usage-store.js';
import type { CostSummary, PriceService } from './service.js';

/** A key's all-time counts as a string: it changes whenever the key is used. */
const stampOf = (t: Readonly<KeyTotals>) => `${t.requests}:${t.failed}:${t.tokens}:${t.last_used}`;
/** Keys whose per-model totals are kept (a few pages of the leaderboard's people). */
const KEPT = 5000;

/**
 * People's costs over all time, for the leaderboard's page of people: from their keys' totals per
 * model (usage.db keeps all-time totals per key only, so these are summed from the daily rollups).
 * A key's per-model totals are read again only after it was used — its all-time counts changed —
 * so showing a page again reads just the keys used since. Tokens are kept, not money: a price
 * change applies at once.
 */
export class PeopleCosts {
  private readonly byModel = new Map<string, { stamp: string; rows: { model: string; counts: Counts }[] }>();

  constructor(private readonly d: { usage: UsageStore; prices: PriceService; keyIdsOf: (email: string) => string[] }) {}

  of(emails: readonly string[]): Map<string, CostSummary> {
    const { usage, prices } = this.d;
    const idsOf = new Map(emails.map((e) => [e, this.d.keyIdsOf(e)]));
    const stale: string[] = [];
    for (const ids of idsOf.values()) {
      for (const id of ids) {
        const t = usage.liveTotals(id);
        if (t && this.byModel.get(id)?.stamp !== stampOf(t)) stale.push(id);
      }
    }
    if (stale.length) {
      const fresh = new Map<string, { model: string; counts: Counts }[]>(stale.map((id) => [id, []]));
      for (const r of usage.modelTotals(stale)) fresh.get(r.key_id)?.push({ model: r.model, counts: r.counts });
      if (this.byModel.size + stale.length > KEPT) this.byModel.clear();
      for (const id of stale) this.byModel.set(id, { stamp: stampOf(usage.liveTotals(id)!), rows: fresh.get(id)! });
    }
    return new Map(emails.map((e) => [e, prices.summarize(idsOf.get(e)!.flatMap((id) => this.byModel.get(id)?.rows ?? []))]));
  }
}
