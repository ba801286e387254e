// Device.handshakeIfIdle: the agent starts a handshake with online peers once control hands out our
// home DERP region after `up`. A tailscaled peer that tried to reach us before it knew the region
// failed its handshake and holds its packets until its 5 s retry; our handshake completing (the
// initiator's keepalive confirms the session) makes it send them at once.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { INITIATION_COPY_GAP_MS } from '../../src/wg/device.ts';
import { ipv4, WgPipe } from '../harness/wgpipe.ts';

describe('Device.handshakeIfIdle', () => {
  it("delivers a peer's held packet within a round trip instead of at the peer's 5 s retry", () => {
    const p = new WgPipe();
    // B sends first, but its initiation is lost (the peer could not reach us yet).
    p.dropIf = () => true;
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10));
    p.deliver();
    assert.equal(p.b.counters.txInitiations, 1);
    p.dropIf = null;
    p.run(1000);
    assert.equal(p.tunA.length, 0, 'B waits for its retry');
    const t0 = p.clock.t;
    assert.equal(p.a.handshakeIfIdle(p.bPub, p.sinkA), true);
    for (let i = 0; i < 10 && p.tunA.length === 0; i++) p.run(10, 10);
    assert.equal(p.tunA.length, 1, "B's held packet arrived");
    assert.ok(p.clock.t - t0 <= 100, `after ${p.clock.t - t0} ms`);
    assert.equal(p.b.counters.txInitiations, 1, 'B did not need its retry');
  });

  it('sends a pending unanswered initiation again at once (a peer that has just learned us answers it)', () => {
    const p = new WgPipe({ initiationResendMs: 1000 });
    p.b.removePeer(p.aPub);
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.tunB.length, 0, 'B drops the initiation of a peer it does not know');
    p.run(300);
    p.b.setPeer(p.aPub, { endpoint: p.aAddr, allowedIPs: ['10.0.0.1/32'] });
    const t0 = p.clock.t;
    assert.equal(p.a.handshakeIfIdle(p.bPub, p.sinkA), true);
    p.deliver();
    assert.equal(p.tunB.length, 1, "A's packet arrived without waiting for the 1 s repeat");
    assert.equal(p.clock.t, t0);
    assert.equal(p.a.counters.txInitiations, 1, 'the same handshake, not a new one');
    assert.equal(p.a.counters.txInitiationResends, 1);
  });

  it('sends nothing with a live session or for an unknown peer', () => {
    const p = new WgPipe();
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.tunB.length, 1);
    const before = p.log.length;
    assert.equal(p.a.handshakeIfIdle(p.bPub, p.sinkA), false);
    assert.equal(p.a.handshakeIfIdle(new Uint8Array(32).fill(7), p.sinkA), false);
    p.deliver();
    assert.equal(p.log.length, before, 'no datagram sent');
  });

  it('resendPendingInitiation repeats only an unanswered initiation: it starts no handshake of its own', () => {
    const p = new WgPipe({ initiationResendMs: 1000 });
    assert.equal(p.a.resendPendingInitiation(p.bPub, p.sinkA), false, 'no handshake under way');
    p.deliver();
    assert.equal(p.a.counters.txInitiations, 0, 'none started');
    p.b.removePeer(p.aPub);
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    p.run(200);
    p.b.setPeer(p.aPub, { endpoint: p.aAddr, allowedIPs: ['10.0.0.1/32'] });
    assert.equal(p.a.resendPendingInitiation(p.bPub, p.sinkA), true);
    p.deliver();
    assert.equal(p.tunB.length, 1, "A's packet arrived without waiting for the 1 s repeat");
    assert.equal(p.a.counters.txInitiations, 1, 'the same handshake');
    assert.equal(p.a.resendPendingInitiation(p.bPub, p.sinkA), false, 'answered: nothing pending');
  });
});

// wireguard-go (and tailscale's fork) checks an initiation's TAI64N replay and flood limits under a
// read lock and records them later under the write lock: two copies that reach its handshake
// goroutines together both pass, it answers both, and the second answer's keypair replaces the
// first. We take the first answer, so our data then uses a keypair the peer has dropped and nothing
// comes back until our 15 s no-reply handshake (bench-nat: 2 rounds in 62 took 17-19 s, after three
// map messages of one control batch each sent the pending initiation again in the same ms).
describe('copies of one initiation', () => {
  const isInitiation = (d: { bytes: Uint8Array }): boolean => d.bytes[0] === 1;

  it('never leave closer together than INITIATION_COPY_GAP_MS, however many map updates ask', () => {
    const p = new WgPipe({ initiationResendMs: 1000 });
    p.b.removePeer(p.aPub);
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    p.run(300);
    p.b.setPeer(p.aPub, { endpoint: p.aAddr, allowedIPs: ['10.0.0.1/32'] });
    const from = p.log.length;
    // One control batch: three map messages in the same ms, then the home-region pass.
    for (let i = 0; i < 3; i++) p.a.resendPendingInitiation(p.bPub, p.sinkA);
    p.a.handshakeIfIdle(p.bPub, p.sinkA);
    assert.equal(p.sentSince(from, isInitiation).length, 1, 'one copy now');
    p.deliver();
    assert.equal(p.tunB.length, 1, "A's packet arrived");
    assert.equal(p.b.counters.txResponses, 1);
  });

  it('sends a copy asked for too soon after the last one once the gap has passed, not at the 1 s repeat', () => {
    const p = new WgPipe({ initiationResendMs: 1000 });
    p.b.removePeer(p.aPub);
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    const t0 = p.clock.t;
    p.run(10, 10);
    // The peer learns about us 10 ms after our first initiation (which it dropped).
    p.b.setPeer(p.aPub, { endpoint: p.aAddr, allowedIPs: ['10.0.0.1/32'] });
    const from = p.log.length;
    assert.equal(p.a.resendPendingInitiation(p.bPub, p.sinkA), false, 'not yet');
    assert.equal(p.sentSince(from, isInitiation).length, 0);
    for (let i = 0; i < 50 && p.tunB.length === 0; i++) p.run(10, 10);
    assert.equal(p.tunB.length, 1, "A's packet arrived");
    assert.ok(p.clock.t - t0 <= INITIATION_COPY_GAP_MS + 10, `after ${p.clock.t - t0} ms`);
    assert.equal(p.a.counters.txInitiations, 1, 'the same handshake');
  });
});
