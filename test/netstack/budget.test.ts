// The stack-wide buffer budget (src/netstack/budget.ts) on the fake clock: many connections whose
// readers stall cannot hold more than the hard limit, buffers stop growing under pressure, one
// connection alone still grows to its ceilings, closing gives the budget back, and a window
// already advertised is honoured while new ones are clamped.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Pair, Sink, Writer, prng } from './pair.ts';
import { Netstack } from '../../src/netstack/stack.ts';
import type { Tcb, TcpError, TcpHandler } from '../../src/netstack/tcp.ts';

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

function randomBytes(n: number, seed: number): Uint8Array {
  const r = prng(seed);
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(r() * 256);
  return b;
}

/** A reader that consumes the first `limit` bytes at once, then holds everything after (a stalled local reader). */
class StallingSink implements TcpHandler {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  ended = false;
  closed = false;
  error: TcpError | null = null;
  limit: number;
  constructor(limit: number) { this.limit = limit; }
  onData(c: Tcb, buf: Uint8Array, off: number, len: number): void {
    this.chunks.push(Buffer.from(buf.subarray(off, off + len)));
    this.bytes += len;
    c.setUnread(Math.max(0, this.bytes - this.limit));
  }
  onEnd(): void { this.ended = true; }
  onWritable(): void {}
  onClose(_c: Tcb, err: TcpError | null): void { this.closed = true; this.error = err; }
  data(): Buffer { return Buffer.concat(this.chunks); }
}

/** A listens on 80; B opens n connections to it; returns the pairs of ends once established. */
function connectMany(p: Pair, n: number, sink: () => TcpHandler): { srv: Tcb[]; cli: Tcb[]; sinks: TcpHandler[] } {
  const srv: Tcb[] = [], sinks: TcpHandler[] = [];
  p.a.listen(80, (c) => { const s = sink(); sinks.push(s); srv.push(c); c.handler = s; });
  const cli: Tcb[] = [];
  for (let i = 0; i < n; i++) cli.push(p.b.connect('100.64.0.1', 80, new Sink()));
  assert.ok(p.until(() => srv.length === n, 5000), 'all connections established');
  return { srv, cli, sinks };
}

/** Sum of a field over connections. */
const total = (ts: Tcb[], f: (t: Tcb) => number): number => ts.reduce((s, t) => s + f(t), 0);

/** Window right edges A advertises, checked to never move left (RFC 9293 3.8.6.2.2) beyond the scale's rounding (RFC 7323 2.4). */
function watchWindows(p: Pair, shift: () => number): { windows: number[]; shrank: number } {
  const w = { windows: [] as number[], shrank: 0 };
  let right = -1;
  p.wire.tap = (from, pkt) => {
    if (from !== 'a' || pkt[9] !== 6) return true;
    const flags = pkt[20 + 13]!;
    if (flags & 0x06) return true; // SYN, RST
    const ack = Buffer.from(pkt).readUInt32BE(28);
    const wnd = Buffer.from(pkt).readUInt16BE(34) << shift();
    const edge = (ack + wnd) >>> 0;
    if (right >= 0 && ((edge - right) | 0) <= -(1 << shift())) w.shrank++;
    if (right < 0 || ((edge - right) | 0) > 0) right = edge;
    w.windows.push(wnd);
    return true;
  };
  return w;
}

