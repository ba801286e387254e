// A node:stream Duplex over a netstack TCP connection, for proxies and services: bytes the peer
// sends come out of the readable side (the receive window follows how much is unread), bytes
// written go into the connection's send buffer (writes wait while it is full), end() sends a FIN,
// destroy() without an error closes, with an error resets.
//
// Received data is gathered per event-loop turn into pooled buffers and handed on once per turn: a
// 16 KiB one first (many connections each getting a little in one turn), moved into a 256 KiB one
// when a turn brings more (bulk). A relay to a host socket (sendTo) writes those buffers to the
// socket directly and takes them back into their pool when the write is done: a bulk download then
// allocates no buffer per turn (off-heap buffers made per turn brought a major GC every ~100 ms at
// 1 Gbit/s).
import { Duplex } from 'node:stream';
import { TcpError, type Tcb, type TcpHandler } from './tcp.ts';
import { connAddrs } from './stack.ts';

const copyBytes = Buffer.prototype.copy as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number;
/** Size of the large gathering buffers: a bulk transfer fills one per loop turn, then one socket write carries it. */
const ACC_SIZE = 256 * 1024;
/** Size of the first gathering buffer of a turn. */
export const SMALL_SIZE = 16 * 1024;
/** Gathering buffers kept for reuse, shared by all streams: 2 MiB of large, 1 MiB of small ones at most. */
const POOL_MAX = 8;
const SMALL_POOL_MAX = 64;
const pool: Buffer[] = [];
const smallPool: Buffer[] = [];
/** At most this much is copied out of a gathering buffer for the readable side (the buffer goes back to the pool). */
const COPY_OUT_MAX = 64 * 1024;

/** A large gathering buffer from the pool (shared with relay.ts). */
export function takeBuffer(): Buffer {
  return pool.pop() ?? Buffer.allocUnsafeSlow(ACC_SIZE);
}

/** A small gathering buffer from the pool. */
export function takeSmall(): Buffer {
  return smallPool.pop() ?? Buffer.allocUnsafeSlow(SMALL_SIZE);
}

/** Returns a gathering buffer to its pool. */
export function giveBack(b: Buffer): void {
  if (b.length === SMALL_SIZE) { if (smallPool.length < SMALL_POOL_MAX) smallPool.push(b); }
  else if (pool.length < POOL_MAX) pool.push(b);
}

/**
 * One connection's gathering buffer: what the peer sends in a loop turn is copied into one pooled
 * buffer (a small one first, moved into a large one when the turn brings more) and handed on once,
 * at the turn's end (setImmediate) or when a large buffer is full. Shared by TcpStream and
 * relay.ts's TcpRelay.
 */
export class Gather {
  /** The buffer being filled, if any, and how much of it is. */
  buf: Buffer | undefined;
  len = 0;
  private scheduled = false;
  private readonly handTo: (buf: Buffer, len: number) => void;

  /** `handTo` takes the buffer (it gives it back to the pool with giveBack when done with it). */
  constructor(handTo: (buf: Buffer, len: number) => void) {
    this.handTo = handTo;
  }

  /** Copies `len` bytes of `src` from `off` in; hands a full large buffer on at once. */
  add(src: Uint8Array, off: number, len: number): void {
    while (len > 0) {
      let acc = this.buf;
      if (acc === undefined) acc = this.buf = len <= SMALL_SIZE ? takeSmall() : takeBuffer();
      else if (this.len === acc.length) {
        if (acc.length === SMALL_SIZE) {
          // More than a small buffer's worth in one turn: move to a large one (one write per turn).
          const big = takeBuffer();
          copyBytes.call(acc, big, 0, 0, this.len);
          giveBack(acc);
          acc = this.buf = big;
        } else {
          this.flush();
          acc = this.buf = takeBuffer();
        }
      }
      const n = Math.min(len, acc.length - this.len);
      copyBytes.call(src, acc, this.len, off, off + n);
      this.len += n;
      off += n;
      len -= n;
    }
    if (!this.scheduled) { this.scheduled = true; setImmediate(this.onTurnEnd); }
  }

  /** Hands on what is gathered, if anything. */
  flush(): void {
    const b = this.buf, len = this.len;
    if (b === undefined) return;
    this.buf = undefined;
    this.len = 0;
    if (len === 0) { giveBack(b); return; }
    this.handTo(b, len);
  }

  /** Gives what is gathered back to the pool unsent (the connection failed or the socket went). */
  drop(): void {
    if (this.buf !== undefined) { giveBack(this.buf); this.buf = undefined; this.len = 0; }
  }

