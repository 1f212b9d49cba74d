// Processes of the gateway benchmark, each in its own process: the minimal upstream, the bare
// undici pass-through it is compared with, and the load generators. Prints one JSON line.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import autocannon from 'autocannon';
import { Pool } from 'undici';
import type { KeyRecord } from '../../src/store/key-files.js';
import type { DailyCounts } from '../../src/store/usage-store.js';

const [role, target, arg] = process.argv.slice(2);
const BODY = JSON.stringify({ model: 'bench', messages: [{ role: 'user', content: 'hi' }] });
const ANSWER = JSON.stringify({
  id: 'chatcmpl-bench', object: 'chat.completion', created: 0, model: 'bench',
  choices: [{ index: 0, message: { role: 'assistant', content: 'ok' }, finish_reason: 'stop' }],
  usage: { prompt_tokens: 42, completion_tokens: 17, total_tokens: 59 },
});
const KEY = process.env.BENCH_KEY ?? 'none';
const print = (x: unknown) => process.stdout.write(JSON.stringify(x) + '\n');
const listenOn = (server: http.Server) => new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as AddressInfo).port)));

if (role === 'upstream') {
  // CLIProxyAPI's answer to a chat completion, as fast as Node answers anything; /stream is SSE.
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url === '/v1/stream') {
        res.writeHead(200, { 'Content-Type': 'text/event-stream' });
        res.write('data: {"choices":[{"delta":{"content":"t"}}]}\n\n');
        setTimeout(() => res.end('data: [DONE]\n\n'), 5);
        return;
      }
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(ANSWER) }).end(ANSWER);
    });
  });
  server.keepAliveTimeout = 60_000;
  print({ port: await listenOn(server) });
} else if (role === 'bare') {
  // The least a forwarding proxy can do with undici: no checks, no header filtering.
  const pool = new Pool(target!, { connections: 256 });
  const server = http.createServer((req, res) => {
    pool.stream({ method: req.method as 'POST', path: req.url!, headers: req.headers as Record<string, string>, body: req.method === 'GET' ? undefined : req },
      ({ statusCode, headers }) => { res.writeHead(statusCode, headers as http.OutgoingHttpHeaders); return res; })
      .catch(() => { if (!res.headersSent) res.writeHead(502); res.end(); });
  });
  server.keepAliveTimeout = 60_000;
  print({ port: await listenOn(server) });
} else if (role === 'alone') {
  // The gateway's own code in a process of its own (V8's default young generation, a small heap),
  // with one key, its metrics and no portal around it: what the gateway would cost on a thread of its own.
  const { Gateway } = await import('../../src/gateway/server.js');
  const { Admission } = await import('../../src/gateway/admission.js');
  const { gated, KeyTable } = await import('../../src/gateway/key-table.js');
  const { gatewayMetrics } = await import('../../src/metrics.js');
  const { Registry } = await import('prom-client');
  const { Zone } = await import('../../src/time/zone.js');
  const { silentLogger } = await import('../../src/log.js');
  const { zeroCounts } = await import('../../src/store/usage-schema.js');
  const zone = new Zone('UTC');
  const clock = { now: () => Date.now() };
  const keys = new KeyTable('usr_pool_');
  keys.set(KEY, gated({ status: 'active', daily_limit: 1_000_000_000, rpm_limit: 1_000_000_000, daily_token_limit: 0 } as KeyRecord));
  const usage: DailyCounts = { day: () => zeroCounts(), since: () => ({ requests: 0, tokens: 0, failed: 0 }) };
  const admission = new Admission({ usage, zone, clock });
  const gateway = new Gateway({ upstream: target!, keys, admission, log: silentLogger(), zone, clock, metrics: gatewayMetrics(new Registry(), () => admission.inflight()),
    connectTimeoutMs: 5000, headersTimeoutMs: 60_000, bodyTimeoutMs: 60_000 });
  print({ port: await gateway.listen(0, '127.0.0.1') });
} else if (role === 'seq' || role === 'ttfb') {
  // Sequential requests on one kept-alive connection: microseconds from sending to the whole answer
  // (seq) or to its first body byte (ttfb, a stream).
  const n = Number(arg ?? 3000);
  const pool = new Pool(target!, { connections: 1 });
  const once = async (): Promise<number> => {
    const t0 = performance.now();
    const res = await pool.request({
      method: 'POST', path: role === 'ttfb' ? '/v1/stream' : '/v1/chat/completions', body: BODY,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    });
    let first = 0;
    for await (const _ of res.body) { if (!first) first = performance.now(); }
    if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
    return ((role === 'ttfb' ? first : performance.now()) - t0) * 1000;
  };
  for (let i = 0; i < 300; i++) await once(); // warm up
  const samples: number[] = [];
  for (let i = 0; i < n; i++) samples.push(await once());
  samples.sort((a, b) => a - b);
  print({ p50: samples[Math.floor(n * 0.5)], p99: samples[Math.floor(n * 0.99)] });
  await pool.close();
} else if (role === 'cannon') {
  const run = (duration: number) => autocannon({
    url: `${target}/v1/chat/completions`, method: 'POST', connections: Number(arg ?? 64), duration, body: BODY,
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
  });
  const warm = await run(2);
  const r = await run(6);
  // `sent`: every request of both runs, for the proxy's CPU time per request (measured over both).
  print({ rps: r.requests.average, non2xx: r.non2xx, errors: r.errors, sent: warm.requests.total + r.requests.total });
}
