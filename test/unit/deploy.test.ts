import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { ROOT_DIR } from '../../src/app.js';
import { startFlags } from '../support/spawn.js';

const read = (file: string) => readFileSync(path.join(ROOT_DIR, file), 'utf8');

describe('the ways the portal is started', () => {
  it('run node with npm start’s flags, and the Docker image and systemd unit with two malloc arenas', () => {
    const flags = startFlags();
    assert.ok(flags.includes('--max-semi-space-size=4'), `npm start's flags: ${flags.join(' ')}`);
    const cmd = /^CMD (\[.*\])$/m.exec(read('Dockerfile'));
    assert.deepEqual(JSON.parse(cmd![1]!), ['node', ...flags, 'bin/key-portal', 'start']);
    assert.match(read('Dockerfile'), /^ENV MALLOC_ARENA_MAX=2$/m);
    const unit = read('deploy/key-portal.service');
    assert.match(unit, new RegExp(`^ExecStart=/usr/bin/node ${flags.join(' ')} /opt/key-portal/bin/key-portal start$`, 'm'));
    assert.match(unit, /^Environment=MALLOC_ARENA_MAX=2$/m);
  });
});
