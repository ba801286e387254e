// A peer that answers one initiation twice keeps only its second answer's keypair: wireguard-go
// checks an initiation's replay and flood limits under a read lock and records them later, so two
// copies its handshake goroutines take together both pass (copies come from our initiation
// repeats, or a path that sends over DERP and UDP at once). The initiator has to follow it to the
// second answer's keys, or its data goes unanswered until the 15 s no-reply handshake (bench-nat
// saw 17-19 s to a first reply from a tailscaled in 2 rounds of 62).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Device, type WgSink } from '../../src/wg/device.ts';
import { ipv4, typeOf, WgPipe, type Datagram } from '../harness/wgpipe.ts';

/** The pipe plus B2: B after answering a second copy of A's initiation (its state is what B keeps). */
function setup() {
  const p = new WgPipe();
  const b2 = new Device({ clock: p.clock });
  b2.setPrivateKey(p.bKey);
  b2.setPeer(p.aPub, { endpoint: p.aAddr, allowedIPs: ['10.0.0.1/32'] });
  const out2: Uint8Array[] = [];
  const tun2: Uint8Array[] = [];
  const sink2: WgSink = {
    sendUdp: (buf, off, len) => { out2.push(buf.slice(off, off + len)); },
    writeTun: (buf, off, len) => { tun2.push(buf.slice(off, off + len)); },
  };
  const toB2 = (bytes: Uint8Array): void => {
    const buf = new Uint8Array(bytes.length + 48);
    buf.set(bytes, 24);
    b2.receiveDatagramInPlace(buf, 24, bytes.length, p.aAddr, sink2);
  };
  const fromB2 = (bytes: Uint8Array): Datagram => ({ from: p.bAddr, to: p.aAddr, bytes });
  // A sends; B answers its initiation (R1), and so does B2, a moment later (R2).
  p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
  const init = p.inFlight.shift()!;
  assert.equal(typeOf(init), 1);
  p.inject(init);
  const r1 = p.inFlight.shift()!;
  assert.equal(typeOf(r1), 2);
  toB2(init.bytes);
  const r2 = out2.shift()!;
  assert.equal(r2[0], 2);
  return { p, b2, out2, tun2, toB2, fromB2, r1, r2 };
}

describe('a second answer to one initiation', () => {
  it("replaces the first answer's keys: A's packets reach the peer that kept the second", () => {
    const { p, tun2, toB2, fromB2, r1, r2 } = setup();
    p.inject(r1);
    // A's packet under R1's keys: the peer (B2) no longer has them.
    for (const d of p.inFlight.splice(0)) toB2(d.bytes);
    assert.equal(tun2.length, 0);
    p.inject(fromB2(r2));
    assert.equal(p.a.counters.rxResponsesReplacing, 1);
    // A confirms R2's keys with a keepalive, then its packets arrive.
    for (const d of p.inFlight.splice(0)) toB2(d.bytes);
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 11));
    for (const d of p.inFlight.splice(0)) toB2(d.bytes);
    assert.equal(tun2.length, 1, 'the packet sent after the second answer arrived');
    assert.equal(p.a.counters.txInitiations, 1, 'no new handshake needed');
  });

  it('changes nothing when it is the first answer again, or after the peer used the first keys', () => {
    const { p, r1, r2, fromB2 } = setup();
    p.inject(r1);
    p.deliver(); // A's packet to B, which kept R1's keys
    assert.equal(p.tunB.length, 1);
    p.inject(r1);
    assert.equal(p.a.counters.rxResponsesReplacing, 0, 'the same answer again');
    // B replies: a packet under R1's keys shows the peer kept them; a later R2 is stale.
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 12));
    p.deliver();
    assert.equal(p.tunA.length, 1);
    p.inject(fromB2(r2));
    assert.equal(p.a.counters.rxResponsesReplacing, 0);
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 13));
    p.deliver();
    assert.equal(p.tunB.length, 2, 'A still sends under the keys B has');
  });
});
