// A fixed-size LRU set of UDP/SCTP flows, as tailscale's filter keeps (wgengine/filter: 512 flows,
// data-plane.md 8.2/8.3): outbound packets record their 5-tuple; an inbound packet whose reversed
// tuple is present is a reply and passes without a rule.
//
// Layout, all preallocated: a key is KEY_WORDS uint32 words
//   [0] family<<8 | proto   [1] srcPort<<16 | dstPort   [2..5] src address   [6..9] dst address
// (IPv4 uses word 2 and 6, the rest stay 0). Entries live in one Uint32Array; a chained hash
// (bucket heads + next links) finds them and a doubly linked list in Int32Arrays keeps LRU order.
// Nothing is allocated after construction.

/** Words in a flow key. */
export const KEY_WORDS = 10;

/** Tailscale's flow table size (wgengine/filter: lruMax = 512). */
export const FLOW_CAPACITY = 512;

/** An LRU set of flow keys. */
export class FlowTable {
  /** Number of flows held. */
  size = 0;
  private readonly cap: number;
  private readonly keys: Uint32Array;
  private readonly buckets: Int32Array;
  private readonly mask: number;
  private readonly chain: Int32Array;
  private readonly bucketOf: Int32Array;
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  private head = -1;
  private tail = -1;

  constructor(capacity = FLOW_CAPACITY) {
    this.cap = Math.max(1, capacity | 0);
    let nb = 1;
    while (nb < this.cap * 2) nb <<= 1;
    this.mask = nb - 1;
    this.keys = new Uint32Array(this.cap * KEY_WORDS);
    this.buckets = new Int32Array(nb).fill(-1);
    this.chain = new Int32Array(this.cap).fill(-1);
    this.bucketOf = new Int32Array(this.cap).fill(-1);
    this.prev = new Int32Array(this.cap).fill(-1);
    this.next = new Int32Array(this.cap).fill(-1);
  }

  private static hash(k: Uint32Array): number {
    let h = 0x811c9dc5;
    for (let i = 0; i < KEY_WORDS; i++) h = Math.imul(h ^ k[i]!, 0x01000193);
    return (h ^ (h >>> 15)) >>> 0;
  }

  private find(k: Uint32Array, b: number): number {
    const keys = this.keys;
    for (let e = this.buckets[b]!, n = 0; e >= 0 && n < this.cap; e = this.chain[e]!, n++) {
      const o = e * KEY_WORDS;
      let same = true;
      for (let i = 0; i < KEY_WORDS; i++) if (keys[o + i] !== k[i]) { same = false; break; }
      if (same) return e;
    }
    return -1;
  }

  /** True when the key is present (does not refresh it, like tailscale's lookup on inbound). */
  has(k: Uint32Array): boolean {
    return this.find(k, FlowTable.hash(k) & this.mask) >= 0;
  }

  /** Adds the key, or moves it to the front; evicts the least recently used flow when full. */
  record(k: Uint32Array): void {
    const b = FlowTable.hash(k) & this.mask;
    let e = this.find(k, b);
    if (e >= 0) { this.unlink(e); this.pushFront(e); return; }
    if (this.size < this.cap) {
      e = this.size++;
    } else {
      e = this.tail;
      this.unlink(e);
      this.unchain(e);
    }
    this.keys.set(k.subarray(0, KEY_WORDS), e * KEY_WORDS);
    this.bucketOf[e] = b;
    this.chain[e] = this.buckets[b]!;
    this.buckets[b] = e;
    this.pushFront(e);
  }

  /** Forgets every flow. */
  clear(): void {
    this.buckets.fill(-1);
    this.size = 0;
    this.head = this.tail = -1;
  }

  private unchain(e: number): void {
    const b = this.bucketOf[e]!;
    if (this.buckets[b] === e) { this.buckets[b] = this.chain[e]!; return; }
    for (let x = this.buckets[b]!, n = 0; x >= 0 && n < this.cap; x = this.chain[x]!, n++) {
      if (this.chain[x] === e) { this.chain[x] = this.chain[e]!; return; }
    }
  }

  private unlink(e: number): void {
    const p = this.prev[e]!, n = this.next[e]!;
    if (p >= 0) this.next[p] = n; else this.head = n;
    if (n >= 0) this.prev[n] = p; else this.tail = p;
    this.prev[e] = this.next[e] = -1;
  }

  private pushFront(e: number): void {
    this.prev[e] = -1;
    this.next[e] = this.head;
    if (this.head >= 0) this.prev[this.head] = e;
    this.head = e;
    if (this.tail < 0) this.tail = e;
  }
}
