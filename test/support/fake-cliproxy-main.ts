// Runs the fake CLIProxyAPI as its own process (benchmarks, the demo): prints {"url":…} and serves
// until stdin closes or it is signalled.
import { FakeCliproxy } from './fake-cliproxy.js';

const keys = process.env.FAKE_API_KEYS;
const fake = await FakeCliproxy.start({
  managementKey: process.env.FAKE_MANAGEMENT_KEY ?? 'test-management-key',
  apiKeys: keys === undefined ? ['sk-operator-own-key'] : keys.split(',').filter(Boolean),
  port: Number(process.env.FAKE_PORT ?? 0),
});
process.stdout.write(JSON.stringify({ url: fake.url }) + '\n');
const stop = () => { void fake.stop().then(() => process.exit(0)); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
process.stdin.on('end', stop);
process.stdin.resume();
