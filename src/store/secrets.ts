import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from './atomic-file.js';
import { newSecret } from '../keys/format.js';

/**
 * A secret kept in a 0600 file of the data directory, created on first use. Returns the value
 * and whether it was created just now (the admin token is printed once, on that occasion).
 */
export async function fileSecret(dataDir: string, name: string, make: () => string = () => newSecret(32)):
  Promise<{ value: string; created: boolean }> {
  const file = path.join(dataDir, name);
  try {
    const value = (await readFile(file, 'utf8')).trim();
    if (value) return { value, created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const value = make();
  await writeFileAtomic(file, value + '\n');
  return { value, created: true };
}
