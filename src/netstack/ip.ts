// IPv4 (RFC 791) and IPv6 (RFC 8200) headers for the userspace stack: parse in place with the
// checks a receiver must make, write into a caller's buffer, and the Internet checksum (RFC 1071)
// with the transport pseudo-headers (RFC 793 3.1 / RFC 8200 8.1). No allocation per packet.
//
//   IPv4:  ver/ihl(1) tos(1) totlen(2) id(2) flags/frag(2) ttl(1) proto(1) csum(2) src(4) dst(4) [opts]
//   IPv6:  ver/tc/flow(4) paylen(2) next(1) hop(1) src(16) dst(16)
//
// Addresses live in 16-byte slots: IPv4 in the first 4 bytes (the rest zero), family beside them.

/** IP protocol numbers (IANA). */
export const Proto = { ICMP: 1, TCP: 6, UDP: 17, ICMPv6: 58, FRAG6: 44 } as const;

/** Why a packet was refused at the IP layer. */
export const IpDrop = {
  ok: 0,
  short: 1,
  badVersion: 2,
  badHeader: 3,
  badChecksum: 4,
  fragment: 5,
  unsupported: 6,
} as const;

/** A native sum16 (the addon's), used for spans of NATIVE_SUM_MIN bytes and more once installed. */
let nativeSum: ((buf: Uint8Array, off: number, len: number, sum: number) => number) | undefined;
/** Below this many bytes the JavaScript loop beats a call into the addon (~100 ns a call). */
const NATIVE_SUM_MIN = 512;

/**
 * Sums long spans with fn (the addon's sum16: ~150 ns per 1240-byte segment against ~400 in
 * JavaScript, which was ~15% of the netstack worker's CPU); undefined goes back to JavaScript. The
 * stack's owner installs it; the stack itself does no I/O and loads nothing.
 */
export function useNativeSum(fn: ((buf: Uint8Array, off: number, len: number, sum: number) => number) | undefined): void {
  nativeSum = fn;
}

