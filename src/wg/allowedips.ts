// Cryptokey routing table (whitepaper section 2): CIDR prefixes -> peer, longest prefix wins, for
// IPv4 and IPv6. Outbound packets pick their peer by destination; inbound packets must have a source
// that routes back to the peer that sent them.
//
// Representation: one binary trie per family, one node per prefix bit, in growable Int32Arrays
// (children and value slot), so a lookup walks bits straight out of the packet bytes and allocates
// nothing. Inserting is incremental; removing rebuilds the tries from the entry list (rare).
import { isIPv4, isIPv6 } from 'node:net';
import { ipv6Bytes } from '../net/endpoint.ts';

/** A parsed, masked prefix. */
export interface Prefix {
  /** 4 or 6. */
  family: 4 | 6;
  /** Address bytes (4 or 16) with host bits cleared. */
  bytes: Uint8Array;
  /** Prefix length. */
  bits: number;
}

/** Parses `a.b.c.d/n`, `x::y/n` or a bare address (a host route); host bits are cleared. Throws TypeError. */
export function parsePrefix(cidr: string): Prefix {
  const slash = cidr.indexOf('/');
  const ip = slash < 0 ? cidr : cidr.slice(0, slash);
  let family: 4 | 6;
  let bytes: Uint8Array;
  if (isIPv4(ip)) {
    family = 4;
    bytes = Uint8Array.from(ip.split('.').map(Number));
  } else if (isIPv6(ip) && !ip.includes('%')) {
    family = 6;
    bytes = ipv6Bytes(ip);
  } else {
    throw new TypeError(`bad allowed IP ${JSON.stringify(cidr)}: not an IP address`);
  }
  const max = family === 4 ? 32 : 128;
  let bits = max;
  if (slash >= 0) {
    const t = cidr.slice(slash + 1);
    if (!/^\d{1,3}$/.test(t) || Number(t) > max) throw new TypeError(`bad allowed IP ${JSON.stringify(cidr)}: prefix length must be 0..${max}`);
    bits = Number(t);
  }
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i] = bytes[i]! & ((0xff00 >> keep) & 0xff);
  }
  return { family, bytes, bits };
}

/** Canonical text of a prefix: `10.0.0.0/8`, `fd7a:115c::/48`. */
export function formatPrefix(p: Prefix): string {
  if (p.family === 4) return `${p.bytes.join('.')}/${p.bits}`;
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((p.bytes[i]! << 8) | p.bytes[i + 1]!);
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  const h = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  const text = best < 0 ? h(g) : `${h(g.slice(0, best))}::${h(g.slice(best + bestLen))}`;
  return `${text}/${p.bits}`;
}

class Trie {
  c0 = new Int32Array(64);
  c1 = new Int32Array(64);
  val = new Int32Array(64).fill(-1);
  size = 1; // node 0 is the root and is never a child, so a child index of 0 means none

  clear(): void {
    this.c0.fill(0, 0, this.size);
    this.c1.fill(0, 0, this.size);
    this.val.fill(-1, 0, this.size);
    this.size = 1;
  }

  private grow(): void {
    const n = this.c0.length * 2;
    const c0 = new Int32Array(n); c0.set(this.c0); this.c0 = c0;
    const c1 = new Int32Array(n); c1.set(this.c1); this.c1 = c1;
    const v = new Int32Array(n).fill(-1); v.set(this.val); this.val = v;
  }

  insert(bytes: Uint8Array, bits: number, slot: number): void {
    let node = 0;
    for (let i = 0; i < bits; i++) {
      const bit = (bytes[i >> 3]! >> (7 - (i & 7))) & 1;
      const arr = bit === 0 ? this.c0 : this.c1;
      let next = arr[node]!;
      if (next === 0) {
        if (this.size === this.c0.length) this.grow();
        next = this.size++;
        (bit === 0 ? this.c0 : this.c1)[node] = next;
      }
      node = next;
    }
    this.val[node] = slot;
  }

  /** Clears the value at a prefix's node (the path stays; lookups fall back to an ancestor). */
  unset(bytes: Uint8Array, bits: number): void {
    let node = 0;
    for (let i = 0; i < bits; i++) {
      const bit = (bytes[i >> 3]! >> (7 - (i & 7))) & 1;
      node = bit === 0 ? this.c0[node]! : this.c1[node]!;
      if (node === 0) return;
    }
    this.val[node] = -1;
  }

  lookup(buf: Uint8Array, off: number, nbits: number): number {
    let node = 0;
    let best = this.val[0]!;
    const c0 = this.c0, c1 = this.c1, val = this.val;
    for (let i = 0; i < nbits; i++) {
      const bit = (buf[off + (i >> 3)]! >> (7 - (i & 7))) & 1;
      node = bit === 0 ? c0[node]! : c1[node]!;
      if (node === 0) break;
      const v = val[node]!;
      if (v >= 0) best = v;
    }
    return best;
  }
}

interface Entry<T> {
  prefix: Prefix;
  text: string;
  value: T;
  /** Insertion order: slots are reused, so they do not give it. */
  seq: number;
}

