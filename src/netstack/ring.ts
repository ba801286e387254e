// A growable byte ring for TCP's send buffer: bytes from SND.UNA on, appended by the application,
// copied out for (re)transmission, dropped from the front when acknowledged. Grows by doubling up
// to a cap; never shrinks while in use. Holds no memory until the first push (a connection that
// never sends costs nothing), and small rings come from Node's shared buffer pool, not a fresh
// zero-filled off-heap allocation each (one per connection showed in connection storms).

const copyBytes = Buffer.prototype.copy as (this: Uint8Array, target: Uint8Array, targetStart: number, sourceStart: number, sourceEnd: number) => number;

const EMPTY = new Uint8Array(0);

/** A byte FIFO with random-access reads, bounded by `max` bytes. */
export class ByteRing {
  private buf: Uint8Array;
  private head = 0;
  /** Bytes held. */
  length = 0;
  /** Most bytes it holds (the owner may raise it; memory follows as bytes are pushed). */
  max: number;

  constructor(max: number, initial = 0) {
    this.max = max;
    this.buf = initial > 0 ? Buffer.allocUnsafeSlow(Math.min(max, initial)) : EMPTY;
  }

  /** Room left before the cap. */
  get free(): number {
    return this.max - this.length;
  }

  /** Appends up to `len` bytes of src[off..]; returns how many were taken. */
  push(src: Uint8Array, off: number, len: number): number {
    const n = Math.min(len, this.max - this.length);
    if (n <= 0) return 0;
    if (this.length + n > this.buf.length) this.grow(this.length + n);
    const cap = this.buf.length;
    let tail = this.head + this.length;
    if (tail >= cap) tail -= cap;
    const first = Math.min(n, cap - tail);
    copyBytes.call(src, this.buf, tail, off, off + first);
    if (first < n) copyBytes.call(src, this.buf, 0, off + first, off + n);
    this.length += n;
    return n;
  }

  /** Copies `len` bytes starting `at` bytes after the head into out[outOff..]. */
  copyOut(at: number, out: Uint8Array, outOff: number, len: number): void {
    const cap = this.buf.length;
    let p = this.head + at;
    if (p >= cap) p -= cap;
    const first = Math.min(len, cap - p);
    copyBytes.call(this.buf, out, outOff, p, p + first);
    if (first < len) copyBytes.call(this.buf, out, outOff + first, 0, len - first);
  }

  /** Drops `n` bytes from the front. */
  drop(n: number): void {
    const k = Math.min(n, this.length);
    this.head += k;
    if (this.head >= this.buf.length) this.head -= this.buf.length;
    this.length -= k;
    if (this.length === 0) this.head = 0;
  }

  /** Empties the ring and lets go of its memory (a connection that will send nothing more). */
  release(): void {
    this.buf = EMPTY;
    this.head = 0;
    this.length = 0;
  }

  /** Bytes of memory held. */
  get capacity(): number {
    return this.buf.length;
  }

  private grow(need: number): void {
    let cap = this.buf.length || 2048;
    while (cap < need) cap *= 2;
    cap = Math.min(Math.max(cap, need), this.max);
    // Up to 4 KiB from Node's pool (a slice of a shared slab), larger ones their own allocation; never zero-filled.
    const next = cap <= 4096 ? Buffer.allocUnsafe(cap) : Buffer.allocUnsafeSlow(cap);
    this.copyOut(0, next, 0, this.length);
    this.buf = next;
    this.head = 0;
  }
}