  private readonly onTurnEnd = (): void => {
    this.scheduled = false;
    this.flush();
  };
}

/** Where sendTo() writes: a host socket (net.Socket) or any Writable. */
export interface DirectSink {
  write(chunk: Uint8Array, cb: (err?: Error | null) => void): boolean;
  end(): unknown;
  readonly writableLength: number;
  readonly writableEnded: boolean;
  readonly destroyed: boolean;
}

/** A host socket a relay drives both ways (relayWith): a net.Socket, or any Duplex. */
export interface RelaySocket extends DirectSink {
  on(ev: 'data', fn: (chunk: Buffer) => void): unknown;
  on(ev: 'end' | 'close', fn: () => void): unknown;
  on(ev: 'error', fn: (err: Error) => void): unknown;
  pause(): unknown;
  resume(): unknown;
  destroy(): unknown;
}

/** A Duplex stream over one TCP connection of the userspace stack. */
export class TcpStream extends Duplex implements TcpHandler {
  readonly tcb: Tcb;
  /** Addresses, as text. */
  readonly localAddress: string;
  readonly localPort: number;
  readonly remoteAddress: string;
  readonly remotePort: number;
  private pending: { chunk: Uint8Array; off: number; cb: (err?: Error | null) => void } | undefined;
  private finalCb: ((err?: Error | null) => void) | undefined;
  /** Called after the stream does something that may make the stack send (set by the owner to flush). */
  private readonly kick: () => void;

  constructor(tcb: Tcb, kick: () => void = () => {}) {
    super({ allowHalfOpen: true, readableHighWaterMark: 256 * 1024, writableHighWaterMark: 64 * 1024 });
    this.tcb = tcb;
    this.kick = kick;
    const a = connAddrs(tcb);
    this.localAddress = a.local;
    this.localPort = a.localPort;
    this.remoteAddress = a.remote;
    this.remotePort = a.remotePort;
    tcb.handler = this;
  }

  onEstablished(): void {
    this.emit('connect');
  }

  onData(_c: Tcb, buf: Uint8Array, off: number, len: number): void {
    // Segments of one input batch are gathered and handed on once (one write downstream, not one per segment).
    this.gather.add(buf, off, len);
    this.tcb.unread = this.held() + this.gather.len;
  }

  /** This turn's received bytes (see Gather). */
  private readonly gather = new Gather((acc, len) => this.handOn(acc, len));
  /** The host socket data goes to directly (sendTo), if any. */
  private sink: DirectSink | undefined;
  /** Gathering buffers being written to the sink, in write order. */
  private readonly inflight: Buffer[] = [];
  /** A write to the sink finished: its buffer goes back to the pool, and the window may open. */
  private readonly writtenBound = (err?: Error | null): void => {
    const b = this.inflight.shift();
    if (b !== undefined && !err) giveBack(b);
    const t = this.tcb;
    if (!t.closed) { t.setUnread(this.held() + this.gather.len); this.kick(); }
  };

  /** Received bytes downstream of the gathering buffer that the peer's window must still count. */
  private held(): number {
    const k = this.sink;
    return k === undefined ? this.readableLength : k.writableLength;
  }

  /** Hands what was gathered on: a write to the sink, or a push to the readable side. The stream holds no buffer after it. */
  private handOn(acc: Buffer, len: number): void {
    const k = this.sink;
    if (k !== undefined) {
      if (k.destroyed || k.writableEnded) { giveBack(acc); return; }
      this.inflight.push(acc);
      k.write(acc.subarray(0, len), this.writtenBound);
    } else if (len <= COPY_OUT_MAX) {
      const chunk = Buffer.allocUnsafe(len);
      copyBytes.call(acc, chunk, 0, 0, len);
      giveBack(acc);
      this.push(chunk);
    } else {
      this.push(acc.subarray(0, len));
    }
    this.tcb.unread = this.held();
  }

  /**
   * Sends what the peer sends straight to `sink` (a relay to a host socket), instead of through
   * the readable side: data already buffered there goes first, the peer's FIN ends the sink, and
   * the receive window counts what the sink has not written yet. The readable side only ends.
   */
  sendTo(sink: DirectSink): void {
    for (let chunk = this.read() as Buffer | null; chunk !== null; chunk = this.read() as Buffer | null) sink.write(chunk, noop);
    this.sink = sink;
    if (this.readableEnded || this.ended) { sink.end(); return; }
    this.resume();
    this.tcb.unread = this.held() + this.gather.len;
  }

  /** The peer's FIN was handed on. */
  private ended = false;

  onEnd(): void {
    this.endReadable();
  }