describe('netstack buffer budget: a stack-wide cap on TCP buffers', () => {
  // Receiver A scaled down: 64 KiB buffers growing to 1 MiB, pressure at 2 MiB, hard limit 3 MiB.
  const small = { rcvBuf: 64 << 10, rcvBufMax: 1 << 20, memPressure: 2 << 20, memHard: 3 << 20, rcvBufMin: 16 << 10 };

  /** 16 connections B -> A, each sending 3 MiB; A's readers take the first 1.5 MiB, then stall. */
  function stalled(tcp: typeof small) {
    const p = new Pair({ tcp, tcpB: {} });
    p.wire.delay = 5;
    const { srv, cli, sinks } = connectMany(p, 16, () => new StallingSink(1536 << 10));
    const data = cli.map((_c, i) => randomBytes(3 << 20, 100 + i));
    const writers = cli.map((c, i) => new Writer(c, data[i]!));
    let maxHeld = 0;
    p.until(() => {
      for (const w of writers) w.pump();
      maxHeld = Math.max(maxHeld, total(srv, (t) => t.unread));
      return false;
    }, 8_000);
    return { p, srv, cli, sinks: sinks as StallingSink[], data, writers, maxHeld };
  }

  it('many connections whose readers stall grow by no more than the pressure threshold in all and never hold more than the hard limit plus each one its share; reading again, all finish intact', () => {
    const s = stalled(small);
    const { p, srv } = s;
    const held = total(srv, (t) => t.unread);
    const bufs = total(srv, (t) => t.rcvBuf);
    assert.ok(s.sinks.every((k) => k.bytes > k.limit), 'every reader stalled with data held');
    // The bound: the hard limit, plus what each connection keeps whatever the budget (its share of
    // hard / 32 = 96 KiB, at most its initial 64 KiB; budget.ts).
    const bound = small.memHard + 16 * small.rcvBuf;
    assert.ok(s.maxHeld <= bound, `held at most ${s.maxHeld} bytes unread, bound ${bound}`);
    assert.ok(held > small.memPressure, `the stalled readers hold ${held}: the budget was used, not idle`);
    assert.ok(bufs - 16 * small.rcvBuf <= small.memPressure, `receive buffers grew by ${bufs - 16 * small.rcvBuf} in all, pressure at ${small.memPressure}`);
    assert.ok(srv.some((t) => t.rcvBuf > small.rcvBuf), 'some connections grew before the pressure');
    assert.ok(p.a.counters.bufPressure! >= 1, 'the pressure was counted');
    assert.ok(p.a.counters.bufGrowDenied! >= 1, 'refused growths were counted');
    assert.ok(p.a.budget.peak <= bound, `the budget peaked at ${p.a.budget.peak}`);
    assert.equal(p.a.counters.bufBytes, p.a.budget.used);
    // Readers catch up: every stream completes intact, and the budget is back to zero once all closed.
    for (let i = 0; i < srv.length; i++) { s.sinks[i]!.limit = Infinity; srv[i]!.setUnread(0); }
    assert.ok(p.until(() => { for (const w of s.writers) w.pump(); return s.sinks.every((k) => k.ended); }, 60_000), 'all transfers finished');
    for (let i = 0; i < srv.length; i++) assert.equal(sha(s.sinks[i]!.data()), sha(s.data[i]!), `connection ${i} intact`);
    for (const t of srv) t.shutdown();
    assert.ok(p.until(() => srv.every((t) => t.charged === 0), 5_000));
    assert.equal(p.a.budget.used, 0);
  });

  it('without the budget (limits far away) the same stalled readers hold several times the hard limit (what the cap prevents)', () => {
    const s = stalled({ ...small, memPressure: 1 << 30, memHard: 1 << 30 });
    assert.ok(s.maxHeld > 3 * small.memHard, `held ${s.maxHeld} bytes unread`);
    assert.equal(s.p.a.counters.bufPressure, 0);
  });

  it('one fast connection alone still grows both buffers to 4 MiB under the default budget', () => {
    const p = new Pair();
    const ss = new Sink();
    let srv: Tcb | undefined;
    p.a.listen(80, (c) => { srv = c; c.handler = ss; });
    const cli = p.b.connect('100.64.0.1', 80, new Sink());
    assert.ok(p.until(() => srv !== undefined, 5000));
    p.wire.delay = 10;
    const data = randomBytes(24 << 20, 7);
    const w = new Writer(cli, data);
    assert.ok(p.until(() => { w.pump(); return ss.ended; }, 600_000), 'transfer finished');
    assert.equal(sha(ss.data()), sha(data));
    assert.equal(srv!.rcvBuf, 4 << 20, 'receive buffer at rcvBufMax');
    assert.equal(cli.snd.max, 4 << 20, 'send buffer at sndBufMax');
    assert.equal(p.a.counters.bufGrowDenied, 0);
    assert.equal(p.b.counters.bufGrowDenied, 0);
    assert.ok(p.a.budget.peak >= 4 << 20 && p.a.budget.peak <= p.a.cfg.memPressure, `receiver's budget peaked at ${p.a.budget.peak}`);
  });

  it('closing connections (orderly and by RST) returns their budget, and a new connection grows again', () => {
    const tcp = { rcvBuf: 256 << 10, rcvBufMax: 1 << 20, memPressure: 2 << 20, memHard: 3 << 20 };
    const p = new Pair({ tcp, tcpB: {} });
    p.wire.delay = 5;
    const { srv, cli, sinks } = connectMany(p, 12, () => new StallingSink(0));
    const writers = cli.map((c, i) => new Writer(c, randomBytes(512 << 10, 20 + i), false));
    p.until(() => { for (const w of writers) w.pump(); return false; }, 3_000);
    assert.ok(p.a.budget.used > tcp.memPressure, `held ${p.a.budget.used}`);
    assert.ok(p.a.budget.underPressure);
    assert.equal(p.a.budget.used, total(srv, (t) => t.charged), 'the budget is the sum of the charges');
    // Half end with a RST from A, half orderly (A's reader gives up what it held, both sides close).
    for (let i = 0; i < 6; i++) srv[i]!.abort();
    for (let i = 6; i < 12; i++) { (sinks[i] as StallingSink).limit = Infinity; srv[i]!.setUnread(0); srv[i]!.shutdown(); cli[i]!.shutdown(); }
    assert.ok(p.until(() => srv.every((t) => t.closed || t.stateName === 'TIME-WAIT'), 10_000), 'all closed');
    assert.equal(p.a.budget.used, 0);
    assert.equal(p.a.budget.underPressure, false);
    assert.equal(p.a.budget.grown, 0, 'their growth given back');
    assert.equal(p.a.budget.members, 0, 'none still counted for the share');
    // A new connection whose reader keeps up grows its window again.
    const grownBefore = p.a.counters.rcvBufGrown ?? 0;
    const ss = new Sink();
    let fresh: Tcb | undefined;
    p.a.listen(81, (c) => { fresh = c; c.handler = ss; });
    const c2 = p.b.connect('100.64.0.1', 81, new Sink());
    assert.ok(p.until(() => fresh !== undefined, 5000));
    const data = randomBytes(4 << 20, 30);
    const w = new Writer(c2, data);
    assert.ok(p.until(() => { w.pump(); return ss.ended; }, 120_000));
    assert.equal(sha(ss.data()), sha(data));
    assert.ok((p.a.counters.rcvBufGrown ?? 0) > grownBefore, 'grew after the budget came back');
    assert.equal(fresh!.rcvBuf, tcp.rcvBufMax);
    // It ends orderly with everything read (nothing charged when it reaches TIME-WAIT or CLOSED): its growth comes back too.
    fresh!.shutdown();
    assert.ok(p.until(() => fresh!.closed || fresh!.stateName === 'TIME-WAIT', 10_000), 'fresh closed');
    assert.equal(p.a.budget.used, 0);
    assert.equal(p.a.budget.grown, 0, 'the fresh connection\'s growth given back');
    assert.equal(p.a.budget.members, 0);
  });

  it('past the hard limit a window already advertised is honoured in full and never shrunk, while new windows stay at the connection\'s share until the budget frees', () => {
    const tcp = { rcvBuf: 256 << 10, rcvBufMax: 256 << 10, memPressure: 256 << 10, memHard: 256 << 10, rcvBufMin: 16 << 10 };
    const p = new Pair({ tcp, tcpB: {} });
    const ss = new StallingSink(Infinity);
    let srv: Tcb | undefined;
    p.a.listen(80, (c) => { srv = c; c.handler = ss; });
    const cli = p.b.connect('100.64.0.1', 80, new Sink());
    assert.ok(p.until(() => srv !== undefined, 5000));
    const seen = watchWindows(p, () => srv!.rcvShift);
    p.wire.delay = 5;
    // A first exchange so A advertises its whole 256 KiB.
    const data = randomBytes(4 << 20, 40);
    assert.equal(cli.write(data, 0, 1000), 1000);
    assert.ok(p.until(() => cli.sndUna === cli.sndNxt && ss.bytes === 1000, 1000));
    // What B was offered: the window field rounds down to the scale (the edge accepted lies up to 127 bytes further).
    const advertised = cli.sndWnd;
    assert.ok(advertised >= (256 << 10) - (1 << srv!.rcvShift), `advertised ${advertised}`);
    // The reader stalls and the rest of the stack takes the whole budget (as other connections would).
    ss.limit = 1000;
    p.a.budget.charge(tcp.memHard);
    const w = new Writer(cli, data.subarray(1000));
    p.until(() => { w.pump(); return false; }, 1_000);
    // All of it taken, but for what the scale's rounding of later ACKs retracted (< 2^shift, RFC 7323 2.4).
    assert.ok(srv!.unread <= advertised && srv!.unread > advertised - (1 << srv!.rcvShift), `took ${srv!.unread} of the ${advertised} offered`);
    assert.equal(p.a.counters.dropZeroWindow ?? 0, 0);
    assert.equal(p.a.counters.trimmedRight ?? 0, 0, 'no data cut at the right edge'); // (B's zero-window probes count as out of window)
    assert.equal(srv!.rcvWindow(), 0, 'nothing more: the unread bytes fill the buffer');
    // The reader catches up; the budget has no room, so the window reopens only to the share (hard / 2 for one connection).
    const from = seen.windows.length;
    ss.limit = Infinity;
    srv!.setUnread(0);
    p.until(() => { w.pump(); return false; }, 200);
    const later = seen.windows.slice(from);
    assert.ok(later.length > 10, `${later.length} segments from A while clamped`);
    assert.equal(p.a.budget.share, 128 << 10);
    assert.ok(Math.max(...later) <= p.a.budget.share, `windows while clamped up to ${Math.max(...later)}`);
    assert.ok(ss.bytes > 1000 + advertised, 'data still moves in the small window');
    assert.ok(p.a.counters.bufWindowClamped! >= 1);
    // The budget frees: windows open to the buffer again and the transfer completes intact.
    p.a.budget.charge(-tcp.memHard);
    const from2 = seen.windows.length;
    assert.ok(p.until(() => { w.pump(); return ss.ended; }, 60_000), 'transfer finished');
    assert.ok(Math.max(...seen.windows.slice(from2)) >= (256 << 10) - (1 << srv!.rcvShift), 'the window opened again');
    assert.equal(sha(ss.data()), sha(data));
    assert.equal(seen.shrank, 0, 'no right edge ever moved left');
  });

  it('past the hard limit a write takes only the connection\'s share of the budget', () => {
    // B: a 4 MiB send buffer, hard limit 4 MiB: one connection's share is 2 MiB.
    const p = new Pair({ tcp: {}, tcpB: { rcvBuf: 64 << 10, sndBuf: 4 << 20, sndBufMax: 4 << 20, memPressure: 2 << 20, memHard: 4 << 20 } });
    const ss = new Sink();
    p.a.listen(80, (c) => { c.handler = ss; });
    const cli = p.b.connect('100.64.0.1', 80, new Sink());
    assert.ok(p.until(() => cli.stateName === 'ESTABLISHED', 5000));
    p.wire.delay = 10;
    const data = randomBytes(8 << 20, 50);
    assert.equal(cli.writable, p.b.budget.headroom, 'all the budget has room for (4 MiB less the receive window charged)');
    p.b.budget.charge(4 << 20); // the rest of the stack takes the hard limit
    assert.equal(p.b.budget.share, 2 << 20);
    assert.equal(cli.writable, 2 << 20);
    assert.equal(cli.write(data, 0, data.length), 2 << 20, 'a write fits only the share');
    assert.equal(p.b.counters.bufWriteClamped, 1);
    assert.ok(p.until(() => cli.snd.length === 0, 5_000), 'acknowledged');
    assert.equal(cli.write(data, 2 << 20, 4 << 20), 2 << 20, 'the share again once acknowledged');
    p.b.budget.charge(-(4 << 20));
    const w = new Writer(cli, data.subarray(4 << 20));
    assert.ok(p.until(() => { w.pump(); return ss.ended; }, 600_000), 'transfer finished');
    assert.equal(sha(ss.data()), sha(data));
  });

  it('under pressure the send buffer does not grow', () => {
    const p = new Pair({ tcp: { memPressure: 4 << 20, memHard: 8 << 20 } });
    const ss = new Sink();
    p.a.listen(80, (c) => { c.handler = ss; });
    const cli = p.b.connect('100.64.0.1', 80, new Sink());
    assert.ok(p.until(() => cli.stateName === 'ESTABLISHED', 5000));
    p.wire.delay = 10;
    p.b.budget.charge(5 << 20);
    assert.ok(p.b.budget.underPressure);
    const data = randomBytes(12 << 20, 51);
    const w = new Writer(cli, data);
    assert.ok(p.until(() => { w.pump(); return ss.ended; }, 600_000), 'transfer finished');
    assert.equal(sha(ss.data()), sha(data));
    assert.equal(cli.snd.max, 1 << 20, 'stayed at sndBuf');
    assert.equal(p.b.counters.bufGrowDenied, 1, 'counted once for the connection');
    assert.equal(p.b.counters.bufWriteClamped, 0);
  });

  it('shows the bytes charged and their peak among the stack counters, as status serializes them', () => {
    const p = new Pair();
    const ss = new StallingSink(0);
    p.a.listen(80, (c) => { c.handler = ss; });
    const cli = p.b.connect('100.64.0.1', 80, new Sink());
    assert.ok(p.until(() => cli.stateName === 'ESTABLISHED', 5000));
    assert.equal(cli.write(new Uint8Array(100_000), 0, 100_000), 100_000);
    p.run(200);
    const shown = JSON.parse(JSON.stringify(Object.fromEntries(Object.entries(p.a.counters)))) as Record<string, number>;
    assert.equal(ss.bytes, 100_000);
    assert.equal(shown.bufBytes, p.a.budget.used);
    assert.ok(shown.bufBytes! >= 100_000, `charged ${shown.bufBytes}: the unread bytes and the window`);
    assert.equal(shown.bufBytesPeak, p.a.budget.peak);
    for (const k of ['bufPressure', 'bufGrowDenied', 'bufWindowClamped', 'bufWriteClamped']) assert.equal(shown[k], 0, k);
  });

  it('rejects a budget whose hard limit is below its pressure threshold with a one-line error', () => {
    assert.throws(() => new Netstack({ now: () => 0, output: () => {}, tcp: { memPressure: 8 << 20, memHard: 4 << 20 } }),
      /^RangeError: netstack buffer budget: need 0 < pressure <= hard, got pressure 8388608 and hard 4194304$/);
  });
});
