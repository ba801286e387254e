import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { Device } from '../../src/wg/device.ts';
import type { Peer } from '../../src/wg/peer.ts';
import { keyHex } from '../../src/wg/peer.ts';
import { REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES } from '../../src/wg/replay.ts';
import { ipv4, typeOf, WgPipe } from '../harness/wgpipe.ts';
import { seededRandom } from '../harness/bytes.ts';

/** The device's peer object (white-box: to move counters near their limits). */
function peerOf(dev: Device, pub: Uint8Array): Peer {
  return (dev as unknown as { byKey: Map<string, Peer> }).byKey.get(keyHex(pub))!;
}

function handshaken(): WgPipe {
  const p = new WgPipe();
  p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
  p.deliver();
  assert.equal(p.tunB.length, 1, 'handshake and first packet');
  return p;
}

describe('Device message limits and keys', () => {
  it('rekeys once the send counter passes REKEY_AFTER_MESSAGES, even on the responder', () => {
    const p = handshaken();
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10));
    p.deliver();
    const kp = peerOf(p.b, p.aPub).keypairs.current!;
    assert.equal(kp.isInitiator, false);
    kp.sendCounter = REKEY_AFTER_MESSAGES + 1;
    const n = p.log.length;
    p.clock.t += 6000; // past the 5 s spacing after B's response
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10));
    const sent = p.sentSince(n);
    assert.deepEqual(sent.map(typeOf), [4, 1], 'the packet goes out, then an initiation from B');
    assert.equal(sent[1]!.from, p.bAddr);
    p.deliver();
    assert.equal(p.tunA.length, 2, 'the packet with a counter above 2^52 decrypts (the receiver window accepts it)');
    assert.equal(p.b.counters.handshakesCompleted, 2);
  });

  it('does not send on a keypair whose counter reached REJECT_AFTER_MESSAGES: it stages and handshakes', () => {
    const p = handshaken();
    const kp = peerOf(p.a, p.bPub).keypairs.current!;
    kp.sendCounter = REJECT_AFTER_MESSAGES;
    const n = p.log.length;
    p.clock.t += 6000;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10, 1));
    assert.deepEqual(p.sentSince(n).map(typeOf), [1]);
    p.deliver();
    assert.equal(p.tunB.length, 2);
    assert.notEqual(peerOf(p.a, p.bPub).keypairs.current, kp);
  });

  it('keeps the previous keypair for packets still in flight after a rekey', () => {
    const p = handshaken();
    p.run(119_000);
    // A packet from B under the first session, held back while A rekeys.
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10, 1));
    const late = p.inFlight.splice(0)[0]!;
    p.run(2000);
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10)); // the session is 121 s old: A rekeys
    p.deliver();
    assert.equal(p.a.counters.handshakesCompleted, 2);
    p.inject(late);
    assert.equal(p.tunA.length, 1, 'the late packet still decrypts with the previous keypair');
  });

  it('resolves crossing initiations through the jittered retransmissions', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const p = new WgPipe({ random: seededRandom(seed) });
      p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
      p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10));
      assert.deepEqual(p.inFlight.map(typeOf), [1, 1]);
      p.deliver(); // each consumes the other's initiation; each response then finds no pending initiation
      assert.equal(p.tunA.length + p.tunB.length, 0);
      p.run(60_000);
      assert.equal(p.tunB.length, 1, `seed ${seed}`);
      assert.equal(p.tunA.length, 1, `seed ${seed}`);
    }
  });

  it('uses the pre-shared key: equal keys connect, different keys do not', () => {
    const psk = new Uint8Array(32).fill(0x42);
    const p = new WgPipe();
    p.a.setPeer(p.bPub, { presharedKey: psk });
    p.b.setPeer(p.aPub, { presharedKey: psk });
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.tunB.length, 1);
    assert.deepEqual(p.a.peers()[0]!.presharedKey, psk);
    const q = new WgPipe();
    q.a.setPeer(q.bPub, { presharedKey: psk });
    q.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    q.deliver();
    assert.equal(q.tunB.length, 0);
    assert.equal(q.a.counters.dropRxHandshakeInvalid, 1, 'the response does not authenticate');
  });

  it('refuses a send buffer without headroom or room for padding and tag, and counts it', () => {
    const p = handshaken();
    const pkt = ipv4('10.0.0.1', '10.0.0.2', 10);
    const buf = new Uint8Array(100);
    buf.set(pkt, 0);
    p.a.sendPacketInPlace(buf, 0, pkt.length, 100, p.sinkA);
    buf.set(pkt, 16);
    p.a.sendPacketInPlace(buf, 16, pkt.length, pkt.length + 16, p.sinkA);
    assert.equal(p.a.counters.dropTxBadBuffer, 2);
  });

  it('does not leak session indices across many rekeys', () => {
    const p = handshaken();
    for (let s = 0; s < 1000; s++) {
      p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
      p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10));
      p.run(1000);
    }
    assert.ok(p.a.counters.handshakesCompleted! >= 8);
    for (const dev of [p.a, p.b]) {
      const size = (dev as unknown as { index: Map<number, unknown> }).index.size;
      assert.ok(size <= 4, `index table holds ${size} entries for one peer`);
    }
  });
});
