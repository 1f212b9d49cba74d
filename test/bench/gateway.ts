import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ADMIN, call, tempDir } from '../support/harness.js';
import { killHard, spawnPortal } from '../support/spawn.js';
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

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * The gateway against a minimal local upstream measured directly in the same run, and against a
 * bare undici pass-through (no checks): added latency at concurrency 1, throughput at 64, added
 * time to a stream's first byte. The proxies run on CPU 0, the upstream and the load generator on
 * CPU 1 (two cores here: the figures are relative, the ratios are what travels).
 */
export async function benchGateway(): Promise<void> {
  const upstream = await child(['upstream'], {}, '1');
  const up = `http://127.0.0.1:${upstream.out.port}`;
  const bare = await child(['bare', up], {}, '0');
  const bareUrl = `http://127.0.0.1:${bare.out.port}`;
  const dir = await tempDir('kp-bench-gateway-');
  const gatewayPort = await freePort();
  // No management key: the portal calls nothing on the minimal upstream; its keys stay pending, which the gateway forwards.
  const portal = await spawnPortal(dir, { CLIPROXY_URL: up, GATEWAY_PORT: String(gatewayPort), POOL_SIZE: '10', USAGE_SOURCE: 'snapshot', USAGE_CRON: '0 0 1 1 *' });
  pin(portal.child.pid, '0');
  try {
    const { key } = (await call(portal.url, 'POST', '/admin/keys', { token: ADMIN, body: { label: 'bench', daily_limit: 1_000_000_000, rpm_limit: 1_000_000_000 } })).body as { key: string };
    const gw = `http://127.0.0.1:${gatewayPort}`;
    const env = { BENCH_KEY: key };
    const seq = { direct: await measure(['seq', up, '3000'], env, '1'), bare: await measure(['seq', bareUrl, '3000'], env, '1'), gateway: await measure(['seq', gw, '3000'], env, '1') };
    const ttfb = { direct: await measure(['ttfb', up, '1000'], env, '1'), gateway: await measure(['ttfb', gw, '1000'], env, '1') };
    const rps = { direct: await measure(['cannon', up, '64'], env, '1'), bare: await measure(['cannon', bareUrl, '64'], env, '1'), gateway: await measure(['cannon', gw, '64'], env, '1') };
    const us = (x: number) => `${fmt(x / 1000, 3)} ms`;
    printRows('Gateway (minimal upstream; proxies on CPU 0, upstream and load on CPU 1; sequential: 3,000 requests after 300 warm-up; throughput: autocannon, 6 s)', [
      { name: 'added latency, concurrency 1: p50', value: us(seq.gateway.p50! - seq.direct.p50!), target: '≤ 0.3 ms',
        baseline: `direct p50 ${us(seq.direct.p50!)}; bare undici proxy adds ${us(seq.bare.p50! - seq.direct.p50!)}` },
      { name: 'added latency, concurrency 1: p99', value: us(seq.gateway.p99! - seq.direct.p99!), target: '≤ 1 ms',
        baseline: `direct p99 ${us(seq.direct.p99!)}; bare undici proxy adds ${us(seq.bare.p99! - seq.direct.p99!)}` },
      { name: 'throughput, concurrency 64', value: `${fmt(rps.gateway.rps!)} req/s`, target: '≥ 0.9 of the bare proxy',
        baseline: `direct ${fmt(rps.direct.rps!)} req/s, bare proxy ${fmt(rps.bare.rps!)} req/s`,
        ratio: `${fmt(rps.gateway.rps! / rps.bare.rps!, 2)} of bare, ${fmt(rps.gateway.rps! / rps.direct.rps!, 2)} of direct; non-2xx ${rps.gateway.non2xx}, errors ${rps.gateway.errors}` },
      { name: 'added time to a stream’s first byte: p50', value: us(ttfb.gateway.p50! - ttfb.direct.p50!),
        baseline: `direct p50 ${us(ttfb.direct.p50!)}, p99 added ${us(ttfb.gateway.p99! - ttfb.direct.p99!)}` },
    ]);
  } finally {
    await killHard(portal.child);
    upstream.proc.kill();
    bare.proc.kill();
    await rm(dir, { recursive: true, force: true });
  }
}
