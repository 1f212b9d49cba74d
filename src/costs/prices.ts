/**
 * The price table: what a million tokens of a model cost, in USD, by model name or name prefix
 * (`claude-sonnet-4*`). Costs built from it are estimates: the upstreams behind CLIProxyAPI are
 * often subscriptions, so these are what the same tokens would cost at the vendors' list prices.
 */
export interface PriceRow {
  /** A model name, or a prefix ending in `*`; compared without regard to case. */
  pattern: string;
  /** USD per million input tokens (not read from the cache). */
  input: number;
  /** USD per million output tokens (reasoning included, as CLIProxyAPI counts it). */
  output: number;
  /** USD per million input tokens read from the cache; null: billed as input. */
  cached: number | null;
}

/** The token split a cost is computed from (a rollup row, a day, a model's totals). */
export interface TokenSplit { input: number; output: number; cached: number }

const row = (pattern: string, input: number, output: number, cached: number | null = null): PriceRow => ({ pattern, input, output, cached });

/**
 * Public list prices, USD per million tokens, standard tier, prompts up to 200k tokens (longer
 * prompts, batch and priority tiers are priced differently and not modelled). Sources: the pricing
 * pages of Anthropic, OpenAI, Google's Gemini API, DeepSeek, Alibaba Cloud Model Studio
 * (international), Z.ai and Moonshot AI. The longest matching prefix wins, so a specific row
 * (`gpt-5-mini*`) overrides its family's (`gpt-5*`).
 */
export const DEFAULT_PRICES: readonly Readonly<PriceRow>[] = Object.freeze([
  // Anthropic
  row('claude-opus-4-5*', 5, 25, 0.5),
  row('claude-opus-4*', 15, 75, 1.5),
  row('claude-sonnet-4*', 3, 15, 0.3),
  row('claude-haiku-4*', 1, 5, 0.1),
  row('claude-3-7-sonnet*', 3, 15, 0.3),
  row('claude-3-5-haiku*', 0.8, 4, 0.08),
  // OpenAI
  row('gpt-5*', 1.25, 10, 0.125),
  row('gpt-5-codex*', 1.25, 10, 0.125),
  row('gpt-5-mini*', 0.25, 2, 0.025),
  row('gpt-5-nano*', 0.05, 0.4, 0.005),
  row('gpt-5-pro*', 15, 120),
  row('gpt-5.1-codex-mini*', 0.25, 2, 0.025),
  row('gpt-4.1*', 2, 8, 0.5),
  row('gpt-4.1-mini*', 0.4, 1.6, 0.1),
  row('gpt-4.1-nano*', 0.1, 0.4, 0.025),
  row('gpt-4o*', 2.5, 10, 1.25),
  row('gpt-4o-mini*', 0.15, 0.6, 0.075),
  row('codex-mini*', 1.5, 6, 0.375),
  row('o1*', 15, 60, 7.5),
  row('o1-mini*', 1.1, 4.4, 0.55),
  row('o3*', 2, 8, 0.5),
  row('o3-mini*', 1.1, 4.4, 0.55),
  row('o3-pro*', 20, 80),
  row('o4-mini*', 1.1, 4.4, 0.275),
  // Google
  row('gemini-3-pro*', 2, 12, 0.2),
  row('gemini-2.5-pro*', 1.25, 10, 0.125),
  row('gemini-2.5-flash*', 0.3, 2.5, 0.03),
  row('gemini-2.5-flash-lite*', 0.1, 0.4, 0.01),
  row('gemini-2.0-flash*', 0.1, 0.4, 0.025),
  // DeepSeek (deepseek-chat and deepseek-reasoner are one price since V3.2)
  row('deepseek*', 0.28, 0.42, 0.028),
  // Qwen (the lowest input tier, up to 32k tokens)
  row('qwen3-coder-plus*', 1, 5),
  row('qwen3-coder-flash*', 0.3, 1.5),
  row('qwen3-max*', 1.2, 6),
  // Zhipu GLM
  row('glm-4.6*', 0.6, 2.2, 0.11),
  row('glm-4.5*', 0.6, 2.2, 0.11),
  row('glm-4.5-air*', 0.2, 1.1, 0.03),
  // Moonshot Kimi
  row('kimi-k2*', 0.6, 2.5, 0.15),
  row('kimi-k2-turbo*', 1.15, 8, 0.15),
  row('kimi-k2-thinking-turbo*', 1.15, 8, 0.15),
].map((r) => Object.freeze(r)));

/** A pattern as rows are compared and looked up by. */
export const patternKey = (pattern: string): string => pattern.trim().toLowerCase();

/** Finds rows for model names quickly: exact names first, then the longest prefix that matches. */
export class PriceMatcher {
  private readonly exact = new Map<string, PriceRow>();
  /** Prefixes, longest first. */
  private readonly prefixes: { prefix: string; row: PriceRow }[] = [];
  private readonly memo = new Map<string, PriceRow | null>();

  constructor(rows: readonly PriceRow[]) {
    for (const r of rows) {
      const p = patternKey(r.pattern);
      if (p.endsWith('*')) this.prefixes.push({ prefix: p.slice(0, -1), row: r });
      else this.exact.set(p, r);
    }
    this.prefixes.sort((a, b) => b.prefix.length - a.prefix.length);
  }

  /** The row that prices `model`, or null when none does. */
  find(model: string): PriceRow | null {
    let found = this.memo.get(model);
    if (found !== undefined) return found;
    const m = model.toLowerCase();
    found = this.exact.get(m) ?? this.prefixes.find((p) => m.startsWith(p.prefix))?.row ?? null;
    if (this.memo.size > 10_000) this.memo.clear(); // model names come from upstream records: keep the memo bounded
    this.memo.set(model, found);
    return found;
  }
}

/**
 * USD for a token split at a row's prices. `input` counts the tokens read from the cache (as
 * CLIProxyAPI's token breakdown reports them), so those are taken out of it and billed at the
 * cached rate — or at the input rate when the row has none.
 */
export function costUsd(p: PriceRow, t: TokenSplit): number {
  const cached = Math.max(0, t.cached);
  const uncached = Math.max(0, t.input - cached);
  return (uncached * p.input + cached * (p.cached ?? p.input) + Math.max(0, t.output) * p.output) / 1e6;
}
