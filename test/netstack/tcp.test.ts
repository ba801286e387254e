// The TCP state machine (RFC 9293 3.3.2 figure 5) on a fake clock: two stacks over an in-memory
// wire, with loss, duplication and reordering where a test asks for them.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Pair, Sink, Writer, buildSeg, prng } from './pair.ts';
import { DEFAULT_TCP, S, type Tcb } from '../../src/netstack/tcp.ts';
import { F } from '../../src/netstack/segment.ts';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function randomBytes(n: number, seed = 3): Uint8Array {
  const r = prng(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

/** A listens on 80 (accepting), B connects; returns both ends established. */
function connected(p: Pair, port = 80, v6 = false): { srv: Tcb; cli: Tcb; ss: Sink; cs: Sink } {
  let srv: Tcb | undefined;
  const ss = new Sink();
  p.a.listen(port, (c) => { srv = c; c.handler = ss; });
  const cs = new Sink();
  const cli = p.b.connect(v6 ? 'fd7a:115c:a1e0::1' : '100.64.0.1', port, cs);
  assert.ok(p.until(() => cs.established && srv !== undefined, 5000), 'handshake');
  return { srv: srv!, cli, ss, cs };
}

/** Moves `bytes` from `from` to the other side's sink, pumping as the window allows. */
function transfer(p: Pair, from: Tcb, to: Sink, data: Uint8Array, budgetMs = 600_000): boolean {
  const w = new Writer(from, data);
  return p.until(() => { w.pump(); return to.ended; }, budgetMs);
}

/** Raw segment access: the TCP flags of an IPv4 packet. */
function tcpFlags(pkt: Uint8Array): number {
  return pkt[20 + 13]! & 0x3f;
}

describe('netstack TCP: opening and closing (RFC 9293 figure 5)', () => {
  it('completes a three-way handshake and both sides reach ESTABLISHED with the MSS from the MTU and window scaling', () => {
    const p = new Pair();
    const { srv, cli } = connected(p);
    assert.equal(srv.state, S.ESTABLISHED);
    assert.equal(cli.state, S.ESTABLISHED);
    assert.equal(cli.mss, 1240, 'MSS for IPv4 over a 1280 MTU');
    assert.equal(cli.sndShift, 7);
    assert.equal(srv.sndShift, 7);
    assert.ok(cli.sackOk && srv.sackOk, 'SACK permitted both ways');
  });

  it('negotiates an IPv6 connection with MSS 1220', () => {
    const p = new Pair();
    const { cli } = connected(p, 81, true);
    assert.equal(cli.mss, 1220);
  });

  it('orderly close: FIN-WAIT-1 -> FIN-WAIT-2 -> TIME-WAIT on the closing side, CLOSE-WAIT -> LAST-ACK -> CLOSED on the other; TIME-WAIT ends after 60 s and holds no send buffer', () => {
    const p = new Pair();
    const { srv, cli, ss, cs } = connected(p);
    cli.write(Buffer.from('hello'), 0, 5);
    p.run(5);
    assert.equal(ss.data().toString(), 'hello');
    assert.ok(cli.snd.capacity > 0);
    cli.shutdown();
    assert.equal(cli.state, S.FIN_WAIT_1);
    p.run(5);
    assert.equal(cli.state, S.FIN_WAIT_2);
    assert.equal(srv.state, S.CLOSE_WAIT);
    assert.ok(ss.ended, 'server saw EOF');
    srv.write(Buffer.from('bye'), 0, 3); // half-close: the server may still send
    p.run(5);
    assert.equal(cs.data().toString(), 'bye');
    srv.shutdown();
    assert.equal(srv.state, S.LAST_ACK);
    p.run(5);
    assert.equal(srv.state, S.CLOSED);
    assert.ok(ss.closed && ss.error === null);
    assert.equal(cli.state, S.TIME_WAIT);
    assert.ok(cs.closed && cs.error === null, 'the application is told at TIME-WAIT');
    assert.equal(cli.snd.capacity, 0, 'TIME-WAIT holds no send buffer');
    p.run(59_000);
    assert.equal(cli.state, S.TIME_WAIT);
    p.run(1_100);
    assert.equal(cli.state, S.CLOSED);
    assert.equal(p.b.connectionCount, 0);
    assert.equal(p.a.connectionCount, 0);
  });

  it('simultaneous close: both FIN-WAIT-1 -> CLOSING -> TIME-WAIT', () => {
    const p = new Pair();
    const { srv, cli } = connected(p);
    const seen: number[] = [];
    srv.shutdown();
    cli.shutdown();
    assert.equal(srv.state, S.FIN_WAIT_1);
    assert.equal(cli.state, S.FIN_WAIT_1);
    p.wire.tap = () => { seen.push(srv.state, cli.state); return true; };
    p.run(10);
    assert.ok(seen.includes(S.CLOSING), 'went through CLOSING');
    assert.equal(srv.state, S.TIME_WAIT);
    assert.equal(cli.state, S.TIME_WAIT);
  });

  it('simultaneous open: two SYNs cross, both go SYN-SENT -> SYN-RECEIVED -> ESTABLISHED', () => {
    const p = new Pair();
    const sa = new Sink(), sb = new Sink();
    p.wire.delay = 5;
    const ca = p.a.connect('100.64.0.2', 5000, sa, undefined, 6000);
    const cb = p.b.connect('100.64.0.1', 6000, sb, undefined, 5000);
    assert.equal(ca.state, S.SYN_SENT);
    p.run(6);
    assert.equal(ca.state, S.SYN_RECEIVED);
    assert.equal(cb.state, S.SYN_RECEIVED);
    assert.ok(p.until(() => sa.established && sb.established, 2000));
    ca.write(Buffer.from('x'), 0, 1);
    p.run(20);
    assert.equal(sb.data().toString(), 'x');
  });

  it('a SYN to a port nobody listens on gets RST+ACK and connect fails with ECONNREFUSED', () => {
    const p = new Pair();
    const s = new Sink();
    p.b.connect('100.64.0.1', 9, s);
    assert.ok(p.until(() => s.closed, 1000));
    assert.equal(s.error?.code, 'ECONNREFUSED');
    assert.equal(p.a.counters.synNoListener, 1);
  });

  it('a held connection is answered only after accept(); reject() sends a RST', () => {
    const p = new Pair();
    const held: Tcb[] = [];
    p.a.onTcp = (c) => { held.push(c); };
    const s1 = new Sink(), s2 = new Sink();
    p.b.connect('100.64.0.1', 22, s1);
    p.b.connect('100.64.0.1', 23, s2);
    p.run(50);
    assert.equal(held.length, 2);
    assert.ok(!s1.established && !s2.established, 'no SYN-ACK before the application decides');
    held[0]!.accept(new Sink());
    held[1]!.reject();
    p.run(20);
    assert.ok(s1.established);
    assert.ok(s2.closed);
    assert.equal(s2.error?.code, 'ECONNREFUSED');
  });

  it('picks ephemeral ports in turn, so 1000 connections to one service never reuse a port', () => {
    const p = new Pair();
    p.a.listen(80, (c) => { c.handler = new Sink(); });
    const ports = new Set<number>();
    for (let i = 0; i < 1000; i++) {
      const c = p.b.connect('100.64.0.1', 80, new Sink());
      assert.ok(c.localPort >= 32768 && c.localPort <= 60999, `port ${c.localPort} in Linux's ephemeral range`);
      ports.add(c.localPort);
      c.abort();
    }
    assert.equal(ports.size, 1000);
  });

  it('a new connection on a 4-tuple the peer holds in TIME-WAIT is accepted at once (RFC 6528 ISN above the old sequence space)', () => {
    const p = new Pair();
    const { srv, cli, cs } = connected(p);
    const port = cli.localPort;
    // The server closes first and keeps the 4-tuple in TIME-WAIT; the client ends too.
    srv.write(new Uint8Array(5000).fill(7), 0, 5000);
    srv.shutdown();
    assert.ok(p.until(() => cs.ended, 5000));
    cli.shutdown();
    assert.ok(p.until(() => srv.state === S.TIME_WAIT && cli.closed, 5000), `server ${srv.stateName}, client ${cli.stateName}`);
    p.run(300);
    const rstBefore = p.b.counters.rstOut!;
    const cs2 = new Sink();
    const t0 = p.clock.t;
    const c2 = p.b.connect('100.64.0.1', 80, cs2, undefined, port);
    assert.ok(p.until(() => cs2.established, 5000), `second connection ${c2.stateName}`);
    assert.ok(p.clock.t - t0 < 50, `established after ${p.clock.t - t0} ms, not after a SYN retransmission`);
    assert.equal(p.b.counters.rstOut, rstBefore, 'no RST for a challenge ACK');
    assert.equal(p.b.counters.rtoExpired, 0);
  });

  it('SYN retransmission gives up after 6 retries with ETIMEDOUT', () => {
    const p = new Pair();
    p.wire.down = true;
    const s = new Sink();
    p.b.connect('100.64.0.1', 80, s);
    assert.ok(p.until(() => s.closed, 300_000));
    assert.equal(s.error?.code, 'ETIMEDOUT');
    assert.equal(p.sent.b, 7, 'one SYN and 6 retransmissions');
  });
});

describe('netstack TCP: data transfer', () => {
  it('moves 4 MB each way intact on a clean wire', () => {
    const p = new Pair();
    const { srv, cli, ss, cs } = connected(p);
    const up = randomBytes(4 << 20, 5), down = randomBytes(4 << 20, 6);
    const w1 = new Writer(cli, up), w2 = new Writer(srv, down);
    assert.ok(p.until(() => { w1.pump(); w2.pump(); return ss.ended && cs.ended; }, 60_000));
    assert.equal(sha(ss.data()), sha(up));
    assert.equal(sha(cs.data()), sha(down));
    assert.equal(p.a.counters.retransmits, 0);
  });

  it('recovers from 5% loss, 5% duplication and reordering: 2 MB arrive intact, using fast retransmit and SACK', () => {
    const p = new Pair({ seed: 42 });
    const { cli, ss } = connected(p);
    Object.assign(p.wire, { loss: 0.05, dup: 0.05, reorder: 0.1, delay: 2 });
    const data = randomBytes(2 << 20, 9);
    assert.ok(transfer(p, cli, ss, data), 'transfer finished');
    assert.equal(sha(ss.data()), sha(data));
    assert.ok((p.b.counters.fastRetransmit ?? 0) > 0, 'fast retransmit used');
    assert.ok((p.b.counters.sackRetransmits ?? 0) > 0, 'holes the receiver\'s SACK blocks showed were resent');
    assert.ok((p.a.counters.oooSegments ?? 0) > 0, 'out-of-order segments kept');
  });

  it('completes under 30% loss (slowly), intact', () => {
    const p = new Pair({ seed: 7 });
    const { cli, ss } = connected(p);
    Object.assign(p.wire, { loss: 0.3, delay: 2 });
    const data = randomBytes(200_000, 10);
    assert.ok(transfer(p, cli, ss, data, 3_600_000), 'transfer finished');
    assert.equal(sha(ss.data()), sha(data));
    assert.ok((p.b.counters.rtoExpired ?? 0) > 0);
  });

  it('advertises SACK blocks for out-of-order data, the newest block first (RFC 2018)', () => {
    const p = new Pair();
    const { cli, ss } = connected(p);
    void ss;
    const acks: Uint8Array[] = [];
    let n = 0;
    p.wire.tap = (from, pkt) => {
      if (from === 'b' && pkt.length > 60) { n++; if (n === 1) return false; } // lose the first data segment
      if (from === 'a') acks.push(pkt);
      return true;
    };
    const data = randomBytes(5 * 1240, 1);
    cli.write(data, 0, data.length);
    p.run(3);
    const withSack = acks.filter((a) => (a[32]! >> 4) * 4 > 20);
    assert.ok(withSack.length > 0, 'ACKs carry options');
    const last = withSack[withSack.length - 1]!;
    // Options at 40: NOP NOP SACK len, then blocks.
    assert.equal(last[40 + 2], 5, 'SACK option');
    const left = Buffer.from(last).readUInt32BE(44);
    const right = Buffer.from(last).readUInt32BE(48);
    assert.equal(right - left, 4 * 1240, 'one block covering the 4 segments after the hole');
  });

  it('retransmits on RTO with exponential backoff and fails after the retry limit with ETIMEDOUT', () => {
    const p = new Pair({ tcp: { dataRetries: 5 } });
    const { cli, cs } = connected(p);
    p.wire.down = true;
    cli.write(Buffer.from('hello'), 0, 5);
    const t0 = p.clock.t;
    assert.ok(p.until(() => cs.closed, 600_000));
    assert.equal(cs.error?.code, 'ETIMEDOUT');
    assert.equal(p.b.counters.rtoExpired, 6);
    // 0.2+0.4+0.8+1.6+3.2+6.4 s at least (RTO floor 200 ms after a sub-ms RTT sample, doubling).
    assert.ok(p.clock.t - t0 >= 12_000, `took ${p.clock.t - t0} ms`);
  });

  it('zero window: the sender probes while the receiver does not read, and resumes when it reads', () => {
    const p = new Pair({ tcp: { rcvBuf: 64 * 1024 } });
    const { cli, srv, ss } = connected(p);
    ss.reading = false;
    const data = randomBytes(300_000, 2);
    const w = new Writer(cli, data);
    p.until(() => { w.pump(); return false; }, 20_000);
    assert.ok(ss.bytes <= 64 * 1024 + 1240, `receiver held ${ss.bytes}`);
    assert.ok((p.b.counters.windowProbes ?? 0) > 2, `probes ${p.b.counters.windowProbes}`);
    assert.equal(cli.state, S.ESTABLISHED, 'probing keeps the connection up');
    ss.reading = true;
    srv.setUnread(0); // the application read everything it held: the window opens
    assert.ok(p.until(() => { w.pump(); return ss.ended; }, 60_000));
    assert.equal(sha(ss.data()), sha(data));
  });

  it('aborts an orphaned connection whose peer keeps a zero window for 60 s', () => {
    const p = new Pair({ tcp: { rcvBuf: 16 * 1024 } });
    const { cli, cs, ss } = connected(p);
    ss.reading = false;
    const data = randomBytes(100_000, 4);
    cli.write(data, 0, data.length);
    p.run(5_000);
    cli.orphan = true;
    assert.ok(p.until(() => cs.closed, 120_000));
    assert.equal(cs.error?.code, 'ETIMEDOUT');
    assert.equal(p.b.counters.zeroWindowAbort, 1);
  });

  it('keepalive: a peer that vanishes is detected after the probes go unanswered', () => {
    const p = new Pair({ tcp: { keepaliveIdleMs: 10_000, keepaliveIntervalMs: 1_000, keepaliveCount: 3 } });
    const { cli, cs } = connected(p);
    cli.setKeepalive(true);
    p.run(15_000);
    assert.equal(cli.state, S.ESTABLISHED, 'answered probes keep it up');
    assert.ok((p.b.counters.keepaliveProbes ?? 0) >= 1);
    p.wire.down = true;
    assert.ok(p.until(() => cs.closed, 30_000));
    assert.equal(cs.error?.code, 'ETIMEDOUT');
  });

  it('grows the receive window while the peer fills it and the reader keeps up, up to rcvBufMax, so a long path is not window-bound', () => {
    // A 20 ms round trip: 1 MiB a round trip is ~420 Mbit/s; the sender could keep 8 MiB in flight.
    const run = (rcvBufMax: number): { ms: number; wnd: number; grown: number } => {
      const p = new Pair({ tcp: { rcvBufMax }, tcpB: { sndBuf: 8 << 20 } });
      const { srv, cli, ss } = connected(p);
      p.wire.delay = 10;
      const data = randomBytes(24 << 20, 12);
      const t0 = p.clock.t;
      assert.ok(transfer(p, cli, ss, data), 'transfer finished');
      assert.equal(sha(ss.data()), sha(data));
      return { ms: p.clock.t - t0, wnd: srv.rcvWindow(), grown: p.a.counters.rcvBufGrown ?? 0 };
    };
    const fixed = run(1 << 20), tuned = run(8 << 20);
    assert.equal(fixed.grown, 0);
    assert.equal(fixed.wnd, 1 << 20);
    assert.equal(tuned.grown, 3, 'doubled 1 -> 2 -> 4 -> 8 MiB');
    assert.equal(tuned.wnd, 0xffff << 7, '8 MiB, as far as window scale 7 reaches');
    assert.ok(tuned.ms < fixed.ms * 0.6, `auto-tuned ${tuned.ms} ms against a fixed 1 MiB window's ${fixed.ms} ms`);
  });

  it('grows the send buffer with the congestion window up to sndBufMax, so a long path is not send-buffer-bound', () => {
    const run = (sndBufMax: number): { ms: number; max: number } => {
      const p = new Pair({ tcp: { rcvBuf: 8 << 20 }, tcpB: { sndBufMax } });
      const { cli, ss } = connected(p);
      p.wire.delay = 10;
      const data = randomBytes(24 << 20, 14);
      const t0 = p.clock.t;
      assert.ok(transfer(p, cli, ss, data), 'transfer finished');
      assert.equal(sha(ss.data()), sha(data));
      return { ms: p.clock.t - t0, max: cli.snd.max };
    };
    const fixed = run(1 << 20), tuned = run(4 << 20);
    assert.equal(fixed.max, 1 << 20);
    assert.equal(tuned.max, 4 << 20);
    assert.ok(tuned.ms < fixed.ms * 0.6, `auto-tuned ${tuned.ms} ms against a fixed 1 MiB send buffer's ${fixed.ms} ms`);
  });

  it('keeps the receive window at rcvBuf while the reader lags (the buffer is full of unread data, not in flight)', () => {
    const p = new Pair({ tcp: { rcvBuf: 256 * 1024 } });
    const { srv, cli, ss } = connected(p);
    p.wire.delay = 10;
    ss.reading = false;
    const w = new Writer(cli, randomBytes(4 << 20, 13));
    p.until(() => { w.pump(); return false; }, 2_000);
    assert.ok(ss.bytes >= 200 * 1024, `the reader got ${ss.bytes} before it stopped reading`);
    assert.equal(p.a.counters.rcvBufGrown ?? 0, 0);
    assert.equal(srv.rcvBuf, 256 * 1024);
    assert.ok(ss.bytes < 260 * 1024, `held ${ss.bytes}`);
  });

  it('ACKs the first segments at once (quick ACK), then every second segment or after the 40 ms delayed-ACK timer', () => {
    const p = new Pair();
    const { cli } = connected(p);
    let acks = 0;
    p.wire.tap = (from) => { if (from === 'a') acks++; return true; };
    cli.write(Buffer.from('one'), 0, 3);
    p.run(5);
    assert.equal(acks, 1, 'quick ACK at the start');
    for (let i = 0; i < 20; i++) { cli.write(Buffer.from('x'), 0, 1); p.run(5); }
    p.run(50);
    acks = 0;
    cli.write(Buffer.from('two'), 0, 3);
    p.run(30);
    assert.equal(acks, 0, 'a lone segment is not ACKed at once');
    p.run(15);
    assert.equal(acks, 1, 'the delayed ACK went out by 40 ms');
  });

  it('stretches ACKs over a batch of in-order segments: one per ackStretchMax segments, and one at the batch end for the rest', () => {
    const p = new Pair({ tcp: { ackStretchMax: 256 } });
    const { srv, ss } = connected(p);
    // Past the quick-ACK start (16 segments ACKed at once), as in a bulk download.
    const seg = new Uint8Array(1000);
    let seq = srv.rcvNxt;
    const batch = (n: number): number => {
      let acks = 0;
      p.wire.tap = (from) => { if (from === 'a') acks++; return false; };
      for (let i = 0; i < n; i++) {
        const pkt = forgeSeg(srv, { seq, ack: srv.sndNxt, flags: F.ACK, data: seg });
        p.a.input(pkt, 0, pkt.length);
        seq = (seq + seg.length) >>> 0;
      }
      p.a.endBatch();
      delete p.wire.tap;
      return acks;
    };
    batch(20);
    assert.equal(batch(600), 3, '600 segments: ACKs after 256 and 512, then the batch end');
    assert.equal(batch(100), 1, 'a shorter batch: its end ACKs it once');
    assert.equal(ss.bytes, 720 * 1000);
    assert.equal(srv.rcvNxt, seq);
    // The default covers as many segments per ACK as gVisor's (tailscaled) per-batch ACKs did in
    // bench-netstack (~200 per ACK), not every 2nd: each ACK makes the sender's kernel transmit a burst.
    assert.equal(DEFAULT_TCP.ackStretchMax, 256);
  });
});

describe('netstack TCP: RST in every state (RFC 9293 3.10.7, RFC 5961)', () => {
  const states: [string, (p: Pair) => { victim: Tcb; sink: Sink }][] = [
    ['ESTABLISHED', (p) => { const { srv, ss } = connected(p); return { victim: srv, sink: ss }; }],
    ['FIN-WAIT-1', (p) => { const { srv, ss } = connected(p); p.wire.down = true; srv.shutdown(); return { victim: srv, sink: ss }; }],
    ['FIN-WAIT-2', (p) => { const { srv, ss } = connected(p); srv.shutdown(); p.run(5); return { victim: srv, sink: ss }; }],
    ['CLOSE-WAIT', (p) => { const { cli, srv, ss } = connected(p); cli.shutdown(); p.run(5); return { victim: srv, sink: ss }; }],
    ['LAST-ACK', (p) => { const { cli, srv, ss } = connected(p); cli.shutdown(); p.run(5); p.wire.down = true; srv.shutdown(); return { victim: srv, sink: ss }; }],
    ['CLOSING', (p) => { const { cli, srv, ss } = connected(p); p.wire.tap = (from, pkt) => !(from === 'a' && tcpFlags(pkt) & F.FIN) ; cli.shutdown(); srv.shutdown(); p.run(5); return { victim: srv, sink: ss }; }],
  ];
  for (const [name, setup] of states) {
    it(`in ${name}: a RST at RCV.NXT closes the connection; one elsewhere in the window draws a challenge ACK`, () => {
      const p = new Pair();
      const { victim, sink } = setup(p);
      assert.equal(victim.stateName, name);
      p.wire.down = false;
      delete p.wire.tap;
      const before = p.a.counters.challengeAck ?? 0;
      p.inject(p.a, forgeRst(victim, 100));
      assert.equal(victim.stateName, name, 'an inexact RST does not reset');
      assert.equal(p.a.counters.challengeAck, before + 1);
      p.inject(p.a, forgeRst(victim, 0));
      assert.equal(victim.state, S.CLOSED);
      if (name === 'ESTABLISHED' || name === 'FIN-WAIT-1' || name === 'FIN-WAIT-2' || name === 'CLOSE-WAIT') assert.equal(sink.error?.code, 'ECONNRESET');
      assert.equal(p.a.connectionCount, 0);
    });
  }

  it('in TIME-WAIT: a RST at RCV.NXT ends it early', () => {
    const p = new Pair();
    const { cli, srv } = connected(p);
    srv.shutdown();
    p.run(5);
    cli.shutdown();
    p.run(5);
    assert.equal(srv.state, S.TIME_WAIT);
    p.inject(p.a, forgeRst(srv, 0));
    assert.equal(srv.state, S.CLOSED);
  });

  it('in SYN-SENT: a RST acknowledging our SYN refuses the connection; one with a bad ACK is ignored', () => {
    const p = new Pair();
    p.wire.down = true;
    const s = new Sink();
    const c = p.b.connect('100.64.0.1', 80, s);
    p.inject(p.b, forgeSeg(c, { seq: 0, ack: (c.iss + 5) >>> 0, flags: F.RST | F.ACK }));
    assert.equal(c.state, S.SYN_SENT, 'bad ACK: ignored');
    p.inject(p.b, forgeSeg(c, { seq: 0, ack: (c.iss + 1) >>> 0, flags: F.RST | F.ACK }));
    assert.equal(c.state, S.CLOSED);
    assert.equal(s.error?.code, 'ECONNREFUSED');
  });

  it('in SYN-RECEIVED: a RST at RCV.NXT removes the half-open connection', () => {
    const p = new Pair();
    let srv: Tcb | undefined;
    p.a.listen(80, (c) => { srv = c; });
    p.wire.tap = (from) => from === 'b'; // A's SYN-ACK never arrives
    const c = p.b.connect('100.64.0.1', 80, new Sink());
    p.run(3);
    assert.equal(p.a.halfOpenCount, 1);
    p.inject(p.a, buildSeg({ src: c.localAddr, dst: c.remoteAddr, sport: c.localPort, dport: c.remotePort, seq: (c.iss + 1) >>> 0, ack: 0, flags: F.RST }));
    assert.equal(p.a.halfOpenCount, 0);
    assert.equal(p.a.connectionCount, 0);
    assert.equal(srv, undefined);
  });
});

/** A RST from the peer of `victim` at victim's RCV.NXT + off, as raw IPv4. */
function forgeRst(victim: Tcb, off: number): Uint8Array {
  return forgeSeg(victim, { seq: (victim.rcvNxt + off) >>> 0, ack: victim.sndNxt, flags: F.RST | F.ACK }, true);
}

/** A segment from the peer of `c` (toward c), IPv4. */
function forgeSeg(c: Tcb, f: { seq: number; ack: number; flags: number; data?: Uint8Array; wnd?: number }, _toVictim = true): Uint8Array {
  return buildSeg({ src: c.remoteAddr, dst: c.localAddr, sport: c.remotePort, dport: c.localPort, ...f });
}

