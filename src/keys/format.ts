import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** 24 random bytes = 192 bits, written as 48 lower-case hex characters. */
export const SECRET_BYTES = 24;
export const SENTINEL_PREFIX = 'kp_sentinel_';

export function newSecret(bytes = SECRET_BYTES): string {
  return randomBytes(bytes).toString('hex');
}

export function formatKeyId(index: number): string {
  return String(index).padStart(4, '0');
}

/** `{prefix}{NNNN}_{secret}`: NNNN is the pool index and the key's public id. */
export function newKey(prefix: string, index: number): string {
  return `${prefix}${formatKeyId(index)}_${newSecret()}`;
}

const escapeRe = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const parsers = new Map<string, RegExp>();
function parser(prefix: string): RegExp {
  let re = parsers.get(prefix);
  if (!re) parsers.set(prefix, (re = new RegExp(`^${escapeRe(prefix)}(\\d{4,})_([0-9a-f]+)$`)));
  return re;
}

/** The pool index of a key in this portal's format, or null. */
export function keyIndex(prefix: string, key: string): number | null {
  const m = parser(prefix).exec(key);
  return m ? Number(m[1]) : null;
}

/**
 * The public id of a key: its NNNN for keys in the portal's format; for a key of another shape
 * (seed files from older tools), a short stable hash that never reveals the key.
 */
export function keyIdOf(prefix: string, key: string): string {
  const m = parser(prefix).exec(key);
  return m ? m[1]! : hashId(key);
}

/** A short stable id for a key that must not be stored or shown. */
export function hashId(key: string): string {
  return 'h' + createHash('sha256').update(key).digest('hex').slice(0, 12);
}

/** What a key looks like everywhere after it was issued: `usr_pool_0042_…9f3a`. */
export function maskKey(prefix: string, key: string): string {
  const m = parser(prefix).exec(key);
  if (m) return `${prefix}${m[1]}_…${m[2]!.slice(-4)}`;
  return `${key.slice(0, 4)}…${key.slice(-4)}`;
}

/**
 * Constant-time equality of a presented key with the key it claims to be. Keys have a public,
 * fixed shape, so their lengths are no secret: equal lengths are compared byte for byte in constant
 * time, without the two hashes safeEqual pays (this runs on every gateway request).
 */
export function sameKey(known: string, presented: string): boolean {
  const a = Buffer.from(known);
  const b = Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Constant-time equality for secrets of any length (hashing first equalises the lengths). */
export function safeEqual(a: string, b: string): boolean {
  const da = createHash('sha256').update(a).digest();
  const db = createHash('sha256').update(b).digest();
  return timingSafeEqual(da, db) && a.length === b.length;
}
