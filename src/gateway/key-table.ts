import { keyIdOf, sameKey } from '../keys/format.js';
import type { KeyRecord } from '../store/key-files.js';

/** What the gateway reads of a key's record: its state and its limits. */
export type GatedRecord = Pick<KeyRecord, 'status' | 'expires_at' | 'suspension' | 'quota_reset' | 'daily_limit' | 'daily_token_limit'
  | 'rpm_limit' | 'max_concurrency' | 'allowed_models'>;

/** Records without limits or dates, one per status: most keys' (shared, also across the copy to the thread). */
const PLAIN = new Map<string, GatedRecord>();

/** The part of a record the gateway's thread is sent (a copy of every issued key's would double their memory). */
export function gated(r: KeyRecord): GatedRecord {
  const plain = !r.expires_at && !r.suspension && !r.quota_reset && !r.daily_limit && !r.daily_token_limit && !r.rpm_limit
    && !r.max_concurrency && !r.allowed_models?.length;
  if (plain) {
    let shared = PLAIN.get(r.status);
    if (!shared) PLAIN.set(r.status, shared = Object.freeze(gatedCopy(r)));
    return shared;
  }
  return gatedCopy(r);
}

function gatedCopy(r: KeyRecord): GatedRecord {
  return {
    status: r.status, expires_at: r.expires_at ?? null, suspension: r.suspension ?? null, quota_reset: r.quota_reset ?? null,
    daily_limit: r.daily_limit, daily_token_limit: r.daily_token_limit,
    rpm_limit: r.rpm_limit ?? 0, max_concurrency: r.max_concurrency ?? 0, allowed_models: r.allowed_models ?? [],
  };
}

/** An issued key, its public id, and what the gateway reads of its record. */
export interface GatedKey { id: string; key: string; record: GatedRecord }

/** The issued key a presented secret is (compared in constant time). */
export interface KeyMatcher {
  match(secret: string): GatedKey | undefined;
}

/**
 * The gateway thread's copy of the issued keys, kept by the messages of the main thread (where
 * the key store is). Found as KeyService.match finds them: by the public key id, then the full
 * key compared in constant time. Unused pool keys are not in it.
 */
export class KeyTable implements KeyMatcher {
  private readonly byId = new Map<string, GatedKey>();

  constructor(private readonly prefix: string) {}

  get size(): number { return this.byId.size; }

  set(key: string, record: GatedRecord): void {
    const id = keyIdOf(this.prefix, key);
    this.byId.set(id, { id, key, record });
  }

  replace(entries: Iterable<[string, GatedRecord]>): void {
    this.byId.clear();
    for (const [k, r] of entries) this.set(k, r);
  }

  match(secret: string): GatedKey | undefined {
    const hit = this.byId.get(keyIdOf(this.prefix, secret));
    return hit && sameKey(hit.key, secret) ? hit : undefined;
  }
}
