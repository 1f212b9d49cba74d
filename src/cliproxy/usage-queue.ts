import { CliproxyError, CliproxyUnreachable } from './errors.js';
import type { ManagementClient } from './management.js';
import { openAuthenticatedResp } from './resp-auth.js';
import { RespError } from './resp.js';

/** What the usage-queue endpoint says about this CLIProxyAPI (CLIPROXY.md §6, steps 1-2). */
export type QueueProbe = 'queue' | 'snapshot' | 'resp-only';

/**
 * Probes without popping: count=0 is refused with 400 by a CLIProxyAPI that has the HTTP queue
 * (v6.10.8+); 404 means an older one, where GET /usage tells the first generation from v6.10.0-7.
 */
export async function probeUsage(client: ManagementClient): Promise<QueueProbe> {
  const q = await client.request('GET', client.queuePath, { params: { count: 0 }, accept: [400, 404] });
  if (q.status === 400) return 'queue';
  if (q.status !== 404) throw new CliproxyError(`unexpected answer ${q.status} to the usage-queue probe`, q.status);
  const u = await client.request<{ usage?: unknown }>('GET', '/v0/management/usage', { accept: [404] });
  return u.status === 200 && u.data && typeof u.data === 'object' && 'usage' in u.data ? 'snapshot' : 'resp-only';
}

/**
 * Records popped per call. Popping is destructive and CLIProxyAPI hands a record out once: a portal
 * killed between a pop and its commit loses that pop, so pops are small and repeated at once while
 * the queue is full.
 */
export const POP_SIZE = 100;

/**
 * Pops everything waiting in the v7 queue: `GET /usage-queue?count=N` until it answers fewer than N.
 * Each batch goes to `sink`, which resolves once it is committed, before the next pop. Returns how
 * many new usage records were stored (refresh payloads are not usage).
 */
export async function drainQueue(client: ManagementClient, sink: (records: unknown[]) => Promise<number>,
  o: { signal?: AbortSignal; batch?: number; maxBatches?: number } = {}): Promise<number> {
  const batch = o.batch ?? POP_SIZE;
  let counted = 0;
  for (let i = 0; i < (o.maxBatches ?? 1000) && !o.signal?.aborted; i++) {
    const records = (await client.popUsage(batch)).map((r) => (typeof r === 'string' ? safeParse(r) : r));
    if (records.length) counted += await sink(records);
    if (records.length < batch) break;
  }
  return counted;
}

function safeParse(s: string): unknown {
  try { return JSON.parse(s); } catch { return null; }
}

/**
 * v6.10.0-v6.10.7 have the queue but only over RESP: AUTH first, then `LPOP usage N` (the key must be
 * `usage` from v7.1.44 and is ignored before, so `usage` works everywhere) until fewer than N come back.
 */
export async function drainQueueResp(client: ManagementClient, baseUrl: string, sink: (records: unknown[]) => Promise<number>,
  o: { signal?: AbortSignal; batch?: number; maxBatches?: number; timeoutMs?: number } = {}): Promise<number> {
  const batch = o.batch ?? POP_SIZE;
  const conn = await openAuthenticatedResp(client, baseUrl, { timeoutMs: o.timeoutMs ?? 5000 });
  try {
    let counted = 0;
    for (let i = 0; i < (o.maxBatches ?? 1000) && !o.signal?.aborted; i++) {
      let reply;
      try {
        reply = await conn.command(['LPOP', 'usage', String(batch)], 30_000); // destructive: a late answer must not be given up
      } catch (err) {
        if (err instanceof RespError) throw new CliproxyError(`CLIProxyAPI refused LPOP: ${err.message}`);
        throw new CliproxyUnreachable(`LPOP over RESP failed (${(err as Error).message})`);
      }
      const items = Array.isArray(reply) ? reply.filter((x): x is string => typeof x === 'string') : [];
      if (items.length) counted += await sink(items.map(safeParse));
      if (items.length < batch) break;
    }
    return counted;
  } finally {
    conn.close();
  }
}
