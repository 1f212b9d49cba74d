import type { IncomingHttpHeaders } from 'node:http';

/** Where a client key can be, in the order CLIProxyAPI tries them (CLIPROXY.md §3). */
export type KeyPlace = 'authorization' | 'x-goog-api-key' | 'x-api-key' | 'key' | 'auth_token';

export interface Candidate { place: KeyPlace; value: string }

const BEARER = /^bearer\s+/i;
const KEY_HEADERS = ['authorization', 'x-goog-api-key', 'x-api-key'] as const;

/**
 * The key candidates of a request, in CLIProxyAPI's order: `Authorization` (`Bearer ` stripped, else
 * the value as is), `X-Goog-Api-Key`, `X-Api-Key`, `?key=`, `?auth_token=`.
 */
export function candidates(headers: IncomingHttpHeaders, rawQuery: string): Candidate[] {
  const out: Candidate[] = [];
  const auth = headers.authorization;
  if (auth) out.push({ place: 'authorization', value: auth.replace(BEARER, '') });
  for (const h of ['x-goog-api-key', 'x-api-key'] as const) {
    const v = headers[h];
    if (typeof v === 'string' && v) out.push({ place: h, value: v });
  }
  if (rawQuery) {
    const query = new URLSearchParams(rawQuery);
    for (const q of ['key', 'auth_token'] as const) {
      const v = query.get(q);
      if (v) out.push({ place: q, value: v });
    }
  }
  return out;
}

/** The headers that may carry a key other than `keep`. */
export function otherKeyHeaders(keep: KeyPlace): string[] {
  return KEY_HEADERS.filter((h) => h !== keep);
}

/**
 * Removes every key candidate but `keep` from the headers (in place) and from the raw query string
 * (the rest of which stays byte for byte), so CLIProxyAPI authenticates the request as the key the
 * gateway checked and no other. Returns the query string to send, without its `?`.
 */
export function stripOthers(headers: Record<string, string | string[] | undefined>, rawQuery: string, keep: KeyPlace): string {
  for (const h of otherKeyHeaders(keep)) delete headers[h];
  return queryWithoutOthers(rawQuery, keep);
}

/** The raw query string without the key parameters other than `keep`, the rest byte for byte. */
export function queryWithoutOthers(rawQuery: string, keep: KeyPlace): string {
  if (!rawQuery) return rawQuery;
  return rawQuery.split('&').filter((part) => {
    const name = nameOf(part);
    return !((name === 'key' || name === 'auth_token') && name !== keep);
  }).join('&');
}

function nameOf(part: string): string {
  const eq = part.indexOf('=');
  const raw = (eq < 0 ? part : part.slice(0, eq)).replace(/\+/g, ' ');
  try { return decodeURIComponent(raw); } catch { return raw; }
}
