import type { UsageRow } from '../store/usage-writer.js';
import { dayNum, hourNum } from '../store/usage-schema.js';
import type { Zone } from '../time/zone.js';

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Obj) : {});
/** A non-negative whole count, or undefined when the field is missing or not a number. */
const count = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? Math.max(0, Math.round(v)) : undefined);
const text = (v: unknown, max: number): string | null => (typeof v === 'string' && v !== '' ? v.slice(0, max) : null);

/** FNV-1a, 32 bits, as a signed integer: tells apart attempts of one key within one millisecond. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h | 0;
}

export type KeyResolver = (apiKey: string) => { id: string; managed: boolean };

/**
 * Turns one CLIProxyAPI record (either generation) into the row the portal stores, or null for what
 * is not a usage record (`{"support_refresh":true}`, `{"refresh":true}`, anything without a
 * timestamp). The client key becomes its key id at once; `source` (an upstream credential) is
 * dropped here and never reaches memory beyond this call.
 *
 * Tokens (DESIGN §3): the total is `token_breakdown.total_tokens` when present, else
 * `tokens.total_tokens` — never a hand-made sum of fields that overlap differently per provider. The
 * split takes each field from `token_breakdown` where it has it, else from `tokens`, so a partial or
 * empty breakdown (`{}`) does not turn input and output into zeros.
 */
export function toUsageRow(raw: unknown, resolveKey: KeyResolver, zone: Zone, now: number): UsageRow | null {
  const r = obj(raw);
  if (typeof r.timestamp !== 'string') return null;
  const tokens = obj(r.tokens);
  const breakdown = obj(r.token_breakdown);
  const bIn = obj(breakdown.input);
  const bOut = obj(breakdown.output);
  const parsed = Date.parse(r.timestamp);
  const ts = Number.isFinite(parsed) ? parsed : now;
  const key = resolveKey(typeof r.api_key === 'string' ? r.api_key.trim() : '');
  const model = text(r.model, 200) ?? 'unknown';
  const alias = text(r.alias, 200);
  const failed = r.failed === true ? 1 : 0;
  const total = count(breakdown.total_tokens) ?? count(tokens.total_tokens) ?? 0;
  const fail = obj(r.fail);
  const rid = text(r.request_id, 64);
  const { day, hour } = zone.dayHour(ts);
  // What identifies the attempt: its fingerprint (first generation), else the fields CLIPROXY.md §5.7
  // names; CLIProxyAPI's own timestamp keeps its nanoseconds, so two attempts of a request differ.
  const identity = typeof r.fp === 'string' && r.fp
    ? `fp|${r.fp}`
    : `${rid ?? ''}|${r.timestamp}|${typeof r.auth_index === 'string' ? r.auth_index : ''}|${model}|${failed}|${total}`;
  return {
    k: key.id,
    x: key.managed ? 0 : 1,
    ts,
    h: hash32(identity),
    day: dayNum(day),
    hour: hourNum(hour),
    model,
    alias: alias && alias !== model ? alias : null,
    endpoint: text(r.endpoint, 200),
    failed,
    status: count(fail.status_code) ?? null,
    tokens: total,
    input: count(bIn.total_tokens) ?? count(tokens.input_tokens) ?? 0,
    output: count(bOut.total_tokens) ?? count(tokens.output_tokens) ?? 0,
    reasoning: count(bOut.reasoning_tokens) ?? count(tokens.reasoning_tokens) ?? 0,
    cached: count(bIn.cache_read_tokens) ?? count(tokens.cached_tokens) ?? count(tokens.cache_read_tokens) ?? 0,
    latency: count(r.latency_ms) ?? null,
    ttft: count(r.ttft_ms) || null,
    rid,
    ip: text(r.client_ip, 64),
    ua: text(r.user_agent, 200),
  };
}
