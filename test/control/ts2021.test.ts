// ts2021 dialling against a small in-process server (node:http upgrade + serverAccept + HTTP/2),
// for the paths headscale cannot be made to take: error frames, 101 then EOF, a wrong Upgrade.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { AddressInfo } from 'node:net';
import { dialControl, fetchServerKey, TransportError } from '../../src/control/ts2021.ts';
import { serverAccept } from '../../src/control/noise/handshake.ts';
import { NoiseConn } from '../../src/control/noise/conn.ts';
import { encodeEarlyPayload } from '../../src/control/noise/early.ts';
import { formatMachinePublic, generateKeyPair, type MachinePublic } from '../../src/control/keys.ts';

type Mode = 'ok' | 'error-frame' | 'eof' | 'wrong-upgrade' | 'status-500';

describe('ts2021 dial against an in-process server', () => {
  const server = generateKeyPair<MachinePublic>();
  let mode: Mode = 'ok';
  let seenHeaders: http.IncomingHttpHeaders = {};
  let url = '';
  const h2 = http2.createServer();
  h2.on('stream', (stream, headers) => {
    stream.respond({ ':status': 200 });
    stream.end(JSON.stringify({ path: headers[':path'] }));
  });
  const srv = http.createServer((req, res) => {
    if (req.url?.startsWith('/key')) {
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ legacyPublicKey: 'mkey:' + '0'.repeat(64), publicKey: formatMachinePublic(server.publicKey) }) + '\n');
      return;
    }
    if (!req.headers.upgrade) {
      res.statusCode = 500;
      res.end('Internal error');
      return;
    }
  });
  srv.on('upgrade', (req: http.IncomingMessage, sock: Duplex) => {
    seenHeaders = req.headers;
    if (mode === 'status-500') {
      sock.end('HTTP/1.1 500 Internal Server Error\r\nContent-Length: 14\r\nConnection: close\r\n\r\nInternal error');
      return;
    }
    const init = new Uint8Array(Buffer.from(String(req.headers['x-tailscale-handshake']), 'base64'));
    const up = mode === 'wrong-upgrade' ? 'websocket' : 'tailscale-control-protocol';
    sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${up}\r\nConnection: upgrade\r\n\r\n`);
    if (mode === 'eof') { sock.end(); return; }
    if (mode === 'error-frame') {
      const text = Buffer.from('unexpected handshake message type');
      sock.end(Buffer.concat([Buffer.from([3, 0, text.length]), text]));
      return;
    }
    const acc = serverAccept(server.privateKey, init);
    sock.write(acc.response);
    const conn = new NoiseConn(sock, acc.keys);
    conn.write(encodeEarlyPayload({ nodeKeyChallenge: 'chalpub:' + '11'.repeat(32) }));
    h2.emit('connection', conn);
  });

  before(async () => {
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
    url = `http://127.0.0.1:${(srv.address() as AddressInfo).port}`;
  });
  after(() => {
    srv.closeAllConnections();
    srv.close();
    h2.close();
  });

  const dial = async () => dialControl({ url, serverKey: await fetchServerKey({ url }, 138), machinePrivate: generateKeyPair().privateKey, capVer: 138 });

  it('upgrades with the tailscale headers, handshakes, strips the early payload and runs HTTP/2', async () => {
    mode = 'ok';
    const c = await dial();
    assert.equal(seenHeaders.upgrade, 'tailscale-control-protocol');
    assert.equal(String(seenHeaders['x-tailscale-handshake']).length, 136);
    assert.deepEqual(await c.early, { nodeKeyChallenge: 'chalpub:' + '11'.repeat(32) });
    const req = c.session.request({ ':method': 'POST', ':path': '/machine/register' });
    req.end('{}');
    let body = '';
    for await (const chunk of req) body += chunk;
    assert.deepEqual(JSON.parse(body), { path: '/machine/register' });
    c.close();
  });

  it('reports a type-3 error frame as a handshake failure carrying the server text', async () => {
    mode = 'error-frame';
    await assert.rejects(dial(), (e: unknown) => e instanceof TransportError && e.stage === 'handshake' && /unexpected handshake message type/.test(e.message));
  });

  it('reports 101 followed by EOF (how headscale refuses a capability version) as a handshake failure', async () => {
    mode = 'eof';
    await assert.rejects(dial(), (e: unknown) => e instanceof TransportError && e.stage === 'handshake' && /closed the connection/.test(e.message));
  });

  it('refuses an upgrade to another protocol', async () => {
    mode = 'wrong-upgrade';
    await assert.rejects(dial(), (e: unknown) => e instanceof TransportError && e.stage === 'upgrade' && /websocket/.test(e.message));
  });

  it('refuses a non-101 answer with its status and text', async () => {
    mode = 'status-500';
    await assert.rejects(dial(), (e: unknown) => e instanceof TransportError && e.stage === 'upgrade' && /HTTP 500: Internal error/.test(e.message));
  });
});
