// The handshake queue (wireguard-go device.queue.handshake): handshake messages are copied out of
// the receive batch into a bounded ring and answered later, in slices between data batches, so that
// a flood of initiations costs the data path one copy per message, not four Diffie-Hellmans. Its
// depth is the device's "under load" signal (Device.noteHandshakeQueueDepth). No I/O and no timers:
// the runner decides when to drain it. Preallocated; pushing and shifting allocate nothing.
import type { Endpoint } from '../net/endpoint.ts';
import { INITIATION_SIZE, messageTypeOf, MessageType } from './messages.ts';

/** Messages the queue holds (wireguard-go QueueHandshakeSize). */
export const HANDSHAKE_QUEUE_SIZE = 1024;

/** True for a datagram that belongs in the handshake queue: an initiation or response of the exact size. */
export function isHandshakeMessage(buf: Uint8Array, off: number, len: number): boolean {
  const t = messageTypeOf(buf, off, len);
  return t === MessageType.Initiation || t === MessageType.Response;
}

/** A FIFO of copied handshake messages with their sources; full means new ones are dropped. */
export class HandshakeQueue {
  /** Slot i holds a message at buf[i * INITIATION_SIZE, ...). */
  readonly buf: Uint8Array;
  private readonly lens: Int32Array;
  private readonly froms: (Endpoint | null)[];
  private readonly cap: number;
  private head = 0;
  private count = 0;
  /** Messages dropped because the queue was full. */
  dropped = 0;

  constructor(capacity = HANDSHAKE_QUEUE_SIZE) {
    this.cap = capacity;
    this.buf = new Uint8Array(capacity * INITIATION_SIZE);
    this.lens = new Int32Array(capacity);
    this.froms = new Array<Endpoint | null>(capacity).fill(null);
  }

  /** Messages waiting. */
  get length(): number {
    return this.count;
  }

  /** Copies buf[off, off+len) (at most INITIATION_SIZE bytes) in; false (counted) when full. */
  push(buf: Uint8Array, off: number, len: number, from: Endpoint): boolean {
    if (this.count >= this.cap || len > INITIATION_SIZE || len < 0) { this.dropped++; return false; }
    let i = this.head + this.count;
    if (i >= this.cap) i -= this.cap;
    const q = this.buf, at = i * INITIATION_SIZE;
    for (let k = 0; k < len; k++) q[at + k] = buf[off + k]!; // a loop: Buffer copy and subarray() allocate a view
    this.lens[i] = len;
    this.froms[i] = from;
    this.count++;
    return true;
  }

  /** Offset in buf of the oldest message (valid until the next shift()); -1 when empty. */
  peekOffset(): number {
    return this.count === 0 ? -1 : this.head * INITIATION_SIZE;
  }

  /** Length of the oldest message. */
  peekLength(): number {
    return this.lens[this.head]!;
  }

  /** Source of the oldest message. */
  peekFrom(): Endpoint {
    return this.froms[this.head]!;
  }

  /** Removes the oldest message. */
  shift(): void {
    if (this.count === 0) return;
    this.froms[this.head] = null;
    this.head = this.head + 1 === this.cap ? 0 : this.head + 1;
    this.count--;
  }

  /** Drops everything queued. */
  clear(): void {
    while (this.count > 0) this.shift();
  }
}
