/**
 * One CSV cell: quoted when it holds a comma, quote or line break, and a text a spreadsheet would run
 * as a formula (= + - @, tab, CR first) prefixed with ' so it stays text.
 */
export function csvCell(v: string | number): string {
  let s = String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
