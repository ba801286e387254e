import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { referenceCrypto, nodeCrypto } from '../../src/crypto/backend.ts';
import { Device, paddedLength } from '../../src/wg/device.ts';
import { ipv6Bytes } from '../../src/net/endpoint.ts';
import { ipv4, isKeepalive, typeOf, WgPipe } from '../harness/wgpipe.ts';
import { FakeClock } from '../harness/wgpipe.ts';

function handshaken(opts: ConstructorParameters<typeof WgPipe>[0] = {}): WgPipe {
  const p = new WgPipe(opts);
  p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
  p.deliver();
  assert.equal(p.tunB.length, 1, 'handshake and first packet');
  return p;
}

function ipv6(src: string, dst: string, payloadLen: number): Uint8Array {
  const p = new Uint8Array(40 + payloadLen);
  p[0] = 0x60;
  p[4] = payloadLen >> 8;
  p[5] = payloadLen & 0xff;
  p[6] = 17;
  p[7] = 64;
  p.set(ipv6Bytes(src), 8);
  p.set(ipv6Bytes(dst), 24);
  p.fill(0x5c, 40);
  return p;
}

describe('Device data path', () => {
  it('completes a handshake on the first packet and then carries data both ways', () => {
    const p = new WgPipe();
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 100));
    p.deliver();
    assert.deepEqual(p.tunB, [ipv4('10.0.0.1', '10.0.0.2', 100)]);
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 50));
    p.deliver();
    assert.deepEqual(p.tunA, [ipv4('10.0.0.2', '10.0.0.1', 50)]);
    // initiation, response, A's staged packet (no extra keepalive: it carries the confirmation), B's reply
    assert.deepEqual(p.log.map(typeOf), [1, 2, 4, 4]);
    assert.equal(p.a.counters.handshakesCompleted, 1);
    assert.equal(p.b.counters.handshakesCompleted, 1);
    assert.equal(p.a.counters.txInitiations, 1);
    assert.equal(p.b.counters.txResponses, 1);
  });

  it('works with node crypto on one side and reference crypto on the other', () => {
    for (const [a, b] of [[nodeCrypto, referenceCrypto], [referenceCrypto, nodeCrypto]] as const) {
      const p = handshaken({ crypto: a, cryptoB: b });
      p.send('b', ipv4('10.0.0.2', '10.0.0.1', 1000));
      p.deliver();
      assert.deepEqual(p.tunA, [ipv4('10.0.0.2', '10.0.0.1', 1000)]);
    }
  });

  it('confirms a new session with a keepalive when nothing is staged', () => {
    const p = handshaken();
    p.run(121_000);
    const n = p.log.length;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    // data on the old session, then the rekey (A's session is older than 120 s), then the keepalive
    const after = p.sentSince(n);
    assert.deepEqual(after.map(typeOf), [4, 1, 2, 4]);
    assert.ok(isKeepalive(after[3]!));
    assert.equal(p.tunB.length, 2);
  });

  it('pads plaintext to a multiple of 16 but never past the MTU, and strips padding on receive', () => {
    assert.equal(paddedLength(0, 1420), 0);
    assert.equal(paddedLength(1, 1420), 16);
    assert.equal(paddedLength(100, 1420), 112);
    assert.equal(paddedLength(1419, 1420), 1420);
    assert.equal(paddedLength(1420, 1420), 1420);
    assert.equal(paddedLength(1280, 1280), 1280);
    assert.equal(paddedLength(1501, 1420), 1516, 'beyond the MTU: pads the remainder');
    const p = handshaken();
    const start = p.log.length;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 80));
    p.deliver();
    const sent = p.sentSince(start);
    assert.equal(sent[0]!.bytes.length, 16 + 112 + 16);
    assert.deepEqual(p.tunB.at(-1), ipv4('10.0.0.1', '10.0.0.2', 80));
  });

  it('carries IPv6 packets and checks their source', () => {
    const p = new WgPipe();
    p.a.setPeer(p.bPub, { allowedIPs: ['fd00::2/128'] });
    p.b.setPeer(p.aPub, { allowedIPs: ['fd00::1/128'] });
    p.send('a', ipv6('fd00::1', 'fd00::2', 33));
    p.deliver();
    assert.deepEqual(p.tunB, [ipv6('fd00::1', 'fd00::2', 33)]);
    p.send('a', ipv6('fd00::99', 'fd00::2', 33));
    p.deliver();
    assert.equal(p.tunB.length, 1);
    assert.equal(p.b.counters.dropRxSourceNotAllowed, 1);
  });

  it('checks a repeated source again once the allowed IPs change (IPv4 and IPv6), though it skips the table walk for it in between', () => {
    const p = handshaken();
    p.b.setPeer(p.aPub, { allowedIPs: ['10.0.0.1/32', 'fd00::1/128'], replaceAllowedIPs: true });
    p.a.setPeer(p.bPub, { allowedIPs: ['10.0.0.2/32', 'fd00::2/128'], replaceAllowedIPs: true });
    for (let i = 0; i < 3; i++) {
      p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10 + i));
      p.send('a', ipv6('fd00::1', 'fd00::2', 10 + i));
    }
    p.deliver();
    assert.equal(p.tunB.length, 7);
    // A's addresses are no longer A's: the same sources are refused at once.
    p.b.setPeer(p.aPub, { allowedIPs: ['10.0.0.3/32', 'fd00::3/128'], replaceAllowedIPs: true });
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 20));
    p.send('a', ipv6('fd00::1', 'fd00::2', 20));
    p.deliver();
    assert.equal(p.tunB.length, 7);
    assert.equal(p.b.counters.dropRxSourceNotAllowed, 2);
    // A source that differs only in its last bits is looked up, not taken from the last answer.
    p.b.setPeer(p.aPub, { allowedIPs: ['10.0.0.1/32', 'fd00::1/128'], replaceAllowedIPs: true });
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 21));
    p.send('a', ipv4('10.0.0.0', '10.0.0.2', 22));
    p.send('a', ipv6('fd00::1', 'fd00::2', 21));
    p.send('a', ipv6('fd00::', 'fd00::2', 22));
    p.deliver();
    assert.deepEqual(p.tunB.slice(7), [ipv4('10.0.0.1', '10.0.0.2', 21), ipv6('fd00::1', 'fd00::2', 21)]);
    assert.equal(p.b.counters.dropRxSourceNotAllowed, 4);
  });

  it('drops and counts packets with no route, and non-IP packets', () => {
    const p = handshaken();
    const n = p.log.length;
    p.send('a', ipv4('10.0.0.1', '10.9.9.9', 10));
    p.send('a', Uint8Array.of(0x20, 1, 2, 3));
    assert.equal(p.a.counters.dropTxNoRoute, 1);
    assert.equal(p.a.counters.dropTxNotIP, 1);
    assert.equal(p.log.length, n);
  });

  it('stages at most 128 packets without a session, dropping the oldest', () => {
    const p = new WgPipe();
    p.dropIf = () => true;
    for (let i = 0; i < 200; i++) p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10, i));
    p.deliver();
    assert.equal(p.a.counters.dropTxStagedOverflow, 72);
    p.dropIf = null;
    p.run(5500);
    assert.equal(p.tunB.length, 128);
    assert.deepEqual(p.tunB[0], ipv4('10.0.0.1', '10.0.0.2', 10, 72));
    assert.deepEqual(p.tunB[127], ipv4('10.0.0.1', '10.0.0.2', 10, 199));
  });

  it('does not deliver keepalives to the TUN', () => {
    const p = handshaken();
    p.run(11_000);
    assert.ok(p.b.counters.txKeepalives! >= 1);
    assert.ok(p.a.counters.rxKeepalives! >= 1);
    assert.equal(p.tunA.length, 0);
  });

  it('reports peers with allowed IPs, endpoint, byte counts and last handshake time', () => {
    const p = handshaken();
    const [st] = p.a.peers();
    assert.deepEqual(st!.publicKey, p.bPub);
    assert.deepEqual(st!.allowedIPs, ['10.0.0.2/32']);
    assert.equal(st!.endpoint, p.bAddr);
    assert.equal(st!.lastHandshakeWallMs, p.clock.wall());
    assert.equal(st!.txBytes, 148 + (16 + 32 + 16), 'initiation and one 30-byte packet padded to 32');
    assert.equal(st!.rxBytes, 92);
    assert.deepEqual(st!.presharedKey, new Uint8Array(32));
    p.a.setPeer(p.bPub, { allowedIPs: ['10.0.1.0/24'] });
    assert.deepEqual(p.a.peers()[0]!.allowedIPs, ['10.0.0.2/32', '10.0.1.0/24']);
    p.a.setPeer(p.bPub, { allowedIPs: ['10.0.2.0/24'], replaceAllowedIPs: true });
    assert.deepEqual(p.a.peers()[0]!.allowedIPs, ['10.0.2.0/24']);
  });

  it('rejects bad configuration with a clear error and changes nothing', () => {
    const p = new WgPipe();
    assert.throws(() => p.a.setPeer(p.bPub, { allowedIPs: ['10.0.0.0/8', 'nonsense'] }), /bad allowed IP "nonsense"/);
    assert.deepEqual(p.a.peers()[0]!.allowedIPs, ['10.0.0.2/32']);
    assert.throws(() => p.a.setPeer(new Uint8Array(31), {}), /32 bytes/);
    assert.throws(() => p.a.setPeer(p.bPub, { presharedKey: new Uint8Array(3) }), /preshared key/);
  });

  it('removes a peer: its routes and sessions go with it', () => {
    const p = handshaken();
    const captured = p.log.filter((d) => typeOf(d) === 4)[0]!;
    p.b.removePeer(p.aPub);
    assert.equal(p.b.peers().length, 0);
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10));
    assert.equal(p.b.counters.dropTxNoRoute, 1);
    p.inject(captured);
    assert.equal(p.b.counters.dropRxUnknownIndex, 1);
    p.a.removeAllPeers();
    assert.equal(p.a.peers().length, 0);
  });

  it('removes a peer whose key becomes our own public key', () => {
    const p = new WgPipe();
    p.b.setPrivateKey(p.aKey);
    assert.equal(p.b.peers().length, 0);
    p.b.setPeer(p.aPub, {});
    assert.equal(p.b.peers().length, 0, 'and refuses to add one');
  });

  it('re-keys sessions after a private key change so that peers must handshake again', () => {
    const p = handshaken();
    const before = p.a.counters.txInitiations!;
    const newKey = nodeCrypto.x25519.generatePrivate((n) => crypto.getRandomValues(new Uint8Array(n)));
    p.b.setPrivateKey(newKey);
    p.a.setPeer(p.bPub, {});
    p.a.removePeer(p.bPub);
    p.a.setPeer(p.b.publicKey()!, { endpoint: p.bAddr, allowedIPs: ['10.0.0.2/32'] });
    p.clock.t += 1000; // a new TAI64N timestamp; the same one would be refused as a replay
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.a.counters.txInitiations, before + 1);
    assert.equal(p.tunB.length, 2);
  });

  it('cannot handshake without a private key and counts what it drops', () => {
    const clock = new FakeClock();
    const d = new Device({ clock });
    assert.equal(d.publicKey(), null);
    d.setPeer(new Uint8Array(32).fill(9), { allowedIPs: ['10.0.0.2/32'] });
    const buf = new Uint8Array(200);
    buf.set(ipv4('10.0.0.1', '10.0.0.2', 10), 16);
    d.sendPacketInPlace(buf, 16, 30, 184, { sendUdp: () => assert.fail('nothing to send'), writeTun: () => {} });
    const init = new Uint8Array(148);
    init[0] = 1;
    const ep = new WgPipe().eps.of('198.18.0.9', 1);
    d.receiveDatagramInPlace(init, 0, 148, ep, { sendUdp: () => assert.fail(), writeTun: () => assert.fail() });
    assert.equal(d.counters.dropRxBadMac1, 1);
  });
});
