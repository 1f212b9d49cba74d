/** Small helpers for `npm run bench`: figures are printed, never asserted. */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export interface Row { name: string; value: string; target?: string; baseline?: string; ratio?: string }

export function printRows(title: string, rows: Row[]): void {
  console.log(`\n## ${title}`);
  const w = Math.max(...rows.map((r) => r.name.length));
  for (const r of rows) {
    const extra = [r.target && `target ${r.target}`, r.baseline && `baseline ${r.baseline}`, r.ratio && `ratio ${r.ratio}`].filter(Boolean).join('; ');
    console.log(`${r.name.padEnd(w)}  ${r.value.padStart(12)}${extra ? `   (${extra})` : ''}`);
  }
}

export const fmt = (n: number, digits = 0) => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
export const mb = (bytes: number) => `${fmt(bytes / 1024 / 1024, 1)} MB`;
