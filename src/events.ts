import { EventEmitter } from 'node:events';

/**
 * What services tell each other, so none reaches into another's caches: the key services say when
 * keys changed (the statistics drop their cached leaderboard), the ingestor says whose usage it just
 * counted (quota enforcement looks at those keys).
 */
export interface PortalEvents {
  /** Keys were issued, revoked, changed or minted. */
  'keys.changed': [];
  /** Successful usage of these managed key ids was just committed. */
  'usage.counted': [keyIds: Set<string>];
  /** Keys were suspended for reaching a daily limit. */
  'quota.suspended': [count: number, reason: string];
  /** This key was just suspended for reaching a daily limit (after its audit entry was written). */
  'quota.reached': [keyId: string, reason: string];
}

export class Events extends EventEmitter<PortalEvents> {}
