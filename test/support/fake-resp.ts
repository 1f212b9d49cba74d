import type { Socket } from 'node:net';

/**
 * The RESP side of the fake CLIProxyAPI (CLIPROXY.md §5.4): AUTH first (other commands before it are
 * failed logins), LPOP usage N, SUBSCRIBE usage (first message {"support_refresh":true}), PING and
 * UNSUBSCRIBE in subscribe mode. Records go to subscribers or to the queue, never both.
 */
export interface RespHost {
  authenticate(ip: string, key: string): string | null; // error text, or null when accepted
  pop(count: number): string[];
  subscribers: Set<Socket>;
  /** False before v7.0.7: SUBSCRIBE is an unknown command. */
  canSubscribe?: boolean;
  /** Never answer anything (a CLIProxyAPI that hangs). */
  silent?: () => boolean;
  /** Records to push in the same write as the SUBSCRIBE confirmation (taken once). */
  withConfirmation?: () => string[];
}

const bulk = (s: string | null) => (s === null ? '$-1\r\n' : `$${Buffer.byteLength(s)}\r\n${s}\r\n`);
const array = (items: string[]) => `*${items.length}\r\n${items.join('')}`;
export const respMessage = (payload: string) => array([bulk('message'), bulk('usage'), bulk(payload)]);

/** Parses complete RESP arrays of bulk strings from `buf`; returns the commands and the rest. */
function parseCommands(buf: Buffer): { commands: string[][]; rest: Buffer } {
  const commands: string[][] = [];
  let pos = 0;
  for (;;) {
    if (pos >= buf.length || buf[pos] !== 0x2a) break; // '*'
    const eol = buf.indexOf('\r\n', pos);
    if (eol < 0) break;
    const n = Number(buf.subarray(pos + 1, eol).toString());
    let p = eol + 2;
    const args: string[] = [];
    let complete = true;
    for (let i = 0; i < n; i++) {
      const e = buf.indexOf('\r\n', p);
      if (e < 0 || buf[p] !== 0x24) { complete = false; break; }
      const len = Number(buf.subarray(p + 1, e).toString());
      if (buf.length < e + 2 + len + 2) { complete = false; break; }
      args.push(buf.subarray(e + 2, e + 2 + len).toString('utf8'));
      p = e + 2 + len + 2;
    }
    if (!complete) break;
    commands.push(args);
    pos = p;
  }
  return { commands, rest: buf.subarray(pos) };
}

export function serveResp(socket: Socket, first: Buffer, host: RespHost): void {
  let buf = first;
  let authed = false;
  let subscribed = false;
  const ip = socket.remoteAddress ?? '';
  const onData = (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    const { commands, rest } = parseCommands(buf);
    buf = rest;
    for (const [name = '', ...args] of commands) {
      if (host.silent?.()) continue;
      const cmd = name.toUpperCase();
      if (cmd === 'AUTH') {
        if (args.length < 1 || args.length > 2) { socket.write("-ERR wrong number of arguments for 'auth' command\r\n"); continue; }
        const err = host.authenticate(ip, args[args.length - 1]!);
        if (err) socket.write(`-ERR ${err}\r\n`); else { authed = true; socket.write('+OK\r\n'); }
        continue;
      }
      if (!authed) {
        host.authenticate(ip, ''); // counts as a failed attempt, as in CLIProxyAPI
        socket.write('-NOAUTH Authentication required.\r\n');
        continue;
      }
      if (subscribed) {
        if (cmd === 'PING') socket.write(array([bulk('pong'), bulk(args[0] ?? null)]));
        else if (cmd === 'UNSUBSCRIBE') {
          host.subscribers.delete(socket); // as CLIProxyAPI: no record goes to it once the command is handled
          socket.end(array([bulk('unsubscribe'), bulk('usage'), ':0\r\n']));
        }
        else if (cmd === 'QUIT') socket.end('+OK\r\n');
        else socket.write(`-ERR unknown command '${name.toLowerCase()}'\r\n`);
        continue;
      }
      if (cmd === 'LPOP' || cmd === 'RPOP') {
        if ((args[0] ?? '').toLowerCase() !== 'usage') { socket.write(`-ERR unsupported channel '${args[0] ?? ''}'\r\n`); continue; }
        if (args[1] === undefined) { socket.write(bulk(host.pop(1)[0] ?? null)); continue; }
        if (!/^\d+$/.test(args[1]) || Number(args[1]) <= 0) { socket.write('-ERR value is not an integer or out of range\r\n'); continue; }
        socket.write(array(host.pop(Number(args[1])).map(bulk)));
      } else if (cmd === 'SUBSCRIBE' && host.canSubscribe !== false) {
        if (args.length !== 1 || args[0]!.toLowerCase() !== 'usage') { socket.write(`-ERR unsupported channel '${args[0] ?? ''}'\r\n`); continue; }
        subscribed = true;
        const extra = host.withConfirmation?.() ?? [];
        socket.write(array([bulk('subscribe'), bulk('usage'), ':1\r\n']) + respMessage('{"support_refresh":true}') + extra.map(respMessage).join(''));
        host.subscribers.add(socket);
      } else {
        socket.write(`-ERR unknown command '${name.toLowerCase()}'\r\n`);
      }
    }
  };
  socket.on('data', onData);
  socket.on('close', () => host.subscribers.delete(socket));
  socket.on('error', () => host.subscribers.delete(socket));
  onData(Buffer.alloc(0));
}
