import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { ManagementClient } from './management.js';

/** GET /usage of the first generation (CLIPROXY.md §4.2): the part the portal reads. */
const snapshotShape = z.object({ usage: z.object({ apis: z.record(z.string(), z.object({
  models: z.record(z.string(), z.object({ details: z.array(z.record(z.string(), z.unknown())).nullable().optional() })).nullable().optional(),
})).nullable().optional() }) });

/**
 * The first generation (≤ v6.9.49): `GET /usage` returns every detail since CLIProxyAPI started, on
 * every call. New records are found by CLIProxyAPI's own detail fingerprint (CLIPROXY.md §4.3). A
 * record's timestamp is when its attempt *started*, and records appear when attempts *end*, so a
 * plain "newer than the last one" watermark would lose a long request that started first: records
 * older than the newest seen minus a window are skipped, and inside the window fingerprints decide.
 */
export const SNAPSHOT_WINDOW_MS = 3_600_000;

export class SeenFingerprints {
  private readonly seen = new Map<string, number>();
  /** The newest detail counted (kept in usage.db, so a restart skips what is older than the window). */
  newest = 0;

  isNew(fp: string, at: number): boolean {
    return at >= this.newest - SNAPSHOT_WINDOW_MS && !this.seen.has(fp);
  }

  add(fp: string, at: number): void {
    this.seen.set(fp, at);
    if (at > this.newest) this.newest = at;
  }

  /** Forgets fingerprints older than the window (they are skipped by time from then on). */
  prune(): void {
    for (const [fp, at] of this.seen) if (at < this.newest - SNAPSHOT_WINDOW_MS) this.seen.delete(fp);
  }
}

/** apiKey|model|timestamp|source|auth_index|failed|input|output|reasoning|cached|total, hashed (source is a secret). */
export function detailFingerprint(apiKey: string, model: string, d: Record<string, any>): string {
  const t = d.tokens ?? {};
  const parts = [apiKey, model, d.timestamp, d.source ?? '', d.auth_index ?? '', d.failed === true,
    t.input_tokens ?? 0, t.output_tokens ?? 0, t.reasoning_tokens ?? 0, t.cached_tokens ?? 0, t.total_tokens ?? 0];
  return createHash('sha256').update(parts.join('|')).digest('hex').slice(0, 24);
}

/** Reads the snapshot and returns the records not seen before, in the queue's record shape plus `fp`. */
export async function readSnapshot(client: ManagementClient, seen: SeenFingerprints): Promise<unknown[]> {
  const res = await client.request<{ usage: { apis?: Record<string, { models?: Record<string, { details?: Record<string, any>[] }> }> } }>(
    'GET', '/v0/management/usage', { expect: snapshotShape });
  const fresh: unknown[] = [];
  for (const [apiKey, api] of Object.entries(res.data?.usage?.apis ?? {})) {
    for (const [model, m] of Object.entries(api?.models ?? {})) {
      for (const d of m?.details ?? []) {
        if (typeof d?.timestamp !== 'string') continue;
        const at = Date.parse(d.timestamp);
        const fp = detailFingerprint(apiKey, model, d);
        if (!Number.isFinite(at) || !seen.isNew(fp, at)) continue;
        // With client authentication off, v6 files records under the endpoint, not a key.
        const key = /^(GET|POST|PUT|DELETE|PATCH) \//.test(apiKey) ? '' : apiKey;
        fresh.push({ timestamp: d.timestamp, latency_ms: d.latency_ms, tokens: d.tokens, failed: d.failed === true, model, api_key: key, fp });
      }
    }
  }
  return fresh;
}
