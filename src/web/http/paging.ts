/** Pages of a list for HTML (`?page=`) with links that keep the other query parameters. */
export interface Pager { page: number; pages: number; total: number | null; href(page: number): string }

/** A positive integer from a query parameter, or the fallback; never more than `max`. */
export function pageNumber(value: unknown, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  const n = typeof value === 'string' && /^\d{1,9}$/.test(value) ? Number(value) : NaN;
  return Number.isFinite(n) && n >= 1 ? Math.min(n, max) : fallback;
}

export function paginate<T>(items: readonly T[], page: unknown, perPage: number, path: string, keep: Record<string, string> = {}): { rows: T[]; offset: number; pager: Pager } {
  const pages = Math.max(1, Math.ceil(items.length / perPage));
  const p = pageNumber(page, 1, pages);
  const offset = (p - 1) * perPage;
  return { rows: items.slice(offset, offset + perPage), offset, pager: { page: p, pages, total: items.length, href: (n) => pageHref(path, keep, n) } };
}

/** The address of page `n`, keeping the other (non-empty) query parameters. */
export function pageHref(path: string, keep: Record<string, string>, n: number): string {
  const q = new URLSearchParams(Object.entries(keep).filter(([, v]) => v !== ''));
  if (n > 1) q.set('page', String(n));
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}
