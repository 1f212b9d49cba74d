import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import net, { type AddressInfo, type Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { respMessage, serveResp } from './fake-resp.js';

/**
 * The project's own stand-in for CLIProxyAPI, written from CLIPROXY.md (§1 management auth and the
 * failed-login ban, §2 the api-keys endpoints with their exact semantics and hot-reload delay, §3
 * client-key auth on /v1/* including "an empty list means no auth"). It listens on 127.0.0.1 only.
 */
export interface FakeCliproxyOptions {
  /** The plaintext management key; null turns management off (every management route is 404). */
  managementKey?: string | null;
  /** config.yaml's api-keys at start; null is "no api-keys line" (GET answers null). */
  apiKeys?: string[] | null;
  /** Delay between a saved change and the proxy accepting it (CLIProxyAPI: ~0-300 ms). */
  reloadDelayMs?: number;
  version?: string;
  port?: number;
  now?: () => number;
  /**
   * 'v7' (default): HTTP queue + RESP with SUBSCRIBE. 'v6.10.8': the HTTP queue and RESP LPOP, no
   * SUBSCRIBE (v6.10.8-v7.0.6). 'v6.10': the queue over RESP LPOP only (v6.10.0-v6.10.7). 'v6': the
   * first generation's in-memory GET /usage snapshot only.
   */
  generation?: 'v7' | 'v6.10.8' | 'v6.10' | 'v6' | 'v8';
  /** v8 only: whether the v0 api-keys and usage-queue routes are still served (CLIPROXY.md §11.2; default true). */
  v0Served?: boolean;
}

export interface ManagementCall { method: string; path: string; status: number; at: number }

const MAX_FAILURES = 5;
const BAN_MS = 30 * 60_000;
/** The worst case of "idle over 2 h, swept hourly". */
const FORGET_AFTER_MS = 3 * 3_600_000;

export class FakeCliproxy {
  managementKey: string | null;
  /** The list as saved in config.yaml (what GET returns). */
  apiKeys: string[] | null;
  /** The keys the proxy accepts right now (after hot reload): trimmed, non-empty, unique. */
  live = new Set<string>();
  reloadDelayMs: number;
  version: string;
  readonly generation: 'v7' | 'v6.10.8' | 'v6.10' | 'v6' | 'v8';
  /** v8: v0's api-keys and usage-queue routes still answer. */
  v0Served: boolean;
  /** v6: per-request details kept in memory (and lost by restart()), as the first generation did. */
  private snapshotDetails: { apiKey: string; model: string; detail: Record<string, unknown> }[] = [];
  readonly calls: ManagementCall[] = [];
  /** Failed logins per address; CLIProxyAPI's hourly sweep forgets entries idle over 2 h (so within 3 h). */
  readonly failures = new Map<string, { count: number; last: number }>();
  readonly bans = new Map<string, number>();
  /** Successful proxied requests per client key ("" when auth is off). */
  readonly served = new Map<string, number>();
  /** When set, the next management write answers 500 after changing memory (as CLIProxyAPI does on a failed save). */
  failNextSave = false;
  /** Answers the next GET api-keys with a 200 that is not the documented shape. */
  garbleNextList: ('html' | 'empty' | 'truncated' | 'null' | 'text')[] = [];
  /** Called right after a GET api-keys is answered (to put an operator's edit between a read and a write). */
  afterListRead: (() => void) | null = null;
  /** When set, a write that arrives while the previous save's reload is under way is undone by it. */
  racyReloads = false;
  /** Writes lost that way. */
  racedWrites = 0;
  private pendingReload: string[] | null | undefined = undefined;
  /** The next N usage-queue pops answer 500 (and pop nothing). */
  failQueuePops = 0;
  /** RESP connections get no answer at all while set (a hung CLIProxyAPI). */
  respSilent = false;
  /** Records published at the instant of the next SUBSCRIBE: they go out in the same packet as its confirmation. */
  atNextSubscribe: string[] = [];
  /** The v7 usage queue (CLIPROXY.md §5.2): records with their enqueue time; popping is destructive. */
  readonly queue: { at: number; json: string }[] = [];
  /** redis-usage-queue-retention-seconds (default 60). */
  retentionSeconds = 60;
  /** The server's UTC offset for record timestamps, in minutes (CLIProxyAPI writes local time). */
  offsetMinutes = 480;
  /** Every record ever produced, for tests to compare against. */
  readonly produced: Record<string, unknown>[] = [];
  /** request_id → when the record left the fake (popped or pushed): popping and pushing are at-most-once. */
  /** request id → when and in which hand-out (one pop, one push) CLIProxyAPI gave the record away. */
  readonly handedOut = new Map<string, { at: number; batch: number }>();
  private handOuts = 0;
  port = 0;
  /** Connected RESP subscribers of the usage channel. */
  readonly subscribers = new Set<Socket>();
  private server: net.Server | null = null;
  private readonly sockets = new Set<Socket>();
  private readonly now: () => number;
  private reloadTimer: NodeJS.Timeout | null = null;

  private constructor(o: FakeCliproxyOptions) {
    this.managementKey = o.managementKey === undefined ? 'test-management-key' : o.managementKey;
    this.apiKeys = o.apiKeys === undefined ? ['sk-operator-own-key'] : o.apiKeys;
    this.reloadDelayMs = o.reloadDelayMs ?? 30;
    this.generation = o.generation ?? 'v7';
    this.v0Served = o.v0Served ?? true;
    this.version = o.version ?? ({ v6: 'v6.9.49-fake', v8: 'v8.0.3-fake' } as Record<string, string>)[this.generation] ?? 'v7.2.140-fake';
    this.port = o.port ?? 0;
    this.now = o.now ?? Date.now;
    this.applyNow();
  }

  static async start(o: FakeCliproxyOptions = {}): Promise<FakeCliproxy> {
    const fake = new FakeCliproxy(o);
    await fake.listen();
    return fake;
  }

  get url(): string { return `http://127.0.0.1:${this.port}`; }

  /** Starts listening again on the same port (after stop(): "CLIProxyAPI is back"). */
  async listen(): Promise<void> {
    const web = http.createServer((req, res) => { void this.handle(req, res); });
    // The Responses API over a WebSocket (GET /v1/responses with Upgrade): authenticated like any
    // client route; the fake echoes each message back.
    const wss = new WebSocketServer({ noServer: true });
    web.on('upgrade', (req, socket, head) => {
      const url = new URL(req.url ?? '/', 'http://fake');
      const auth = this.authenticate(req, url);
      if ('status' in auth || url.pathname !== '/v1/responses') {
        socket.end(`HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{"error":"Invalid API key"}`);
        return;
      }
      wss.handleUpgrade(req, socket, head, (ws) => {
        this.sockets.add(socket as Socket);
        ws.on('message', (data) => ws.send(`echo:${auth.key.slice(0, 14)}:${String(data)}`));
      });
    });
    // One port, two protocols: the first byte of a connection decides (RESP arrays start with '*').
    const server = net.createServer((socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
      socket.once('data', (first: Buffer) => {
        if (first[0] === 0x2a && this.generation !== 'v6') {
          serveResp(socket, first, {
            authenticate: (ip, key) => this.respAuth(ip, key),
            pop: (n) => { this.pruneQueue(); const out = this.queue.splice(0, n).map((e) => e.json); this.noteHandedOut(out); return out; },
            subscribers: this.subscribers,
            canSubscribe: this.generation === 'v7' || this.generation === 'v8',
            silent: () => this.respSilent,
            withConfirmation: () => { const out = this.atNextSubscribe.splice(0); this.noteHandedOut(out); return out; },
          });
        } else {
          socket.pause();
          socket.unshift(first);
          web.emit('connection', socket);
          socket.resume();
        }
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Stops answering: connections are refused until listen() ("CLIProxyAPI is down"). */
  async stop(): Promise<void> {
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
    const server = this.server;
    this.server = null;
    if (!server) return;
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** RESP AUTH shares the management key, its failed-login count and its ban (CLIPROXY.md §5.4). */
  private respAuth(ip: string, key: string): string | null {
    const bannedUntil = this.bans.get(ip) ?? 0;
    if (bannedUntil > this.now()) return 'IP banned due to too many failed attempts. Try again in 29m0s';
    if (this.managementKey === null) return 'remote management disabled';
    if (key && key === this.managementKey) { this.failures.delete(ip); return null; }
    this.calls.push({ method: 'AUTH', path: 'resp', status: 401, at: this.now() });
    const prev = this.failures.get(ip);
    const n = (prev && this.now() - prev.last <= FORGET_AFTER_MS ? prev.count : 0) + 1;
    if (n >= MAX_FAILURES) { this.bans.set(ip, this.now() + BAN_MS); this.failures.delete(ip); } else this.failures.set(ip, { count: n, last: this.now() });
    return key ? 'invalid management key' : 'missing management key';
  }

  /** Closes every subscriber as CLIProxyAPI does to one that fell 256 messages behind; records sent meanwhile go to the queue. */
  dropSubscribers(): void {
    for (const s of this.subscribers) s.destroy();
    this.subscribers.clear();
  }

  /** Management calls that were refused for a bad key (what counts toward the ban). */
  failedLogins(): number {
    return this.calls.filter((c) => c.status === 401).length;
  }

  /** Edits config.yaml by hand (an operator), effective after the reload delay. */
  editByHand(edit: (keys: string[]) => string[]): void {
    this.apiKeys = edit([...(this.apiKeys ?? [])]);
    this.scheduleReload();
  }

  // ---- HTTP ----------------------------------------------------------------------------------

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    if (url.pathname === '/v1/fake/sink') return this.sink(req, res, url);
    const body = await readBody(req);
    if (url.pathname === '/healthz') return json(res, 200, { status: 'ok' });
    if (url.pathname.startsWith('/v0/management/')) return this.management(req, res, url, body);
    if (url.pathname.startsWith('/v8/management/') && this.generation === 'v8') return this.management(req, res, url, body);
    if (url.pathname.startsWith('/v1/') || url.pathname.startsWith('/v1beta/')) return this.proxy(req, res, url, body);
    res.writeHead(404, { 'Content-Type': 'text/plain' }).end('404 page not found');
  }

  private management(req: IncomingMessage, res: ServerResponse, url: URL, body: string): void {
    const record = (status: number) => this.calls.push({ method: req.method ?? '', path: url.pathname, status, at: this.now() });
    if (this.managementKey === null) { record(404); res.writeHead(404).end(); return; }
    res.setHeader('X-CPA-VERSION', this.version);
    res.setHeader('X-CPA-COMMIT', 'fake');
    res.setHeader('X-CPA-BUILD-DATE', '2026-08-22');
    const ip = req.socket.remoteAddress ?? '';
    const bannedUntil = this.bans.get(ip) ?? 0;
    if (bannedUntil > this.now()) {
      record(403);
      const left = Math.round((bannedUntil - this.now()) / 1000);
      return json(res, 403, { error: `IP banned due to too many failed attempts. Try again in ${Math.floor(left / 60)}m${left % 60}s` });
    }
    const auth = req.headers.authorization;
    let key = '';
    if (auth) key = /^bearer\s+/i.test(auth) ? auth.replace(/^bearer\s+/i, '') : auth;
    else if (typeof req.headers['x-management-key'] === 'string') key = req.headers['x-management-key'];
    if (!key || key !== this.managementKey) {
      record(401);
      const prev = this.failures.get(ip);
      const n = (prev && this.now() - prev.last <= FORGET_AFTER_MS ? prev.count : 0) + 1;
      if (n >= MAX_FAILURES) { this.bans.set(ip, this.now() + BAN_MS); this.failures.delete(ip); } else this.failures.set(ip, { count: n, last: this.now() });
      return json(res, 401, { error: key ? 'invalid management key' : 'missing management key' });
    }
    this.failures.delete(ip);

    const v0 = this.generation !== 'v8' || this.v0Served;
    if (url.pathname === '/v0/management/usage-queue' && req.method === 'GET' && ['v7', 'v6.10.8', 'v8'].includes(this.generation) && v0) return this.popQueue(url, (st, p) => { record(st); json(res, st, p); });
    if (url.pathname.startsWith('/v8/management/')) return this.v8(req, res, url, body, record);
    if (!v0) { record(404); res.writeHead(404).end('404 page not found'); return; }
    if (url.pathname === '/v0/management/usage' && req.method === 'GET' && this.generation === 'v6') { record(200); return json(res, 200, this.snapshot()); }
    if (url.pathname !== '/v0/management/api-keys') { record(404); res.writeHead(404).end('404 page not found'); return; }
    const done = (status: number, payload: unknown) => { record(status); json(res, status, payload); };
    switch (req.method) {
      case 'GET': {
        const garble = this.garbleNextList.shift();
        if (garble !== undefined) {
          record(200);
          const body = { html: '<html><body>502 Bad Gateway</body></html>', empty: '{}', truncated: '{"api-keys":["sk-ops-1","sk-', null: 'null', text: 'ok' }[garble];
          res.writeHead(200, { 'Content-Type': garble === 'html' ? 'text/html' : 'application/json' }).end(body);
          return;
        }
        done(200, { 'api-keys': this.apiKeys });
        this.afterListRead?.();
        return;
      }
      case 'PUT': {
        let parsed: unknown;
        try { parsed = JSON.parse(body); } catch { return done(400, { error: 'invalid body' }); }
        if (parsed === null) return this.save(done, null);
        if (Array.isArray(parsed) && parsed.every((v) => typeof v === 'string')) return this.save(done, parsed as string[]);
        const items = (parsed as { items?: unknown })?.items;
        if (Array.isArray(items) && items.length > 0 && items.every((v) => typeof v === 'string')) return this.save(done, items as string[]);
        return done(400, { error: 'invalid body' });
      }
      case 'PATCH': {
        let p: { old?: unknown; new?: unknown; index?: unknown; value?: unknown };
        try { p = JSON.parse(body); } catch { return done(400, { error: 'invalid body' }); }
        const list = [...(this.apiKeys ?? [])];
        if (typeof p.index === 'number' && typeof p.value === 'string' && p.index >= 0 && p.index < list.length) {
          list[p.index] = p.value;
          return this.save(done, list);
        }
        if (typeof p.old === 'string' && typeof p.new === 'string') {
          const i = list.indexOf(p.old);
          if (i >= 0) list[i] = p.new; else list.push(p.new);
          return this.save(done, list);
        }
        return done(400, { error: 'missing fields' });
      }
      case 'DELETE': {
        const list = [...(this.apiKeys ?? [])];
        const index = url.searchParams.get('index');
        if (index !== null && /^-?\d+$/.test(index) && Number(index) >= 0 && Number(index) < list.length) {
          list.splice(Number(index), 1);
          return this.save(done, list);
        }
        const value = url.searchParams.get('value');
        if (value !== null) return this.save(done, list.filter((k) => k.trim() !== value.trim()));
        return done(400, { error: 'missing index or value' });
      }
      default: return done(404, { error: 'not found' });
    }
  }

  /** The v8 routes the portal may use (CLIPROXY.md §11.2-11.3). */
  private v8(req: IncomingMessage, res: ServerResponse, url: URL, body: string, record: (status: number) => void): void {
    const done = (status: number, payload: unknown) => { record(status); json(res, status, payload); };
    if (url.pathname === '/v8/management/config/config-version' && req.method === 'GET') return done(200, 8);
    if (url.pathname === '/v8/management/observability/usage/queue' && req.method === 'GET') return this.popQueue(url, done);
    if (url.pathname !== '/v8/management/config/access/api-keys') return done(404, { error: 'not_found' });
    if (req.method === 'GET') return this.apiKeys === null ? done(404, { error: 'not_found' }) : done(200, this.apiKeys);
    if (req.method === 'PUT' || req.method === 'PATCH') {
      let parsed: unknown;
      try { parsed = JSON.parse(body); } catch { return done(400, { error: 'invalid_json', message: 'body is not JSON' }); }
      if (!Array.isArray(parsed) || !parsed.every((v) => typeof v === 'string')) return done(422, { error: 'invalid_config', message: 'a list of strings' });
      return this.save((st, p) => done(st, st === 200 ? { status: 'ok', 'config-version': 8 } : p), parsed as string[]);
    }
    return done(404, { error: 'not_found' });
  }

  private save(done: (s: number, p: unknown) => void, list: string[] | null): void {
    // CLIProxyAPI changes its list without a lock and reloads asynchronously after each save: a write
    // that arrives while the previous save's reload is still under way is undone by that reload
    // (measured against v7.2.140: back-to-back PATCHes lose a third of them).
    if (this.racyReloads && this.reloadTimer) {
      this.racedWrites++;
      const undoTo = this.pendingReload;
      this.apiKeys = list;
      this.pendingReload = undoTo;
      if (this.failNextSave) { this.failNextSave = false; return done(500, { error: 'failed to save config: disk full' }); }
      return done(200, { status: 'ok' }); // the reload already under way will install the older list
    }
    this.pendingReload = list ? [...list] : null;
    this.apiKeys = list;
    if (this.failNextSave) {
      // CLIProxyAPI changes its in-memory list before the save fails; the file and live auth do not change.
      this.failNextSave = false;
      return done(500, { error: 'failed to save config: disk full' });
    }
    this.scheduleReload();
    done(200, { status: 'ok' });
  }

  /** A saved change whose reload has not happened yet. */
  get reloading(): boolean { return this.reloadTimer !== null; }

  private scheduleReload(): void {
    if (this.reloadTimer) clearTimeout(this.reloadTimer);
    this.reloadTimer = setTimeout(() => {
      this.reloadTimer = null;
      if (this.racyReloads && this.pendingReload !== undefined) this.apiKeys = this.pendingReload;
      this.applyNow();
    }, this.reloadDelayMs);
  }

  private applyNow(): void {
    this.live = new Set((this.apiKeys ?? []).map((k) => k.trim()).filter(Boolean));
    // Every config reload tells usage subscribers to re-read state; it is not a usage record.
    for (const s of this.subscribers) s.write(respMessage('{"refresh":true}'));
  }

  /** One upstream attempt's record, in the v7.2.140 shape (CLIPROXY.md §5.5), queued for the portal. */
  recordUsage(o: { apiKey: string; alias: string; input: number; output: number; failed: boolean; at?: number; cached?: number;
    /** Published at the instant of the next SUBSCRIBE, in the same packet as its confirmation. */
    atNextSubscribe?: boolean; }): void {
    const at = o.at ?? this.now();
    const cached = o.cached ?? 0;
    const total = o.failed ? 0 : o.input + o.output;
    const input = o.failed ? 0 : o.input;
    const output = o.failed ? 0 : o.output;
    const rec = {
      timestamp: localTimestamp(at, this.offsetMinutes), latency_ms: 733, ttft_ms: 118, source: 'upstream-dummy-key',
      auth_index: '3c9d0a1be4f27a55', client_ip: '127.0.0.1', x_forwarded_for: '', user_agent: 'portal-test/1.0',
      tokens: { input_tokens: input, output_tokens: output, reasoning_tokens: 0, cached_tokens: cached, cache_read_tokens: cached,
        cache_read_tokens_present: true, cache_creation_tokens: 0, total_tokens: total },
      failed: o.failed, generate: true,
      fail: o.failed ? { status_code: 500, body: 'upstream failed' } : { status_code: 200, body: '' },
      accounting_version: 2,
      token_breakdown: { schema_version: 2, quality: 'complete', total_tokens: total,
        input: { total_tokens: input, uncached_tokens: input - cached, cache_read_tokens: cached, cache_write_tokens: 0 },
        output: { total_tokens: output, non_reasoning_tokens: output, reasoning_tokens: 0 }, unclassified_tokens: 0 },
      provider: 'openai-compatible-fake', executor_type: 'OpenAICompatExecutor', model: o.alias === 'fake-chat' ? 'fake-model-1' : o.alias,
      alias: o.alias, endpoint: 'POST /v1/chat/completions', auth_type: 'apikey', api_key: o.apiKey,
      request_id: nextRequestId(), reasoning_effort: '', service_tier: 'auto',
    };
    this.produced.push(rec);
    if (this.generation === 'v6') {
      this.snapshotDetails.push({ apiKey: o.apiKey || 'POST /v1/chat/completions', model: rec.model, detail: {
        timestamp: rec.timestamp, latency_ms: rec.latency_ms, source: rec.source, auth_index: rec.auth_index,
        tokens: { input_tokens: input, output_tokens: output, reasoning_tokens: 0, cached_tokens: cached, total_tokens: total }, failed: o.failed,
      } });
      return;
    }
    if (o.atNextSubscribe) this.atNextSubscribe.push(JSON.stringify(rec));
    else this.publish(JSON.stringify(rec));
  }

  /** v6: CLIProxyAPI restarted: its in-memory statistics are gone. */
  restartStats(): void { this.snapshotDetails = []; }

  /** GET /v0/management/usage of the first generation (CLIPROXY.md §4.2). */
  private snapshot(): unknown {
    const apis: Record<string, { total_requests: number; total_tokens: number; models: Record<string, { total_requests: number; total_tokens: number; details: unknown[] }> }> = {};
    let total = 0; let tokens = 0; let failed = 0;
    for (const { apiKey, model, detail } of this.snapshotDetails) {
      const api = (apis[apiKey] ??= { total_requests: 0, total_tokens: 0, models: {} });
      const m = (api.models[model] ??= { total_requests: 0, total_tokens: 0, details: [] });
      const t = (detail.tokens as { total_tokens: number }).total_tokens;
      api.total_requests++; api.total_tokens += t; m.total_requests++; m.total_tokens += t; m.details.push(detail);
      total++; tokens += t; if (detail.failed) failed++;
    }
    return { usage: { total_requests: total, success_count: total - failed, failure_count: failed, total_tokens: tokens, apis,
      requests_by_day: {}, requests_by_hour: {}, tokens_by_day: {}, tokens_by_hour: {} }, failed_requests: failed };
  }

  /** Subscribers get the record; only with none is it queued (v7.0.7+: never both). */
  private publish(json: string): void {
    if (this.subscribers.size > 0) {
      for (const s of this.subscribers) s.write(respMessage(json));
      this.noteHandedOut([json]);
      return;
    }
    this.queue.push({ at: this.now(), json });
  }

  private pruneQueue(): void {
    const cutoff = this.now() - this.retentionSeconds * 1000;
    while (this.queue.length && this.queue[0]!.at < cutoff) this.queue.shift();
  }

  /** GET /v0/management/usage-queue?count=N: oldest first; a bad count pops nothing (the probe). */
  private popQueue(url: URL, done: (status: number, payload: unknown) => void): void {
    if (this.failQueuePops > 0) { this.failQueuePops--; return done(500, { error: 'internal error' }); }
    const raw = url.searchParams.get('count') ?? '1';
    if (!/^\d+$/.test(raw) || Number(raw) <= 0) return done(400, { error: 'count must be a positive integer' });
    this.pruneQueue();
    const popped = this.queue.splice(0, Number(raw)).map((e) => e.json);
    this.noteHandedOut(popped);
    done(200, popped.map((j) => JSON.parse(j)));
  }

  private noteHandedOut(jsons: string[]): void {
    if (jsons.length === 0) return;
    const out = { at: this.now(), batch: ++this.handOuts };
    for (const j of jsons) {
      const id = (JSON.parse(j) as { request_id?: string }).request_id;
      if (id) this.handedOut.set(id, out);
    }
  }

  /** The key CLIProxyAPI would authenticate a request as, or an error answer. */
  private authenticate(req: IncomingMessage, url: URL): { key: string } | { status: number; error: string } {
    if (this.live.size === 0) return { key: '' }; // no keys configured: authentication is off
    const candidates: string[] = [];
    const auth = req.headers.authorization;
    if (auth) candidates.push(/^bearer\s+/i.test(auth) ? auth.replace(/^bearer\s+/i, '') : auth);
    for (const h of ['x-goog-api-key', 'x-api-key']) if (typeof req.headers[h] === 'string') candidates.push(req.headers[h] as string);
    for (const q of ['key', 'auth_token']) { const v = url.searchParams.get(q); if (v) candidates.push(v); }
    if (candidates.length === 0) return { status: 401, error: 'Missing API key' };
    const hit = candidates.find((c) => this.live.has(c.trim()));
    return hit ? { key: hit.trim() } : { status: 401, error: 'Invalid API key' };
  }

  /** Bytes /v1/fake/sink has received so far, all requests together (tests watch a body arrive). */
  sinkBytes = 0;
  /** Requests whose client went away before their answer was whole (the gateway must pass aborts on). */
  aborted = 0;
  /** What the last /v1/fake/echo request looked like as it arrived (headers, path, query). */
  lastEcho: { method: string; path: string; query: string; headers: Record<string, string | string[] | undefined> } | null = null;

  /** POST /v1/fake/sink: counts a body of any size as it streams in, holding none of it. */
  private sink(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const auth = this.authenticate(req, url);
    if ('status' in auth) { req.resume(); return json(res, auth.status, { error: auth.error }); }
    let bytes = 0;
    req.on('data', (c: Buffer) => { bytes += c.length; this.sinkBytes += c.length; });
    req.on('end', () => json(res, 200, { bytes }));
  }

  private proxy(req: IncomingMessage, res: ServerResponse, url: URL, body: string): void {
    const auth = this.authenticate(req, url);
    if ('status' in auth) return json(res, auth.status, { error: auth.error });
    if (url.pathname === '/v1/models') {
      return json(res, 200, { object: 'list', data: [{ id: 'fake-chat', object: 'model', owned_by: 'fake' }] });
    }
    if (url.pathname === '/v1/fake/echo') {
      this.lastEcho = { method: req.method ?? '', path: url.pathname, query: url.search, headers: { ...req.headers } };
      return json(res, 200, { method: req.method, query: url.search, bytes: Buffer.byteLength(body) });
    }
    let parsed: { model?: string; stream?: boolean } = {};
    try { parsed = JSON.parse(body) as typeof parsed; } catch { /* not JSON */ }
    // Tests steer the upstream with headers: its token counts (cached ones among the input), a failure, a slow stream.
    const input = Number(req.headers['x-fake-input-tokens'] ?? 42);
    const output = Number(req.headers['x-fake-output-tokens'] ?? 17);
    const cached = Number(req.headers['x-fake-cached-tokens'] ?? 0);
    const fail = req.headers['x-fake-fail'] === '1';
    const gapMs = Number(req.headers['x-fake-chunk-gap-ms'] ?? 0);
    const chunks = Number(req.headers['x-fake-chunks'] ?? 3);
    const gemini = /^\/v1beta\/models\/([^/:]+):(generateContent|streamGenerateContent)$/.exec(url.pathname);
    const api = url.pathname === '/v1/chat/completions' ? 'openai' : url.pathname === '/v1/messages' ? 'anthropic' : gemini ? 'gemini' : null;
    if (!api || req.method !== 'POST') return json(res, 404, { error: 'not found' });
    const model = gemini ? decodeURIComponent(gemini[1]!) : parsed.model ?? 'fake-chat';
    const stream = gemini ? gemini[2] === 'streamGenerateContent' : parsed.stream === true;
    this.recordUsage({ apiKey: auth.key, alias: model, input, output, cached, failed: fail });
    if (fail) return json(res, 500, { error: { message: 'upstream failed', type: 'server_error' } });
    this.served.set(auth.key, (this.served.get(auth.key) ?? 0) + 1);
    const created = Math.floor(this.now() / 1000);
    if (!stream) {
      if (api === 'anthropic') {
        return json(res, 200, { id: 'msg_fake', type: 'message', role: 'assistant', model, content: [{ type: 'text', text: 'ok' }],
          stop_reason: 'end_turn', stop_sequence: null, usage: { input_tokens: input, output_tokens: output } });
      }
      if (api === 'gemini') {
        return json(res, 200, { candidates: [{ content: { role: 'model', parts: [{ text: 'ok' }] }, finishReason: 'STOP', index: 0 }],
          usageMetadata: { promptTokenCount: input, candidatesTokenCount: output, totalTokenCount: input + output }, modelVersion: model });
      }
      return json(res, 200, {
        id: 'chatcmpl-fake', object: 'chat.completion', created, model,
        choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
        usage: { prompt_tokens: input, completion_tokens: output, total_tokens: input + output },
      });
    }
    // A stream: one event per chunk, `gapMs` apart, as an upstream model writes them.
    const events: string[] = [];
    for (let i = 0; i < chunks; i++) {
      if (api === 'anthropic') events.push(`event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: `t${i}` } })}\n\n`);
      else if (api === 'gemini') events.push(`data: ${JSON.stringify({ candidates: [{ content: { role: 'model', parts: [{ text: `t${i}` }] }, index: 0 }] })}\r\n\r\n`);
      else events.push(`data: ${JSON.stringify({ id: 'chatcmpl-fake', object: 'chat.completion.chunk', created, model, choices: [{ index: 0, delta: { content: `t${i}` } }] })}\n\n`);
    }
    if (api === 'anthropic') {
      events.unshift(`event: message_start\ndata: ${JSON.stringify({ type: 'message_start', message: { id: 'msg_fake', type: 'message', role: 'assistant', model, content: [], usage: { input_tokens: input, output_tokens: 0 } } })}\n\n`);
      events.push(`event: message_delta\ndata: ${JSON.stringify({ type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: output } })}\n\n`,
        `event: message_stop\ndata: {"type":"message_stop"}\n\n`);
    } else if (api === 'openai') {
      events.push(`data: ${JSON.stringify({ id: 'chatcmpl-fake', object: 'chat.completion.chunk', created, model, choices: [], usage: { prompt_tokens: input, completion_tokens: output, total_tokens: input + output } })}\n\n`, 'data: [DONE]\n\n');
    }
    res.writeHead(200, { 'Content-Type': 'text/event-stream', 'Cache-Control': 'no-cache' });
    let i = 0;
    let timer: NodeJS.Timeout | null = null;
    res.once('close', () => { if (!res.writableFinished) { this.aborted++; if (timer) clearTimeout(timer); } });
    const next = () => {
      if (res.destroyed) return;
      if (i >= events.length) { res.end(); return; }
      res.write(events[i++]);
      timer = setTimeout(next, gapMs);
    };
    next();
  }
}

let requests = 0;
/** 8 hex digits, random-looking like CLIProxyAPI's, but never the same twice in a run (tests count by them). */
function nextRequestId(): string {
  return ((Math.imul(++requests, 0x9e3779b1) ^ 0x5bd1e995) >>> 0).toString(16).padStart(8, '0');
}

let nanos = 0;
/**
 * RFC3339 with nanoseconds and the server's offset, as CLIProxyAPI writes timestamps. The digits
 * below the millisecond differ from one record to the next, as the real clock's do.
 */
export function localTimestamp(ms: number, offsetMinutes: number): string {
  const local = new Date(ms + offsetMinutes * 60_000).toISOString().replace('Z', '');
  const sign = offsetMinutes >= 0 ? '+' : '-';
  const abs = Math.abs(offsetMinutes);
  nanos = (nanos + 7919) % 1_000_000;
  return `${local}${String(nanos).padStart(6, '0')}${sign}${String(Math.floor(abs / 60)).padStart(2, '0')}:${String(abs % 60).padStart(2, '0')}`;
}

function json(res: ServerResponse, status: number, payload: unknown): void {
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8' }).end(JSON.stringify(payload));
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
