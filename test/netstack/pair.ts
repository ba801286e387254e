// Two userspace stacks joined by an in-memory wire on a fake clock, with loss, duplication and
// reordering on demand: the fixture for the TCP tests (no sockets, no real time).
import { Netstack } from '../../src/netstack/stack.ts';
import type { Tcb, TcpError, TcpHandler } from '../../src/netstack/tcp.ts';
import type { TcpConfig } from '../../src/netstack/tcp.ts';

/** A fake clock. */
export class Clock {
  t = 1000;
  now = (): number => this.t;
}

/** A deterministic PRNG (xorshift32). */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => { x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0; return x / 0x100000000; };
}

interface InFlight { at: number; to: Netstack; pkt: Uint8Array }

/** Wire conditions, changeable during a test. */
export interface WireConditions {
  /** One-way delay in ms. */
  delay: number;
  loss: number;
  dup: number;
  /** Probability a packet gets extra delay (reordering). */
  reorder: number;
  /** Drop everything (a dead peer). */
  down: boolean;
  /** Sees every packet first; return false to drop it. */
  tap?: (from: 'a' | 'b', pkt: Uint8Array) => boolean;
}

/** Two stacks, A (100.64.0.1, fd7a:115c:a1e0::1) and B (100.64.0.2, fd7a:115c:a1e0::2). */
export class Pair {
  readonly clock = new Clock();
  readonly a: Netstack;
  readonly b: Netstack;
  readonly wire: WireConditions = { delay: 1, loss: 0, dup: 0, reorder: 0, down: false };
  private queue: InFlight[] = [];
  private readonly rnd: () => number;
  /** Packets each side sent. */
  sent = { a: 0, b: 0 };

  constructor(opts: { seed?: number; tcp?: Partial<TcpConfig>; tcpB?: Partial<TcpConfig>; limits?: { maxConns?: number; maxHalfOpen?: number } } = {}) {
    this.rnd = prng(opts.seed ?? 1);
    const rbytes = (seed: number) => { const r = prng(seed); return (b: Uint8Array) => { for (let i = 0; i < b.length; i++) b[i] = Math.floor(r() * 256); }; };
    this.a = new Netstack({ now: this.clock.now, output: (b, o, l) => this.send('a', b, o, l), random: rbytes(7), ...(opts.tcp ? { tcp: opts.tcp } : {}), ...(opts.limits ? { limits: opts.limits } : {}) });
    this.b = new Netstack({ now: this.clock.now, output: (b, o, l) => this.send('b', b, o, l), random: rbytes(11), ...(opts.tcpB ?? opts.tcp ? { tcp: opts.tcpB ?? opts.tcp! } : {}), ...(opts.limits ? { limits: opts.limits } : {}) });
    this.a.setAddresses(['100.64.0.1/32', 'fd7a:115c:a1e0::1/128']);
    this.b.setAddresses(['100.64.0.2/32', 'fd7a:115c:a1e0::2/128']);
  }

  private send(from: 'a' | 'b', buf: Uint8Array, off: number, len: number): void {
    this.sent[from]++;
    const pkt = buf.slice(off, off + len);
    const w = this.wire;
    if (w.tap && !w.tap(from, pkt)) return;
    if (w.down || this.rnd() < w.loss) return;
    const to = from === 'a' ? this.b : this.a;
    const extra = this.rnd() < w.reorder ? 1 + Math.floor(this.rnd() * 5) : 0;
    this.queue.push({ at: this.clock.t + w.delay + extra, to, pkt });
    if (this.rnd() < w.dup) this.queue.push({ at: this.clock.t + w.delay + 1, to, pkt });
  }

  /** Injects a raw packet into one side now. */
  inject(to: Netstack, pkt: Uint8Array): void {
    to.input(pkt, 0, pkt.length);
    to.endBatch();
  }

  /** Advances time by ms in 1 ms steps, delivering packets in batches and running timers. */
  run(ms: number): void {
    const end = this.clock.t + ms;
    while (this.clock.t < end) this.step();
  }

