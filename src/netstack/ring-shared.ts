// A single-producer single-consumer ring of packet batches in shared memory, to move IP packets
// between two threads (the data plane on the main thread, the userspace stack in a Worker) with
// one copy and no message per batch.
//
// Layout of the SharedArrayBuffer (all Int32 little-endian, frames a power of two):
//
//   [ ctl: 16 x i32 ][ meta: frames x (1 + slots) x i32 ][ data: frames x slots x slotSize bytes ]
//   ctl[0] head    frames published by the producer (counts up, masked to 30 bits)
//   ctl[1] tail    frames released by the consumer
//   ctl[2] asleep  1 while the consumer waits for the ring to become non-empty
//   ctl[3] dropped packets the producer could not place (ring full), counted by the producer
//   meta   per frame: packet count, then one length per slot
//   data   per frame: slots of slotSize bytes; packet k starts headroom bytes into slot k, as in
//          an RxBatch (src/net/batch.ts), so the consumer can encrypt in place in the frame
//
// A frame belongs to the producer from acquire() to publish() and to the consumer from peek() to
// release(). The consumer sleeps only when the ring is empty (asleep=1, then head is checked once
// more: sequentially consistent Atomics make the producer's publish-then-check-asleep and the
// consumer's set-asleep-then-check-head see each other), so a busy stream wakes nobody.
import { RxBatch, type BatchShape } from '../net/batch.ts';

const HEAD = 0, TAIL = 1, ASLEEP = 2, DROPPED = 3;
const CTL_WORDS = 16;
const MASK = 0x3fffffff;

/** Shape of a ring: frames (a power of two) of `slots` packets of up to slotSize - headroom bytes each. */
export interface RingShape extends BatchShape {
  frames: number;
}

/** Bytes of shared memory a ring of this shape needs. */
export function ringBytes(s: RingShape): number {
  return CTL_WORDS * 4 + s.frames * (1 + s.slots) * 4 + s.frames * s.slots * s.slotSize;
}

function checkRingShape(s: RingShape): void {
  if (!Number.isInteger(s.frames) || s.frames < 2 || s.frames > 1024 || (s.frames & (s.frames - 1)) !== 0) throw new RangeError(`frames must be a power of two in 2..1024, got ${s.frames}`);
  if (!Number.isInteger(s.slots) || s.slots < 1 || s.slots > 128) throw new RangeError(`slots must be in 1..128, got ${s.slots}`);
  if (!Number.isInteger(s.slotSize) || s.slotSize <= s.headroom || s.slotSize % 8 !== 0) throw new RangeError(`slotSize must be a multiple of 8 above headroom, got ${s.slotSize}`);
}

/** A frame of the ring seen as an RxBatch: every frame shares one buffer (the ring's data), offsets start at its base. */
export class FrameBatch extends RxBatch {
  /** Byte offset of this frame in buf. */
  readonly base: number;

  constructor(shape: BatchShape, buf: Uint8Array, lens: Int32Array, base: number) {
    super(shape, undefined, { buf, lens });
    this.base = base;
  }

  override offset(i: number): number {
    return this.base + i * this.slotSize + this.headroom;
  }

  override slotEnd(i: number): number {
    return this.base + (i + 1) * this.slotSize;
  }
}

type WaitAsync = (a: Int32Array, index: number, value: number) => { async: false; value: string } | { async: true; value: Promise<string> };
/** Atomics.waitAsync (Node 16+; typed in lib ES2024, which this project does not load). */
const waitAsync = (Atomics as unknown as { waitAsync: WaitAsync }).waitAsync;

const copyBytes = Buffer.prototype.copy as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number;

/** One end of a shared packet ring (both ends construct it over the same SharedArrayBuffer). */
export class PacketRing {
  readonly sab: SharedArrayBuffer;
  readonly shape: RingShape;
  /** Control words (see the layout above). */
  readonly ctl: Int32Array;
  /** All frames' packet data. */
  readonly data: Uint8Array;
  /** Each frame as a batch over data (count is set by peek()). */
  readonly batches: readonly FrameBatch[];
  private readonly meta: Int32Array;
  private readonly frameWords: number;
  private readonly frameBytes: number;
  private readonly fmask: number;
  /** Producer: the frame being filled (-1 = none), its fill, and its index. */
  private fill = -1;
  private fillCount = 0;
  private fillLens: Int32Array | undefined;
  private waiting = false;
  /** Producer: frames published, and how many of those had to wake a sleeping consumer. */
  published = 0;
  notified = 0;

