// A minimal in-process control server for fast client tests: GET /key, the ts2021 upgrade with
// serverAccept, an early payload, then an HTTP/2 server whose streams go to a test-supplied handler.
// Loopback only. Headscale remains the real judge; this exists for paths headscale never takes.
import http from 'node:http';
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { serverAccept } from '../../src/control/noise/handshake.ts';
import { NoiseConn } from '../../src/control/noise/conn.ts';
import { encodeEarlyPayload } from '../../src/control/noise/early.ts';
import { formatMachinePublic, generateKeyPair, type MachinePublic } from '../../src/control/keys.ts';

/** Handles one HTTP/2 request with its parsed JSON body and the Noise peer's machine key (`mkey:`). */
export type FakeHandler = (path: string, body: unknown, stream: http2.ServerHttp2Stream, machineKey: string) => void;

/** A running fake control server. */
export class FakeControl {
  readonly url: string;
  /** Number of Noise connections accepted. */
  connections = 0;
  /** Number of GET /key requests answered. */
  keyFetches = 0;
  handler: FakeHandler = (_p, _b, s) => { s.respond({ ':status': 404 }); s.end(); };
  private readonly srv: http.Server;
  private readonly h2: http2.Http2Server;
  private readonly conns = new Set<NoiseConn>();

  private constructor(srv: http.Server, h2: http2.Http2Server, url: string) {
    this.srv = srv;
    this.h2 = h2;
    this.url = url;
  }

  /** Starts on a free loopback port (or on host:port, e.g. inside a lab namespace for benchmarks). */
  static async start(host = '127.0.0.1', port = 0): Promise<FakeControl> {
    const key = generateKeyPair<MachinePublic>();
    const h2 = http2.createServer();
    const srv = http.createServer((req, res) => {
      if (req.url?.startsWith('/key')) {
        fc.keyFetches++;
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ legacyPublicKey: 'mkey:' + '0'.repeat(64), publicKey: formatMachinePublic(key.publicKey) }));
        return;
      }
      res.statusCode = 404;
      res.end();
    });
    await new Promise<void>((r) => srv.listen(port, host, () => r()));
    const fc = new FakeControl(srv, h2, `http://${host}:${(srv.address() as AddressInfo).port}`);
    // The session http2 makes for a connection emitted below gets that connection's client key.
    const sessionKeys = new WeakMap<http2.Http2Session, string>();
    let acceptedKey = '';
    h2.on('session', (session) => sessionKeys.set(session, acceptedKey));
    h2.on('stream', (stream, headers) => {
      let body = '';
      stream.on('data', (c: Buffer) => (body += c.toString('utf8')));
      stream.on('end', () => fc.handler(String(headers[':path']), body ? JSON.parse(body) : undefined, stream, sessionKeys.get(stream.session!) ?? ''));
    });
    srv.on('upgrade', (req: http.IncomingMessage, sock: Duplex) => {
      const init = new Uint8Array(Buffer.from(String(req.headers['x-tailscale-handshake']), 'base64'));
      sock.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n');
      const acc = serverAccept(key.privateKey, init);
      sock.write(acc.response);
      const conn = new NoiseConn(sock, acc.keys);
      conn.on('error', () => {});
      fc.conns.add(conn);
      conn.on('close', () => fc.conns.delete(conn));
      fc.connections++;
      conn.write(encodeEarlyPayload({ nodeKeyChallenge: 'chalpub:' + '00'.repeat(32) }));
      acceptedKey = formatMachinePublic(acc.clientPublic);
      h2.emit('connection', conn);
    });
    return fc;
  }

  /** Drops every live Noise connection (as a network failure would). */
  dropConnections(): void {
    for (const c of this.conns) c.destroy();
  }

  /** Stops the server. */
  async stop(): Promise<void> {
    this.dropConnections();
    this.srv.closeAllConnections();
    await new Promise<void>((r) => this.srv.close(() => r()));
    this.h2.close();
  }
}
