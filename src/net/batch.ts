// Pooled packet batches shared with the native layer: one ArrayBuffer cut into fixed slots, each
// with headroom in front (room for headers written later, e.g. WireGuard's 16-byte transport
// header) and tailroom behind (the 16-byte Poly1305 tag and padding). Nothing here allocates per
// packet: packets are (offset, length) pairs into the batch's buffer.
//
//   slot i:  [ i*slotSize | headroom | data (up to capacity) ... | ] [ (i+1)*slotSize ...
//
// RxBatch is filled by the native reader; TxBatch is filled by the caller and handed to
// Tun.writeBatch / UdpSocket.sendBatch, which empty it.
import { ENDPOINT_RAW_LEN, type Endpoint, type Endpoints } from './endpoint.ts';

/** Slots per batch by default (wireguard-go's IdealBatchSize; the native maximum). */
export const DEFAULT_SLOTS = 128;
/** Default headroom in bytes: a cache line, more than any header the data plane prepends. */
export const DEFAULT_HEADROOM = 64;
/** Default tailroom in bytes: the Poly1305 tag (16) plus padding to 16, rounded up to a cache line. */
export const DEFAULT_TAILROOM = 64;
/** Largest UDP datagram a receive slot takes by default; longer ones are dropped and counted as truncated. */
export const DEFAULT_MAX_DATAGRAM = 2048;
/** Most slots a batch may have (the native layer's limit per read). */
export const MAX_SLOTS = 128;

/** Rounds n up to a multiple of 64. */
export function roundUp64(n: number): number {
  return Math.ceil(n / 64) * 64;
}

/** Slot size for packets of up to `payload` bytes with the given headroom and tailroom, a multiple of 64. */
export function slotSizeFor(payload: number, headroom = DEFAULT_HEADROOM, tailroom = DEFAULT_TAILROOM): number {
  return roundUp64(headroom + payload + tailroom);
}

/** Shape of a batch: how many slots, how big, and where data starts in each. */
export interface BatchShape {
  slots: number;
  slotSize: number;
  headroom: number;
}

function checkShape(s: BatchShape): void {
  if (!Number.isInteger(s.slots) || s.slots < 1 || s.slots > MAX_SLOTS) throw new RangeError(`slots must be in 1..${MAX_SLOTS}, got ${s.slots}`);
  if (!Number.isInteger(s.headroom) || s.headroom < 0) throw new RangeError(`headroom must be a non-negative integer, got ${s.headroom}`);
  if (!Number.isInteger(s.slotSize) || s.slotSize <= s.headroom) throw new RangeError(`slotSize must be an integer above headroom, got ${s.slotSize}`);
}

/**
 * A batch of received packets. The native reader fills slots 0..count-1 and calls back; the
 * contents are valid only during that callback (the next read overwrites them), so keep offsets,
 * never the batch, and copy what must outlive the callback.
 */
export class RxBatch {
  /** The whole slot buffer; packet i is buf[offset(i), offset(i)+length(i)). */
  readonly buf: Uint8Array;
  /** Number of slots. */
  readonly slots: number;
  /** Bytes per slot. */
  readonly slotSize: number;
  /** Bytes before each packet's data. */
  readonly headroom: number;
  /** Packet lengths, filled by the reader. */
  readonly lens: Int32Array;
  /** Source endpoints in raw form (20 bytes per slot), UDP batches only. */
  readonly addrs: Uint8Array | undefined;
  /** Packets in the current batch. */
  count = 0;
  private readonly endpoints: Endpoints | undefined;
  private lastEndpoint: Endpoint | undefined;

  /** backing: existing memory to use instead of allocating (a frame of a shared ring, src/netstack/ring-shared.ts). */
  constructor(shape: BatchShape, endpoints?: Endpoints, backing?: { buf: Uint8Array; lens: Int32Array }) {
    checkShape(shape);
    this.slots = shape.slots;
    this.slotSize = shape.slotSize;
    this.headroom = shape.headroom;
    this.buf = backing?.buf ?? new Uint8Array(shape.slots * shape.slotSize);
    this.lens = backing?.lens ?? new Int32Array(shape.slots);
    this.endpoints = endpoints;
    this.addrs = endpoints ? new Uint8Array(shape.slots * ENDPOINT_RAW_LEN) : undefined;
  }

  /** Largest packet a slot holds after the headroom. */
  get capacity(): number {
    return this.slotSize - this.headroom;
  }

  /** Offset of packet i's first byte in buf. */
  offset(i: number): number {
    return i * this.slotSize + this.headroom;
  }

  /** Length of packet i. */
  length(i: number): number {
    return this.lens[i]!;
  }

  /** Offset of the end of slot i (data may grow into the tailroom up to here). */
  slotEnd(i: number): number {
    return (i + 1) * this.slotSize;
  }

  /** A view of packet i. Allocates a view object: for control paths and tests, not per packet. */
  packet(i: number): Uint8Array {
    const o = this.offset(i);
    return this.buf.subarray(o, o + this.lens[i]!);
  }