  /** A new ring in fresh shared memory. */
  static create(shape: RingShape): PacketRing {
    checkRingShape(shape);
    return new PacketRing(new SharedArrayBuffer(ringBytes(shape)), shape);
  }

  /** The other end of a ring created elsewhere (e.g. in another thread). */
  constructor(sab: SharedArrayBuffer, shape: RingShape) {
    checkRingShape(shape);
    if (sab.byteLength < ringBytes(shape)) throw new RangeError(`ring buffer is ${sab.byteLength} bytes, its shape needs ${ringBytes(shape)}`);
    this.sab = sab;
    this.shape = { frames: shape.frames, slots: shape.slots, slotSize: shape.slotSize, headroom: shape.headroom };
    this.ctl = new Int32Array(sab, 0, CTL_WORDS);
    this.frameWords = 1 + shape.slots;
    this.meta = new Int32Array(sab, CTL_WORDS * 4, shape.frames * this.frameWords);
    const dataOff = CTL_WORDS * 4 + shape.frames * this.frameWords * 4;
    this.frameBytes = shape.slots * shape.slotSize;
    this.data = new Uint8Array(sab, dataOff, shape.frames * this.frameBytes);
    this.fmask = shape.frames - 1;
    const b: FrameBatch[] = [];
    for (let f = 0; f < shape.frames; f++) {
      const lens = new Int32Array(sab, CTL_WORDS * 4 + (f * this.frameWords + 1) * 4, shape.slots);
      b.push(new FrameBatch(this.shape, this.data, lens, f * this.frameBytes));
    }
    this.batches = b;
  }

  /** Frames published and not yet released. */
  get pending(): number {
    return (Atomics.load(this.ctl, HEAD) - Atomics.load(this.ctl, TAIL)) & MASK;
  }

  /** Packets the producer dropped because the ring was full. */
  get dropped(): number {
    return Atomics.load(this.ctl, DROPPED);
  }

  // ---- producer ----

  /**
   * Producer: room for one packet of up to max bytes in the frame being filled; returns its offset
   * in `data`, or -1 (counted as dropped) when the ring is full or the packet is too big. Follow
   * with commit(len). A full frame is published first.
   */
  reserve(max: number): number {
    const s = this.shape;
    if (max > s.slotSize - s.headroom) { this.drop(1); return -1; }
    if (this.fill >= 0 && this.fillCount >= s.slots) this.publish();
    if (this.fill < 0) {
      const head = Atomics.load(this.ctl, HEAD);
      if (((head - Atomics.load(this.ctl, TAIL)) & MASK) >= s.frames) { this.drop(1); return -1; }
      this.fill = head & this.fmask;
      this.fillCount = 0;
      this.fillLens = this.batches[this.fill]!.lens;
    }
    return this.fill * this.frameBytes + this.fillCount * s.slotSize + s.headroom;
  }

  /** Producer: the packet at the last reserve() is len bytes. */
  commit(len: number): void {
    this.fillLens![this.fillCount++] = len;
  }

  /** Producer: copies buf[off, off+len) into the ring; false (counted) when there is no room. */
  push(buf: Uint8Array, off: number, len: number): boolean {
    const at = this.reserve(len);
    if (at < 0) return false;
    copyBytes.call(buf, this.data, at, off, off + len);
    this.commit(len);
    return true;
  }

  /** Producer: publishes the frame being filled (if any packets) and wakes the consumer if it sleeps. */
  publish(): void {
    if (this.fill < 0) return;
    if (this.fillCount === 0) return; // keep the empty frame for the next packets
    this.meta[this.fill * this.frameWords] = this.fillCount;
    this.fill = -1;
    this.fillCount = 0;
    this.fillLens = undefined;
    Atomics.store(this.ctl, HEAD, (Atomics.load(this.ctl, HEAD) + 1) & MASK);
    this.published++;
    if (Atomics.load(this.ctl, ASLEEP) === 1) {
      this.notified++;
      Atomics.store(this.ctl, ASLEEP, 0);
      Atomics.notify(this.ctl, ASLEEP);
    }
  }

  /** Producer: counts n packets dropped. */
  drop(n: number): void {
    Atomics.add(this.ctl, DROPPED, n);
  }

  // ---- consumer ----

