import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ipv4, isKeepalive, typeOf, WgPipe, type Datagram } from '../harness/wgpipe.ts';

function handshaken(opts: ConstructorParameters<typeof WgPipe>[0] = {}): WgPipe {
  const p = new WgPipe(opts);
  p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
  p.deliver();
  assert.equal(p.tunB.length, 1, 'handshake and first packet');
  return p;
}

/** Timestamps (fake ms) at which datagrams matching `pred` were sent, recorded by wrapping the sinks. */
function recordTimes(p: WgPipe, pred: (d: Datagram) => boolean): number[] {
  const times: number[] = [];
  const orig = p.log.push.bind(p.log);
  p.log.push = (...ds: Datagram[]) => {
    for (const d of ds) if (pred(d)) times.push(p.clock.t);
    return orig(...ds);
  };
  return times;
}

describe('Device timers', () => {
  it('does not let the responder send until the initiator has used the new session', () => {
    const p = new WgPipe();
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.inject(p.inFlight.shift()!); // B consumes the initiation and answers
    assert.equal(p.inFlight.length, 1);
    const response = p.inFlight.shift()!;
    assert.equal(typeOf(response), 2);
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 20));
    p.run(1000);
    assert.equal(p.log.filter((d) => d.from === p.bAddr && typeOf(d) === 4).length, 0, 'no data from B yet');
    assert.equal(p.log.filter((d) => d.from === p.bAddr && typeOf(d) === 1).length, 0, 'and no initiation of its own');
    p.inject(response); // A gets the response and sends its staged packet, which confirms the session for B
    p.deliver();
    assert.deepEqual(p.tunB, [ipv4('10.0.0.1', '10.0.0.2', 10)]);
    assert.deepEqual(p.tunA, [ipv4('10.0.0.2', '10.0.0.1', 20)]);
    const firstA = p.log.findIndex((d) => d.from === p.aAddr && typeOf(d) === 4);
    const firstB = p.log.findIndex((d) => d.from === p.bAddr && typeOf(d) === 4);
    assert.ok(firstA >= 0 && firstA < firstB);
  });

  it('rekeys after 120 s with traffic continuing, and only the initiator rekeys on age', () => {
    const p = handshaken();
    const initTimes = recordTimes(p, (d) => typeOf(d) === 1);
    let sent = 0;
    for (let s = 0; s < 300; s++) {
      p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10, s));
      p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10, s));
      sent++;
      p.run(1000);
    }
    assert.equal(p.tunB.length, sent + 1, 'every packet from A arrived');
    assert.equal(p.tunA.length, sent, 'every packet from B arrived');
    assert.ok(p.a.counters.handshakesCompleted! >= 3, `A completed ${p.a.counters.handshakesCompleted} handshakes`);
    assert.ok(p.log.filter((d) => typeOf(d) === 1).every((d) => d.from === p.aAddr), 'all initiations came from A');
    // Each rekey comes just after the session turns 120 s old.
    assert.ok(initTimes.length >= 2);
    assert.ok(initTimes[0]! - 10_000 > 120_000 && initTimes[0]! - 10_000 <= 122_000, `first rekey at ${initTimes[0]! - 10_000} ms`);
    assert.equal(p.b.counters.dropRxDecryptFailed, 0);
    assert.equal(p.a.counters.dropRxReplay, 0);
  });

  it('stops using a session after 180 s when rekeying fails, and refuses packets on it', () => {
    const p = handshaken();
    const firstData = p.log.find((d) => typeOf(d) === 4)!;
    p.dropIf = (d) => typeOf(d) === 1; // every new initiation is lost
    for (let s = 1; s <= 200; s++) {
      p.clock.t += 1000;
      p.a.tick(p.sinkA);
      p.b.tick(p.sinkB);
      p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10, s));
      p.deliver();
    }
    // Sent at 1..179 s on the first session; from 180 s packets are staged for a handshake that never completes.
    assert.equal(p.tunB.length, 1 + 179);
    assert.ok(p.a.counters.txInitiations! > 1);
    p.inject({ ...firstData, bytes: firstData.bytes.slice() });
    assert.equal(p.b.counters.dropRxExpiredKeypair, 1);
  });

  it('retries an unanswered handshake every 5 s and gives up after 20 attempts', () => {
    const p = new WgPipe();
    const times = recordTimes(p, (d) => typeOf(d) === 1);
    p.dropIf = () => true;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.run(200_000);
    assert.equal(times.length, 20);
    for (let i = 1; i < times.length; i++) {
      const gap = times[i]! - times[i - 1]!;
      assert.ok(gap >= 5000 && gap <= 5000 + 334 + 100, `gap ${gap}`);
    }
    assert.equal(p.a.counters.handshakesGivenUp, 1);
    assert.equal(p.a.counters.dropTxStagedFlushed, 1, 'the staged packet is dropped');
    // A new packet starts a new round.
    p.dropIf = null;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.tunB.length, 1);
  });

  it('sends a passive keepalive 10 s after receiving data when it has sent nothing', () => {
    const p = handshaken();
    const t0 = p.clock.t;
    const times = recordTimes(p, (d) => d.from === p.bAddr && isKeepalive(d));
    p.run(30_000);
    assert.equal(times.length, 1);
    assert.ok(times[0]! - t0 >= 10_000 && times[0]! - t0 <= 10_100, `keepalive after ${times[0]! - t0} ms`);
  });

  it('sends no passive keepalive when it answered with data', () => {
    const p = handshaken();
    p.run(5000);
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10));
    const n = p.log.length;
    p.run(8000);
    assert.equal(p.sentSince(n, (d) => d.from === p.bAddr && isKeepalive(d)).length, 0);
  });

  it('sends persistent keepalives at the configured interval, starting at once', () => {
    const p = new WgPipe();
    const times = recordTimes(p, (d) => d.from === p.aAddr && isKeepalive(d));
    p.a.setPeer(p.bPub, { persistentKeepalive: 25 });
    p.run(100_000);
    // The first keepalive starts the handshake and goes out with its confirmation; then every 25 s.
    assert.equal(p.a.counters.handshakesCompleted, 1);
    assert.ok(times.length >= 4 && times.length <= 5, `${times.length} keepalives`);
    for (let i = 2; i < times.length; i++) assert.equal(times[i]! - times[i - 1]!, 25_000);
    p.a.setPeer(p.bPub, { persistentKeepalive: 0 });
    const n = times.length;
    p.run(60_000);
    assert.equal(times.length, n);
  });

  it('starts a new handshake 15 s after sent data went unanswered', () => {
    const p = handshaken();
    p.dropIf = (d) => d.from === p.bAddr;
    const times = recordTimes(p, (d) => typeOf(d) === 1 && d.from === p.aAddr);
    const t0 = p.clock.t;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.run(20_000);
    assert.ok(times.length >= 1);
    assert.ok(times[0]! - t0 >= 15_000 && times[0]! - t0 <= 15_000 + 334 + 100, `initiation after ${times[0]! - t0} ms`);
  });

  it('zeroes all keys 540 s after the last handshake and needs a new one afterwards', () => {
    const p = handshaken();
    p.run(539_000);
    assert.equal(p.a.counters.keyZeroings, 0);
    p.run(1100);
    assert.equal(p.a.counters.keyZeroings, 1);
    assert.equal(p.b.counters.keyZeroings, 1);
    const inits = p.a.counters.txInitiations!;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    assert.equal(p.a.counters.txInitiations, inits + 1);
    assert.equal(p.tunB.length, 2);
  });

  it('sends one "last minute" initiation when the initiator receives on a session older than 165 s', () => {
    const p = handshaken();
    p.run(160_000); // A sends nothing (so it never rekeys on send); B sends one passive keepalive
    let n = p.log.length;
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 10));
    p.deliver();
    assert.equal(p.sentSince(n, (d) => typeOf(d) === 1).length, 0, 'not yet at 160 s');
    p.run(6000);
    n = p.log.length;
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 11));
    p.deliver();
    const inits = p.sentSince(n, (d) => typeOf(d) === 1);
    assert.equal(inits.length, 1);
    assert.equal(inits[0]!.from, p.aAddr);
    assert.equal(p.tunA.length, 2);
  });

  it('reports when its next timer is due', () => {
    const p = new WgPipe();
    assert.equal(p.a.nextTimerDue(), Infinity);
    p.dropIf = () => true;
    const t0 = p.clock.t;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    const due = p.a.nextTimerDue();
    assert.ok(due >= t0 + 5000 && due < t0 + 5334, `retransmit due at +${due - t0}`);
    p.clock.t = due - 1;
    p.a.tick(p.sinkA);
    assert.equal(p.a.counters.txInitiations, 1);
    p.clock.t = due;
    p.a.tick(p.sinkA);
    assert.equal(p.a.counters.txInitiations, 2);
  });
});
