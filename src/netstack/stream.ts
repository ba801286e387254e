// A node:stream Duplex over a netstack TCP connection, for proxies and services: bytes the peer
// sends come out of the readable side (the receive window follows how much is unread), bytes
// written go into the connection's send buffer (writes wait while it is full), end() sends a FIN,
// destroy() without an error closes, with an error resets.
import { Duplex } from 'node:stream';
import { TcpError, type Tcb, type TcpHandler } from './tcp.ts';
import { connAddrs } from './stack.ts';

const copyBytes = Buffer.prototype.copy as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number;
/** Size of the first buffer received data is gathered in (a short exchange needs no more). */
const ACC_SIZE = 32 * 1024;
/** Largest gathering buffer: a bulk transfer fills one per loop turn, then one socket write carries it. */
const ACC_MAX = 256 * 1024;

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
    // Segments of one input batch are gathered and pushed once (one write downstream, not one per segment).
    let acc = this.acc;
    if (acc === undefined || acc.length - this.accLen < len) {
      // A buffer that filled within one batch: the next one is twice as large (bulk data), up to ACC_MAX.
      if (acc !== undefined && this.accLen > 0) { this.accSize = Math.min(ACC_MAX, acc.length * 2); this.pushAcc(); }
      acc = this.acc = Buffer.allocUnsafeSlow(Math.max(this.accSize, len));
      this.accLen = 0;
    }
    copyBytes.call(buf, acc, this.accLen, off, off + len);
    this.accLen += len;
    this.tcb.unread = this.readableLength + this.accLen - this.accStart;
    if (!this.accScheduled) { this.accScheduled = true; setImmediate(this.flushAccBound); }
  }

  private acc: Buffer | undefined;
  /** Size of the next gathering buffer (grows while batches fill buffers, back to ACC_SIZE when one does not). */
  private accSize = ACC_SIZE;
  private accLen = 0;
  private accStart = 0;
  private accScheduled = false;
  private readonly flushAccBound = (): void => {
    this.accScheduled = false;
    if (this.accLen > this.accStart) {
      if (this.accLen < this.acc!.length >> 1) this.accSize = ACC_SIZE; // a quiet turn: small buffers again
      this.pushAcc();
    }
  };

  /** Pushes what was gathered and lets go of the buffer (an idle connection holds none). */
  private pushAcc(): void {
    const chunk = this.acc!.subarray(this.accStart, this.accLen);
    this.acc = undefined;
    this.accLen = 0;
    this.accStart = 0;
    this.push(chunk);
    this.tcb.unread = this.readableLength;
  }

  onEnd(): void {
    if (this.accLen > this.accStart) this.pushAcc();
    this.push(null);
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
      this.destroy(err);
      return;
    }
    if (p) p.cb(new TcpError('ECONNRESET', 'connection closed before the data was sent'));
    // Orderly end: the readable side may still hold data for the consumer.
    if (this.accLen > this.accStart) this.pushAcc();
    if (!this.readableEnded) this.push(null);
    if (this.finalCb) { const cb = this.finalCb; this.finalCb = undefined; cb(); }
  }

  override _read(): void {
    this.tcb.setUnread(this.readableLength);
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
    const t = this.tcb;
    if (!t.closed) {
      t.handler = undefined;
      if (err) t.abort();
      else { t.orphan = true; t.shutdown(); }
      this.kick();
    }
    cb(err);
  }
}