/** Longest-prefix-match table from IP prefixes to values (peers). */
export class AllowedIPs<T> {
  private readonly v4 = new Trie();
  private readonly v6 = new Trie();
  /** Slot i of the tries refers to entries[i]; removed slots are undefined and reused. */
  private readonly entries: (Entry<T> | undefined)[] = [];
  private readonly free: number[] = [];
  /** Slot by canonical prefix text, and slots by value: every change is O(prefix length), not O(table). */
  private readonly byText = new Map<string, number>();
  private readonly byValue = new Map<T, Set<number>>();
  private nextSeq = 0;
  /**
   * Changes with every change to the table (a small integer, 1..2^30-1): an answer a caller cached
   * (the receive path's last allowed source per peer, src/wg/device.ts) holds while it is the same.
   */
  version = 1;

  private changed(): void {
    this.version = this.version >= 0x3fffffff ? 1 : this.version + 1;
  }

  /** Routes a prefix to a value; a prefix already routed elsewhere moves (as in wireguard-go). */
  insert(cidr: string | Prefix, value: T): void {
    const prefix = typeof cidr === 'string' ? parsePrefix(cidr) : cidr;
    const text = formatPrefix(prefix);
    const existing = this.byText.get(text);
    if (existing !== undefined) {
      const e = this.entries[existing]!;
      if (e.value === value) return;
      this.changed();
      this.unlink(e.value, existing);
      e.value = value;
      this.link(value, existing);
      return;
    }
    this.changed();
    const slot = this.free.pop() ?? this.entries.length;
    this.entries[slot] = { prefix, text, value, seq: this.nextSeq++ };
    this.byText.set(text, slot);
    this.link(value, slot);
    (prefix.family === 4 ? this.v4 : this.v6).insert(prefix.bytes, prefix.bits, slot);
  }

  /** True when exactly these prefixes (canonical text, any order) route to `value`. */
  hasExactly(value: T, texts: readonly string[]): boolean {
    if ((this.byValue.get(value)?.size ?? 0) !== new Set(texts).size) return false;
    for (const t of texts) {
      const i = this.byText.get(t);
      if (i === undefined || this.entries[i]!.value !== value) return false;
    }
    return true;
  }

  /** Removes every prefix that routes to `value`. */
  removeValue(value: T): void {
    const slots = this.byValue.get(value);
    if (slots) for (const slot of [...slots]) this.removeSlot(slot);
  }

  /** Removes one prefix if present. */
  remove(cidr: string): void {
    const slot = this.byText.get(formatPrefix(parsePrefix(cidr)));
    if (slot !== undefined) this.removeSlot(slot);
  }

  /** The prefixes routed to `value`, canonical text, in table order (insertion order; a moved prefix keeps its place). */
  prefixesOf(value: T): string[] {
    const es = [...(this.byValue.get(value) ?? [])].map((slot) => this.entries[slot]!);
    return es.sort((x, y) => x.seq - y.seq).map((e) => e.text);
  }

  private link(value: T, slot: number): void {
    let set = this.byValue.get(value);
    if (!set) this.byValue.set(value, (set = new Set()));
    set.add(slot);
  }

  private unlink(value: T, slot: number): void {
    const set = this.byValue.get(value);
    set?.delete(slot);
    if (set?.size === 0) this.byValue.delete(value);
  }

  private removeSlot(slot: number): void {
    const e = this.entries[slot];
    if (!e) return;
    this.changed();
    (e.prefix.family === 4 ? this.v4 : this.v6).unset(e.prefix.bytes, e.prefix.bits);
    this.entries[slot] = undefined;
    this.free.push(slot);
    this.byText.delete(e.text);
    this.unlink(e.value, slot);
  }

  /** The value for an IPv4 address at buf[off, off+4), or undefined. */
  lookupV4(buf: Uint8Array, off: number): T | undefined {
    const slot = this.v4.lookup(buf, off, 32);
    return slot < 0 ? undefined : this.entries[slot]!.value;
  }

  /** The value for an IPv6 address at buf[off, off+16), or undefined. */
  lookupV6(buf: Uint8Array, off: number): T | undefined {
    const slot = this.v6.lookup(buf, off, 128);
    return slot < 0 ? undefined : this.entries[slot]!.value;
  }

  /** The value for the destination of the IP packet at buf[off, off+len); undefined if none or not IP. */
  lookupDestination(buf: Uint8Array, off: number, len: number): T | undefined {
    const v = len > 0 ? buf[off]! >> 4 : 0;
    if (v === 4 && len >= 20) return this.lookupV4(buf, off + 16);
    if (v === 6 && len >= 40) return this.lookupV6(buf, off + 24);
    return undefined;
  }

  /** The value for the source of the IP packet at buf[off, off+len); undefined if none or not IP. */
  lookupSource(buf: Uint8Array, off: number, len: number): T | undefined {
    const v = len > 0 ? buf[off]! >> 4 : 0;
    if (v === 4 && len >= 20) return this.lookupV4(buf, off + 12);
    if (v === 6 && len >= 40) return this.lookupV6(buf, off + 8);
    return undefined;
  }

}
