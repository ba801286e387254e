// The stack's input boundary: bad checksums, fragments, junk, SYN floods, overlapping and
// out-of-window segments, zero-window peers; ICMP echo and UDP. Everything bad is dropped and
// counted, nothing throws, memory stays bounded.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Pair, Sink, Writer, buildSeg, prng } from './pair.ts';
import { F } from '../../src/netstack/segment.ts';
import { Netstack, type UdpDatagram } from '../../src/netstack/stack.ts';
import { fold, parseAddr, pseudoSum, sum16, formatAddr, useNativeSum } from '../../src/netstack/ip.ts';
import { native } from '../../src/native/index.ts';
import { S, type Tcb } from '../../src/netstack/tcp.ts';

const A = new Uint8Array([100, 64, 0, 1, ...new Array<number>(12).fill(0)]);
const B = new Uint8Array([100, 64, 0, 2, ...new Array<number>(12).fill(0)]);

function lone(): { s: Netstack; out: Uint8Array[]; clock: { t: number } } {
  const clock = { t: 1000 };
  const out: Uint8Array[] = [];
  const s = new Netstack({ now: () => clock.t, output: (b, o, l) => { out.push(b.slice(o, o + l)); } });
  s.setAddresses(['100.64.0.1/32', 'fd7a:115c:a1e0::1/128']);
  return { s, out, clock };
}

function echo4(id: number, payload: Uint8Array, dst = A): Buffer {
  const p = Buffer.alloc(28 + payload.length);
  p[0] = 0x45; p.writeUInt16BE(p.length, 2); p[8] = 64; p[9] = 1;
  p.set(B.subarray(0, 4), 12); p.set(dst.subarray(0, 4), 16);
  p.writeUInt16BE(fold(sum16(p, 0, 20)), 10);
  p[20] = 8; p.writeUInt16BE(id, 24); p.writeUInt16BE(1, 26); p.set(payload, 28);
  p.writeUInt16BE(fold(sum16(p, 20, 8 + payload.length)), 22);
  return p;
}

function echo6(id: number): Uint8Array {
  const src = new Uint8Array(16), dst = new Uint8Array(16);
  parseAddr('fd7a:115c:a1e0::2', src); parseAddr('fd7a:115c:a1e0::1', dst);
  const p = Buffer.alloc(48);
  p[0] = 0x60; p.writeUInt16BE(8, 4); p[6] = 58; p[7] = 64; p.set(src, 8); p.set(dst, 24);
  p[40] = 128; p.writeUInt16BE(id, 44);
  p.writeUInt16BE(fold(sum16(p, 40, 8, pseudoSum(6, src, 0, dst, 0, 58, 8))), 42);
  return p;
}

