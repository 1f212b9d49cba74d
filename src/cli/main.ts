import yargs, { type Argv } from 'yargs';
import { CONFIG_VARS, ConfigError, loadConfig, type ConfigVar } from '../config.js';
import { startPortal } from '../main.js';
import { generateKeys } from './generate-keys.js';

class UsageError extends Error {}

const flagName = (v: ConfigVar) => v.toLowerCase().replace(/_/g, '-');

/** Every config variable is also a flag: PORT → --port, DATA_DIR → --data-dir. */
function withConfigFlags<T>(y: Argv<T>): Argv<T> {
  for (const v of CONFIG_VARS) y = y.option(flagName(v), { type: 'string', describe: `overrides ${v}`, group: 'Configuration:' });
  return y;
}

export function configFlags(argv: Record<string, unknown>): Partial<Record<ConfigVar, string>> {
  const flags: Partial<Record<ConfigVar, string>> = {};
  for (const v of CONFIG_VARS) {
    const value = argv[flagName(v)];
    if (value !== undefined) flags[v] = String(value);
  }
  return flags;
}

/** Runs a command and resolves to the process exit code (start resolves only when stopped). */
export async function main(args: string[]): Promise<number> {
  let code = 0;
  const fail = (err: unknown) => {
    process.stderr.write(`key-portal: ${(err as Error).message}\n`);
    code = err instanceof ConfigError ? 2 : 1;
  };
  const parser = yargs(args)
    .scriptName('key-portal')
    .command('start', 'serve the portal (the default)', (y) => withConfigFlags(y).strict(), async (argv) => {
      try {
        const portal = await startPortal(loadConfig({ flags: configFlags(argv) }));
        await new Promise<void>((resolve) => {
          const stop = () => { void portal.stop().then(resolve); };
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
        });
      } catch (err) { fail(err); }
    })
    .command('generate-keys', 'mint keys into the pool (through the running portal if there is one)',
      (y) => withConfigFlags(y)
        .option('count', { type: 'number', describe: 'how many keys (default POOL_SIZE)' })
        .option('preload', { type: 'boolean', default: false, describe: 'keep unused pool keys live in CLIProxyAPI too' })
        .strict(),
      async (argv) => {
        try {
          code = await generateKeys({
            config: loadConfig({ flags: configFlags(argv) }),
            count: argv.count, preload: argv.preload, print: (s) => process.stdout.write(s + '\n'),
          });
        } catch (err) { fail(err); }
      })
    .demandCommand(1)
    .strict()
    .fail((msg, err) => { throw err ?? new UsageError(msg); })
    .help();
  try {
    await parser.parseAsync();
  } catch (err) {
    fail(err);
    if (err instanceof UsageError) code = 2;
  }
  return code;
}
