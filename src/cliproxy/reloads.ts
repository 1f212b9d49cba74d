/**
 * CLIProxyAPI's reloads as the usage subscription sees them: after every config reload (v7.1.39+) it
 * pushes `{"refresh":true}` to usage subscribers. Measured against v7.2.140, when that message
 * arrives the reload that includes a write just made is done — the key added is already accepted, the
 * key removed already refused — every time; it can even arrive before the write's 200. So the one
 * management writer waits for it between writes instead of guessing a delay.
 */
export class ReloadSignal {
  /** Whether refresh messages are arriving: a live subscription on a server that announced them. */
  available = false;
  /** Reloads seen so far: a writer notes the count before it writes and waits for it to grow. */
  count = 0;
  private readonly waiters = new Set<{ after: number; resolve: (seen: boolean) => void }>();

  /** A refresh message arrived. */
  seen(): void {
    this.count++;
    for (const w of this.waiters) {
      if (this.count > w.after) { this.waiters.delete(w); w.resolve(true); }
    }
  }

  /**
   * Resolves true once a reload is seen after the count `after` (noted just before a write was sent),
   * or false after `timeoutMs` (a write that changed nothing causes no reload).
   */
  wait(after: number, timeoutMs: number): Promise<boolean> {
    if (this.count > after) return Promise.resolve(true);
    return new Promise((resolve) => {
      const w = { after, resolve: (seen: boolean) => { clearTimeout(timer); resolve(seen); } };
      const timer = setTimeout(() => { this.waiters.delete(w); resolve(false); }, timeoutMs);
      this.waiters.add(w);
    });
  }
}