describe('netstack input boundary', () => {
  it('answers ICMP echo to its IPv4 and IPv6 addresses with valid checksums, and nothing else', () => {
    const { s, out } = lone();
    s.input(echo4(7, Buffer.from('hello')), 0, 33);
    assert.equal(out.length, 1);
    const r = Buffer.from(out[0]!);
    assert.equal(r[20], 0, 'echo reply');
    assert.equal(r.readUInt16BE(24), 7);
    assert.equal(r.subarray(28).toString(), 'hello');
    assert.equal(fold(sum16(r, 0, 20)), 0);
    assert.equal(fold(sum16(r, 20, r.length - 20)), 0);
    assert.equal(formatAddr(4, r, 16), '100.64.0.2');
    s.input(echo6(9), 0, 48);
    assert.equal(out.length, 2);
    const r6 = Buffer.from(out[1]!);
    assert.equal(r6[40], 129);
    assert.equal(fold(sum16(r6, 40, 8, pseudoSum(6, r6, 8, r6, 24, 58, 8))), 0);
    s.input(echo4(8, Buffer.from('x'), new Uint8Array([100, 64, 0, 9])), 0, 29);
    assert.equal(out.length, 2, 'no reply for an address not ours');
    assert.equal(s.counters.dropNotLocal, 1);
  });

  it('drops and counts bad IP checksums, bad TCP checksums, IPv4 and IPv6 fragments, and unknown protocols', () => {
    const { s, out } = lone();
    const good = buildSeg({ src: B, dst: A, sport: 1234, dport: 80, seq: 1, ack: 0, flags: F.SYN });
    const badIp = Buffer.from(good); badIp[10] = badIp[10]! ^ 0xff;
    s.input(badIp, 0, badIp.length);
    const badTcp = Buffer.from(good); badTcp[36] = badTcp[36]! ^ 0x01;
    s.input(badTcp, 0, badTcp.length);
    const frag = echo4(1, Buffer.from('abc'));
    frag[6] = 0x20; // MF
    frag.writeUInt16BE(0, 10); frag.writeUInt16BE(fold(sum16(frag, 0, 20)), 10);
    s.input(frag, 0, frag.length);
    const f6 = Buffer.from(echo6(1)); f6[6] = 44;
    s.input(f6, 0, f6.length);
    const gre = Buffer.from(good) as Buffer; gre[9] = 47; gre.writeUInt16BE(0, 10); gre.writeUInt16BE(fold(sum16(gre, 0, 20)), 10);
    s.input(gre, 0, gre.length);
    assert.equal(s.counters.dropIpBadChecksum, 1);
    assert.equal(s.counters.dropTcpBadChecksum, 1);
    assert.equal(s.counters.dropFragment, 2);
    assert.equal(s.counters.dropUnsupportedProto, 1);
    assert.equal(out.length, 0, 'nothing answered');
  });

  it('with the addon\'s sum16 installed (as the netstack worker does), a 1 MB transfer arrives intact and a segment with one bit flipped in its data is dropped as a bad checksum', () => {
    useNativeSum(native().sum16?.bind(native()));
    try {
      const p = new Pair();
      let srv: Tcb | undefined;
      const ss = new Sink();
      p.a.listen(80, (c) => { srv = c; c.handler = ss; });
      const cli = p.b.connect('100.64.0.1', 80, new Sink());
      assert.ok(p.until(() => srv !== undefined && cli.state === S.ESTABLISHED, 5000));
      let flipped = 0;
      p.wire.tap = (from, pkt) => { if (from === 'b' && pkt.length > 1000 && flipped++ === 3) pkt[700] = pkt[700]! ^ 0x10; return true; };
      const data = Buffer.alloc(1 << 20);
      for (let i = 0; i < data.length; i++) data[i] = (i * 31 + 7) & 0xff;
      const w = new Writer(cli, data);
      assert.ok(p.until(() => { w.pump(); return ss.ended; }, 60_000));
      assert.ok(ss.data().equals(data), 'intact');
      assert.equal(p.a.counters.dropTcpBadChecksum, 1);
    } finally {
      useNativeSum(undefined);
    }
  });

  it('survives 20000 random and mutated packets without throwing, and holds no state for them', () => {
    const { s } = lone();
    s.listen(80, () => {});
    const r = prng(99);
    const seed = buildSeg({ src: B, dst: A, sport: 1000, dport: 80, seq: 5, ack: 9, flags: F.ACK, data: new Uint8Array(40), opts: new Uint8Array([2, 4, 5, 0, 1, 3, 3, 7]) });
    for (let i = 0; i < 20_000; i++) {
      let p: Uint8Array;
      if (i % 2 === 0) { p = new Uint8Array(Math.floor(r() * 120)); for (let j = 0; j < p.length; j++) p[j] = Math.floor(r() * 256); if (p.length > 0) p[0] = (r() < 0.5 ? 0x45 : 0x60); }
      else { p = Uint8Array.from(seed); for (let k = 0; k < 3; k++) p[Math.floor(r() * p.length)] = Math.floor(r() * 256); }
      s.input(p, 0, p.length);
    }
    s.endBatch();
    assert.equal(s.counters.rxPackets, 20_000);
    assert.ok(s.connectionCount <= 1, `connections ${s.connectionCount}`);
  });

  it('bounds the half-open table under a SYN flood (drop-oldest) and still accepts a real client', () => {
    const p = new Pair({ limits: { maxHalfOpen: 64 } });
    let accepted = 0;
    p.a.listen(80, (c) => { accepted++; c.handler = new Sink(); });
    for (let i = 0; i < 5000; i++) {
      const src = new Uint8Array([100, 64, (i >> 8) & 255, i & 255, ...new Array<number>(12).fill(0)]);
      p.a.input(buildSeg({ src, dst: A, sport: 1024 + (i % 60000), dport: 80, seq: i * 7919, ack: 0, flags: F.SYN }), 0, 40);
    }
    assert.equal(p.a.halfOpenCount, 64);
    assert.equal(p.a.counters.synFloodDrop, 5000 - 64);
    const cs = new Sink();
    p.b.connect('100.64.0.1', 80, cs);
    assert.ok(p.until(() => cs.established, 5000));
    p.run(5);
    assert.equal(accepted, 1);
    p.run(200_000);
    assert.equal(p.a.halfOpenCount, 0, 'SYN-ACK retries give up on the spoofed ones');
  });

  it('trims overlapping and duplicated segments so the byte stream is exact', () => {
    const p = new Pair();
    let srv: Tcb | undefined;
    const ss = new Sink();
    p.a.listen(80, (c) => { srv = c; c.handler = ss; });
    const cs = new Sink();
    const cli = p.b.connect('100.64.0.1', 80, cs);
    assert.ok(p.until(() => cs.established && srv !== undefined, 1000));
    p.wire.down = true; // we send by hand from B's side
    const base = cli.sndNxt;
    const text = Buffer.from('abcdefghijklmnopqrstuvwxyz');
    const seg = (from: number, to: number) => buildSeg({ src: B, dst: A, sport: cli.localPort, dport: 80, seq: (base + from) >>> 0, ack: cli.rcvNxt, flags: F.ACK, data: text.subarray(from, to) });
    for (const [f, t] of [[10, 20], [15, 25], [12, 14], [20, 26], [0, 5], [3, 12]] as const) p.inject(p.a, seg(f, t));
    assert.equal(ss.data().toString(), text.toString());
    assert.ok((p.a.counters.overlapOoo ?? 0) + (p.a.counters.dupOoo ?? 0) + (p.a.counters.partialDup ?? 0) >= 3);
  });

  it('drops out-of-window segments with an ACK, and keeps out-of-order data bounded by the window', () => {
    const p = new Pair({ tcp: { rcvBuf: 32 * 1024 } });
    let srv: Tcb | undefined;
    const ss = new Sink();
    p.a.listen(80, (c) => { srv = c; c.handler = ss; });
    const cs = new Sink();
    const cli = p.b.connect('100.64.0.1', 80, cs);
    assert.ok(p.until(() => cs.established && srv !== undefined, 1000));
    const acks: number[] = [];
    p.wire.tap = (from) => { if (from === 'a') acks.push(1); return false; };
    const far = buildSeg({ src: B, dst: A, sport: cli.localPort, dport: 80, seq: (cli.sndNxt + 10_000_000) >>> 0, ack: cli.rcvNxt, flags: F.ACK, data: new Uint8Array(100) });
    p.inject(p.a, far);
    assert.equal(p.a.counters.dropOutOfWindow, 1);
    assert.equal(acks.length, 1, 'answered with an ACK');
    // A flood of out-of-order segments: only what fits the window is kept.
    for (let i = 1; i < 2000; i++) {
      p.inject(p.a, buildSeg({ src: B, dst: A, sport: cli.localPort, dport: 80, seq: (cli.sndNxt + i * 1000) >>> 0, ack: cli.rcvNxt, flags: F.ACK, data: new Uint8Array(500) }));
    }
    assert.ok(srv!.rcvWindow() >= 0);
    assert.ok(ss.bytes === 0);
    assert.ok((p.a.counters.dropOutOfWindow ?? 0) > 1900, 'beyond the 32 KiB window: dropped');
  });

  it('holds a connection to a zero-window peer that never opens without growing: bounded buffer, probes, then abort once orphaned', () => {
    const p = new Pair({ tcp: { sndBuf: 256 * 1024 }, tcpB: { rcvBuf: 8 * 1024, sndBuf: 256 * 1024 } });
    let srv: Tcb | undefined;
    const ss = new Sink();
    ss.reading = false;
    p.b.listen(80, (c) => { srv = c; c.handler = ss; });
    const cs = new Sink();
    const cli = p.a.connect('100.64.0.2', 80, cs);
    assert.ok(p.until(() => cs.established && srv !== undefined, 1000));
    const chunk = new Uint8Array(64 * 1024);
    let queued = 0;
    for (let i = 0; i < 100; i++) { queued += cli.write(chunk, 0, chunk.length); p.run(100); }
    assert.equal(queued, 256 * 1024 + 8 * 1024, 'writes stop at the send buffer plus what the peer took');
    assert.ok(cli.snd.capacity <= 256 * 1024);
    assert.ok((p.a.counters.windowProbes ?? 0) > 0);
    assert.equal(cli.state, S.ESTABLISHED);
    cli.orphan = true;
    assert.ok(p.until(() => cs.closed, 200_000));
    assert.equal(cs.error?.code, 'ETIMEDOUT');
  });

  it('delivers UDP to a bound port and sends datagrams with a valid checksum', () => {
    const p = new Pair();
    const got: string[] = [];
    p.a.bindUdp(53, (d: UdpDatagram) => {
      got.push(Buffer.from(d.buf.subarray(d.off, d.off + d.len)).toString());
      p.a.sendUdp(d.family, d.dst, d.dstPort, d.src, d.srcPort, Buffer.from('pong'), 0, 4);
    });
    const back: string[] = [];
    p.b.onUdp = (d) => { back.push(Buffer.from(d.buf.subarray(d.off, d.off + d.len)).toString()); };
    const src = new Uint8Array(16), dst = new Uint8Array(16);
    parseAddr('100.64.0.2', src); parseAddr('100.64.0.1', dst);
    p.b.sendUdp(4, src, 5353, dst, 53, Buffer.from('ping'), 0, 4);
    p.run(5);
    assert.deepEqual(got, ['ping']);
    p.b.promiscuous = true;
    p.run(5);
    assert.deepEqual(back, ['pong']);
    p.b.sendUdp(4, src, 5353, dst, 54, Buffer.from('x'), 0, 1);
    p.run(5);
    assert.equal(p.a.counters.dropUdpNoListener, 1);
  });
});