  /** The interned source endpoint of packet i (UDP batches); allocation-free once an endpoint is known. */
  endpoint(i: number): Endpoint {
    const addrs = this.addrs;
    if (!this.endpoints || !addrs) throw new TypeError('endpoint(): this batch has no source addresses (not a UDP batch)');
    const off = i * ENDPOINT_RAW_LEN;
    // Datagrams come in runs from one peer: the last answer is checked first. This also keeps
    // IPv6 sources allocation-free, whose interning builds a text key.
    const last = this.lastEndpoint;
    if (last !== undefined) {
      const raw = last.raw;
      let k = 0;
      while (k < 19 && raw[k] === addrs[off + k]) k++;
      if (k === 19) return last;
    }
    const ep = this.endpoints.intern(addrs, off);
    this.lastEndpoint = ep;
    return ep;
  }
}

const copyBytes = Buffer.prototype.copy as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number;

/**
 * A batch of packets to write or send: (offset, length, endpoint) triples into buf. Fill it with
 * reserve()+commit() (write in place, no copy), push() (copy), or pushRef() (point at bytes already
 * in buf, e.g. a TxBatch made with over() on a receive buffer after in-place decryption).
 */
export class TxBatch {
  /** The buffer packets are taken from. */
  readonly buf: Uint8Array;
  /** Most packets per batch. */
  readonly slots: number;
  /** Bytes per slot; 0 for a reference-only batch made with over(). */
  readonly slotSize: number;
  /** Bytes before each slot's data. */
  readonly headroom: number;
  /** Packet offsets in buf. */
  readonly offsets: Int32Array;
  /** Packet lengths. */
  readonly lens: Int32Array;
  /** Destination endpoints in raw form, 20 bytes per packet (UDP only; ignored by TUN writes). */
  readonly addrs: Uint8Array;
  /** Packets in the batch. */
  count = 0;

  constructor(shape: BatchShape, buf?: Uint8Array) {
    if (shape.slotSize !== 0 || buf === undefined) checkShape(shape);
    this.slots = shape.slots;
    this.slotSize = shape.slotSize;
    this.headroom = shape.headroom;
    this.buf = buf ?? new Uint8Array(shape.slots * shape.slotSize);
    this.offsets = new Int32Array(shape.slots);
    this.lens = new Int32Array(shape.slots);
    this.addrs = new Uint8Array(shape.slots * ENDPOINT_RAW_LEN);
  }

  /** A reference-only batch over someone else's buffer: fill it with pushRef() only. */
  static over(buf: Uint8Array, slots = DEFAULT_SLOTS): TxBatch {
    if (!Number.isInteger(slots) || slots < 1 || slots > MAX_SLOTS) throw new RangeError(`slots must be in 1..${MAX_SLOTS}`);
    return new TxBatch({ slots, slotSize: 0, headroom: 0 }, buf);
  }

  /** True when no slot is left. */
  get full(): boolean {
    return this.count >= this.slots;
  }

  /** Largest packet a slot holds after the headroom. */
  get capacity(): number {
    return this.slotSize - this.headroom;
  }

  /**
   * Offset where the next slot's data starts (slot base + headroom), or -1 when the batch is full.
   * Write the packet there (headers may go into the headroom before it), then commit().
   */
  reserve(): number {
    if (this.slotSize === 0) throw new TypeError('reserve(): a batch made with over() takes pushRef() only');
    if (this.count >= this.slots) return -1;
    return this.count * this.slotSize + this.headroom;
  }

  /** Records the packet [off, off+len) written into the reserved slot, with its destination. */
  commit(off: number, len: number, endpointRaw?: Uint8Array): void {
    const i = this.count;
    const base = i * this.slotSize;
    if (i >= this.slots || off < base || len < 0 || off + len > base + this.slotSize) {
      throw new RangeError(`commit(${off}, ${len}) lies outside slot ${i} [${base}, ${base + this.slotSize})`);
    }
    this.offsets[i] = off;
    this.lens[i] = len;
    if (endpointRaw !== undefined) this.addrs.set(endpointRaw, i * ENDPOINT_RAW_LEN);
    else this.addrs[i * ENDPOINT_RAW_LEN + 18] = 0; // no destination: a UDP send drops it
    this.count = i + 1;
  }

  /** Copies src[srcOff, srcOff+len) into the next slot; false (nothing copied) when full or too long. */
  push(src: Uint8Array, srcOff: number, len: number, endpointRaw?: Uint8Array): boolean {
    const at = this.reserve();
    if (at < 0 || len > this.slotSize - this.headroom) return false;
    if (src === this.buf) this.buf.copyWithin(at, srcOff, srcOff + len);
    else copyBytes.call(src, this.buf, at, srcOff, srcOff + len);
    this.commit(at, len, endpointRaw);
    return true;
  }

  /** Adds the packet buf[off, off+len) without copying; false when full. */
  pushRef(off: number, len: number, endpointRaw?: Uint8Array): boolean {
    const i = this.count;
    if (i >= this.slots) return false;
    if (off < 0 || len < 0 || off + len > this.buf.length) throw new RangeError(`pushRef(${off}, ${len}) lies outside buf (${this.buf.length} bytes)`);
    this.offsets[i] = off;
    this.lens[i] = len;
    if (endpointRaw !== undefined) this.addrs.set(endpointRaw, i * ENDPOINT_RAW_LEN);
    else this.addrs[i * ENDPOINT_RAW_LEN + 18] = 0; // no destination: a UDP send drops it
    this.count = i + 1;
    return true;
  }

  /** Empties the batch (contents stay; slots are reused). */
  clear(): void {
    this.count = 0;
  }
}
