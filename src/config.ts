import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { domainToASCII } from 'node:url';
import { parseEnv } from 'node:util';
import cron from 'node-cron';
import { z } from 'zod';
import { Zone } from './time/zone.js';

/** Thrown for a bad setting; its message is the one line printed before the process exits. */
export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface RateLimitSetting {
  /** Requests allowed per window; 0 turns the limiter off. */
  limit: number;
  windowMs: number;
}

const int = (min: number, max = Number.MAX_SAFE_INTEGER) =>
  z.string().trim().regex(/^-?\d+$/, `must be a whole number`)
    .transform(Number)
    .refine((n) => n >= min && n <= max, `must be between ${min} and ${max}`);

const bool = z.string().trim().toLowerCase()
  .refine((s) => ['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'].includes(s), 'must be true or false')
  .transform((s) => ['true', '1', 'yes', 'on'].includes(s));

const httpUrl = z.string().trim()
  .refine((s) => { try { return ['http:', 'https:'].includes(new URL(s).protocol); } catch { return false; } },
    'must be an http:// or https:// URL')
  .transform((s) => s.replace(/\/+$/, ''));

const cronExpr = z.string().trim().refine((s) => cron.validate(s), 'must be a valid cron expression');

const timeZone = z.string().trim().refine((tz) => Zone.isValid(tz), 'must be an IANA time zone such as Asia/Shanghai');

const secret = z.string().min(16, 'must be at least 16 characters');

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
/** "30" (per hour), "30/15m", "0" (off). */
const rateLimit = z.string().trim().transform((s, ctx): RateLimitSetting => {
  const m = /^(\d+)(?:\/(\d+)?([smhd]))?$/.exec(s);
  if (!m) {
    ctx.addIssue({ code: 'custom', message: 'must look like 30/1h, 10/15m or 0 (off)' });
    return z.NEVER;
  }
  const windowMs = m[3] ? Number(m[2] ?? 1) * UNITS[m[3]]! : UNITS.h!;
  return { limit: Number(m[1]), windowMs };
});

/**
 * Express's `trust proxy`, limited to what cannot be spoofed: `false`, a hop count, or the addresses
 * of the proxies. `true` would take the client's address from the leftmost X-Forwarded-For entry,
 * which any client writes itself — limits and the audit log would see what it chose.
 */
const trustProxy = z.string().trim().transform((s, ctx): false | number | string => {
  if (/^false$/i.test(s) || s === '0') return false;
  if (/^true$/i.test(s)) {
    ctx.addIssue({ code: 'custom', message: 'must not be true: any client could then pick its address in X-Forwarded-For. Give the number of proxies in front of the portal (1 for one nginx) or their addresses (127.0.0.1, 10.0.0.0/8, loopback)' });
    return z.NEVER;
  }
  if (/^\d+$/.test(s)) return Number(s);
  if (!/^[\w.:/\s,-]+$/.test(s)) {
    ctx.addIssue({ code: 'custom', message: 'must be false, a hop count, or addresses and subnets separated by commas' });
    return z.NEVER;
  }
  return s; // addresses/subnets, or names Express knows (loopback, linklocal, uniquelocal)
});

/** Domains as registration compares them: lower case, punycode (bücher.example → xn--bcher-kva.example), no trailing dot. */
const emailDomains = z.string().transform((s, ctx) => {
  const out: string[] = [];
  for (const raw of s.split(',').map((d) => d.trim().normalize('NFKC').toLowerCase().replace(/^@/, '').replace(/\.$/, '')).filter(Boolean)) {
    const ascii = domainToASCII(raw);
    if (!ascii || !ascii.includes('.')) {
      ctx.addIssue({ code: 'custom', message: `has "${raw}", which is not a domain such as corp.example` });
      return z.NEVER;
    }
    out.push(ascii);
  }
  return out;
});

/**
 * A webhook's address, kept exactly as given (a trailing slash can matter to the receiver). Credentials
 * in the URL are refused: fetch will not send them, and they would only end up in logs.
 */
const webhookUrl = z.string().trim().superRefine((s, ctx) => {
  let url: URL;
  try { url = new URL(s); } catch { ctx.addIssue({ code: 'custom', message: 'must be an http:// or https:// URL' }); return; }
  if (!['http:', 'https:'].includes(url.protocol)) ctx.addIssue({ code: 'custom', message: 'must be an http:// or https:// URL' });
  else if (url.username || url.password) ctx.addIssue({ code: 'custom', message: 'must not hold user:password@ (put a secret in the path or query instead)' });
});
/** A positive decimal such as 7.2 (how many of PRICE_CURRENCY one USD buys). */
const rate = z.string().trim().regex(/^\d{1,9}(\.\d{1,9})?$/, 'must be a number such as 7.2')
  .transform(Number)
  .refine((n) => n > 0 && n <= 1_000_000, 'must be above 0 and at most 1000000');

