import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PeerEndpoint } from '../../src/magicsock/peer-endpoint.ts';
import { nodeCrypto } from '../../src/crypto/backend.ts';
import { Device, UNDER_LOAD_HANDSHAKES_PER_SECOND, type WgSink } from '../../src/wg/device.ts';
import { rand, seededRandom } from '../harness/bytes.ts';
import { ipv4, typeOf, WgPipe } from '../harness/wgpipe.ts';

function handshaken(): WgPipe {
  const p = new WgPipe();
  p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
  p.deliver();
  assert.equal(p.tunB.length, 1, 'handshake and first packet');
  return p;
}

describe('Device under attack and on bad input', () => {
  it('drops a replayed data packet and counts it (duplicates over UDP and DERP)', () => {
    const p = handshaken();
    const data = p.log.find((d) => typeOf(d) === 4)!;
    p.inject(data);
    p.inject(data);
    assert.equal(p.tunB.length, 1);
    assert.equal(p.b.counters.dropRxReplay, 2);
  });

  it('drops a replayed initiation and counts it', () => {
    const p = handshaken();
    const init = p.log.find((d) => typeOf(d) === 1)!;
    const n = p.log.length;
    p.clock.t += 1000;
    p.inject(init);
    assert.equal(p.b.counters.dropRxReplayedInitiation, 1);
    assert.equal(p.log.length, n, 'no response to a replay');
  });

  it('answers handshakes with a cookie reply under load, and the initiator retries with mac2', () => {
    const p = new WgPipe();
    p.b.underLoad = true;
    const t0 = p.clock.t;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.deepEqual(p.log.map(typeOf), [1, 3]);
    assert.equal(p.b.counters.dropRxNeedCookie, 1);
    assert.equal(p.a.counters.rxCookieReplies, 1);
    assert.equal(p.tunB.length, 0);
    p.run(6000);
    assert.equal(p.tunB.length, 1, 'the retransmitted initiation carried a valid mac2');
    assert.deepEqual(p.log.map(typeOf).slice(0, 5), [1, 3, 1, 2, 4]);
    assert.ok(p.clock.t - t0 >= 5000);
    assert.equal(p.b.counters.txCookieReplies, 1);
  });

  it('rate-limits valid-mac2 handshakes per source under load', () => {
    const p = new WgPipe();
    p.b.underLoad = true;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    p.dropIf = () => true;
    p.run(5500); // A retransmits, now with mac2; lost on the way
    const withMac2 = p.log.filter((d) => typeOf(d) === 1).at(-1)!;
    p.dropIf = null;
    for (let i = 0; i < 20; i++) p.inject(withMac2);
    assert.ok(p.b.counters.dropRxRateLimited! >= 15, `rate limited ${p.b.counters.dropRxRateLimited}`);
    assert.equal(p.b.counters.rxInitiations, 1, 'one got through; the others were replays or limited');
  });

  it(`puts itself under load above ${UNDER_LOAD_HANDSHAKES_PER_SECOND} handshake messages per second, for one second`, () => {
    const p = handshaken();
    const init = p.log.find((d) => typeOf(d) === 1)!;
    assert.equal(p.b.underLoad, false);
    for (let i = 0; i <= UNDER_LOAD_HANDSHAKES_PER_SECOND; i++) p.inject(init);
    assert.equal(p.b.underLoad, true);
    assert.equal(p.b.counters.underLoadEntered, 1);
    const n = p.log.length;
    p.inject(init);
    assert.equal(typeOf(p.log[n]!), 3, 'now answered with a cookie reply');
    p.clock.t += 1001;
    assert.equal(p.b.underLoad, false);
  });

  it('follows the peer to the source of its latest authenticated packet (roaming)', () => {
    const p = handshaken();
    const roamed = p.eps.of('203.0.113.7', 40000);
    p.route(roamed, 'a');
    p.aAddr = roamed;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.b.peers()[0]!.endpoint, roamed);
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10));
    assert.equal(p.inFlight[0]!.to, roamed);
    p.deliver();
    assert.equal(p.tunA.length, 1);
  });

  it('without roaming keeps the configured endpoint and tells it where each authenticated packet came from', () => {
    // Under magicsock the peer's endpoint is a PeerEndpoint: it decides where to send (path.ts).
    const p = new WgPipe({ roaming: false });
    const vep = new PeerEndpoint(7);
    p.route(vep, 'a');
    p.b.setPeer(p.aPub, { endpoint: vep });
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.tunB.length, 1);
    assert.equal(p.b.peers()[0]!.endpoint, vep, 'not roamed');
    assert.equal(vep.heard, p.aAddr, 'told the source of the initiation and the data');
    vep.heard = undefined;
    // Junk under a live index (a forged packet from elsewhere) is not authenticated: not told.
    const forged = p.log.find((d) => typeOf(d) === 4)!.bytes.slice();
    forged[16] = forged[16]! ^ 1;
    forged[8] = 0x7f; // an unseen counter, so only decryption can reject it
    const rx = p.b.counters.dropRxDecryptFailed ?? 0;
    p.inject({ from: p.eps.of('203.0.113.9', 1), to: p.bAddr, bytes: forged });
    assert.equal(p.b.counters.dropRxDecryptFailed, rx + 1);
    assert.equal(vep.heard, undefined);
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 11));
    p.deliver();
    assert.equal(vep.heard, p.aAddr);
  });

  it('roams to an IPv6 endpoint and hands out cookies bound to it under load', () => {
    // Seeded: after the clock jump both sides retransmit, and with some seeds they cross (see device-limits).
    const p = new WgPipe({ random: seededRandom(3) });
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    const v6 = p.eps.of('2001:db8::1', 51820);
    p.route(v6, 'a');
    p.aAddr = v6;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.b.peers()[0]!.endpoint, v6);
    p.b.underLoad = true;
    p.clock.t += 200_000; // sessions expired: the next packet needs a handshake
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 11));
    p.run(30_000);
    assert.ok(p.b.counters.txCookieReplies! >= 1);
    assert.ok(p.log.some((d) => typeOf(d) === 3 && d.to === v6), 'a cookie reply went to the IPv6 endpoint');
    assert.equal(p.tunB.length, 3);
  });

  it('does not move the endpoint for unauthenticated or replayed packets', () => {
    const p = handshaken();
    const attacker = p.eps.of('192.0.2.66', 666);
    const data = p.log.find((d) => typeOf(d) === 4)!;
    p.inject({ from: attacker, to: p.bAddr, bytes: data.bytes }); // replay from elsewhere
    // A tampered copy under a fresh counter fails authentication.
    const forged = data.bytes.slice();
    forged[20]! ^= 1;
    forged[9] = 0x77;
    p.inject({ from: attacker, to: p.bAddr, bytes: forged });
    // One under a counter already seen is refused before decryption, as a replay.
    const tamperedReplay = data.bytes.slice();
    tamperedReplay[20]! ^= 1;
    p.inject({ from: attacker, to: p.bAddr, bytes: tamperedReplay });
    p.inject({ from: attacker, to: p.bAddr, bytes: rand(148) });
    assert.equal(p.b.peers()[0]!.endpoint, p.aAddr);
    assert.equal(p.b.counters.dropRxReplay, 2);
    assert.equal(p.b.counters.dropRxDecryptFailed, 1);
  });

  it('drops a packet whose inner source is not in the sender\'s allowed IPs', () => {
    const p = handshaken();
    p.send('a', ipv4('10.0.0.99', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.tunB.length, 1);
    assert.equal(p.b.counters.dropRxSourceNotAllowed, 1);
  });

  it('drops a packet whose inner length does not fit the plaintext', () => {
    const p = handshaken();
    const bad = ipv4('10.0.0.1', '10.0.0.2', 10);
    bad[3] = 200; // claims 200 bytes
    p.send('a', bad);
    p.deliver();
    assert.equal(p.b.counters.dropRxBadInner, 1);
    assert.equal(p.tunB.length, 1);
  });

  it('counts garbage, truncated, wrong-key and unknown-index datagrams without throwing', () => {
    const p = handshaken();
    const from = p.eps.of('192.0.2.1', 1);
    const send = (bytes: Uint8Array): void => p.inject({ from, to: p.bAddr, bytes });
    const init = p.log.find((d) => typeOf(d) === 1)!.bytes;
    const data = p.log.find((d) => typeOf(d) === 4)!.bytes;
    send(Uint8Array.of(7)); // GSO sentinel
    send(new Uint8Array(0));
    send(init.subarray(0, 147)); // truncated
    send(data.subarray(0, 31));
    for (let i = 0; i < 200; i++) send(rand(i));
    assert.ok(p.b.counters.dropRxJunk! >= 4);
    // Handshake from a key B does not know (mac1 is right: it is addressed to B).
    const stranger = new Device({ clock: p.clock });
    stranger.setPrivateKey(nodeCrypto.x25519.generatePrivate(rand));
    stranger.setPeer(p.bPub, { endpoint: p.bAddr, allowedIPs: ['10.0.0.2/32'] });
    const out: Uint8Array[] = [];
    const sink: WgSink = { sendUdp: (b, o, l) => out.push(b.slice(o, o + l)), writeTun: () => {} };
    const pkt = new Uint8Array(16 + 30 + 64);
    pkt.set(ipv4('10.0.0.3', '10.0.0.2', 10), 16);
    stranger.sendPacketInPlace(pkt, 16, 30, pkt.length - 16, sink);
    send(out[0]!);
    assert.equal(p.b.counters.dropRxUnknownPeer, 1);
    // mac1 for someone else.
    const wrongMac = init.slice();
    wrongMac[120]! ^= 1;
    send(wrongMac);
    assert.ok(p.b.counters.dropRxBadMac1! >= 1);
    // Transport to an index nobody has, and a response to nothing.
    const unknown = data.slice();
    unknown[4]! ^= 0xff;
    send(unknown);
    assert.ok(p.b.counters.dropRxUnknownIndex! >= 1);
    // A cookie reply nobody asked for.
    const cookie = new Uint8Array(64);
    cookie[0] = 3;
    cookie.set(data.subarray(4, 8), 4);
    send(cookie);
    assert.equal(p.b.counters.dropRxBadCookieReply, 1);
    assert.equal(p.tunB.length, 1);
  });

  it('survives random mutations of valid messages', () => {
    const p = handshaken();
    const rnd = seededRandom(7);
    const samples = p.log.map((d) => d.bytes);
    for (let i = 0; i < 2000; i++) {
      const m = samples[i % samples.length]!.slice();
      const r = rnd(3);
      m[r[0]! % m.length]! ^= 1 + (r[1]! % 255);
      p.inject({ from: p.aAddr, to: p.bAddr, bytes: m });
      p.inject({ from: p.bAddr, to: p.aAddr, bytes: m });
    }
    assert.equal(p.tunB.length, 1);
    assert.equal(p.tunA.length, 0);
  });

  it('refuses a data packet with a counter at or above 2^53', () => {
    const p = handshaken();
    const data = p.log.find((d) => typeOf(d) === 4)!.bytes.slice();
    data[14] = 0x20;
    p.inject({ from: p.aAddr, to: p.bAddr, bytes: data });
    assert.equal(p.b.counters.dropRxCounterTooLarge, 1);
  });

  it('limits accepted initiations from one peer to one per 20 ms', () => {
    const p = new WgPipe();
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    const first = p.inFlight.shift()!;
    p.inject(first);
    // A second, newer initiation 10 ms later (A forced past its own 5 s spacing).
    p.inFlight.length = 0;
    p.clock.t += 10;
    p.clock.wallBase += 10_000; // a later timestamp
    p.a.removePeer(p.bPub);
    p.a.setPeer(p.bPub, { endpoint: p.bAddr, allowedIPs: ['10.0.0.2/32'] });
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    const second = p.inFlight.find((d) => typeOf(d) === 1)!;
    p.inFlight.length = 0;
    p.inject(second);
    assert.equal(p.b.counters.dropRxInitiationFlood, 1);
    p.clock.t += 10;
    p.inject(second);
    assert.equal(p.b.counters.rxInitiations, 2);
  });
});
