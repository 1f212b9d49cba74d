import http, { type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import net, { type Socket } from 'node:net';
import { Readable, type Duplex } from 'node:stream';
import { Pool, type Dispatcher } from 'undici';
import type { Logger } from '../log.js';
import { type Admission, isRefused, type Lease, limitReached, type Refused } from './admission.js';
import type { Clock } from '../clock.js';
import type { GatewayMetrics } from '../metrics.js';
import type { GatedRecord, KeyMatcher } from './key-table.js';
import type { Zone } from '../time/zone.js';
import { candidates, type Candidate, type KeyPlace, otherKeyHeaders, queryWithoutOthers, stripOthers } from './credentials.js';
import { geminiModel, ModelScanner } from './model-scan.js';
import { dialectOf, errorBody, type Dialect, type Refusal } from './shapes.js';

/** The paths CLIProxyAPI serves to clients; nothing else (its management API above all) is forwarded. */
const FORWARDED = ['/v1/', '/v1beta/', '/openai/v1/', '/backend-api/codex/'];

/** Hop-by-hop headers (RFC 9110 §7.6.1): they belong to one connection and are never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** How much of a body is held while looking for its `model` (keys restricted to some models only). */
const MODEL_SCAN_BYTES = 16 * 1024 * 1024;

export interface GatewayDeps {
  upstream: string;
  keys: KeyMatcher;
  admission: Admission;
  log: Logger;
  zone: Zone;
  clock: Clock;
  metrics?: GatewayMetrics;
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  bodyTimeoutMs: number;
  /** Called as each request or upgrade arrives, before its key is looked at (the thread catches up with key changes). */
  beforeRequest?: () => void;
}

type Headers = Record<string, string | string[] | undefined>;
type Identified = { found: Candidate; keyId: string; record: GatedRecord };
/** A request to forward; `start` is when it arrived (performance.now()), for its duration. */
interface Outbound { path: string; headers: Headers; dialect: Dialect; body: Readable | null; start: number }

/** What a Connection header of these common values names: no header beyond the hop-by-hop ones. */
const KEEP_ALIVE: readonly string[] = ['keep-alive'];
const CLOSE: readonly string[] = ['close'];

/** The header names a Connection header lists: they are hop-by-hop too. */
function connectionOptions(value: string | string[]): readonly string[] {
  if (value === 'keep-alive') return KEEP_ALIVE;
  if (value === 'close') return CLOSE;
  return String(value).toLowerCase().split(',').map((s) => s.trim());
}

/**
 * What is not forwarded of a request's headers beyond the hop-by-hop ones, by where its key was
 * found: `host` (undici sets CLIProxyAPI's), and the key headers but the one checked.
 */
const dropped = (keep: KeyPlace): ReadonlySet<string> => new Set(['host', ...otherKeyHeaders(keep)]);
const DROPPED: Record<KeyPlace, ReadonlySet<string>> = {
  authorization: dropped('authorization'), 'x-goog-api-key': dropped('x-goog-api-key'), 'x-api-key': dropped('x-api-key'), key: dropped('key'), auth_token: dropped('auth_token'),
};
const HOST_ONLY: ReadonlySet<string> = new Set(['host']);

/**
 * A copy of `headers` without the hop-by-hop ones and without `drop`. Built by adding, never by
 * deleting: an object a property was deleted from is a slow dictionary for every read after it
 * (and undici reads each header of each request).
 */
function forwardable(headers: IncomingHttpHeaders | Headers, drop: ReadonlySet<string> | null): Headers {
  const connection = headers.connection;
  const named = connection ? connectionOptions(connection) : null;
  const out: Headers = {};
  for (const k in headers) {
    const v = headers[k];
    if (v === undefined || HOP_BY_HOP.has(k) || (named !== null && named.includes(k)) || (drop !== null && drop.has(k))) continue;
    out[k] = v;
  }
  return out;
}

/** Records how long a request took, by the status it was answered with. */
function timed(d: GatewayDeps, status: number, start: number): void {
  d.metrics?.timed(status, (performance.now() - start) / 1000);
}

/**
 * One forwarded request as undici reports it: the answer's head and chunks written to the client
 * as they come (pausing CLIProxyAPI's side while the client is slow), the lease released once, with
 * whether it succeeded, the duration recorded once. No AbortController per request: a client that
 * leaves aborts through the dispatch controller. No listener on each response either (one cost some
 * 4 µs of CPU a request under load, BENCHMARKS.md): the connection's `close` reaches every request
 * under way on it, pipelined ones queued behind the first too (`clientGone`).
 */
class Forwarding implements Dispatcher.DispatchHandler {
  private controller: Dispatcher.DispatchController | null = null;
  private gone = false;
  private status = 0;
  private over = false;

  constructor(private readonly d: GatewayDeps, private readonly res: ServerResponse, private readonly dialect: Dialect,
    private readonly lease: Lease | null, private readonly start: number, private readonly onConnection: Set<Forwarding>) {
    onConnection.add(this);
  }

  /** The client's connection closed before the answer was whole: CLIProxyAPI's request is aborted, its unit given back. */
  clientGone(): void {
    if (this.over) return;
    this.gone = true;
    this.lease?.release(false);
    this.controller?.abort(new Error('the client went away'));
    this.ended(this.res.statusCode);
  }

  private ended(status: number): void {
    if (this.over) return;
    this.over = true;
    this.onConnection.delete(this);
    timed(this.d, status, this.start);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.controller = controller;
    if (this.gone) controller.abort(new Error('the client went away'));
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return; // 1xx: informational, the answer is still to come
    this.status = statusCode;
    const out = forwardable(headers, null);
    if (this.lease) for (const k in this.lease.headers) out[k] ??= this.lease.headers[k];
    this.res.writeHead(statusCode, out as http.OutgoingHttpHeaders);
    // A stream's first event may be a while coming: the client sees the answer begin at once.
    if (String(headers['content-type'] ?? '').startsWith('text/event-stream')) this.res.flushHeaders();
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.res.write(chunk)) {
      controller.pause();
      this.res.once('drain', () => controller.resume());
    }
  }

  onResponseEnd(): void {
    this.res.end();
    this.lease?.release(this.status < 400);
    this.ended(this.status);
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error & { code?: string }): void {
    this.lease?.release(false);
    if (this.gone) return; // the client left: nothing to answer
    if (this.res.headersSent) { this.res.destroy(err); this.ended(this.status); return; }
    const timeout = err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_CONNECT_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT';
    this.d.log.warn({ module: 'gateway', err: { code: err.code, message: err.message } }, 'CLIProxyAPI did not answer');
    const r = timeout
      ? problem(504, 'timeout', 'upstream_timeout', 'CLIProxyAPI did not answer in time.')
      : problem(502, 'unavailable', 'upstream_unreachable', 'CLIProxyAPI cannot be reached right now. Try again shortly.');
    send(this.res, this.dialect, r);
    this.ended(r.status);
  }
}

