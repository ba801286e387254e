// DERP frame layouts from tailscale derp/derp.go (v1.102.3); ClientInfo JSON as Go's encoding/json
// writes derp.ClientInfo (test/vectors/golden/main.go prints {"version":2,"CanAckPings":true}).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { boxBefore, generateKeyPair, seal } from '../../src/crypto/box.ts';
import { Endpoints } from '../../src/net/endpoint.ts';
import {
  clientInfoJson, encodeClientInfo, encodeFrame, encodeHealth, encodeNotePreferred, encodePeerGone, encodePingPong,
  encodeRecvPacket, encodeRestarting, encodeSendPacket, encodeServerInfo, encodeServerKey, FrameReader, FrameType,
  MAX_FRAME_LEN, parseClientInfo, parseServerInfo, parseServerKey, parseServerMessage, type Frame,
} from '../../src/derp/frames.ts';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const k = (v: number) => new Uint8Array(32).fill(v);
const eps = new Endpoints();

function frames(r: FrameReader): Frame[] {
  const out: Frame[] = [];
  for (;;) {
    const f = r.next();
    if (f === undefined) return out;
    if ('error' in f) throw new Error(f.error);
    out.push(f);
  }
}

describe('derp/frames', () => {
  it('lays out frames as type ‖ BE u32 length ‖ payload', () => {
    assert.equal(toHex(encodeServerKey(k(0xaa))), `0100000028 44455250f09f9491 ${'aa'.repeat(32)}`.replace(/ /g, ''));
    assert.equal(toHex(encodeSendPacket(k(1), hex('cafe'))), `0400000022${'01'.repeat(32)}cafe`);
    assert.equal(toHex(encodeRecvPacket(k(2), hex('beef'))), `0500000022${'02'.repeat(32)}beef`);
    assert.equal(toHex(encodeNotePreferred(true)), '070000000101');
    assert.equal(toHex(encodeNotePreferred(false)), '070000000100');
    assert.equal(toHex(encodePingPong(FrameType.ping, hex('0102030405060708'))), '12000000080102030405060708');
    assert.equal(toHex(encodePingPong(FrameType.pong, hex('0102030405060708'))), '13000000080102030405060708');
    assert.equal(toHex(encodePeerGone(k(3), 1)), `0800000021${'03'.repeat(32)}01`);
    assert.equal(toHex(encodeHealth('dup')), '1400000003647570');
    assert.equal(toHex(encodeRestarting(1000, 20000)), '1500000008000003e800004e20');
    assert.equal(toHex(encodeFrame(FrameType.keepAlive)), '0600000000');
  });

  it('refuses to build a SendPacket over 64 KiB', () => {
    assert.doesNotThrow(() => encodeSendPacket(k(1), new Uint8Array(65536)));
    assert.throws(() => encodeSendPacket(k(1), new Uint8Array(65537)), /too big/);
  });

  it('writes ClientInfo JSON the way Go marshals derp.ClientInfo', () => {
    assert.equal(clientInfoJson({ version: 2, canAckPings: true }), '{"version":2,"CanAckPings":true}');
    assert.equal(clientInfoJson({ version: 2, canAckPings: false }), '{"version":2,"CanAckPings":false}');
    assert.equal(clientInfoJson({ version: 2, canAckPings: true, appName: 'meshd' }), '{"version":2,"CanAckPings":true,"AppName":"meshd"}');
  });

  it('seals ClientInfo to the server and ServerInfo to the client (handshake round trip)', () => {
    const server = generateKeyPair();
    const client = generateKeyPair();
    const ci = encodeClientInfo(client.publicKey, boxBefore(server.publicKey, client.privateKey), { version: 2, canAckPings: true });
    const r = new FrameReader();
    r.push(ci);
    const [f] = frames(r);
    assert.equal(f!.type, FrameType.clientInfo);
    assert.equal(f!.payload.length, 32 + 24 + 16 + '{"version":2,"CanAckPings":true}'.length);
    const got = parseClientInfo(f!.payload, (pub) => boxBefore(pub, server.privateKey));
    assert.ok(typeof got !== 'string');
    assert.equal(toHex(got.clientKey), toHex(client.publicKey));
    assert.deepEqual(got.info, { version: 2, canAckPings: true });

    const si = encodeServerInfo(boxBefore(client.publicKey, server.privateKey), { tokenBucketBytesPerSecond: 1000, tokenBucketBytesBurst: 2000 });
    const r2 = new FrameReader();
    r2.push(si);
    const [g] = frames(r2);
    assert.equal(g!.type, FrameType.serverInfo);
    assert.deepEqual(parseServerInfo(g!.payload, boxBefore(server.publicKey, client.privateKey)),
      { version: 2, tokenBucketBytesPerSecond: 1000, tokenBucketBytesBurst: 2000 });
  });

  it('rejects bad ServerInfo boxes and JSON with a reason instead of throwing', () => {
    const shared = boxBefore(generateKeyPair().publicKey, generateKeyPair().privateKey);
    assert.equal(parseServerInfo(new Uint8Array(10), shared), 'short serverInfo frame');
    assert.equal(parseServerInfo(seal(boxBefore(generateKeyPair().publicKey, generateKeyPair().privateKey), hex('7b7d')), shared),
      'failed to open naclbox from server key');
    assert.equal(parseServerInfo(seal(shared, new TextEncoder().encode('not json')), shared), 'invalid JSON in serverInfo');
    assert.equal(parseServerInfo(seal(shared, new TextEncoder().encode('[1]')), shared), 'invalid JSON in serverInfo');
    // Go's decoder matches keys case-insensitively
    assert.deepEqual(parseServerInfo(seal(shared, new TextEncoder().encode('{"VERSION":2,"tokenbucketbytespersecond":5}')), shared),
      { version: 2, tokenBucketBytesPerSecond: 5, tokenBucketBytesBurst: 0 });
  });

  it('checks the ServerKey magic and length, ignoring extra bytes', () => {
    const f = encodeServerKey(k(7));
    assert.equal(toHex(parseServerKey(f.subarray(5))!), toHex(k(7)));
    assert.equal(toHex(parseServerKey(new Uint8Array([...f.subarray(5), 1, 2, 3]))!), toHex(k(7)));
    assert.equal(parseServerKey(f.subarray(5, 44)), undefined);
    const bad = f.slice(5); bad[0] = 0x45;
    assert.equal(parseServerKey(bad), undefined);
  });

  it('reassembles frames split at every byte boundary, zero-copy when a frame lies in one chunk', () => {
    const stream = new Uint8Array([...encodeRecvPacket(k(1), hex('00112233')), ...encodeFrame(FrameType.keepAlive),
      ...encodeRecvPacket(k(2), new Uint8Array(3000).fill(9)), ...encodeHealth('')]);
    for (const step of [1, 2, 3, 5, 7, 64, 1000, stream.length]) {
      const r = new FrameReader();
      const got: Frame[] = [];
      for (let i = 0; i < stream.length; i += step) { r.push(stream.subarray(i, i + step)); got.push(...frames(r)); }
      assert.deepEqual(got.map((f) => [f.type, f.payload.length]), [[5, 36], [6, 0], [5, 3032], [0x14, 0]], `step ${step}`);
      assert.equal(r.buffered, 0);
    }
    const whole = new FrameReader();
    whole.push(stream);
    const [first] = frames(whole);
    assert.equal(first!.payload.buffer, stream.buffer, 'a frame inside one chunk is a view, not a copy');
  });

  it('reports a bogus frame length instead of buffering it', () => {
    const r = new FrameReader();
    r.push(hex('05 ffffffff 00'));
    assert.deepEqual(r.next(), { error: 'frame-too-large', type: 5, length: 0xffffffff });
    const r2 = new FrameReader();
    r2.push(hex('05'));
    r2.push(new Uint8Array([(MAX_FRAME_LEN + 1) >>> 24, ((MAX_FRAME_LEN + 1) >>> 16) & 0xff, 0, 1]));
    assert.equal((r2.next() as { error: string }).error, 'frame-too-large');
    const r3 = new FrameReader();
    r3.push(hex('05 00100000'));
    assert.equal(r3.next(), undefined, '1 MiB exactly is allowed, waits for the payload');
  });

  it('parses server messages like derp.Client.Recv, dropping short ones and skipping unknown types', () => {
    const m = (type: number, p: string) => parseServerMessage({ type, payload: hex(p) }, eps);
    assert.deepEqual(m(FrameType.recvPacket, '00'.repeat(31)), { ok: false, error: 'short' });
    const rp = m(FrameType.recvPacket, `${'02'.repeat(32)}abcd`);
    assert.ok(rp.ok && rp.msg.type === 'recv-packet' && toHex(rp.msg.data) === 'abcd' && toHex(rp.msg.source) === '02'.repeat(32));
    assert.deepEqual(m(FrameType.peerGone, '03'.repeat(32)), { ok: true, msg: { type: 'peer-gone', peer: k(3), reason: 0 } });
    assert.deepEqual(m(FrameType.peerGone, `${'03'.repeat(32)}01`), { ok: true, msg: { type: 'peer-gone', peer: k(3), reason: 1 } });
    assert.deepEqual(m(FrameType.peerGone, '03'.repeat(31)), { ok: false, error: 'short' });
    const pp = m(FrameType.peerPresent, `${'04'.repeat(32)}00000000000000000000ffff7f000001 1f90 01`);
    assert.ok(pp.ok && pp.msg.type === 'peer-present' && pp.msg.endpoint?.key === '127.0.0.1:8080' && pp.msg.flags === 1);
    assert.deepEqual(m(FrameType.peerPresent, '04'.repeat(32)), { ok: true, msg: { type: 'peer-present', peer: k(4) } });
    assert.deepEqual(m(FrameType.ping, '01020304050607'), { ok: false, error: 'short' });
    assert.deepEqual(m(FrameType.ping, '0102030405060708ff'), { ok: true, msg: { type: 'ping', data: hex('0102030405060708') } });
    assert.deepEqual(m(FrameType.health, '6f6f7073'), { ok: true, msg: { type: 'health', problem: 'oops' } });
    assert.deepEqual(m(FrameType.restarting, '000003e8'), { ok: false, error: 'short' });
    assert.deepEqual(m(FrameType.restarting, '000003e800004e20'), { ok: true, msg: { type: 'restarting', reconnectInMs: 1000, tryForMs: 20000 } });
    assert.deepEqual(m(0x42, '00'), { ok: false, error: 'unknown' });
    assert.deepEqual(m(FrameType.sendPacket, '00'), { ok: false, error: 'unknown' }, 'client-to-server types are not server messages');
  });
});
