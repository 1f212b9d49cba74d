import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { silentLogger } from '../../src/log.js';
import { KeysStore } from '../../src/store/keys-store.js';
import { FakeCliproxy } from '../support/fake-cliproxy.js';
import { tempDir } from '../support/harness.js';
import { startFlags } from '../support/spawn.js';
import { seedDataDir } from './registrations.js';
import { fmt, mb, printRows } from './util.js';

interface Sample { rss: number; heapUsed: number; keys: number }

/** The node flags of `npm start` (package.json's start script), so the figures describe what operators run. */
export const START_FLAGS = startFlags();

/**
 * What the Docker image and the systemd unit add to npm start: two glibc malloc arenas rather than one
 * per thread that allocates (npm start cannot set it the same way on every platform).
 */
const DEPLOYED_ENV = { MALLOC_ARENA_MAX: '2' };

function sample(dataDir: string, url: string, env: Record<string, string> = {}, gateway = false): Promise<Sample> {
  const child = fileURLToPath(new URL('./rss-child.js', import.meta.url));
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--expose-gc', ...START_FLAGS, child, dataDir, url, ...(gateway ? ['gateway'] : [])], { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, ...env } });
    let out = '';
    p.stdout.on('data', (d) => { out += d; });
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Sample) : reject(new Error(`rss child exited ${code}`))));
  });
}

/** Resident memory of the whole portal process holding 50k issued keys; baseline: the same process with an empty pool. */
export async function benchMemory(): Promise<void> {
  const empty = await tempDir('kp-bench-mem0-');
  const full = await tempDir('kp-bench-mem-');
  await seedDataDir(empty, 0, 1);
  await seedDataDir(full, 25_000, 1000, 2);
  // CLIProxyAPI already holds the issued keys, as it does in steady state (otherwise the start-up
  // pass adds 50k keys one PATCH at a time, each after the last one's reload: minutes, not memory).
  const store = await KeysStore.open(full, 'usr_pool_', silentLogger());
  const live = [...store.entries()].map(([k]) => k);
  await store.close();
  const fake = await FakeCliproxy.start({ apiKeys: ['sk-ops', ...live], reloadDelayMs: 1 });
  try {
    const base = await sample(empty, fake.url);
    const loaded = await sample(full, fake.url);
    const deployedBase = await sample(empty, fake.url, DEPLOYED_ENV);
    const deployed = await sample(full, fake.url, DEPLOYED_ENV);
    const withGateway = await sample(full, fake.url, DEPLOYED_ENV, true);
    printRows(`Resident memory (the portal process with npm start's flags ${START_FLAGS.join(' ')}, after start-up, one registration, its start-up work settled and a GC)`, [
      { name: `RSS with ${fmt(loaded.keys)} issued keys (25k users)`, value: mb(loaded.rss), target: '≤ 150 MB', baseline: `${mb(base.rss)} with no keys`, ratio: `${fmt(loaded.rss / base.rss, 2)}×` },
      { name: 'the same with MALLOC_ARENA_MAX=2', value: mb(deployed.rss), target: '≤ 150 MB', baseline: `${mb(deployedBase.rss)} with no keys; the Docker image and the systemd unit set it`, ratio: `${fmt(deployed.rss / deployedBase.rss, 2)}×` },
      { name: 'the same with the gateway on (GATEWAY_PORT)', value: mb(withGateway.rss), baseline: `${mb(deployed.rss)} without: its thread, its heap and its copy of the keys`, ratio: `+${mb(withGateway.rss - deployed.rss)}` },
      { name: 'JS heap used', value: mb(loaded.heapUsed), baseline: mb(base.heapUsed) },
    ]);
  } finally {
    await fake.stop();
    await rm(empty, { recursive: true, force: true });
    await rm(full, { recursive: true, force: true });
  }
}