const currency = z.string().trim().regex(/^[A-Za-z]{3}$/, 'must be a three-letter currency code such as USD or CNY').transform((s) => s.toUpperCase());

const keyPrefix = z.string().trim().regex(/^[A-Za-z0-9_-]{1,32}$/, 'must be 1-32 letters, digits, _ or -');

const schema = z.object({
  PORT: int(0, 65535).default(8080),
  HOST: z.string().trim().min(1).default('0.0.0.0'),
  DATA_DIR: z.string().trim().min(1).default('./data'),
  CLIPROXY_URL: httpUrl.default('http://127.0.0.1:8317'),
  CLIPROXY_MANAGEMENT_KEY: z.string().trim().optional(),
  CLIPROXY_PUBLIC_URL: httpUrl.optional(),
  ADMIN_TOKEN: secret.optional(),
  SESSION_SECRET: secret.optional(),
  KEY_PREFIX: keyPrefix.default('usr_pool_'),
  POOL_SIZE: int(1, 1_000_000).default(500),
  POOL_AUTO_REFILL: int(0, 1_000_000).default(0),
  PRELOAD_POOL: bool.default(false),
  USAGE_SOURCE: z.enum(['auto', 'subscribe', 'queue', 'snapshot'],
    { message: 'must be one of auto, subscribe, queue, snapshot' }).default('auto'),
  USAGE_CRON: cronExpr.default('*/5 * * * * *'),
  // Twice a minute, off the 5-second ticks of the usage pull and the quota sweep (a pass over tens of
  // thousands of keys is tens of ms; together they held requests up).
  RECONCILE_CRON: cronExpr.default('12,42 * * * * *'),
  CLIPROXY_WRITE_GAP_MS: int(0, 10_000).default(250),
  STATS_TTL_MS: int(0, 3_600_000).default(5000),
  TIMEZONE: timeZone.default(Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'),
  HOURLY_RETENTION_DAYS: int(1, 366).default(14),
  USAGE_EVENTS_RETENTION_DAYS: int(1, 3650).default(90),
  DEFAULT_DAILY_LIMIT: int(0).default(0),
  DEFAULT_DAILY_TOKEN_LIMIT: int(0).default(0),
  MAX_KEYS_PER_USER: int(0, 10_000).default(0),
  ALLOWED_EMAIL_DOMAINS: emailDomains.default([]),
  REGISTRATION: z.enum(['open', 'domains', 'approval'], { message: 'must be one of open, domains, approval' }).optional(),
  TRUST_PROXY: trustProxy.default(false),
  REGISTER_RATE_LIMIT: rateLimit.default({ limit: 100, windowMs: 10 * UNITS.m! }),
  REGISTER_EMAIL_RATE_LIMIT: rateLimit.default({ limit: 5, windowMs: UNITS.h! }),
  AUTH_FAILURE_LIMIT: rateLimit.default({ limit: 20, windowMs: 15 * UNITS.m! }),
  LOGIN_RATE_LIMIT: rateLimit.optional(),
  LOG_FILE: z.string().trim().default('portal.log'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'],
    { message: 'must be one of fatal, error, warn, info, debug, trace, silent' }).default('info'),
  METRICS_TOKEN: secret.optional(),
  GATEWAY_PORT: int(0, 65535).optional(),
  GATEWAY_PUBLIC_URL: httpUrl.optional(),
  GATEWAY_CONNECT_TIMEOUT_MS: int(100, 600_000).default(10_000),
  GATEWAY_HEADERS_TIMEOUT_MS: int(1000, 3_600_000).default(600_000),
  GATEWAY_BODY_TIMEOUT_MS: int(1000, 3_600_000).default(600_000),
  ALERT_THRESHOLD_PERCENT: int(0, 99).default(80),
  ALERT_WEBHOOK_URL: webhookUrl.optional(),
  PORTAL_PUBLIC_URL: httpUrl.optional(),
  PRICE_CURRENCY: currency.default('USD'),
  PRICE_CURRENCY_RATE: rate.optional(),
});

type Raw = z.output<typeof schema>;
export type ConfigVar = keyof Raw;
export const CONFIG_VARS = Object.keys(schema.shape) as ConfigVar[];

export interface Config extends Omit<Raw, 'CLIPROXY_PUBLIC_URL' | 'DATA_DIR' | 'LOG_FILE' | 'REGISTRATION' | 'LOGIN_RATE_LIMIT' | 'PRICE_CURRENCY_RATE'> {
  DATA_DIR: string;          // absolute
  LOG_FILE: string;          // absolute, or '' for no file
  CLIPROXY_PUBLIC_URL: string;
  /** Who may get a key by themselves; `domains` when only ALLOWED_EMAIL_DOMAINS is set. */
  REGISTRATION: 'open' | 'domains' | 'approval';
  /** PRICE_CURRENCY per USD (1 for USD). */
  PRICE_CURRENCY_RATE: number;
}

export interface ConfigSources {
  env?: NodeJS.ProcessEnv;
  /** Values given as command-line flags, keyed by variable name; they win over everything. */
  flags?: Partial<Record<ConfigVar, string>>;
  /** Where `.env` is looked for and relative paths start; defaults to process.cwd(). */
  cwd?: string;
  /** Read `.env` in cwd (default true). */
  dotenv?: boolean;
}

/** Reads defaults < .env < environment < flags, validates once, and fails with one line. */
export function loadConfig(sources: ConfigSources = {}): Config {
  const cwd = sources.cwd ?? process.cwd();
  const env = sources.env ?? process.env;
  const fromFile = sources.dotenv === false ? {} : readDotenv(path.join(cwd, '.env'));
  const merged: Record<string, string> = {};
  for (const name of CONFIG_VARS) {
    const value = sources.flags?.[name] ?? env[name] ?? fromFile[name];
    // An empty variable means "not set", as in most twelve-factor apps.
    if (value !== undefined && value !== '') merged[name] = String(value);
  }
  const parsed = schema.safeParse(merged);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const name = String(issue.path[0]);
    const shown = name in merged && !/KEY|TOKEN|SECRET|WEBHOOK/.test(name) ? ` (got "${merged[name]}")` : '';
    throw new ConfigError(`Invalid configuration: ${name} ${issue.message}${shown}`);
  }
  const { LOGIN_RATE_LIMIT, ...raw } = parsed.data;
  const registration = raw.REGISTRATION ?? (raw.ALLOWED_EMAIL_DOMAINS.length ? 'domains' : 'open');
  if (registration === 'domains' && !raw.ALLOWED_EMAIL_DOMAINS.length) {
    throw new ConfigError('Invalid configuration: REGISTRATION=domains needs ALLOWED_EMAIL_DOMAINS (e.g. corp.example)');
  }
  // Prices are in USD: costs in another currency would be USD figures under its name without a rate.
  if (raw.PRICE_CURRENCY !== 'USD' && raw.PRICE_CURRENCY_RATE === undefined) {
    throw new ConfigError(`Invalid configuration: PRICE_CURRENCY=${raw.PRICE_CURRENCY} needs PRICE_CURRENCY_RATE, how many ${raw.PRICE_CURRENCY} one USD buys (e.g. 7.2)`);
  }
  const dataDir = path.resolve(cwd, raw.DATA_DIR);
  return {
    ...raw,
    REGISTRATION: registration,
    // LOGIN_RATE_LIMIT, from 0.1.0, limited sign-in attempts; failed credentials of every kind now share AUTH_FAILURE_LIMIT.
    AUTH_FAILURE_LIMIT: merged.AUTH_FAILURE_LIMIT === undefined && LOGIN_RATE_LIMIT ? LOGIN_RATE_LIMIT : raw.AUTH_FAILURE_LIMIT,
    DATA_DIR: dataDir,
    // A relative log file lives with the data, so a default start never writes into the checkout.
    LOG_FILE: raw.LOG_FILE === '' || raw.LOG_FILE === '-' ? '' : path.resolve(dataDir, raw.LOG_FILE),
    CLIPROXY_PUBLIC_URL: raw.CLIPROXY_PUBLIC_URL ?? raw.CLIPROXY_URL,
    PRICE_CURRENCY_RATE: raw.PRICE_CURRENCY_RATE ?? 1,
  };
}

function readDotenv(file: string): Record<string, string> {
  if (!existsSync(file)) return {};
  try {
    return parseEnv(readFileSync(file, 'utf8')) as Record<string, string>;
  } catch (err) {
    throw new ConfigError(`Invalid configuration: ${file} could not be read (${(err as Error).message})`);
  }
}

/** The config with every secret masked, for the start-up log line. */
export function describeConfig(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(config)) {
    out[k] = /KEY$|TOKEN|SECRET/.test(k) && k !== 'KEY_PREFIX' && v ? '***' : v;
    // A webhook's path often is its secret (Slack, Feishu, DingTalk): only where it goes is shown.
    if (k === 'ALERT_WEBHOOK_URL' && typeof v === 'string') out[k] = `${new URL(v).origin}/***`;
  }
  return out;
}
