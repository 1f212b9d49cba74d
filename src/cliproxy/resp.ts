import { EventEmitter } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';

export type RespValue = string | number | null | RespError | RespValue[];
export class RespError extends Error {
  override name = 'RespError';
}

/** Incremental RESP2 reader: feed it bytes, take whole values out. */
export class RespReader {
  private buf: Buffer = Buffer.alloc(0);

  feed(chunk: Buffer): RespValue[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: RespValue[] = [];
    let pos = 0;
    for (;;) {
      const r = this.read(pos);
      if (!r) break;
      out.push(r.value);
      pos = r.next;
    }
    this.buf = this.buf.subarray(pos);
    return out;
  }

  private read(pos: number): { value: RespValue; next: number } | null {
    if (pos >= this.buf.length) return null;
    const eol = this.buf.indexOf('\r\n', pos);
    if (eol < 0) return null;
    const type = String.fromCharCode(this.buf[pos]!);
    const line = this.buf.subarray(pos + 1, eol).toString('utf8');
    const after = eol + 2;
    switch (type) {
      case '+': return { value: line, next: after };
      case '-': return { value: new RespError(line), next: after };
      case ':': return { value: Number(line), next: after };
      case '$': {
        const len = Number(line);
        if (len < 0) return { value: null, next: after };
        if (this.buf.length < after + len + 2) return null;
        return { value: this.buf.subarray(after, after + len).toString('utf8'), next: after + len + 2 };
      }
      case '*': {
        const n = Number(line);
        if (n < 0) return { value: null, next: after };
        const items: RespValue[] = [];
        let p = after;
        for (let i = 0; i < n; i++) {
          const r = this.read(p);
          if (!r) return null;
          items.push(r.value);
          p = r.next;
        }
        return { value: items, next: p };
      }
      default: throw new RespError(`unexpected RESP type byte ${JSON.stringify(type)}`);
    }
  }
}

export function encodeCommand(args: string[]): string {
  return `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;
}

/** A RESP reply that did not come in time: the connection is closed, as later replies would be misread. */
export class RespTimeout extends Error {
  override name = 'RespTimeout';
}

export interface RespOptions {
  /** How long a connect or a command may take (default 5000 ms). */
  timeoutMs?: number;
  /** Aborting ends a connect (and, in openAuthenticatedResp, an AUTH) in progress; never a connection after that. */
  signal?: AbortSignal;
}

/**
 * One RESP connection to CLIProxyAPI's port. Replies resolve commands in order, each within its
 * timeout (a late reply closes the connection). In subscribe mode, pushed `message` arrays go to the
 * handler given to subscribe() — installed before SUBSCRIBE is written, so a record that arrives in
 * the same packet as the confirmation is not lost — as soon as they are parsed.
 */
export class RespConnection extends EventEmitter {
  private readonly reader = new RespReader();
  private readonly waiting: { resolve: (v: RespValue) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
  private onMessage: ((payload: string) => void) | null = null;
  private closed = false;
  /** Set when the peer sent something that is not RESP (an HTTP server answering, say). */
  protocolError: Error | null = null;

  private constructor(private readonly socket: net.Socket, private readonly timeoutMs: number) {
    super();
    socket.on('data', (chunk: Buffer) => {
      let values: RespValue[];
      try { values = this.reader.feed(chunk); } catch (err) { this.protocolError = err as Error; socket.destroy(); return; }
      for (const v of values) this.dispatch(v);
    });
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiting.splice(0)) { clearTimeout(w.timer); w.reject(new Error('connection closed')); }
      this.emit('close');
    });
    socket.on('error', (err) => this.emit('error', err));
  }

  static connect(baseUrl: string, o: RespOptions = {}): Promise<RespConnection> {
    const u = new URL(baseUrl);
    const secure = u.protocol === 'https:';
    const port = Number(u.port || (secure ? 443 : 80));
    const timeoutMs = o.timeoutMs ?? 5000;
    return new Promise((resolve, reject) => {
      if (o.signal?.aborted) return reject(new Error('aborted'));
      // ALPN off: CLIProxyAPI sends TLS connections that negotiate h2 or http/1.1 to its HTTP server.
      const socket = secure
        ? tls.connect({ host: u.hostname, port, servername: u.hostname, ALPNProtocols: [] })
        : net.connect({ host: u.hostname, port });
      const done = (err?: Error) => {
        clearTimeout(timer);
        o.signal?.removeEventListener('abort', onAbort);
        if (err) { socket.destroy(); reject(err); return; }
        socket.setNoDelay(true);
        socket.setKeepAlive(true, 30_000);
        resolve(new RespConnection(socket, timeoutMs));
      };
      const onAbort = () => done(new Error('aborted'));
      const timer = setTimeout(() => done(new RespTimeout(`RESP connect to ${u.host} timed out`)), timeoutMs);
      o.signal?.addEventListener('abort', onAbort, { once: true });
      socket.once(secure ? 'secureConnect' : 'connect', () => done());
      socket.once('error', (err) => done(err));
    });
  }

  private dispatch(v: RespValue): void {
    if (this.onMessage && Array.isArray(v) && v[0] === 'message' && typeof v[2] === 'string') {
      this.onMessage(v[2]);
      return;
    }
    const w = this.waiting.shift();
    if (!w) return;
    clearTimeout(w.timer);
    if (v instanceof RespError) w.reject(v); else w.resolve(v);
  }

  /** Sends a command; its reply must arrive within the timeout, or the connection is closed. */
  command(args: string[], timeoutMs = this.timeoutMs): Promise<RespValue> {
    if (this.closed) return Promise.reject(new Error('connection closed'));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new RespTimeout(`no answer to ${args[0]} within ${timeoutMs} ms`));
        this.close();
      }, timeoutMs);
      this.waiting.push({ resolve, reject, timer });
      this.socket.write(encodeCommand(args));
    });
  }

  /** SUBSCRIBE `channel`: every record pushed from then on (even in the confirmation's packet) goes to `onMessage`. */
  async subscribe(channel: string, onMessage: (payload: string) => void, timeoutMs = this.timeoutMs): Promise<void> {
    this.onMessage = onMessage;
    try {
      await this.command(['SUBSCRIBE', channel], timeoutMs);
    } catch (err) {
      this.onMessage = null;
      throw err;
    }
  }

  /** Runs `step` (a handshake step); aborting `signal` meanwhile closes the connection. */
  async abortable<T>(signal: AbortSignal | undefined, step: () => Promise<T>): Promise<T> {
    const onAbort = () => this.close();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      return await step();
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Leaves subscribe mode without losing what is on the wire: UNSUBSCRIBE, then every record the
   * server sent before its reply still reaches the handler, then the connection closes. (Closing at
   * once would lose the records in flight; servers before v7.1.18 do not know UNSUBSCRIBE and are
   * closed when the answer does not come.)
   */
  async unsubscribe(timeoutMs = 2000): Promise<void> {
    try {
      if (!this.closed) await this.command(['UNSUBSCRIBE'], timeoutMs);
    } catch { /* an old server, or the connection is gone already */ }
    this.close();
  }

  get isClosed(): boolean { return this.closed; }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }
}
