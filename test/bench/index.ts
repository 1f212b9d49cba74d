// `npm run bench`: prints figures and ratios against baselines measured in the same run.
import os from 'node:os';
import { benchMemory } from './memory.js';
import { benchRegistrations } from './registrations.js';
import { benchStats } from './stats.js';
import { benchQuota } from './quota.js';
import { benchGateway } from './gateway.js';
import { benchUsage } from './usage.js';

const only = process.argv[2];
const NAMES = ['registrations', 'memory', 'usage', 'stats', 'quota', 'gateway'];
if (only && !NAMES.includes(only)) {
  console.error(`unknown benchmark "${only}": choose one of ${NAMES.join(', ')}, or none for all`);
  process.exit(2);
}
const benches: [string, () => Promise<void>][] = [
  ['registrations', benchRegistrations],
  ['memory', benchMemory],
  ['usage', benchUsage],
  ['stats', benchStats],
  ['quota', benchQuota],
  ['gateway', benchGateway],
];

console.log(`key-portal benchmarks — node ${process.version}, ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB`);
for (const [name, run] of benches) {
  if (only && only !== name) continue;
  await run();
}
