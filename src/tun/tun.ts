// A Linux TUN device (IFF_TUN | IFF_NO_PI: each read/write is one bare IPv4 or IPv6 packet), read
// in batches on the event loop and written in batches. The device lives as long as the fd: close()
// removes it. Needs root or CAP_NET_ADMIN in the device's network namespace.
import { native, readerError, type PollHandle, type PollStats } from '../native/index.ts';
import type { HostDevice } from './device.ts';
import { DEFAULT_HEADROOM, DEFAULT_SLOTS, DEFAULT_TAILROOM, RxBatch, slotSizeFor, type TxBatch } from '../net/batch.ts';

/** Options of Tun.open. */
export interface TunOptions {
  /** MTU to set on the device. */
  mtu: number;
  /** Bring the device up after opening (default false: the router adds addresses first). */
  up?: boolean;
  /** Packets per read batch (default 128). */
  slots?: number;
  /** Bytes before each received packet (default 64). */
  headroom?: number;
  /** Bytes after each received packet of MTU size (default 64). */
  tailroom?: number;
  /** Extra IFF_* flags (native().tunFlags); default none. */
  flags?: number;
}

/** Counters of a Tun. */
export interface TunStats {
  /** What the latest reader saw (undefined before startReading). */
  rx: PollStats | undefined;
  /** Packets written. */
  txPackets: number;
  /** Packets given to writeBatch but dropped (queue full, malformed, device down). */
  txDropped: number;
}

/** A TUN device with batched, allocation-free reads and writes. */
export class Tun implements HostDevice {
  /** Interface name the kernel gave the device. */
  readonly name: string;
  /** The device fd (non-blocking, close-on-exec). */
  readonly fd: number;
  /** Current MTU. */
  mtu: number;
  private readonly slots: number;
  private readonly headroom: number;
  private readonly tailroom: number;
  private reader: PollHandle | undefined;
  private lastReader: PollHandle | undefined;
  private rx: RxBatch | undefined;
  private closed = false;
  private txPackets = 0;
  private txDropped = 0;

  private constructor(name: string, fd: number, opts: TunOptions) {
    this.name = name;
    this.fd = fd;
    this.mtu = opts.mtu;
    this.slots = opts.slots ?? DEFAULT_SLOTS;
    this.headroom = opts.headroom ?? DEFAULT_HEADROOM;
    this.tailroom = opts.tailroom ?? DEFAULT_TAILROOM;
  }

  /** Opens (creates) TUN device `name` with the given MTU; throws a NativeError with code and advice. */
  static open(name: string, opts: TunOptions): Tun {
    const n = native();
    const { fd, name: actual } = n.tunOpen(name, opts.flags ?? 0);
    try {
      n.setMtu(actual, opts.mtu);
      if (opts.up) n.setUp(actual, true);
    } catch (err) {
      n.close(fd);
      throw err;
    }
    return new Tun(actual, fd, opts);
  }

  /** Sets the MTU; while reading, at most the MTU the read slots were sized for. */
  setMtu(mtu: number): void {
    if (this.rx && mtu > this.rx.capacity - this.tailroom) {
      throw new RangeError(`setMtu ${mtu}: read slots hold ${this.rx.capacity - this.tailroom} bytes; stopReading() first`);
    }
    native().setMtu(this.name, mtu);
    this.mtu = mtu;
  }

  /** Brings the device up or down. */
  setUp(up: boolean): void {
    native().setUp(this.name, up);
  }

  /**
   * Starts reading: onBatch(batch) runs once per batch of up to `slots` packets, synchronously; the
   * batch's contents are reused after it returns. onError gets a fatal read error (reading has
   * stopped then); without onError such an error is thrown as an uncaught exception.
   */
  startReading(onBatch: (batch: RxBatch) => void, onError?: (err: Error) => void): RxBatch {
    if (this.closed) throw new Error(`tun ${this.name}: closed`);
    if (this.reader) throw new Error(`tun ${this.name}: already reading`);
    const batch = new RxBatch({ slots: this.slots, slotSize: slotSizeFor(this.mtu, this.headroom, this.tailroom), headroom: this.headroom });
    const name = this.name;
    this.rx = batch;
    this.reader = this.lastReader = native().pollStart(this.fd, 'tun', batch, (count: number): void => {
      if (count >= 0) {
        batch.count = count;
        onBatch(batch);
        return;
      }
      this.reader = undefined;
      this.rx = undefined;
      const err = readerError(`tun ${name}`, count);
      if (onError) onError(err);
      else throw err;
    });
    return batch;
  }

  /** Stops reading (also from inside onBatch: no further batch is delivered). */
  stopReading(): void {
    if (this.reader) native().pollStop(this.reader);
    this.reader = undefined;
    this.rx = undefined;
  }

  /** Lets a running reader keep the process alive (true, the default) or not. */
  ref(ref: boolean): void {
    if (this.reader) native().pollRef(this.reader, ref);
  }

  /** Writes tx.count packets, one write() each, then empties tx; returns how many were written. */
  writeBatch(tx: TxBatch): number {
    const count = tx.count;
    const written = count === 0 ? 0 : native().tunWrite(this.fd, tx.buf, tx.offsets, tx.lens, count);
    tx.count = 0;
    this.txPackets += written;
    this.txDropped += count - written;
    return written;
  }

  /** Counters for this device. */
  stats(): TunStats {
    return { rx: this.lastReader ? native().pollStats(this.lastReader) : undefined, txPackets: this.txPackets, txDropped: this.txDropped };
  }

  /** Stops reading and closes the fd, which removes the device. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.stopReading();
    this.closed = true;
    native().close(this.fd);
  }
}
