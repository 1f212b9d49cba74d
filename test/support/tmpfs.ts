import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * A small tmpfs mounted for one test, so "the disk is full" is real: ENOSPC from the kernel, not a
 * mock. Needs root (CI runs as root); `available()` says whether mounting works here.
 */
export class Tmpfs {
  private constructor(readonly dir: string) {}

  static available(): boolean {
    return process.getuid?.() === 0;
  }

  static mount(sizeKb: number): Tmpfs {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kp-tmpfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeKb}k,mode=0700`, 'tmpfs', dir]);
    return new Tmpfs(dir);
  }

  /** Fills the file system to the last byte (a file named `name`); returns the bytes written. */
  fill(name = 'filler'): number {
    const fd = openSync(path.join(this.dir, name), 'a');
    const chunk = Buffer.alloc(64 * 1024, 1);
    let n = 0;
    try {
      for (let size = chunk.length; size >= 1;) {
        try { n += writeSync(fd, chunk, 0, size); } catch { size = Math.floor(size / 2); }
      }
    } finally {
      closeSync(fd);
    }
    return n;
  }

  free(name = 'filler'): void {
    unlinkSync(path.join(this.dir, name));
  }

  unmount(): void {
    try { execFileSync('umount', ['-l', this.dir]); } catch { /* already gone */ }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
