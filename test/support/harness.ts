import { readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { Clock } from '../../src/clock.js';
import { loadConfig, type ConfigVar } from '../../src/config.js';
import { startPortal, type Portal } from '../../src/main.js';
import { Browser } from './browser-client.js';
import { FakeCliproxy, type FakeCliproxyOptions } from './fake-cliproxy.js';

export const MANAGEMENT_KEY = 'test-management-key';

export async function tempDir(prefix = 'kp-test-'): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Log lines a test can search (to prove, for instance, that no key was ever logged). */
export class LogCapture extends Writable {
  readonly lines: string[] = [];
  override _write(chunk: Buffer, _enc: string, cb: () => void): void {
    this.lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
    cb();
  }
  text(): string { return this.lines.join('\n'); }
}

export interface TestPortal {
  portal: Portal;
  /** The in-process fake (absent when the test passed cliproxyUrl). */
  fake: FakeCliproxy;
  url: string;
  dataDir: string;
  logs: LogCapture;
  stop(): Promise<void>;
}

export interface TestPortalOptions {
  env?: Partial<Record<ConfigVar, string>>;
  fake?: FakeCliproxy;
  /** A CLIProxyAPI elsewhere (another process): used instead of an in-process fake. */
  cliproxyUrl?: string;
  fakeOptions?: FakeCliproxyOptions;
  clock?: Clock;
  dataDir?: string;
  pushWaitMs?: number;
  /** Quiet time between management writes (the fake has no reload race: short by default). */
  settleMs?: number;
  /** Keep the data directory after stop (default: removed). */
  keepDataDir?: boolean;
}

/** The real portal, in-process on 127.0.0.1:0, on a fresh temp data dir, talking to a fake CLIProxyAPI. */
export async function startTestPortal(o: TestPortalOptions = {}): Promise<TestPortal> {
  const fake = o.fake ?? (o.cliproxyUrl ? undefined : await FakeCliproxy.start(o.fakeOptions));
  const dataDir = o.dataDir ?? await tempDir();
  const config = loadConfig({
    dotenv: false,
    env: {
      HOST: '127.0.0.1', PORT: '0', DATA_DIR: dataDir, CLIPROXY_URL: o.cliproxyUrl ?? fake!.url, CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY,
      ADMIN_TOKEN: 'test-admin-token-0123456789', POOL_SIZE: '50', REGISTER_RATE_LIMIT: '0', REGISTER_EMAIL_RATE_LIMIT: '0', LOG_LEVEL: 'info',
      LOG_FILE: '', TIMEZONE: 'Asia/Shanghai', ...o.env,
    },
  });
  const logs = new LogCapture();
  const log = pino({ level: 'debug' }, logs);
  const portal = await startPortal(config, {
    log, clock: o.clock, announce: () => undefined, noSchedules: true, pushWaitMs: o.pushWaitMs, settleMs: o.settleMs ?? 20,
  });
  await portal.ready;
  return {
    portal, fake: fake!, url: portal.url, dataDir, logs,
    async stop() {
      await portal.stop();
      if (!o.fake) await fake?.stop();
      if (!o.keepDataDir && !o.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export interface ApiResponse<T = any> { status: number; body: T; headers: Headers; text: string }

/** One HTTP call over a real socket. */
export async function call<T = any>(base: string, method: string, p: string,
  o: { body?: unknown; token?: string; headers?: Record<string, string>; raw?: string } = {}): Promise<ApiResponse<T>> {
  const headers: Record<string, string> = { Accept: 'application/json', ...o.headers };
  if (o.token) headers.Authorization = `Bearer ${o.token}`;
  let body: string | undefined;
  if (o.raw !== undefined) { body = o.raw; headers['Content-Type'] ??= 'application/json'; }
  else if (o.body !== undefined) { body = JSON.stringify(o.body); headers['Content-Type'] = 'application/json'; }
  const res = await fetch(base + p, { method, headers, body });
  const text = await res.text();
  let parsed: unknown = text;
  try { parsed = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, body: parsed as T, headers: res.headers, text };
}

export const ADMIN = 'test-admin-token-0123456789';

/** HTML's escapes undone (the ones EJS writes). */
export const decodeHtml = (s: string): string =>
  s.replace(/&#34;/g, '"').replace(/&#39;/g, "'").replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&amp;/g, '&');

/** A page's text as a reader sees it: tags gone (a <wbr> break chance joins its neighbours), escapes undone, spaces collapsed. */
export const pageText = (html: string): string =>
  decodeHtml(html.replace(/<script[\s\S]*?<\/script>/g, '').replace(/<wbr>/g, '').replace(/<[^>]+>/g, ' ')).replace(/\s+/g, ' ').trim();

/** Polls until `check` returns true (bounded), for effects that land after a reload delay. */
export async function waitFor(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** POST /api/sync-usage as the admin: everything CLIProxyAPI holds is counted when it answers (its body). */
export async function syncUsage(t: TestPortal): Promise<any> {
  const res = await call(t.url, 'POST', '/api/sync-usage', { token: ADMIN, body: {} });
  if (res.status !== 200) throw new Error(`sync-usage answered ${res.status}`);
  return res.body;
}

/** A browser signed in as the admin, reading pages in a language ('en-US', 'zh-CN,zh;q=0.9', …). */
export async function adminBrowser(url: string, acceptLanguage = 'en-US'): Promise<Browser> {
  const b = new Browser(url, { 'Accept-Language': acceptLanguage });
  await b.get('/admin');
  const signIn = await b.post('/admin/sign-in', { token: ADMIN });
  if (signIn.status !== 303) throw new Error(`admin sign-in answered ${signIn.status}`);
  return b;
}

/** A browser signed in with a key at /my-keys (it then holds the page the sign-in led to). */
export async function holderBrowser(url: string, key: string, acceptLanguage = 'en-US'): Promise<Browser> {
  const b = new Browser(url, { 'Accept-Language': acceptLanguage });
  await b.get('/my-keys');
  const signIn = await b.post('/my-keys/sign-in', { key });
  if (signIn.status !== 303) throw new Error(`sign-in with a key answered ${signIn.status}`);
  return b;
}

/** What a test asks of the fake upstream for one request: its model, its token split (cached tokens are part of the input), a failure. */
export interface ChatOptions { model?: string; input?: number; output?: number; cached?: number; fail?: boolean }

/** A chat completion through the (fake) CLIProxyAPI with a client key; returns the status. */
export async function chat(fake: FakeCliproxy, key: string, o: ChatOptions = {}): Promise<number> {
  const steer: Record<string, string> = {};
  if (o.input !== undefined) steer['x-fake-input-tokens'] = String(o.input);
  if (o.output !== undefined) steer['x-fake-output-tokens'] = String(o.output);
  if (o.cached !== undefined) steer['x-fake-cached-tokens'] = String(o.cached);
  if (o.fail) steer['x-fake-fail'] = '1';
  const res = await fetch(`${fake.url}/v1/chat/completions`, {
    method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json', ...steer },
    body: JSON.stringify({ model: o.model ?? 'fake-chat', messages: [{ role: 'user', content: 'hi' }] }),
  });
  await res.text();
  return res.status;
}

/** The fake CLIProxyAPI in a process of its own, as the real one would be. */
export async function spawnFake(env: Record<string, string> = {}): Promise<{ url: string; stop(): Promise<void> }> {
  const { spawn } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const main = fileURLToPath(new URL('./fake-cliproxy-main.js', import.meta.url));
  const child = spawn(process.execPath, [main], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
  const url = await new Promise<string>((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve((JSON.parse(line) as { url: string }).url);
    });
    child.once('exit', (code) => reject(new Error(`fake CLIProxyAPI exited ${code}`)));
  });
  return {
    url,
    stop: () => new Promise<void>((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', () => resolve());
      child.kill('SIGTERM');
    }),
  };
}

/** The data directory after a checkpoint: the files as an operator reading data/ sees them. */
export async function settled(t: TestPortal): Promise<string> {
  await t.portal.store.checkpoint();
  return t.dataDir;
}

/** Bytes in keys.journal (0 right after a checkpoint; grows with every committed change). */
export function journalBytes(dataDir: string): number {
  try { return statSync(path.join(dataDir, 'keys.journal')).size; } catch { return 0; }
}

export interface AuditLine { at: string; actor: string; action: string; key_id?: string; details?: Record<string, any> }

/** audit.jsonl as written once every record made so far is on disk (failures are audited without holding up their 401). */
export async function auditText(t: TestPortal): Promise<string> {
  await t.portal.audit.flushed();
  return readFileSync(path.join(t.dataDir, 'audit.jsonl'), 'utf8');
}

export async function auditLines(t: TestPortal): Promise<AuditLine[]> {
  return (await auditText(t)).trim().split('\n').map((l) => JSON.parse(l) as AuditLine);
}
