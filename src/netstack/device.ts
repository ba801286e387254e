// The userspace stack as the data plane's host device (src/tun/device.ts): packets WireGuard
// decrypted (after the packet filter) go into the stack, packets the stack sends come out as batches
// the data plane encrypts, as if read from a TUN device. Also the driver for the stack's clock and
// timers on Node's event loop.
//
// Output is staged in pooled RxBatches and handed over in a microtask, never from inside
// writeBatch: the data plane calls writeBatch while flushing its own batches, and must not be
// re-entered. Nothing is allocated per packet.
import { DEFAULT_HEADROOM, DEFAULT_TAILROOM, RxBatch, slotSizeFor, type TxBatch } from '../net/batch.ts';
import type { HostDevice, HostDeviceStats } from '../tun/device.ts';
import type { PollStats } from '../native/index.ts';
import { Netstack, type NetstackOptions, type PacketSink } from './stack.ts';

const copyBytes = Buffer.prototype.copy as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number;

/**
 * Where output can go instead of the staged batches: a ring's frames (src/netstack/ring-shared.ts
 * PacketRing's producer side), written in place. reserve() returns an offset in data or -1 (the
 * ring counts that drop); publish() hands over the frame being filled.
 */
export interface OutputRing {
  readonly data: Uint8Array;
  reserve(max: number): number;
  commit(len: number): void;
  publish(): void;
}

/** Most batches staged before output is dropped (128 packets each). */
const MAX_STAGED = 64;

/** Drives a Netstack on the event loop: real clock, timers, deferred output. */
export class NetstackDriver {
  readonly stack: Netstack;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Infinity;
  private scheduled = false;
  private readonly onTimerBound = (): void => this.onTimer();
  private readonly flushBound = (): void => this.flush();
  /** Where flushed output goes (set by the owner). */
  private sinkFlush: () => void = () => {};
  private closedFlag = false;

  constructor(opts: Omit<NetstackOptions, 'now'> & { now?: () => number }) {
    this.stack = new Netstack({ now: () => performance.now(), ...opts });
  }

  /** Sets what runs at each flush (deliver staged output). */
  setFlush(f: () => void): void {
    this.sinkFlush = f;
  }

  /** Schedules a flush of output and a timer re-arm after the current call stack (cheap to call often). */
  schedule(): void {
    if (this.scheduled || this.closedFlag) return;
    this.scheduled = true;
    // After the I/O phase: every UDP batch read in this turn of the loop has been taken in, so the
    // ACKs and stream pushes they cause go out once (stretch ACKs, fewer syscalls).
    setImmediate(this.flushBound);
  }

  private flush(): void {
    this.scheduled = false;
    if (this.closedFlag) return;
    this.stack.holdClock();
    this.stack.endBatch();
    this.stack.releaseClock();
    this.sinkFlush();
    this.arm();
  }