/** One's-complement sum of buf[off, off+len) added to `sum` (not folded). */
export function sum16(buf: Uint8Array, off: number, len: number, sum = 0): number {
  if (len >= NATIVE_SUM_MIN && nativeSum !== undefined) return nativeSum(buf, off, len, sum);
  let i = off;
  const end = off + len;
  // Long runs at an even address: 32-bit native-order words (4x fewer loads than bytes). RFC 1071
  // 2(B): the sum is byte-order independent, so a little-endian sum folded to 16 bits and byte-
  // swapped equals the big-endian one.
  if (len >= 64 && LITTLE_ENDIAN && ((buf.byteOffset + off) & 1) === 0) {
    if ((buf.byteOffset + i) & 2) { sum += (buf[i]! << 8) | buf[i + 1]!; i += 2; }
    const u32 = wordsOf(buf.buffer);
    const w0 = (buf.byteOffset + i) >>> 2;
    const nw = (end - i) >>> 2;
    // Accumulate in a double: 32-bit words cannot overflow 2^53 for any packet size.
    let acc = 0;
    for (let k = w0, e = w0 + nw; k < e; k++) acc += u32[k]!;
    while (acc > 0xffff) acc = (acc % 0x10000) + Math.floor(acc / 0x10000);
    sum += ((acc & 0xff) << 8) | (acc >>> 8);
    i += nw << 2;
  }
  const pairs = i + ((end - i) & ~1);
  for (; i < pairs; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  return sum;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/**
 * 32-bit views of the last buffers summed (packet batches and the stack's output buffer are
 * reused). 16 of them: segments are built in the data plane's outgoing batches, and a burst of
 * sends fills several (7 in a bulk upload); with 4, the cache missed and made a view per segment.
 */
const VIEWS = 16;
const viewBufs: (ArrayBufferLike | undefined)[] = new Array<ArrayBufferLike | undefined>(VIEWS).fill(undefined);
const views: Uint32Array[] = Array.from({ length: VIEWS }, () => new Uint32Array(0));
let viewNext = 0;
function wordsOf(ab: ArrayBufferLike): Uint32Array {
  for (let k = 0; k < VIEWS; k++) if (viewBufs[k] === ab) return views[k]!;
  const k = viewNext;
  viewNext = (k + 1) % VIEWS;
  viewBufs[k] = ab;
  return (views[k] = new Uint32Array(ab, 0, ab.byteLength >>> 2));
}

/** Folds a sum to 16 bits and complements it. */
export function fold(sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000);
  return ~sum & 0xffff;
}

/** Pseudo-header sum for `proto` with `len` transport bytes (RFC 793 3.1, RFC 8200 8.1). */
export function pseudoSum(family: 4 | 6, src: Uint8Array, srcOff: number, dst: Uint8Array, dstOff: number, proto: number, len: number): number {
  const n = family === 4 ? 4 : 16;
  let s = sum16(src, srcOff, n, 0);
  s = sum16(dst, dstOff, n, s);
  return s + proto + (len >>> 16) + (len & 0xffff);
}

/** A parsed IP header: fields point into the packet. Reused per packet (one per stack). */
export class IpHeader {
  family: 4 | 6 = 4;
  proto = 0;
  /** Offsets of source and destination addresses in the packet buffer. */
  srcOff = 0;
  dstOff = 0;
  /** Offset and length of the transport payload. */
  l4Off = 0;
  l4Len = 0;
  ttl = 0;

  /** Parses buf[off, off+len); returns an IpDrop code (0 = ok). Verifies the IPv4 header checksum. */
  parse(buf: Uint8Array, off: number, len: number): number {
    if (len < 1) return IpDrop.short;
    const v = buf[off]! >> 4;
    if (v === 4) {
      if (len < 20) return IpDrop.short;
      const ihl = (buf[off]! & 15) * 4;
      const tot = (buf[off + 2]! << 8) | buf[off + 3]!;
      if (ihl < 20 || tot < ihl || tot > len) return IpDrop.badHeader;
      if (fold(sum16(buf, off, ihl)) !== 0) return IpDrop.badChecksum;
      // MF set or a fragment offset: a fragment (no reassembly, as tailscale's netstack by default).
      if (((buf[off + 6]! & 0x3f) | buf[off + 7]!) !== 0) return IpDrop.fragment;
      this.family = 4;
      this.ttl = buf[off + 8]!;
      this.proto = buf[off + 9]!;
      this.srcOff = off + 12;
      this.dstOff = off + 16;
      this.l4Off = off + ihl;
      this.l4Len = tot - ihl;
      return IpDrop.ok;
    }
    if (v === 6) {
      if (len < 40) return IpDrop.short;
      const pl = (buf[off + 4]! << 8) | buf[off + 5]!;
      if (40 + pl > len) return IpDrop.badHeader;
      const next = buf[off + 6]!;
      if (next === Proto.FRAG6) return IpDrop.fragment;
      if (next !== Proto.TCP && next !== Proto.UDP && next !== Proto.ICMPv6) return IpDrop.unsupported;
      this.family = 6;
      this.ttl = buf[off + 7]!;
      this.proto = next;
      this.srcOff = off + 8;
      this.dstOff = off + 24;
      this.l4Off = off + 40;
      this.l4Len = pl;
      return IpDrop.ok;
    }
    return IpDrop.badVersion;
  }
}

/** Header length for a family. */
export function ipHeaderLen(family: 4 | 6): number {
  return family === 4 ? 20 : 40;
}

let ipId = 1;

/**
 * Writes an IP header at out[off] for `l4Len` transport bytes from src to dst (16-byte slots);
 * returns the header length. The IPv4 header checksum is filled in; DF is set.
 */
export function writeIpHeader(out: Uint8Array, off: number, family: 4 | 6, proto: number, src: Uint8Array, dst: Uint8Array, l4Len: number, ttl = 64): number {
  if (family === 4) {
    const tot = 20 + l4Len;
    out[off] = 0x45; out[off + 1] = 0;
    out[off + 2] = tot >> 8; out[off + 3] = tot & 255;
    ipId = (ipId + 1) & 0xffff;
    out[off + 4] = ipId >> 8; out[off + 5] = ipId & 255;
    out[off + 6] = 0x40; out[off + 7] = 0;
    out[off + 8] = ttl; out[off + 9] = proto;
    out[off + 10] = 0; out[off + 11] = 0;
    for (let i = 0; i < 4; i++) { out[off + 12 + i] = src[i]!; out[off + 16 + i] = dst[i]!; }
    const c = fold(sum16(out, off, 20));
    out[off + 10] = c >> 8; out[off + 11] = c & 255;
    return 20;
  }
  out[off] = 0x60; out[off + 1] = 0; out[off + 2] = 0; out[off + 3] = 0;
  out[off + 4] = l4Len >> 8; out[off + 5] = l4Len & 255;
  out[off + 6] = proto; out[off + 7] = ttl;
  for (let i = 0; i < 16; i++) { out[off + 8 + i] = src[i]!; out[off + 24 + i] = dst[i]!; }
  return 40;
}

/** Parses an IPv4 or IPv6 literal into a 16-byte slot; returns the family, or 0 when it is not an IP. */
export function parseAddr(text: string, out: Uint8Array): 0 | 4 | 6 {
  out.fill(0);
  const t = text.startsWith('[') && text.endsWith(']') ? text.slice(1, -1) : text;
  const m4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(t);
  if (m4) {
    for (let i = 0; i < 4; i++) {
      const n = Number(m4[i + 1]);
      if (n > 255) return 0;
      out[i] = n;
    }
    return 4;
  }
  if (!t.includes(':')) return 0;
  let s = t;
  const pct = s.indexOf('%');
  if (pct >= 0) s = s.slice(0, pct);
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two groups.
  const tail = /(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/.exec(s);
  if (tail) {
    const b = new Uint8Array(16);
    if (parseAddr(tail[1]!, b) !== 4) return 0;
    s = `${s.slice(0, -tail[1]!.length)}${((b[0]! << 8) | b[1]!).toString(16)}:${((b[2]! << 8) | b[3]!).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) return 0;
  const head = halves[0] ? halves[0].split(':') : [];
  const rest = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  if (halves.length === 1 && head.length !== 8) return 0;
  if (head.length + rest.length > (halves.length === 2 ? 7 : 8)) return 0;
  const groups = [...head, ...new Array<string>(8 - head.length - rest.length).fill('0'), ...rest];
  for (let i = 0; i < 8; i++) {
    const g = groups[i]!;
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return 0;
    const n = parseInt(g, 16);
    out[2 * i] = n >> 8;
    out[2 * i + 1] = n & 255;
  }
  return 6;
}

/** Formats an address slot (for logs and APIs, not per packet). */
export function formatAddr(family: 4 | 6, b: Uint8Array, off = 0): string {
  if (family === 4) return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
  const g: number[] = [];
  for (let i = 0; i < 8; i++) g.push((b[off + 2 * i]! << 8) | b[off + 2 * i + 1]!);
  // RFC 5952: the longest run of two or more zero groups becomes ::.
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { best = i; bestLen = j - i; }
    i = j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLen).join(':')}`;
}

/** True when a[aOff..] equals b[bOff..] for the family's address length. */
export function addrEq(family: 4 | 6, a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): boolean {
  const n = family === 4 ? 4 : 16;
  for (let i = 0; i < n; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

/** A small hash of an address (for table buckets). */
export function addrHash(family: 4 | 6, b: Uint8Array, off: number): number {
  const n = family === 4 ? 4 : 16;
  let h = 2166136261;
  for (let i = 0; i < n; i++) h = Math.imul(h ^ b[off + i]!, 16777619);
  return h >>> 0;
}
