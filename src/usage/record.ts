/**
 * One ingested usage record as the portal stores it (a line of data/usage/events-*.jsonl). It holds the
 * key id, never the key, and never `source` (an upstream credential).
 */
export interface StoredEvent {
  /** Key id (or, for keys the portal does not manage, a hash id; '' when proxy auth was off). */
  k: string;
  /** 1 when the key is not one of the portal's. */
  x?: 1;
  /** Upstream model, and the name the client asked for when different. */
  m: string;
  a?: string;
  /** When the upstream attempt started, ms since the epoch (UTC). */
  t: number;
  /** Tokens: total (DESIGN §3), and the input/output/reasoning/cached split. */
  tok: number;
  in: number;
  out: number;
  rea: number;
  cac: number;
  /** 1 for a failed attempt (never charged against a quota). */
  f?: 1;
  lat?: number;
  rid?: string;
  /** First-generation records: the detail fingerprint that keeps them from being counted twice. */
  fp?: string;
}

type Obj = Record<string, unknown>;
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.round(v) : 0);
const obj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});

/**
 * Turns one CLIProxyAPI record (either generation) into a StoredEvent, or null for what is not a usage
 * record (`{"support_refresh":true}`, `{"refresh":true}`, anything without a timestamp).
 * Tokens are `token_breakdown.total_tokens` when present, else `tokens.total_tokens`: never a hand-made
 * sum of fields that overlap differently per provider.
 */
export function toStoredEvent(raw: unknown, resolveKey: (apiKey: string) => { id: string; managed: boolean }, now: number): StoredEvent | null {
  const r = obj(raw);
  if (typeof r.timestamp !== 'string') return null;
  const tokens = obj(r.tokens);
  const breakdown = r.token_breakdown ? obj(r.token_breakdown) : null;
  const bIn = breakdown ? obj(breakdown.input) : {};
  const bOut = breakdown ? obj(breakdown.output) : {};
  const at = Date.parse(r.timestamp);
  const key = resolveKey(typeof r.api_key === 'string' ? r.api_key.trim() : '');
  const model = typeof r.model === 'string' && r.model ? r.model : 'unknown';
  const e: StoredEvent = {
    k: key.id,
    m: model,
    t: Number.isFinite(at) ? at : now,
    tok: breakdown && typeof breakdown.total_tokens === 'number' ? num(breakdown.total_tokens) : num(tokens.total_tokens),
    in: breakdown ? num(bIn.total_tokens) : num(tokens.input_tokens),
    out: breakdown ? num(bOut.total_tokens) : num(tokens.output_tokens),
    rea: breakdown ? num(bOut.reasoning_tokens) : num(tokens.reasoning_tokens),
    cac: breakdown ? num(bIn.cache_read_tokens) : num(tokens.cached_tokens),
  };
  if (!key.managed) e.x = 1;
  if (typeof r.alias === 'string' && r.alias && r.alias !== model) e.a = r.alias;
  if (r.failed === true) e.f = 1;
  if (typeof r.latency_ms === 'number') e.lat = Math.round(r.latency_ms);
  if (typeof r.request_id === 'string' && r.request_id) e.rid = r.request_id;
  if (typeof r.fp === 'string' && r.fp) e.fp = r.fp;
  return e;
}