  /** Hands on what is gathered, then the end of the peer's data (to the sink, and the readable side). */
  private endReadable(): void {
    this.gather.flush();
    if (this.ended) return;
    this.ended = true;
    const k = this.sink;
    if (k !== undefined && !k.destroyed && !k.writableEnded) k.end();
    if (!this.readableEnded && this.host === undefined) this.push(null);
  }

  onWritable(): void {
    const p = this.pending;
    if (p === undefined) return;
    const n = this.tcb.write(p.chunk, p.off, p.chunk.length - p.off);
    p.off += n;
    if (p.off >= p.chunk.length) {
      this.pending = undefined;
      p.cb();
      if (this.finalCb) { const cb = this.finalCb; this.finalCb = undefined; this.tcb.shutdown(); cb(); }
    }
    this.kick();
  }

  onClose(_c: Tcb, err: TcpError | null): void {
    const p = this.pending;
    this.pending = undefined;
    if (err) {
      p?.cb(err);
      const h = this.host;
      if (h !== undefined) { this.gather.drop(); h.destroy(); } else this.destroy(err);
      return;
    }
    if (p) p.cb(new TcpError('ECONNRESET', 'connection closed before the data was sent'));
    // Orderly end: the readable side may still hold data for the consumer.
    this.endReadable();
    if (this.finalCb) { const cb = this.finalCb; this.finalCb = undefined; cb(); }
  }

  override _read(): void {
    if (this.sink !== undefined) return;
    this.tcb.setUnread(this.readableLength + this.gather.len);
    this.kick();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.tcb.closed) { cb(new TcpError('ECONNRESET', 'connection is closed')); return; }
    const n = this.tcb.write(chunk, 0, chunk.length);
    if (n >= chunk.length) cb();
    else this.pending = { chunk, off: n, cb };
    this.kick();
  }

  override _final(cb: (err?: Error | null) => void): void {
    if (this.pending) { this.finalCb = cb; return; }
    this.tcb.shutdown();
    this.kick();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.release(err !== null);
    cb(err);
  }

  /** Lets go of the connection: an error resets it, else it closes in the background (orphan). */
  private release(reset: boolean): void {
    const t = this.tcb;
    this.gather.drop();
    if (!t.closed && t.handler === this) {
      t.handler = undefined;
      if (reset) t.abort();
      else { t.orphan = true; t.shutdown(); }
      this.kick();
    }
  }

  /** The host socket of relayWith(). */
  private host: RelaySocket | undefined;

  /**
   * Relays between this connection and a host socket without the stream machinery (a proxy's
   * CONNECT): what the peer sends goes to the socket as in sendTo(), what the socket sends goes
   * into the send buffer (the socket pauses while it is full), the socket's end sends our FIN, the
   * peer's FIN ends the socket, a reset destroys the socket, and the socket's close or error
   * closes the connection in the background. After this call the Duplex sides are not used and
   * emit nothing (per connection, the readable and writable state machines, their end/finish/close
   * events and a pipe's listeners were most of the relay's JavaScript).
   */
  relayWith(sock: RelaySocket): void {
    for (let chunk = this.read() as Buffer | null; chunk !== null; chunk = this.read() as Buffer | null) sock.write(chunk, noop);
    this.host = sock;
    this.sink = sock;
    this.tcb.unread = this.held() + this.gather.len;
    if (this.ended || this.readableEnded) sock.end();
    if (this.tcb.closed) { sock.destroy(); return; }
    sock.on('data', (chunk) => this.fromHost(chunk));
    sock.on('end', () => this.hostEnded());
    sock.on('error', () => this.release(false));
    sock.on('close', () => this.release(false));
    sock.resume();
  }

  private fromHost(chunk: Buffer): void {
    const t = this.tcb;
    if (t.closed || t.handler !== this) { this.host?.destroy(); return; }
    if (this.pending !== undefined) {
      // Arrived after pause(): queue behind what waits (rare; bounded by one read).
      const p = this.pending;
      p.chunk = Buffer.concat([p.chunk.subarray(p.off), chunk]);
      p.off = 0;
      return;
    }
    const n = t.write(chunk, 0, chunk.length);
    if (n < chunk.length) {
      this.pending = { chunk, off: n, cb: this.hostResumeBound };
      this.host!.pause();
    }
    this.kick();
  }

  private readonly hostResumeBound = (err?: Error | null): void => { if (!err) this.host?.resume(); };

  private hostEnded(): void {
    const t = this.tcb;
    if (t.closed || t.handler !== this) return;
    if (this.pending !== undefined) { this.finalCb = noop; return; }
    t.shutdown();
    this.kick();
  }
}

function noop(): void {}
