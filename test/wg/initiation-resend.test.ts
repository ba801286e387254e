// DeviceOptions.initiationResendMs: a handshake's first initiation repeated, byte for byte, until
// answered -- for a responder that drops it because it does not know us yet (a tailnet peer whose
// control has not sent it our node), so that the handshake does not wait for the 5 s retry.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ipv4, typeOf, WgPipe } from '../harness/wgpipe.ts';

/** A pipe where B does not know A until `learnAt` ms of fake time; returns when B's TUN got A's packet. */
function lateResponder(resendMs: number | undefined, learnAt: number): { p: WgPipe; arrivedAt: number } {
  const p = new WgPipe(resendMs === undefined ? {} : { initiationResendMs: resendMs });
  p.b.removePeer(p.aPub);
  const t0 = p.clock.t;
  p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
  p.deliver();
  assert.equal(p.tunB.length, 0, 'B drops the initiation of a peer it does not know');
  let arrivedAt = -1;
  for (let i = 0; i < 200 && arrivedAt < 0; i++) {
    p.run(100);
    if (p.clock.t - t0 >= learnAt && p.b.peers().length === 0) p.b.setPeer(p.aPub, { endpoint: p.aAddr, allowedIPs: ['10.0.0.1/32'] });
    if (p.tunB.length > 0) arrivedAt = p.clock.t - t0;
  }
  return { p, arrivedAt };
}

describe('Device initiation resend', () => {
  it('gets through within a resend interval of the responder learning the peer, not at the 5 s retry', () => {
    const { p, arrivedAt } = lateResponder(1000, 1500);
    assert.ok(arrivedAt >= 1500 && arrivedAt <= 2100, `arrived after ${arrivedAt} ms`);
    const inits = p.log.filter((d) => d.from === p.aAddr && typeOf(d) === 1);
    assert.equal(inits.length, 3, 'the first initiation, a repeat B drops at 1 s, the one it answers at 2 s');
    for (const d of inits) assert.deepEqual(d.bytes, inits[0]!.bytes, 'each repeat is the same message');
    assert.equal(p.a.counters.txInitiations, 1);
    assert.equal(p.a.counters.txInitiationResends, 2);
    assert.equal(p.a.counters.handshakesCompleted, 1);
  });

  it('is off by default: the same responder is reached only by the retry after 5 s', () => {
    const { p, arrivedAt } = lateResponder(undefined, 1500);
    assert.ok(arrivedAt >= 5000 && arrivedAt <= 5500, `arrived after ${arrivedAt} ms`);
    assert.equal(p.a.counters.txInitiationResends, 0);
    assert.equal(p.a.counters.txInitiations, 2);
  });

  it('repeats only the first initiation of an unanswered handshake, and only until its retry', () => {
    const p = new WgPipe({ initiationResendMs: 1000 });
    p.dropIf = () => true;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    // Past the give-up: 20 initiations, each retry 5 s plus 0-333 ms of jitter, end at 95-101.3 s
    // (100 s cut the last one off in about 1 run of 25).
    p.run(130_000);
    assert.equal(p.a.counters.txInitiationResends, 4, 'at 1, 2, 3 and 4 s; the retries are not repeated');
    assert.equal(p.a.counters.txInitiations, 20, 'the usual 5 s retries (then give up), unchanged');
  });

  it('stops once answered, and a responder that already answered drops a repeat as a replay', () => {
    const p = new WgPipe({ initiationResendMs: 1000 });
    let dropped = false;
    p.dropIf = (d) => { if (!dropped && typeOf(d) === 2) { dropped = true; return true; } return false; };
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.b.counters.txResponses, 1);
    p.run(1100);
    assert.equal(p.a.counters.txInitiationResends, 1);
    assert.equal(p.b.counters.dropRxReplayedInitiation, 1, 'the repeat is not answered twice');
    assert.equal(p.b.counters.txResponses, 1);
    p.run(5000); // the 5 s retry is a new initiation, answered
    assert.equal(p.tunB.length, 1);
    const resends = p.a.counters.txInitiationResends;
    p.run(10_000);
    assert.equal(p.a.counters.txInitiationResends, resends, 'no repeats once the handshake completed');
  });
});
