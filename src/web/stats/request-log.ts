import type { Actor } from '../../audit.js';
import { fail, invalidField } from '../../errors.js';
import type { RequestFilter } from '../../store/usage-store.js';
import type { WebDeps } from '../http/deps.js';
import { emailParam, parseCursor, parseInstant, queryInt, queryModel, queryOne } from '../http/validate.js';


type Reader = Extract<Actor, { kind: 'user' | 'admin' }>;

/**
 * The request log's filters from a query, shared by GET /api/requests and its pages, narrowed to
 * what the reader may see: a holder the requests of every key they ever held (naming another
 * person or another person's key is refused, never answered empty), an admin everyone's, or one
 * person's (`email`) or key's (`key_id`).
 */
export function requestFilter(deps: Pick<WebDeps, 'stats' | 'zone'>, actor: Reader, q: Record<string, unknown>, defaultLimit: number): RequestFilter & { limit: number } {
  const { stats, zone } = deps;
  const email = queryOne(q, 'email');
  const wantedEmail = email === undefined ? undefined : emailParam(email);
  const wantedKey = queryOne(q, 'key_id', 20);
  let keyIds: string[] | null;
  if (actor.kind === 'user') {
    if (wantedEmail !== undefined && wantedEmail !== actor.email) throw fail('own_stats_only');
    keyIds = stats.keyIdsOf(actor.email);
    if (wantedKey !== undefined) {
      if (!keyIds.includes(wantedKey)) throw fail('key_not_found');
      keyIds = [wantedKey];
    }
  } else {
    keyIds = wantedKey !== undefined ? [wantedKey] : wantedEmail !== undefined ? stats.keyIdsOf(wantedEmail) : null;
  }
  const failed = queryOne(q, 'failed', 5);
  if (failed !== undefined && failed !== 'true' && failed !== 'false') throw invalidField('failed', 'not_boolean');
  const from = parseInstant(q, 'from', zone);
  const to = parseInstant(q, 'to', zone, true);
  // `to` is exclusive (a day's end is the next day's start): from = to is already an empty period.
  if (from !== undefined && to !== undefined && from >= to) throw invalidField('from', 'order');
  return {
    keyIds, model: queryModel(q), failed: failed === undefined ? undefined : failed === 'true', from, to, before: parseCursor(q),
    limit: queryInt(q, 'limit', 1, 500) ?? defaultLimit,
  };
}
