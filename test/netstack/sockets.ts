// Loopback socket fixtures for the relay tests (stream.test.ts relayWith, relay.test.ts TcpRelay):
// a connected pair of host sockets, and reading one to its end.
import { createHash } from 'node:crypto';
import { createServer, connect, type Socket } from 'node:net';

/** A loopback socket pair: [the proxy's side (paused), the client's side, close the listener]. */
export async function sockets(): Promise<[Socket, Socket, () => void]> {
  const srv = createServer({ allowHalfOpen: true });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const accepted = new Promise<Socket>((r) => srv.once('connection', r));
  const client = connect({ port: (srv.address() as { port: number }).port, host: '127.0.0.1', allowHalfOpen: true });
  const server = await accepted;
  server.pause();
  return [server, client, () => srv.close()];
}

/** Everything a socket reads until its end. */
export const collect = (s: Socket): Promise<Buffer> => new Promise((resolve, reject) => {
  const got: Buffer[] = [];
  s.on('data', (d: Buffer) => got.push(d));
  s.once('end', () => resolve(Buffer.concat(got)));
  s.once('error', reject);
});

/** SHA-256 of the bytes, hex. */
export const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
