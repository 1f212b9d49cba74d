import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN, call, tempDir } from '../support/harness.js';
import { killHard, spawnPortal } from '../support/spawn.js';
import { START_FLAGS } from './memory.js';
import { fmt, printRows } from './util.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'gateway-child.js');

/** Pins a process to some CPUs where the machine has more than one (the load generator apart from the proxy). */
function pin(pid: number | undefined, cpus: string): void {
  if (!pid || os.cpus().length < 2) return;
  try { execFileSync('taskset', ['-a', '-p', '-c', cpus, String(pid)], { stdio: 'ignore' }); } catch { /* no taskset: unpinned */ }
}

function child(args: string[], env: Record<string, string> = {}, cpus?: string): Promise<{ proc: ChildProcess; out: Record<string, number> }> {
  const proc = spawn(process.execPath, [CHILD, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
  if (cpus) pin(proc.pid, cpus);
  return new Promise((resolve, reject) => {
    let buf = '';
    proc.stdout!.on('data', (d) => {
      buf += d;
      const nl = buf.indexOf('\n');
      if (nl >= 0) resolve({ proc, out: JSON.parse(buf.slice(0, nl)) as Record<string, number> });
    });
    proc.once('exit', (code) => reject(new Error(`${args[0]} exited ${code}`)));
  });
}

const measure = async (args: string[], env: Record<string, string>, cpus: string) => {
  const { proc, out } = await child(args, env, cpus);
  await new Promise((r) => proc.once('exit', r));
  return out;
};

/** CPU time (user + system, all threads) a process has used, in ms; null where /proc is not there. */
function cpuMs(pid: number | undefined): number | null {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS;
  } catch {
    return null;
  }
}
const TICKS = (() => { try { return Number(execFileSync('getconf', ['CLK_TCK']).toString()) || 100; } catch { return 100; } })();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const ROUNDS = 8;

/**
 * The gateway against a minimal local upstream measured directly in the same run, and against a
 * bare undici pass-through (no checks): added latency at concurrency 1, throughput at 64, added
 * time to a stream's first byte. The proxies run on CPU 0, the upstream and the load generator on
 * CPU 1 (two cores here: the figures are relative, the ratios are what travels). Throughput is
 * measured in rounds, each target once a round in turn (each round starting one target later), and
 * each proxy's CPU time per request is read from /proc as well: on a shared machine req/s moves
 * between runs far more than CPU per request does. The median of the rounds' own ratios pairs runs
 * seconds apart, so the machine's drift between rounds cancels out.
 *
 * One more baseline: the gateway's own code alone in a process of its own, with one key and no
 * portal around it — the best its thread in the portal can do.
 */
export async function benchGateway(): Promise<void> {
  const upstream = await child(['upstream'], {}, '1');
  const up = `http://127.0.0.1:${upstream.out.port}`;
  const bare = await child(['bare', up], {}, '0');
  const dir = await tempDir('kp-bench-gateway-');
  const gatewayPort = await freePort();
  // No management key: the portal calls nothing on the minimal upstream; its keys stay pending, which the gateway forwards.
  const portal = await spawnPortal(dir, { CLIPROXY_URL: up, GATEWAY_PORT: String(gatewayPort), POOL_SIZE: '10', USAGE_SOURCE: 'snapshot', USAGE_CRON: '0 0 1 1 *' }, START_FLAGS);
  pin(portal.child.pid, '0');
  let alone: Awaited<ReturnType<typeof child>> | null = null;
  try {
    const { key } = (await call(portal.url, 'POST', '/admin/keys', { token: ADMIN, body: { label: 'bench', daily_limit: 1_000_000_000, rpm_limit: 1_000_000_000 } })).body as { key: string };
    const env = { BENCH_KEY: key };
    alone = await child(['alone', up], env, '0');
    const url = (port: number) => `http://127.0.0.1:${port}`;
    const gw = url(gatewayPort);
    const bareUrl = url(bare.out.port!);
    const seq = { direct: await measure(['seq', up, '3000'], env, '1'), bare: await measure(['seq', bareUrl, '3000'], env, '1'), gateway: await measure(['seq', gw, '3000'], env, '1') };
    const ttfb = { direct: await measure(['ttfb', up, '1000'], env, '1'), gateway: await measure(['ttfb', gw, '1000'], env, '1') };

    const targets = {
      direct: { url: up, pid: undefined },
      bare: { url: bareUrl, pid: bare.proc.pid },
      alone: { url: url(alone.out.port!), pid: alone.proc.pid },
      gateway: { url: gw, pid: portal.child.pid },
    };
    type Name = keyof typeof targets;
    const runs = Object.fromEntries(Object.keys(targets).map((n) => [n, [] as { rps: number; cpuUs: number | null; non2xx: number; errors: number }[]])) as Record<Name, { rps: number; cpuUs: number | null; non2xx: number; errors: number }[]>;
    const order = Object.entries(targets) as [Name, { url: string; pid: number | undefined }][];
    for (let round = 0; round < ROUNDS; round++) {
      // Each round starts one target later: no target always runs right after the same one (their rounds differ by 5–8 % even between identical proxies).
      for (const [name, t] of [...order.slice(round % order.length), ...order.slice(0, round % order.length)]) {
        const before = t.pid ? cpuMs(t.pid) : null;
        const out = await measure(['cannon', t.url, '64'], env, '1');
        const after = t.pid ? cpuMs(t.pid) : null;
        runs[name].push({ rps: out.rps!, non2xx: out.non2xx!, errors: out.errors!, cpuUs: before !== null && after !== null ? ((after - before) * 1000) / out.sent! : null });
      }
    }
    const rps = (n: Name) => median(runs[n].map((r) => r.rps));
    const cpu = (n: Name) => { const xs = runs[n].map((r) => r.cpuUs).filter((x): x is number => x !== null); return xs.length ? median(xs) : null; };
    const cpuText = (n: Name) => { const c = cpu(n); return c === null ? 'CPU per request not measured (no /proc)' : `${fmt(c, 1)} µs of CPU per request`; };
    // Each round's ratio pairs two runs a few seconds apart: the machine's drift between rounds cancels out.
    const roundRatios = runs.gateway.map((g, i) => g.rps / runs.bare[i]!.rps);
    const perRound = `${roundRatios.map((r) => fmt(r, 2)).join(', ')}; their median ${fmt(median(roundRatios), 2)}`;
    const us = (x: number) => `${fmt(x / 1000, 3)} ms`;
    printRows(`Gateway (minimal upstream; proxies on CPU 0, upstream and load on CPU 1; sequential: 3,000 requests after 300 warm-up; throughput: autocannon, 6 s, median of ${ROUNDS} rounds)`, [
      { name: 'added latency, concurrency 1: p50', value: us(seq.gateway.p50! - seq.direct.p50!), target: '≤ 0.3 ms',
        baseline: `direct p50 ${us(seq.direct.p50!)}; bare undici proxy adds ${us(seq.bare.p50! - seq.direct.p50!)}` },
      { name: 'added latency, concurrency 1: p99', value: us(seq.gateway.p99! - seq.direct.p99!), target: '≤ 1 ms',
        baseline: `direct p99 ${us(seq.direct.p99!)}; bare undici proxy adds ${us(seq.bare.p99! - seq.direct.p99!)}` },
      { name: 'throughput, concurrency 64', value: `${fmt(rps('gateway'))} req/s`, target: '≥ 0.9 of the bare proxy',
        baseline: `direct ${fmt(rps('direct'))} req/s, bare proxy ${fmt(rps('bare'))} req/s`,
        ratio: `${fmt(rps('gateway') / rps('bare'), 2)} of bare (rounds: ${perRound}), ${fmt(rps('gateway') / rps('direct'), 2)} of direct; non-2xx ${runs.gateway.reduce((n, r) => n + r.non2xx, 0)}, errors ${runs.gateway.reduce((n, r) => n + r.errors, 0)}` },
      { name: 'CPU per request, concurrency 64', value: cpuText('gateway'), baseline: `bare proxy: ${cpuText('bare')}` },
      { name: 'the gateway’s code alone, own process', value: `${fmt(rps('alone'))} req/s`, baseline: `one key, no portal around it; ${cpuText('alone')}`,
        ratio: `${fmt(rps('alone') / rps('bare'), 2)} of bare; the gateway in the portal ${fmt(rps('gateway') / rps('alone'), 2)} of it` },
      { name: 'added time to a stream’s first byte: p50', value: us(ttfb.gateway.p50! - ttfb.direct.p50!),
        baseline: `direct p50 ${us(ttfb.direct.p50!)}, p99 added ${us(ttfb.gateway.p99! - ttfb.direct.p99!)}` },
    ]);
  } finally {
    await killHard(portal.child);
    upstream.proc.kill();
    bare.proc.kill();
    alone?.proc.kill();
    await rm(dir, { recursive: true, force: true });
  }
}
