import yargs, { type Argv } from 'yargs';
import { CONFIG_VARS, ConfigError, loadConfig, type ConfigVar } from '../config.js';
import { startPortal } from '../main.js';
import { backupCommand, restoreCommand } from './backup.js';
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

/**
 * `npm start --port 9000` (without `--`): npm keeps `--port` for itself (npm_config_port=true) and
 * passes `9000` on as an argument; `npm start --port=9000` sets npm_config_port=9000 and passes
 * nothing. Both are taken back here, for the portal's own flags only. With several `--flag value`
 * pairs npm loses their order, so that case asks for `npm start -- …` instead.
 */
const BOOLEAN_FLAGS = new Set(['--force', '--preload', '--help', '--version']);

export function npmFlags(args: string[], env: NodeJS.ProcessEnv): { args: string[]; error?: string } {
  if (!env.npm_lifecycle_event) return { args };
  const valued: string[] = [];
  const bare: string[] = [];
  for (const v of CONFIG_VARS) {
    const value = env[`npm_config_${flagName(v).replace(/-/g, '_')}`];
    if (value === undefined || value === '') continue;
    if (value === 'true') bare.push(flagName(v)); else valued.push(`--${flagName(v)}`, value);
  }
  if (bare.length === 0) return { args: [...args, ...valued] };
  // The value npm left behind is the one word that belongs to no flag of the command line.
  const command = args[0] && !args[0].startsWith('-') ? 1 : 0;
  const stray: number[] = [];
  for (let i = command; i < args.length; i++) {
    const a = args[i]!;
    if (a.startsWith('-')) {
      if (!a.includes('=') && !BOOLEAN_FLAGS.has(a) && i + 1 < args.length && !args[i + 1]!.startsWith('-')) i++; // its value
      continue;
    }
    stray.push(i);
  }
  if (bare.length === 1 && stray.length === 1) {
    const at = stray[0]!;
    return { args: [...args.slice(0, at), ...args.slice(at + 1), ...valued, `--${bare[0]}`, args[at]!] };
  }
  return { args, error: `npm kept ${bare.map((b) => `--${b}`).join(', ')} for itself; write npm start -- ${bare.map((b) => `--${b} …`).join(' ')}` };
}

/** Runs a command and resolves to the process exit code (start resolves only when stopped). */
export async function main(given: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let code = 0;
  const fail = (err: unknown) => {
    process.stderr.write(`key-portal: ${(err as Error).message}\n`);
    code = err instanceof ConfigError ? 2 : 1;
  };
  const npm = npmFlags(given, env);
  if (npm.error) { process.stderr.write(`key-portal: ${npm.error}\n`); return 2; }
  const args = npm.args;
  const parser = yargs(args)
    .scriptName('key-portal')
    .command(['start', '$0'], 'serve the portal (the default)', (y) => withConfigFlags(y).strict(), async (argv) => {
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
    .command('backup', 'write a consistent copy of the data directory to one file (through the running portal if there is one)',
      (y) => withConfigFlags(y).option('out', { type: 'string', demandOption: true, describe: 'the backup file to write' }).strict(),
      async (argv) => {
        try { code = await backupCommand(loadConfig({ flags: configFlags(argv) }), argv.out, (s) => process.stdout.write(s + '\n')); } catch (err) { fail(err); }
      })
    .command('restore', 'restore a backup into a data directory no portal is running on',
      (y) => withConfigFlags(y)
        .option('from', { type: 'string', demandOption: true, describe: 'the backup file' })
        .option('force', { type: 'boolean', default: false, describe: 'move what the data directory holds aside first' })
        .strict(),
      async (argv) => {
        try { code = await restoreCommand(loadConfig({ flags: configFlags(argv) }), argv.from, argv.force, (s) => process.stdout.write(s + '\n')); } catch (err) { fail(err); }
      })
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
