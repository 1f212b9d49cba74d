// `npm run demo`: the project's fake CLIProxyAPI, the portal with its gateway, and a little
// simulated traffic from a few people and models, on free local ports — no other software needed.
// Ctrl-C stops everything. (DEMO_SECONDS=N stops it after N seconds.)
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config.js';
import { startPortal } from '../../src/main.js';
import { newSecret } from '../../src/keys/format.js';
import { FakeCliproxy } from './fake-cliproxy.js';

const MANAGEMENT_KEY = 'demo-management-key';
const fake = await FakeCliproxy.start({ managementKey: MANAGEMENT_KEY, apiKeys: ['sk-operator-own-key'], reloadDelayMs: 20 });
const dataDir = await mkdtemp(path.join(os.tmpdir(), 'key-portal-demo-'));
const adminToken = `demo-${newSecret(12)}`;
const config = loadConfig({
  dotenv: false,
  env: {
    ...process.env, HOST: '127.0.0.1', PORT: process.env.DEMO_PORT ?? '0', GATEWAY_PORT: '0', DATA_DIR: dataDir, CLIPROXY_URL: fake.url,
    CLIPROXY_MANAGEMENT_KEY: MANAGEMENT_KEY, ADMIN_TOKEN: adminToken, POOL_SIZE: '100', LOG_LEVEL: 'warn', LOG_FILE: '', USAGE_SOURCE: 'subscribe',
  },
});
const portal = await startPortal(config, { announce: () => undefined });
await portal.ready;
const gateway = `http://127.0.0.1:${portal.gatewayPort}`;

// A few people, and a trial key with a small daily limit (it runs out while you watch).
const people = [['li.lei@example.com', '李雷'], ['han.meimei@example.com', '韩梅梅'], ['alice@example.com', 'Alice'], ['bob@example.com', 'Bob']];
const keys: string[] = [];
for (const [email, name] of people) {
  const res = await fetch(`${portal.url}/api/register-key`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ email, name, label: 'laptop' }) });
  keys.push(((await res.json()) as { key: string }).key);
}
const trial = await fetch(`${portal.url}/admin/keys`, {
  method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${adminToken}` },
  body: JSON.stringify({ label: 'trial for a visitor', daily_limit: 15, rpm_limit: 6 }),
});
const trialKey = ((await trial.json()) as { key: string }).key;
keys.push(trialKey);

const models = ['claude-sonnet-4-5', 'gpt-4o', 'gemini-2.5-pro', 'claude-haiku-4-5'];
let sent = 0;
const traffic = setInterval(() => {
  const key = keys[Math.floor(Math.random() * keys.length)]!;
  const model = models[Math.floor(Math.random() * models.length)]!;
  sent++;
  void fetch(`${gateway}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Authorization: `Bearer ${key}`, 'x-fake-input-tokens': String(200 + Math.floor(Math.random() * 3000)), 'x-fake-output-tokens': String(50 + Math.floor(Math.random() * 800)) },
    body: JSON.stringify({ model, messages: [{ role: 'user', content: 'hello' }] }),
  }).then((r) => r.text(), () => undefined);
}, 600);

process.stdout.write([
  '',
  'key-portal demo — everything runs on this machine, with a stand-in for CLIProxyAPI.',
  '',
  `  portal        ${portal.url}`,
  `  admin         ${portal.url}/admin   (token: ${adminToken})`,
  `  gateway       ${gateway}   (the base URL key holders use)`,
  `  a holder key  ${keys[0]}   (sign in at ${portal.url}/my-keys)`,
  `  a trial key   ${trialKey}   (15 requests a day, 6 a minute)`,
  '',
  'Simulated requests from 4 people and a trial key go through the gateway; Ctrl-C stops everything.',
  '',
].join('\n') + '\n');

let stopping = false;
const stop = async () => {
  if (stopping) return;
  stopping = true;
  clearInterval(traffic);
  await portal.stop();
  await fake.stop();
  await rm(dataDir, { recursive: true, force: true });
  process.stdout.write(`stopped (${sent} simulated requests)\n`);
  process.exit(0);
};
process.on('SIGINT', () => { void stop(); });
process.on('SIGTERM', () => { void stop(); });
if (process.env.DEMO_SECONDS) setTimeout(() => { void stop(); }, Number(process.env.DEMO_SECONDS) * 1000);