  /** Consumer: the oldest published frame as a batch (count set), or undefined when the ring is empty. */
  peek(): FrameBatch | undefined {
    const tail = Atomics.load(this.ctl, TAIL);
    if (tail === Atomics.load(this.ctl, HEAD)) return undefined;
    const f = tail & this.fmask;
    const b = this.batches[f]!;
    b.count = this.meta[f * this.frameWords]!;
    return b;
  }

  /** Consumer: gives the frame from peek() back to the producer. */
  release(): void {
    Atomics.store(this.ctl, TAIL, (Atomics.load(this.ctl, TAIL) + 1) & MASK);
  }

  /**
   * Consumer: calls onFrame for each published frame (at most maxFrames), releasing each after it
   * returns. Returns how many frames it handled (see pending for what still waits).
   */
  drain(onFrame: (b: FrameBatch) => void, maxFrames: number): number {
    let i = 0;
    for (; i < maxFrames; i++) {
      const b = this.peek();
      if (b === undefined) break;
      try {
        onFrame(b);
      } finally {
        this.release();
      }
    }
    return i;
  }

  /**
   * Consumer: calls wake once the ring is non-empty, at once (in a microtask) when it already is,
   * else after the producer's next publish (Atomics.waitAsync: no message, no polling). One wait
   * at a time; a second call while waiting is ignored.
   */
  waitNonEmpty(wake: () => void): void {
    if (this.waiting) return;
    Atomics.store(this.ctl, ASLEEP, 1);
    if (Atomics.load(this.ctl, TAIL) !== Atomics.load(this.ctl, HEAD)) {
      Atomics.store(this.ctl, ASLEEP, 0);
      queueMicrotask(wake);
      return;
    }
    this.waiting = true;
    const r = waitAsync(this.ctl, ASLEEP, 1);
    if (!r.async) { this.waiting = false; queueMicrotask(wake); return; }
    void r.value.then(() => { this.waiting = false; wake(); });
  }

  /** Wakes a consumer waiting in waitNonEmpty (e.g. to stop it). */
  interrupt(): void {
    Atomics.store(this.ctl, ASLEEP, 0);
    Atomics.notify(this.ctl, ASLEEP);
  }
}

/**
 * Turns of the event loop a consumer that found its ring empty looks again before it sleeps. A
 * sleeping consumer costs the producer an Atomics.notify per publish (a task posted to the other
 * thread's loop, 23-35 us of wall time measured on a loaded machine); in a busy stream the next
 * batch often comes within a turn or two, so looking again is cheaper than being woken.
 */
export const SPIN_TURNS = 2;

/** Upper bounds (ms) of the consumer's sleep-length classes (ringConsumer's sleeps; the last class is longer). */
export const SLEEP_BOUNDS_MS = [0.05, 0.2, 1, 5] as const;

/**
 * Runs a ring's consumer: drain, look again for SPIN_TURNS idle turns, then sleep until the
 * producer publishes. start() begins (a no-op while asleep), stop() ends it for good; `sleeps`
 * counts its sleeps by length (SLEEP_BOUNDS_MS), to tell a starved consumer from one woken at once. (Looking
 * longer, up to 200 us by the clock, measured worse: fewer wake-ups did not pay for the polling.)
 */
export function ringConsumer(ring: PacketRing, onFrame: (b: FrameBatch) => void, maxFrames: number, around?: { before(): void; after(frames: number): void }): { start(): void; stop(): void; readonly wakeups: number; readonly sleeps: readonly number[] } {
  let idle = 0, stopped = false, wakeups = 0, sleeping = false, sleptAt = 0;
  const sleeps = [0, 0, 0, 0, 0];
  const wake = (): void => {
    sleeping = false;
    wakeups++;
    const ms = performance.now() - sleptAt;
    let k = 0;
    while (k < SLEEP_BOUNDS_MS.length && ms >= SLEEP_BOUNDS_MS[k]!) k++;
    sleeps[k]!++;
    pump();
  };
  const pump = (): void => {
    if (stopped) return;
    let n = 0;
    if (ring.pending > 0) {
      around?.before();
      try {
        n = ring.drain(onFrame, maxFrames);
      } finally {
        around?.after(n);
      }
    }
    if (n > 0) { idle = 0; setImmediate(pump); return; }
    if (idle++ < SPIN_TURNS) { setImmediate(pump); return; }
    idle = 0;
    sleeping = true;
    sleptAt = performance.now();
    ring.waitNonEmpty(wake);
  };
  return {
    start: () => { if (!sleeping) pump(); },
    stop: () => { stopped = true; ring.interrupt(); },
    get wakeups() { return wakeups; },
    sleeps,
  };
}