describe('Internet checksum (RFC 1071)', () => {
  /** The byte-pair definition, for comparison. */
  const reference = (b: Uint8Array, off: number, len: number, sum: number): number => {
    for (let i = 0; i < len; i += 2) sum += (b[off + i]! << 8) | (i + 1 < len ? b[off + i + 1]! : 0);
    return sum;
  };

  it('sums word-wise exactly as byte by byte for every alignment, length and starting sum', () => {
    const backing = new Uint8Array(4096 + 16);
    for (let i = 0; i < backing.length; i++) backing[i] = (i * 151 + 7) & 255;
    backing.fill(0xff, 100, 1500); // long runs of 0xffff words exercise the carries
    let cases = 0;
    for (const base of [0, 1, 2, 3, 5, 8]) {
      const view = backing.subarray(base, base + 4096);
      for (const off of [0, 1, 2, 3, 6, 20, 40, 99]) {
        for (const len of [0, 1, 2, 3, 63, 64, 65, 66, 67, 1240, 1279, 1280, 2000, 3900]) {
          for (const start of [0, 0x1fffe, 123456789]) {
            assert.equal(fold(sum16(view, off, len, start)), fold(reference(view, off, len, start)), `base ${base} off ${off} len ${len}`);
            cases++;
          }
        }
      }
    }
    assert.equal(cases, 6 * 8 * 14 * 3);
  });

  it('finds a single flipped bit in a full-size segment', () => {
    const p = new Uint8Array(1280);
    for (let i = 0; i < p.length; i++) p[i] = (i * 31) & 255;
    const good = fold(sum16(p, 0, p.length));
    for (const at of [0, 1, 63, 64, 640, 1279]) {
      p[at] = p[at]! ^ 4;
      assert.notEqual(fold(sum16(p, 0, p.length)), good, `bit flipped at ${at}`);
      p[at] = p[at]! ^ 4;
    }
  });
});
