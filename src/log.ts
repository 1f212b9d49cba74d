import { AsyncLocalStorage } from 'node:async_hooks';
import { pino, type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';
import type { LogFile } from './log-file.js';

export type { Logger };

/**
 * Masks anything that looks like a portal key or a bearer credential. Keys should never reach a
 * log call in the first place; this is the net under that rule, not the rule itself.
 */
export function makeScrubber(keyPrefix: string): (s: string) => string {
  const escaped = keyPrefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const keyRe = new RegExp(`(${escaped}\\d{4,}_)[0-9a-fA-F]{8,}`, 'g');
  const sentinelRe = /(kp_sentinel_)[0-9a-f]{8,}/g;
  const bearerRe = /(Bearer\s+)[^\s"',]+/gi;
  return (s) => s.replace(keyRe, '$1***').replace(sentinelRe, '$1***').replace(bearerRe, '$1***');
}

function scrubDeep(value: unknown, scrub: (s: string) => string, depth = 0): unknown {
  if (typeof value === 'string') return scrub(value);
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => scrubDeep(v, scrub, depth + 1));
  if (value instanceof Error) return { type: value.name, message: scrub(value.message) };
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = scrubDeep(v, scrub, depth + 1);
  return out;
}

export interface LoggerOptions {
  level: string;
  /** The log file (JSON lines), or null for stdout only. */
  file: LogFile | null;
  keyPrefix: string;
  /** Extra destination (tests capture log lines with it). */
  stream?: DestinationStream;
  /** Also write to stdout (default true). */
  stdout?: boolean;
}

/** The id of the request being handled (set by the request log), for every line logged meanwhile. */
export const requestContext = new AsyncLocalStorage<string>();

export function createLogger(opts: LoggerOptions): Logger {
  const scrub = makeScrubber(opts.keyPrefix);
  const streams: { stream: DestinationStream; level?: string }[] = [];
  if (opts.stdout !== false) {
    // People read a terminal; programs (journald, docker logs) read JSON lines.
    streams.push({ stream: process.stdout.isTTY ? pretty({ sync: true, translateTime: 'SYS:yyyy-mm-dd HH:MM:ss', ignore: 'pid,hostname' }) : pino.destination({ fd: 1, sync: false }) });
  }
  if (opts.file) streams.push({ stream: opts.file });
  if (opts.stream) streams.push({ stream: opts.stream });
  // Each stream of a multistream filters at 'info' unless told otherwise: give them the logger's level.
  for (const s of streams) s.level = opts.level === 'silent' ? 'fatal' : opts.level;
  return pino(
    {
      level: opts.level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: {
        paths: ['req.headers.authorization', 'req.headers.cookie', 'headers.authorization',
          'headers.cookie', 'key', '*.key', 'api_key', '*.api_key', 'token', '*.token'],
        censor: '***',
      },
      formatters: { log: (obj) => scrubDeep(obj, scrub) as Record<string, unknown> },
      // Every line written while a request is handled carries its id, whichever module writes it.
      mixin: () => { const id = requestContext.getStore(); return id ? { req_id: id } : {}; },
      hooks: {
        logMethod(args, method) {
          method.apply(this, args.map((a) => (typeof a === 'string' ? scrub(a) : a)) as typeof args);
        },
      },
    },
    pino.multistream(streams),
  );
}

/** A logger that writes nowhere (CLI commands that print their own output, some tests). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
