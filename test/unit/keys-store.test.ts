import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { silentLogger } from '../../src/log.js';
import { CorruptDataFile } from '../../src/store/atomic-file.js';
import { CommitFailed, KeysStore, PoolExhausted } from '../../src/store/keys-store.js';
import { tempDir } from '../support/harness.js';
import { readDataFiles, strictInvariantViolations } from '../support/invariants.js';

const P = 'usr_pool_';
const open = (dir: string) => KeysStore.open(dir, P, silentLogger());
const fields = (email: string | null, label = '') =>
  ({ email, label, issued_by: 'self', daily_limit: 0, daily_token_limit: 0, now: new Date('2026-11-22T10:00:00Z') });

describe('keys store', () => {
  it('keeps the invariants through mint, assign, a second key, revoke and reopen', async () => {
    const dir = await tempDir();
    const s = await open(dir);
    s.mint(5);
    await s.checkpoint();
    assert.deepEqual(strictInvariantViolations(dir), []);
    const a = s.assignNext({ ...fields('a@x.cn'), name: '张三' });
    const b = s.assignNext(fields('a@x.cn', '笔记本'));
    const c = s.assignNext(fields('c@x.cn'));
    await s.checkpoint();
    assert.deepEqual(strictInvariantViolations(dir), []);
    assert.deepEqual(s.getUser('a@x.cn')?.api_keys, [a.key, b.key]);
    s.revoke(a.key, new Date());
    await s.checkpoint();
    assert.deepEqual(strictInvariantViolations(dir), []);
    assert.deepEqual(s.poolStatus(), { total: 5, unused: 2, assigned: 2, retired: 1 });

    const again = await open(dir);
    assert.deepEqual(again.poolStatus(), s.poolStatus());
    assert.equal(again.getKey(a.key)?.status, 'revoked');
    assert.deepEqual(again.getUser('a@x.cn')?.api_keys, [b.key]);
    assert.equal(again.getUser('a@x.cn')?.name, '张三');
    assert.equal(again.getKey(c.key)?.email, 'c@x.cn');
    // The next minted key continues the numbering instead of reusing an index.
    assert.deepEqual(again.mint(1), ['0006']);
  });

  it('writes files 0600 in a 0700 folder, by atomic replacement', async () => {
    const dir = await tempDir();
    const s = await open(dir);
    s.mint(2);
    s.assignNext(fields('a@x.cn'));
    await s.commit();
    assert.equal(statSync(path.join(dir, 'keys.journal')).mode & 0o777, 0o600);
    await s.checkpoint();
    for (const f of ['key_pool.json', 'user_keys.json']) {
      assert.equal(statSync(path.join(dir, f)).mode & 0o777, 0o600, f);
    }
  });

  it('groups changes made while a write is under way into one write', async () => {
    const dir = await tempDir();
    const s = await open(dir);
    s.mint(200);
    await s.commit();
    const before = s.writes;
    await Promise.all(Array.from({ length: 100 }, (_, i) => {
      s.assignNext(fields(`u${i}@x.cn`));
      return s.commit();
    }));
    const writes = s.writes - before;
    assert.ok(writes <= 4, `100 registrations took ${writes} journal appends`);
    await s.checkpoint();
    assert.equal(Object.keys(readDataFiles(dir).users.users).length, 100);
    assert.deepEqual(strictInvariantViolations(dir), []);
  });

  it('answers a change only after it is on disk: another process opening the directory sees it', async () => {
    const dir = await tempDir();
    const s = await open(dir);
    s.mint(1);
    const { key } = s.assignNext(fields('a@x.cn'));
    await s.commit();
    const seen = await open(dir); // as the next start after a kill -9 would: files + journal
    assert.equal(seen.getKey(key)?.email, 'a@x.cn');
    assert.deepEqual(seen.getUser('a@x.cn')?.api_keys, [key]);
    assert.equal(readDataFiles(dir).pool.assigned[key], 'a@x.cn', 'opening folded the journal into the files');
  });

  it('replays the journal after a crash, and keeps a checkpoint whose journal was never cleared harmless', async () => {
    const dir = await tempDir();
    const s = await open(dir);
    s.mint(4);
    const a = s.assignNext(fields('a@x.cn'));
    await s.commit();
    const b = s.assignNext(fields('b@x.cn'));
    s.revoke(a.key, new Date());
    s.mint(1);
    await s.commit();
    const journal = readFileSync(path.join(dir, 'keys.journal'));
    await s.checkpoint();
    assert.equal(statSync(path.join(dir, 'keys.journal')).size, 0, 'a checkpoint empties the journal');
    writeFileSync(path.join(dir, 'keys.journal'), journal); // a crash between the files and the clearing
    const again = await open(dir);
    assert.equal(again.getKey(a.key)?.status, 'revoked');
    assert.equal(again.getKey(b.key)?.email, 'b@x.cn');
    assert.deepEqual(again.poolStatus(), { total: 5, unused: 3, assigned: 1, retired: 1 });
    assert.deepEqual(strictInvariantViolations(dir), []);
  });

  it('ignores a journal line torn by a crash, and refuses a journal damaged anywhere else', async () => {
    const dir = await tempDir();
    const s = await open(dir);
    s.mint(2);
    const { key } = s.assignNext(fields('a@x.cn'));
    await s.commit();
    const whole = readFileSync(path.join(dir, 'keys.journal'), 'utf8');
    writeFileSync(path.join(dir, 'keys.journal'), whole + '{"at":"2026-11-22T10:00:00Z","k":{"usr_po');
    assert.equal((await open(dir)).getKey(key)?.email, 'a@x.cn');
    writeFileSync(path.join(dir, 'keys.journal'), '{"at": broken\n' + whole);
    await assert.rejects(open(dir), (err: Error) => err instanceof CorruptDataFile && /keys\.journal/.test(err.message));
  });

  it('refuses to hand out a key from an empty pool', async () => {
    const s = await open(await tempDir());
    assert.throws(() => s.assignNext(fields('a@x.cn')), PoolExhausted);
  });

  it('stops on a file that does not parse, and leaves it untouched', async () => {
    const dir = await tempDir();
    writeFileSync(path.join(dir, 'key_pool.json'), '{"unused": [');
    await assert.rejects(open(dir), (err: Error) => err instanceof CorruptDataFile && /key_pool\.json exists but cannot be read/.test(err.message));
    assert.equal(readFileSync(path.join(dir, 'key_pool.json'), 'utf8'), '{"unused": [');
    writeFileSync(path.join(dir, 'key_pool.json'), '{"unused": {}, "assigned": {}}');
    await assert.rejects(open(dir), /"unused" must be an array/);
  });

  it('rolls a half-written registration back: an assigned key no user holds returns to the pool', async () => {
    const dir = await tempDir();
    const s = await open(dir);
    s.mint(3);
    await s.checkpoint();
    const { pool } = readDataFiles(dir);
    // The state a crash between the pool write and the user_keys write of a checkpoint leaves behind.
    const k = pool.unused[0]!;
    writeFileSync(path.join(dir, 'key_pool.json'), JSON.stringify({ ...pool, unused: pool.unused.slice(1), assigned: { [k]: 'x@x.cn' } }));
    const reopened = await open(dir);
    assert.ok(reopened.isUnused(k));
    assert.deepEqual(reopened.poolStatus(), { total: 3, unused: 3, assigned: 0, retired: 0 });
    assert.deepEqual(strictInvariantViolations(dir), []);
  });

  it('rolls a half-written revocation forward: a revoked key still assigned in the pool is retired', async () => {
    const dir = await tempDir();
    const s = await open(dir);
    s.mint(3);
    const { key } = s.assignNext(fields('a@x.cn'));
    await s.checkpoint();
    const poolBefore = readFileSync(path.join(dir, 'key_pool.json'), 'utf8');
    s.revoke(key, new Date());
    await s.checkpoint();
    writeFileSync(path.join(dir, 'key_pool.json'), poolBefore); // the checkpoint's final pool write never landed
    const reopened = await open(dir);
    assert.ok(reopened.isRetired(key));
    assert.deepEqual(strictInvariantViolations(dir), []);
  });

  it('reads the original tool’s files (version 1.0, keys listed only under users)', async () => {
    const dir = await tempDir();
    const k1 = `${P}0001_${'a'.repeat(32)}`;
    const k2 = `${P}0002_${'b'.repeat(32)}`;
    writeFileSync(path.join(dir, 'key_pool.json'), JSON.stringify({
      version: '1.0', generated_at: '2025-01-16T00:00:00Z', total: 2, unused: [k2], assigned: { [k1]: 'old@x.cn' },
    }));
    writeFileSync(path.join(dir, 'user_keys.json'), JSON.stringify({
      version: '1.0', users: { 'old@x.cn': { email: 'old@x.cn', name: 'Old', api_keys: [k1], created_at: '2025-01-16T00:00:00Z' } },
    }));
    const s = await open(dir);
    assert.equal(s.getKey(k1)?.status, 'active');
    assert.equal(s.getKey(k1)?.email, 'old@x.cn');
    assert.equal(s.keyById('0001'), k1);
    assert.deepEqual(s.poolStatus(), { total: 2, unused: 1, assigned: 1, retired: 0 });
    await s.commit();
    assert.deepEqual(strictInvariantViolations(dir), []);
  });

  it('rolls memory back when a write fails, and the failed change is reported, not answered', { skip: process.getuid?.() !== 0 && 'needs root for chattr' }, async () => {
    const dir = await tempDir();
    const s = await open(dir);
    s.mint(3);
    await s.commit();
    const journal = path.join(dir, 'keys.journal');
    execFileSync('chattr', ['+i', journal]); // readable, not writable (even for root)
    try {
      s.mint(2);
      await assert.rejects(s.commit(), CommitFailed);
      assert.equal(s.poolStatus().total, 3, 'memory is what is on disk again');
      assert.match(s.storageError ?? '', /keys\.journal cannot be written/);
    } finally {
      execFileSync('chattr', ['-i', journal]);
    }
    const mark = s.mark();
    s.mint(2);
    await s.commit(mark);
    assert.equal(s.poolStatus().unused, 5, 'writes work again once the disk does');
    assert.equal(s.storageError, null);
    await s.close();
    const again = await open(dir);
    assert.equal(again.poolStatus().unused, 5);
    await again.close();
  });


});