  /** Runs until cond() holds or the time budget ends; returns whether it held. */
  until(cond: () => boolean, ms = 60_000): boolean {
    const end = this.clock.t + ms;
    while (this.clock.t < end) {
      if (cond()) return true;
      this.step();
    }
    return cond();
  }

  private step(): void {
    this.clock.t += 1;
    const now = this.clock.t;
    const due = this.queue.filter((p) => p.at <= now);
    if (due.length > 0) {
      this.queue = this.queue.filter((p) => p.at > now);
      for (const p of due) p.to.input(p.pkt, 0, p.pkt.length);
      this.a.endBatch();
      this.b.endBatch();
    }
    for (const s of [this.a, this.b]) if (s.wakeAt <= now) s.tick();
  }
}

/** An application endpoint that collects what arrives and records events. */
export class Sink implements TcpHandler {
  readonly chunks: Buffer[] = [];
  bytes = 0;
  established = false;
  ended = false;
  closed = false;
  error: TcpError | null = null;
  /** When false, data is not consumed (the window closes). */
  reading = true;
  writable = 0;
  onEstablished(): void { this.established = true; }
  onData(c: Tcb, buf: Uint8Array, off: number, len: number): void {
    this.chunks.push(Buffer.from(buf.subarray(off, off + len)));
    this.bytes += len;
    c.setUnread(this.reading ? 0 : c.unread);
  }
  onEnd(): void { this.ended = true; }
  onWritable(): void { this.writable++; }
  onClose(_c: Tcb, err: TcpError | null): void { this.closed = true; this.error = err; }
  data(): Buffer { return Buffer.concat(this.chunks); }
}

/** Writes all of data into c over time (as the application would when told it is writable). */
export class Writer {
  private off = 0;
  readonly c: Tcb;
  readonly data: Uint8Array;
  readonly finish: boolean;
  constructor(c: Tcb, data: Uint8Array, finish = true) { this.c = c; this.data = data; this.finish = finish; }
  /** Pushes what fits; true when everything was queued (and FIN requested). */
  pump(): boolean {
    if (this.off < this.data.length) this.off += this.c.write(this.data, this.off, this.data.length - this.off);
    if (this.off >= this.data.length) { if (this.finish) this.c.shutdown(); return true; }
    return false;
  }
}

/** A raw IPv4 TCP segment with valid checksums. */
export function buildSeg(f: { src: Uint8Array; dst: Uint8Array; sport: number; dport: number; seq: number; ack: number; flags: number; data?: Uint8Array; wnd?: number; opts?: Uint8Array }): Uint8Array {
  const data = f.data ?? new Uint8Array(0);
  const opts = f.opts ?? new Uint8Array(0);
  const tl = 20 + opts.length + data.length;
  const p = Buffer.alloc(20 + tl);
  p[0] = 0x45; p.writeUInt16BE(20 + tl, 2); p[8] = 64; p[9] = 6;
  p.set(f.src.subarray(0, 4), 12); p.set(f.dst.subarray(0, 4), 16);
  p.writeUInt16BE(csum(p, 0, 20, 0), 10);
  const t = 20;
  p.writeUInt16BE(f.sport, t); p.writeUInt16BE(f.dport, t + 2);
  p.writeUInt32BE(f.seq >>> 0, t + 4); p.writeUInt32BE(f.ack >>> 0, t + 8);
  p[t + 12] = ((20 + opts.length) / 4) << 4; p[t + 13] = f.flags; p.writeUInt16BE(f.wnd ?? 65535, t + 14);
  p.set(opts, t + 20);
  p.set(data, t + 20 + opts.length);
  let s = 0;
  for (let i = 12; i < 20; i += 2) s += p.readUInt16BE(i);
  s += 6 + tl;
  p.writeUInt16BE(csum(p, t, tl, s), t + 16);
  return p;
}

function csum(b: Buffer, off: number, len: number, init: number): number {
  let s = init;
  for (let i = 0; i + 1 < len; i += 2) s += b.readUInt16BE(off + i);
  if (len & 1) s += b[off + len - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}