/**
 * The gateway (GATEWAY_PORT): the client APIs of CLIProxyAPI on a port of their own, forwarded
 * unchanged — method, path, query, headers but the hop-by-hop ones, body — and streamed both ways
 * without buffering, after the key and its limits were checked. Connections to CLIProxyAPI are
 * pooled and kept alive (undici). A client that goes away aborts its upstream request.
 */
export class Gateway {
  private readonly pool: Pool;
  private readonly upstream: URL;
  /** The requests being forwarded, by the client connection they came on (while it is open). */
  private readonly connections = new WeakMap<Socket, Set<Forwarding>>();
  server: Server | null = null;

  constructor(private readonly d: GatewayDeps) {
    this.upstream = new URL(d.upstream);
    this.pool = new Pool(this.upstream.origin, {
      connections: 256, pipelining: 1, keepAliveTimeout: 30_000,
      connect: { timeout: d.connectTimeoutMs }, headersTimeout: d.headersTimeoutMs, bodyTimeout: d.bodyTimeoutMs,
    });
  }

  async listen(port: number, host: string): Promise<number> {
    const server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 65_000 }, (req, res) => this.handle(req, res));
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(req, socket as Socket, head));
    server.on('connection', (socket: Socket) => {
      const forwarding = new Set<Forwarding>();
      this.connections.set(socket, forwarding);
      socket.once('close', () => {
        this.connections.delete(socket);
        for (const f of forwarding) f.clientGone();
      });
    });
    server.on('clientError', (_err, socket) => { if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n'); else socket.destroy(); });
    this.server = server;
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(port, host, () => { server.off('error', reject); resolve(); }); });
    return (server.address() as net.AddressInfo).port;
  }

  async close(): Promise<void> {
    const server = this.server;
    if (server) {
      server.closeIdleConnections();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      const timer = setTimeout(() => server.closeAllConnections(), 5000);
      await closed;
      clearTimeout(timer);
    }
    await this.pool.close().catch(() => undefined);
  }

  /** Which key a request presents, in CLIProxyAPI's order, and what the gateway knows of it. */
  private identify(req: IncomingMessage, rawQuery: string): Identified | Refused {
    const presented = candidates(req.headers, rawQuery);
    if (!presented.length) return problem(401, 'authentication', 'missing_api_key', 'No API key was given. Send it as Authorization: Bearer <key> (or x-api-key).');
    for (const c of presented) {
      const hit = this.d.keys.match(c.value.trim());
      if (!hit) continue;
      const keyId = hit.id;
      const r = hit.record;
      if (r.status === 'revoked') return problem(401, 'authentication', 'key_revoked', `Key ${keyId} was revoked. Ask for a new one.`);
      if (r.expires_at && Date.parse(r.expires_at) <= this.d.clock.now()) return problem(403, 'permission', 'key_expired', `Key ${keyId} expired at ${this.d.zone.format(Date.parse(r.expires_at))}.`);
      if (r.status === 'suspended') {
        const s = r.suspension;
        if (s && s.reason !== 'admin') {
          const until = s.until ? Date.parse(s.until) : NaN;
          return limitReached(s.reason, s.reason === 'daily_limit' ? r.daily_limit : r.daily_token_limit, Number.isFinite(until) ? until : null, this.d.clock.now(), this.d.zone);
        }
        return problem(403, 'permission', 'key_suspended', `Key ${keyId} is suspended by an admin.`);
      }
      return { found: c, keyId, record: r };
    }
    return problem(401, 'authentication', 'invalid_api_key', 'This API key is not known here. Check it, or ask for a new one.');
  }

  /**
   * No promise on the common path: each one costs more while AsyncLocalStorage (the log's request
   * ids) is on. Little else allocated either: the objects of requests in flight are what the young
   * generation's collections copy (see BENCHMARKS.md).
   */
  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.d.beforeRequest?.();
    const start = performance.now();
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const rawQuery = q < 0 ? '' : url.slice(q + 1);
    const dialect = dialectOf(path);
    if (path === '/healthz') { this.forward(req, res, { path: url, headers: forwardable(req.headers, HOST_ONLY), dialect, body: null, start }, null); return; }
    if (!FORWARDED.some((p) => path.startsWith(p))) {
      return this.refuse(res, dialect, problem(404, 'not_found', 'not_found', `${path} is not an API this gateway serves.`), start);
    }
    const who = this.identify(req, rawQuery);
    if ('status' in who) return this.refuse(res, dialect, who, start);
    const place = who.found.place;
    const query = queryWithoutOthers(rawQuery, place);
    const o: Outbound = { path: query ? `${path}?${query}` : path, headers: forwardable(req.headers, DROPPED[place]), dialect, body: hasBody(req) ? req : null, start };

    const allowed = who.record.allowed_models;
    if (!allowed?.length) return this.admitAndForward(req, res, who, o);
    // A key restricted to some models: read the model (the Gemini path's, or the body's "model").
    const model = geminiModel(path);
    if (model !== null || !o.body) return this.checkModel(req, res, who, allowed, model, o);
    scanModel(req).then((scanned) => {
      if ('refused' in scanned) return this.refuse(res, dialect, scanned.refused, start);
      o.body = scanned.body;
      this.checkModel(req, res, who, allowed, scanned.model, o);
    }, (err: Error) => { res.destroy(err); timed(this.d, res.statusCode, start); });
  }

  private checkModel(req: IncomingMessage, res: ServerResponse, who: Identified, allowed: readonly string[], model: string | null, o: Outbound): void {
    if (model === null) return this.refuse(res, o.dialect, problem(400, 'invalid_request', 'model_required', 'This key may use only some models, and the request names none.'), o.start);
    if (!modelAllowed(allowed, model)) {
      return this.refuse(res, o.dialect, problem(403, 'permission', 'model_not_allowed', `This key may not use ${model}. It may use: ${allowed.join(', ')}.`), o.start);
    }
    this.admitAndForward(req, res, who, o);
  }

  private admitAndForward(req: IncomingMessage, res: ServerResponse, who: Identified, o: Outbound): void {
    let lease: Lease | Refused;
    try {
      lease = this.d.admission.admit(who.keyId, who.record);
    } catch (err) { // today's usage cannot be read (usage.db): the limit cannot be checked
      this.d.log.error({ module: 'gateway', err, key_id: who.keyId }, 'could not read today\'s usage to check a limit');
      lease = problem(503, 'unavailable', 'usage_unavailable', 'The portal cannot check this key\'s daily limit right now. Try again shortly.');
    }
    if (isRefused(lease)) return this.refuse(res, o.dialect, lease, o.start);
    this.forward(req, res, o, lease);
  }

  private forward(req: IncomingMessage, res: ServerResponse, o: Outbound, lease: Lease | null): void {
    const onConnection = this.connections.get(req.socket as Socket);
    if (!onConnection) { // the client left while its body was read for the model: nothing to forward
      lease?.release(false);
      timed(this.d, res.statusCode, o.start);
      return;
    }
    this.pool.dispatch({ method: (req.method ?? 'GET') as 'GET', path: o.path, headers: o.headers as Record<string, string>, body: o.body ?? undefined },
      new Forwarding(this.d, res, o.dialect, lease, o.start, onConnection));
  }

  /** A refusal is whole as soon as it is written. */
  private refuse(res: ServerResponse, dialect: Dialect, r: Refused, start: number): void {
    this.d.metrics?.refused(r.code);
    send(res, dialect, r);
    timed(this.d, r.status, start);
  }

  /** A WebSocket (or other) upgrade: checked like a request, then the two connections are joined. */
  private upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    this.d.beforeRequest?.();
    socket.on('error', () => socket.destroy());
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q < 0 ? url : url.slice(0, q);
    const rawQuery = q < 0 ? '' : url.slice(q + 1);
    const dialect = dialectOf(path);
    const refuse = (r: Refused) => {
      const body = errorBody(dialect, r.status, r.kind, r.code, r.message);
      const extra = Object.entries(r.headers).map(([k, v]) => `${k}: ${v}\r\n`).join('');
      socket.end(`HTTP/1.1 ${r.status} ${http.STATUS_CODES[r.status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${extra}Connection: close\r\n\r\n${body}`);
    };
    if (!FORWARDED.some((p) => path.startsWith(p))) return refuse(problem(404, 'not_found', 'not_found', `${path} is not an API this gateway serves.`));
    const who = this.identify(req, rawQuery);
    if ('status' in who) return refuse(who);
    const lease = this.d.admission.hold(who.keyId, who.record);
    if (isRefused(lease)) return refuse(lease);
    const headers: Headers = { ...req.headers };
    const query = stripOthers(headers, rawQuery, who.found.place);
    headers.host = this.upstream.host;
    const upstream = net.connect({ host: this.upstream.hostname, port: Number(this.upstream.port || 80) });
    const done = () => { lease.release(true); socket.destroy(); upstream.destroy(); };
    upstream.setTimeout(this.d.connectTimeoutMs, () => { if (upstream.connecting) done(); });
    upstream.once('connect', () => {
      upstream.setTimeout(0);
      let lines = `${req.method} ${query ? `${path}?${query}` : path} HTTP/1.1\r\n`;
      for (const [k, v] of Object.entries(headers)) for (const one of [v ?? []].flat()) lines += `${k}: ${one}\r\n`;
      upstream.write(lines + '\r\n');
      if (head.length) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.once('error', () => {
      if (!socket.destroyed && upstream.connecting) refuse(problem(502, 'unavailable', 'upstream_unreachable', 'CLIProxyAPI cannot be reached right now.'));
      done();
    });
    upstream.once('close', done);
    socket.once('close', done);
  }
}

