import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Duplex, PassThrough } from 'node:stream';
import http2 from 'node:http2';
import { NoiseConn } from '../../../src/control/noise/conn.ts';
import { TransportCipher, sealRecords } from '../../../src/control/noise/framing.ts';
import { encodeEarlyPayload, parseEarlyPayload, EARLY_PAYLOAD_MAGIC } from '../../../src/control/noise/early.ts';
import type { TransportKeys } from '../../../src/control/noise/handshake.ts';

/** Two connected in-memory sockets. */
function socketPair(): [Duplex, Duplex] {
  const ab = new PassThrough();
  const ba = new PassThrough();
  const a = Duplex.from({ readable: ba, writable: ab });
  const b = Duplex.from({ readable: ab, writable: ba });
  return [a, b];
}

const k1 = new Uint8Array(32).fill(1);
const k2 = new Uint8Array(32).fill(2);
const clientKeys: TransportKeys = { tx: k1, rx: k2, handshakeHash: new Uint8Array(32) };
const serverKeys: TransportKeys = { tx: k2, rx: k1, handshakeHash: new Uint8Array(32) };

function readAll(s: Duplex): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    s.on('data', (c: Buffer) => parts.push(c));
    s.on('end', () => resolve(Buffer.concat(parts)));
    s.on('error', reject);
  });
}

describe('early payload', () => {
  it('parses the magic, a big-endian length and JSON', () => {
    const b = encodeEarlyPayload({ nodeKeyChallenge: 'chalpub:' + '00'.repeat(32) });
    assert.deepEqual(b.subarray(0, 5), EARLY_PAYLOAD_MAGIC);
    const r = parseEarlyPayload(b);
    assert.equal(r.kind, 'payload');
    assert.equal(r.kind === 'payload' && r.consumed, b.length);
    assert.deepEqual(parseEarlyPayload(b.subarray(0, 7)), { kind: 'need', bytes: 9 });
  });

  it('recognises the HTTP/2 preface/SETTINGS as "no early payload" from the first byte', () => {
    assert.deepEqual(parseEarlyPayload(Uint8Array.of(0, 0, 0x12, 4)), { kind: 'none' });
  });

  it('refuses an early payload above 10 MiB', () => {
    assert.throws(() => parseEarlyPayload(Uint8Array.of(0xff, 0xff, 0xff, 0x54, 0x53, 0x01, 0, 0, 0)), /exceeds/);
  });
});

describe('NoiseConn', () => {
  it('carries bytes both ways in records and ends cleanly', async () => {
    const [a, b] = socketPair();
    const client = new NoiseConn(a, clientKeys);
    const server = new NoiseConn(b, serverKeys);
    const big = Buffer.alloc(20_000, 0x5a);
    const got = readAll(server);
    client.write(big);
    client.end(Buffer.from('tail'));
    assert.deepEqual(await got, Buffer.concat([big, Buffer.from('tail')]));
  });

  it('strips an early payload split over several records and reports it', async () => {
    const [a, b] = socketPair();
    const client = new NoiseConn(a, clientKeys, { stripEarlyPayload: true });
    const early = encodeEarlyPayload({ nodeKeyChallenge: 'chalpub:' + 'ab'.repeat(32) });
    const tx = new TransportCipher(serverKeys.tx);
    // As headscale: magic (5), length (4), JSON, then the stream proper.
    const recs = [
      ...sealRecords(tx, early.subarray(0, 5)), ...sealRecords(tx, early.subarray(5, 9)),
      ...sealRecords(tx, early.subarray(9)), ...sealRecords(tx, Buffer.from('h2 bytes')),
    ];
    const seen = new Promise((r) => client.once('earlyPayload', r));
    const got = readAll(client);
    for (const r of recs) b.write(r);
    b.end();
    assert.deepEqual(await seen, { nodeKeyChallenge: 'chalpub:' + 'ab'.repeat(32) });
    assert.equal((await got).toString(), 'h2 bytes');
  });

  it('destroys itself with an error on a tampered record', async () => {
    const [a, b] = socketPair();
    const client = new NoiseConn(a, clientKeys);
    const rec = new TransportCipher(serverKeys.tx).sealRecord(Buffer.from('x'));
    rec[3]! ^= 1;
    b.on('error', () => {}); // the in-memory peer sees the abort too
    const err = new Promise<Error>((r) => client.once('error', r));
    client.resume();
    b.write(rec);
    assert.match((await err).message, /authentication failed/);
  });

  it('runs HTTP/2 with prior knowledge over it (as the ts2021 client does)', async () => {
    const [a, b] = socketPair();
    const client = new NoiseConn(a, clientKeys, { stripEarlyPayload: true });
    const server = new NoiseConn(b, serverKeys);
    server.write(encodeEarlyPayload({ nodeKeyChallenge: 'chalpub:' + '01'.repeat(32) }));
    const h2server = http2.createServer();
    h2server.on('stream', (stream, headers) => {
      let body = '';
      stream.on('data', (c) => (body += c));
      stream.on('end', () => {
        stream.respond({ ':status': 200, 'content-type': 'application/json' });
        stream.end(JSON.stringify({ path: headers[':path'], scheme: headers[':scheme'], got: body.length }));
      });
    });
    h2server.emit('connection', server);
    const session = http2.connect('http://control.test', { createConnection: () => client });
    const req = session.request({ ':method': 'POST', ':path': '/machine/map' });
    req.end(Buffer.alloc(10_000, 1));
    const reply = await readAll(req);
    assert.deepEqual(JSON.parse(reply.toString()), { path: '/machine/map', scheme: 'http', got: 10_000 });
    session.destroy();
    server.destroy();
    h2server.close();
  });
});
