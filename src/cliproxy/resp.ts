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

/**
 * One RESP connection to CLIProxyAPI's port. Replies resolve commands in order; in subscribe mode,
 * pushed `message` arrays are emitted as 'message' (payload) events as soon as they are parsed —
 * reading never waits on whoever handles them.
 */
export class RespConnection extends EventEmitter {
  private readonly reader = new RespReader();
  private readonly waiting: { resolve: (v: RespValue) => void; reject: (e: Error) => void }[] = [];
  private subscribed = false;

  private constructor(private readonly socket: net.Socket) {
    super();
    socket.on('data', (chunk: Buffer) => {
      let values: RespValue[];
      try { values = this.reader.feed(chunk); } catch (err) { socket.destroy(err as Error); return; }
      for (const v of values) this.dispatch(v);
    });
    socket.on('close', () => {
      for (const w of this.waiting.splice(0)) w.reject(new Error('connection closed'));
      this.emit('close');
    });
    socket.on('error', (err) => this.emit('error', err));
  }

  static connect(baseUrl: string, timeoutMs = 5000): Promise<RespConnection> {
    const u = new URL(baseUrl);
    const secure = u.protocol === 'https:';
    const port = Number(u.port || (secure ? 443 : 80));
    return new Promise((resolve, reject) => {
      // ALPN off: CLIProxyAPI sends TLS connections that negotiate h2 or http/1.1 to its HTTP server.
      const socket = secure
        ? tls.connect({ host: u.hostname, port, servername: u.hostname, ALPNProtocols: [] })
        : net.connect({ host: u.hostname, port });
      const timer = setTimeout(() => { socket.destroy(); reject(new Error(`RESP connect to ${u.host} timed out`)); }, timeoutMs);
      socket.once(secure ? 'secureConnect' : 'connect', () => { clearTimeout(timer); socket.setNoDelay(true); resolve(new RespConnection(socket)); });
      socket.once('error', (err) => { clearTimeout(timer); reject(err); });
    });
  }

  private dispatch(v: RespValue): void {
    if (this.subscribed && Array.isArray(v) && v[0] === 'message' && typeof v[2] === 'string') {
      this.emit('message', v[2]);
      return;
    }
    const w = this.waiting.shift();
    if (!w) return;
    if (v instanceof RespError) w.reject(v); else w.resolve(v);
  }

  command(args: string[]): Promise<RespValue> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      this.socket.write(encodeCommand(args));
    });
  }

  /** SUBSCRIBE usage; from its confirmation on, pushed records arrive as 'message' events. */
  async subscribe(channel: string): Promise<void> {
    const reply = this.command(['SUBSCRIBE', channel]);
    this.subscribed = true;
    try { await reply; } catch (err) { this.subscribed = false; throw err; }
  }

  close(): void { this.socket.destroy(); }
}