function problem(status: number, kind: Refusal, code: string, message: string): Refused {
  return { status, kind, code, message, headers: {} };
}

/**
 * Refusals that retrying cannot change (a wrong, revoked or suspended key, a model not allowed, a
 * daily limit): Claude Code retries 401s and 429s up to ten times unless told `x-should-retry: false`.
 */
const FINAL = new Set(['missing_api_key', 'invalid_api_key', 'key_revoked', 'key_expired', 'key_suspended', 'model_not_allowed',
  'model_required', 'daily_limit_reached', 'daily_token_limit_reached', 'not_found']);

function send(res: ServerResponse, dialect: Dialect, r: Refused): void {
  const body = errorBody(dialect, r.status, r.kind, r.code, r.message);
  res.writeHead(r.status, {
    'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...r.headers,
    ...(FINAL.has(r.code) ? { 'x-should-retry': 'false' } : {}),
  }).end(body);
}

function hasBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0');
}

/** `allowed` entries are model names, or prefixes ending in `*` (`claude-*`). */
export function modelAllowed(allowed: readonly string[], model: string): boolean {
  return allowed.some((a) => (a.endsWith('*') ? model.startsWith(a.slice(0, -1)) : a === model));
}

/**
 * Reads the body until its top-level "model" is known, holding what it read (at most
 * MODEL_SCAN_BYTES); returns the model and a body that replays the held bytes, then the rest.
 */
async function scanModel(req: IncomingMessage): Promise<{ model: string | null; body: Readable } | { refused: Refused }> {
  const scanner = new ModelScanner();
  const held: Buffer[] = [];
  let bytes = 0;
  const it = req[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  let ended = false;
  for (;;) {
    const r = await it.next();
    if (r.done) { ended = true; scanner.end(); break; }
    held.push(r.value);
    bytes += r.value.length;
    if (scanner.push(r.value)) break;
    if (bytes > MODEL_SCAN_BYTES) {
      return { refused: problem(413, 'invalid_request', 'model_not_found_early', 'This key may use only some models, and the request\'s "model" was not in its first 16 MiB. Put "model" first.') };
    }
  }
  async function* replay(): AsyncIterable<Buffer> {
    yield* held;
    if (ended) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value;
    }
  }
  return { model: scanner.result?.model ?? null, body: Readable.from(replay(), { objectMode: false }) };
}
