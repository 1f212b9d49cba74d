import { CliproxyError, CliproxyUnreachable } from './errors.js';
import type { ManagementClient } from './management.js';
import { RespConnection, RespError, RespTimeout, type RespOptions } from './resp.js';

/** The server has no usable RESP on its port (before v6.9.38, or v7.1.17 with RESP AUTH disabled). */
export class RespUnavailable extends CliproxyError {
  override name = 'RespUnavailable';
}

/**
 * Opens a RESP connection to CLIProxyAPI and authenticates it. AUTH is the first and only thing sent
 * before it succeeds (any other command before AUTH counts as a failed login), nothing is sent while
 * the management client is paused, and a refusal pauses every management call (the ban is shared).
 */
export async function openAuthenticatedResp(client: ManagementClient, baseUrl: string, o: RespOptions = {}): Promise<RespConnection> {
  client.checkGate();
  let conn: RespConnection;
  try {
    conn = await RespConnection.connect(baseUrl, o);
  } catch (err) {
    throw new CliproxyUnreachable(`cannot open a RESP connection to CLIProxyAPI (${(err as Error).message})`);
  }
  conn.on('error', () => undefined);
  try {
    await conn.abortable(o.signal, () => conn.command(['AUTH', client.key]));
    return conn;
  } catch (err) {
    conn.close();
    if (err instanceof RespTimeout) throw new CliproxyUnreachable(`CLIProxyAPI did not answer AUTH over RESP (${err.message})`);
    if (o.signal?.aborted) throw new CliproxyUnreachable('stopped');
    if (err instanceof RespError) {
      if (/RESP AUTH disabled/i.test(err.message)) throw new RespUnavailable('this CLIProxyAPI has RESP disabled (v7.1.17)');
      throw client.respRejected(err.message);
    }
    if (conn.protocolError) throw new RespUnavailable('this CLIProxyAPI does not speak RESP on its port (before v6.9.38)');
    throw new CliproxyUnreachable(`the RESP connection to CLIProxyAPI closed during AUTH (${(err as Error).message})`);
  }
}