  private arm(): void {
    const at = this.stack.wakeAt;
    if (at === this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = at;
    if (at === Infinity) return;
    this.timer = setTimeout(this.onTimerBound, Math.max(1, Math.ceil(at - performance.now())));
  }

  private onTimer(): void {
    this.timer = undefined;
    this.timerAt = Infinity;
    if (this.closedFlag) return;
    if (this.stack.now >= this.stack.wakeAt) this.stack.tick();
    this.flush();
  }

  /** Stops timers and aborts every connection. */
  close(): void {
    if (this.closedFlag) return;
    this.stack.close();
    this.sinkFlush();
    this.closedFlag = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  get closed(): boolean {
    return this.closedFlag;
  }
}

/** A HostDevice whose host is the userspace stack (meshd --tun=userspace-networking); TCP segments are built in its staged batches (PacketSink). */
export class NetstackDevice implements HostDevice, PacketSink {
  readonly name = 'userspace-networking';
  readonly mtu: number;
  readonly driver: NetstackDriver;
  private onBatch: ((b: RxBatch) => void) | undefined;
  private readonly shape: { slots: number; slotSize: number; headroom: number };
  /** Staged output in order; the last one is being filled. */
  private staged: RxBatch[] = [];
  /** Empty batches to reuse; the first one (returned by startReading) is preferred. */
  private readonly free: RxBatch[] = [];
  private primary: RxBatch | undefined;
  private total = 0;
  private readonly rx: PollStats = { packets: 0, batches: 0, wakeups: 0, truncated: 0, errors: 0, kernelDrops: 0, gsoReads: 0, gsoSegments: 0, csumCompleted: 0, badGso: 0, groMessages: 0, groSegments: 0, lastErrno: 0, active: true };
  private txPackets = 0;
  private txDropped = 0;
  private outDropped = 0;
  private delivering = false;
  /** Set by outputTo: segments are built in this ring's frames, not in staged batches. */
  private ring: OutputRing | undefined;

  constructor(opts: { mtu?: number; tcp?: NetstackOptions['tcp']; limits?: NetstackOptions['limits'] } = {}) {
    this.mtu = opts.mtu ?? 1280;
    this.shape = { slots: 128, slotSize: slotSizeFor(this.mtu, DEFAULT_HEADROOM, DEFAULT_TAILROOM), headroom: DEFAULT_HEADROOM };
    this.driver = new NetstackDriver({
      mtu: this.mtu,
      output: (buf, off, len) => this.stage(buf, off, len),
      sink: this,
      ...(opts.tcp ? { tcp: opts.tcp } : {}),
      ...(opts.limits ? { limits: opts.limits } : {}),
    });
    this.driver.setFlush(() => this.deliver());
  }

  /** The stack. */
  get stack(): Netstack {
    return this.driver.stack;
  }

  startReading(onBatch: (batch: RxBatch) => void): RxBatch {
    this.onBatch = onBatch;
    const b = new RxBatch(this.shape);
    this.primary = b;
    this.total = 1;
    return b;
  }

  /**
   * Output goes straight into ring's frames (the netstack worker's ring to the data plane): each
   * segment is built where the other thread reads it, not built in a staged batch and copied into
   * the ring at the flush. Full frames go when full, the rest at each flush. Instead of startReading.
   */
  outputTo(ring: OutputRing): void {
    this.ring = ring;
    this.buf = ring.data;
  }

  private takeBatch(): RxBatch | undefined {
    const p = this.primary;
    if (p !== undefined && p.count === 0 && !this.staged.includes(p)) return p;
    const f = this.free.pop();
    if (f !== undefined) return f;
    if (this.total >= MAX_STAGED) return undefined;
    this.total++;
    return new RxBatch(this.shape);
  }

  /** Copies one packet from the stack into the staged output. */
  private stage(buf: Uint8Array, off: number, len: number): void {
    const at = this.reserve(len);
    if (at < 0) return;
    copyBytes.call(buf, this.buf, at, off, off + len);
    this.commit(len);
  }

  /** PacketSink: the batch being filled, where reserve() points. */
  buf: Uint8Array = new Uint8Array(0);
  private filling: RxBatch | undefined;

  /** PacketSink.reserve: room for one packet in the staged output (-1 and counted when there is none). */
  reserve(max: number): number {
    const ring = this.ring;
    if (ring !== undefined) {
      if (max > this.shape.slotSize - this.shape.headroom - DEFAULT_TAILROOM) { this.outDropped++; return -1; }
      this.buf = ring.data;
      return ring.reserve(max); // -1: the ring is full (it counts the drop)
    }
    if (this.onBatch === undefined || max > this.shape.slotSize - this.shape.headroom - DEFAULT_TAILROOM) { this.outDropped++; return -1; }
    let b = this.staged[this.staged.length - 1];
    if (b === undefined || b.count >= b.slots) {
      b = this.takeBatch();
      if (b === undefined) { this.outDropped++; return -1; }
      b.count = 0;
      this.staged.push(b);
    }
    this.filling = b;
    this.buf = b.buf;
    return b.offset(b.count);
  }

  /** PacketSink.commit: the reserved packet is len bytes. */
  commit(len: number): void {
    if (this.ring !== undefined) {
      this.ring.commit(len);
      this.rx.packets++;
      this.driver.schedule();
      return;
    }
    const b = this.filling!;
    b.lens[b.count] = len;
    b.count++;
    this.driver.schedule();
  }

  /** Hands staged batches to the data plane, in order. */
  private deliver(): void {
    if (this.ring !== undefined) { this.ring.publish(); return; }
    const cb = this.onBatch;
    if (cb === undefined || this.delivering) return;
    this.delivering = true;
    try {
      // Output staged while the data plane handles a batch lands in a fresh list: loop, bounded.
      for (let round = 0; round < 16 && this.staged.length > 0; round++) {
        const list = this.staged;
        this.staged = [];
        for (const b of list) {
          if (b.count > 0) {
            this.rx.packets += b.count;
            this.rx.batches++;
            cb(b);
          }
          b.count = 0;
          if (b !== this.primary) this.free.push(b);
        }
      }
    } finally {
      this.delivering = false;
    }
  }

  /** Packets for the host (decrypted and filtered by the data plane) go into the stack. */
  writeBatch(tx: TxBatch): number {
    const s = this.driver.stack;
    const n = tx.count;
    s.holdClock();
    for (let i = 0; i < n; i++) s.input(tx.buf, tx.offsets[i]!, tx.lens[i]!);
    s.releaseClock();
    this.txPackets += n;
    tx.clear();
    this.driver.schedule();
    return n;
  }

  stats(): HostDeviceStats {
    return { rx: this.rx, txPackets: this.txPackets, txDropped: this.txDropped + this.outDropped };
  }

  close(): void {
    this.driver.close();
    this.onBatch = undefined;
  }
}
