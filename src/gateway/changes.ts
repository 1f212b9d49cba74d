import { type MessagePort, receiveMessageOnPort } from 'node:worker_threads';

/**
 * Changes sent from one thread to another that the receiver can catch up with synchronously: the
 * sender posts a change, then adds one to a counter in shared memory; the receiver, before work
 * that must see every change made so far, compares the counter with what it has applied and takes
 * whatever is queued without waiting for its event loop. A counted change's message is always
 * queued already, because it was posted before it was counted.
 */
export class ChangeSender<T> {
  /** The counter, for the receiver. */
  readonly shared = new SharedArrayBuffer(4);
  private readonly posted = new Int32Array(this.shared);

  constructor(private readonly port: MessagePort) {}

  post(change: T): void {
    this.port.postMessage(change);
    Atomics.add(this.posted, 0, 1);
  }

  close(): void { this.port.close(); }
}

export class ChangeReceiver<T> {
  private readonly posted: Int32Array;
  private applied = 0;

  constructor(shared: SharedArrayBuffer, private readonly port: MessagePort, private readonly apply: (change: T) => void) {
    this.posted = new Int32Array(shared);
    this.catchUp();
    port.on('message', apply); // and the changes made while no one asks
  }

  /** Applies every change counted so far. */
  catchUp(): void {
    const n = Atomics.load(this.posted, 0);
    if (n === this.applied) return;
    for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) this.apply(m.message as T);
    this.applied = n;
  }

  close(): void { this.port.close(); }
}
