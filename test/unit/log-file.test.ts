import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { LogFile } from '../../src/log-file.js';
import { tempDir } from '../support/harness.js';

describe('the log file', () => {
  it('never throws or waits when it cannot be written: lines are dropped, counted, reported once, and writing resumes', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'portal.log');
    mkdirSync(file); // a directory where the file should be: every open fails
    const errors: string[] = [];
    const log = new LogFile(file, { retryMs: 50, onError: (e) => errors.push(e.message) });
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) assert.equal(log.write(`{"n":${i}}\n`), true);
    assert.ok(performance.now() - t0 < 100, 'writing a line never waits for the disk');
    await log.flush();
    assert.ok(log.dropped > 0);
    assert.equal(errors.length, 1, 'reported once');
    assert.match(log.error!, /cannot be written/);
    for (let i = 0; i < 100; i++) log.write('{"more":true}\n');
    await log.flush();
    assert.equal(errors.length, 1, 'still once');

    rmSync(file, { recursive: true });
    await new Promise((r) => setTimeout(r, 60));
    log.write('{"back":true}\n');
    await log.flush();
    assert.equal(log.error, null, 'the error goes with its cause');
    assert.equal(readFileSync(file, 'utf8'), '{"back":true}\n');
    assert.equal(statSync(file).mode & 0o777, 0o600);
    await log.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('rotates by size and keeps a bounded number of old files', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'portal.log');
    const log = new LogFile(file, { maxBytes: 1000, keep: 3 });
    const line = `${'x'.repeat(99)}\n`;
    for (let i = 0; i < 100; i++) { log.write(line); await log.flush(); }
    await log.close();
    const files = readdirSync(dir).sort();
    assert.deepEqual(files, ['portal.log', 'portal.log.1', 'portal.log.2', 'portal.log.3']);
    for (const f of files) assert.ok(statSync(path.join(dir, f)).size <= 1000, `${f} is within the size`);
    rmSync(dir, { recursive: true, force: true });
  });
});
