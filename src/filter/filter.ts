// The tailnet's packet filter, as tailscaled enforces it (TS wgengine/filter; data-plane.md 8):
// control sends FilterRule[] in the network map; packets arriving from the tunnel (RunIn) are
// dropped unless a rule admits them or they answer a flow of ours. Packets we send into the tunnel
// (RunOut) are never dropped; UDP/SCTP ones record their 5-tuple so the reply can come back.
//
// RunIn, in order (8.2):
//   empty (WireGuard keepalive) -> accept; shorter than an IP header, or not IPv4/IPv6 -> drop
//   non-first fragment -> accept; multicast or link-local destination -> drop
//   destination outside the node's local nets (its addresses and routes) -> drop
//   ICMP echo reply and ICMP errors -> accept; other ICMP -> a rule for this src/dst pair, any port
//   TCP: anything but a pure SYN (SYN without ACK) -> accept; a SYN must match a rule
//   UDP/SCTP: reversed tuple recorded by RunOut -> accept; else a rule
//   TSMP (99) -> accept; other protocols -> a rule that lists the protocol with ports 0-65535
//
// Rules compile into typed arrays of address ranges; a packet is parsed into fields of the filter
// object, so neither path allocates or throws. `update` swaps rules and local nets and keeps the
// flow table, as tailscale shares it between filters.
import { isIPv4, isIPv6 } from 'node:net';
import type { FilterRule } from '../control/wire.ts';
import { parsePrefix } from '../wg/allowedips.ts';
import { FlowTable, KEY_WORDS } from './flows.ts';

/** IP protocol numbers the filter knows (IANA). */
export const IPProto = { ICMP: 1, TCP: 6, UDP: 17, ICMPv6: 58, TSMP: 99, SCTP: 132 } as const;

/** Protocols a rule with an empty IPProto list covers (tailscale: TCP, UDP, ICMPv4, ICMPv6). */
const DEFAULT_PROTOS = [IPProto.TCP, IPProto.UDP, IPProto.ICMP, IPProto.ICMPv6];

/** Why packets were dropped or let through; counters only grow. */
export interface FilterCounters {
  acceptedIn: number;
  dropShort: number;
  dropUnknown: number;
  dropMulticast: number;
  dropLinkLocal: number;
  dropNotLocal: number;
  dropNoRule: number;
}

/** Address ranges of one family: v4 as [lo, hi] pairs, v6 as [lo0..3, hi0..3] groups of 8 words. */
interface Ranges {
  v4: Uint32Array;
  v6: Uint32Array;
}

/** One compiled rule. */
interface Rule {
  protos: Uint8Array;
  src: Ranges;
  /** v4: [lo, hi, portLo, portHi]; v6: [lo0..3, hi0..3, portLo, portHi]. */
  dst4: Uint32Array;
  dst6: Uint32Array;
}

/** A rule or address the filter could not use, with the reason (the rest of the filter still applies). */
export interface FilterProblem {
  text: string;
  reason: string;
}

const V6_ALL_LO = [0, 0, 0, 0];
const V6_ALL_HI = [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff];

function words6(bytes: Uint8Array): number[] {
  const w: number[] = [];
  for (let i = 0; i < 16; i += 4) w.push(((bytes[i]! << 24) | (bytes[i + 1]! << 16) | (bytes[i + 2]! << 8) | bytes[i + 3]!) >>> 0);
  return w;
}

function v4num(bytes: Uint8Array): number {
  return ((bytes[0]! << 24) | (bytes[1]! << 16) | (bytes[2]! << 8) | bytes[3]!) >>> 0;
}

/** One parsed address range: family and inclusive bounds (v4 as numbers, v6 as 4 words each). */
type Range = { family: 4; lo: number; hi: number } | { family: 6; lo: number[]; hi: number[] };

/** Parses a filter IP: `*`, an address, a CIDR or an inclusive `a-b` range. Throws TypeError. */
export function parseFilterIP(text: string): Range[] {
  if (text === '*') return [{ family: 4, lo: 0, hi: 0xffffffff }, { family: 6, lo: V6_ALL_LO, hi: V6_ALL_HI }];
  const dash = text.indexOf('-');
  if (dash > 0) {
    const a = text.slice(0, dash), b = text.slice(dash + 1);
    if (isIPv4(a) && isIPv4(b)) {
      const lo = v4num(parsePrefix(a).bytes), hi = v4num(parsePrefix(b).bytes);
      if (lo > hi) throw new TypeError(`bad range ${text}: start after end`);
      return [{ family: 4, lo, hi }];
    }
    if (isIPv6(a) && isIPv6(b)) {
      const lo = words6(parsePrefix(a).bytes), hi = words6(parsePrefix(b).bytes);
      if (cmp6(lo, 0, hi, 0) > 0) throw new TypeError(`bad range ${text}: start after end`);
      return [{ family: 6, lo, hi }];
    }
    throw new TypeError(`bad range ${JSON.stringify(text)}`);
  }
  const p = parsePrefix(text);
  if (p.family === 4) {
    const lo = v4num(p.bytes);
    const size = 2 ** (32 - p.bits);
    return [{ family: 4, lo, hi: lo + size - 1 }];
  }
  const lo = words6(p.bytes);
  const hi = lo.slice();
  for (let w = 0; w < 4; w++) {
    const keep = Math.max(0, Math.min(32, p.bits - w * 32));
    const hostMask = keep === 32 ? 0 : keep === 0 ? 0xffffffff : (0xffffffff >>> keep);
    hi[w] = (hi[w]! | hostMask) >>> 0;
  }
  return [{ family: 6, lo, hi }];
}

function cmp6(a: ArrayLike<number>, ai: number, b: ArrayLike<number>, bi: number): number {
  for (let i = 0; i < 4; i++) {
    const x = a[ai + i]!, y = b[bi + i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

function toRanges(list: Range[]): Ranges {
  const v4: number[] = [], v6: number[] = [];
  for (const r of list) {
    if (r.family === 4) v4.push(r.lo, r.hi);
    else v6.push(...r.lo, ...r.hi);
  }
  return { v4: Uint32Array.from(v4), v6: Uint32Array.from(v6) };
}

function in4(r: Uint32Array, stride: number, a: number): number {
  for (let i = 0; i < r.length; i += stride) if (a >= r[i]! && a <= r[i + 1]!) return i;
  return -1;
}

function in6(r: Uint32Array, stride: number, a: Uint32Array, from = 0): number {
  for (let i = from; i < r.length; i += stride) if (cmp6(a, 0, r, i) >= 0 && cmp6(a, 0, r, i + 4) <= 0) return i;
  return -1;
}

/** Compiles rules; unusable entries (cap: sources, junk) are skipped and reported. */
export function compileRules(rules: readonly FilterRule[], problems: FilterProblem[] = []): Rule[] {
  const out: Rule[] = [];
  for (const r of rules) {
    if ((r.SrcBits && r.SrcBits.length > 0)) { problems.push({ text: JSON.stringify(r), reason: 'deprecated SrcBits' }); continue; }
    const protos = new Uint8Array(256);
    const list = r.IPProto && r.IPProto.length > 0 ? r.IPProto : DEFAULT_PROTOS;
    for (const p of list) if (Number.isInteger(p) && p >= 0 && p < 256) protos[p] = 1;
    const srcs: Range[] = [];
    for (const s of r.SrcIPs ?? []) {
      if (s.startsWith('cap:')) { problems.push({ text: s, reason: 'node capability sources are not supported' }); continue; }
      try { srcs.push(...parseFilterIP(s)); } catch (e) { problems.push({ text: s, reason: (e as Error).message }); }
    }
    const d4: number[] = [], d6: number[] = [];
    for (const d of r.DstPorts ?? []) {
      let ranges: Range[];
      try { ranges = parseFilterIP(d.IP); } catch (e) { problems.push({ text: d.IP, reason: (e as Error).message }); continue; }
      const first = Math.max(0, Math.min(65535, d.Ports?.First ?? 0));
      const last = Math.max(0, Math.min(65535, d.Ports?.Last ?? 65535));
      for (const x of ranges) {
        if (x.family === 4) d4.push(x.lo, x.hi, first, last);
        else d6.push(...x.lo, ...x.hi, first, last);
      }
    }
    if (srcs.length === 0 || (d4.length === 0 && d6.length === 0)) continue;
    out.push({ protos, src: toRanges(srcs), dst4: Uint32Array.from(d4), dst6: Uint32Array.from(d6) });
  }
  return out;
}

/** How a packet must match: ports checked, IPs only (ICMP), or the full port range (other protocols). */
const MATCH_PORTS = 0, MATCH_IPS_ONLY = 1, MATCH_FULL_RANGE = 2;

/** The packet filter for one node. */
export class PacketFilter {
  /** Drop and accept counters. */
  readonly counters: FilterCounters = { acceptedIn: 0, dropShort: 0, dropUnknown: 0, dropMulticast: 0, dropLinkLocal: 0, dropNotLocal: 0, dropNoRule: 0 };
  /** Entries of the last update that were skipped. */
  problems: FilterProblem[] = [];
  private rules: Rule[] = [];
  private local: Ranges = { v4: new Uint32Array(0), v6: new Uint32Array(0) };
  private readonly flows = new FlowTable();
  // The packet being looked at (parse() fills these).
  private fam = 0;
  private proto = 0;
  private src4 = 0;
  private dst4 = 0;
  private readonly src6 = new Uint32Array(4);
  private readonly dst6 = new Uint32Array(4);
  private sport = 0;
  private dport = 0;
  private l4 = 0;
  private fragment = false;
  private readonly key = new Uint32Array(KEY_WORDS);

  /**
   * Replaces the rules and the node's local nets (its addresses and the routes it serves; a
   * packet from the tunnel must be addressed to one of them). Keeps the UDP flow table.
   * With no update yet every inbound packet is dropped (tailscale's allow-none before a netmap).
   */
  update(rules: readonly FilterRule[], localNets: readonly string[]): void {
    const problems: FilterProblem[] = [];
    const compiled = compileRules(rules, problems);
    const local: Range[] = [];
    for (const n of localNets) {
      try { local.push(...parseFilterIP(n)); } catch (e) { problems.push({ text: n, reason: (e as Error).message }); }
    }
    this.rules = compiled;
    this.local = toRanges(local);
    this.problems = problems;
  }

  /** Number of compiled rules. */
  get ruleCount(): number {
    return this.rules.length;
  }

  /** Number of UDP/SCTP flows remembered. */
  get flowCount(): number {
    return this.flows.size;
  }

  /**
   * Parses the IP and transport headers into the fields above. Returns false for packets too
   * short or of an unknown IP version (counted by the caller).
   */
  private parse(b: Uint8Array, off: number, len: number): boolean {
    if (len < 20) return false;
    const v = b[off]! >> 4;
    let l4: number, proto: number;
    this.fragment = false;
    if (v === 4) {
      const ihl = (b[off]! & 15) * 4;
      if (ihl < 20 || ihl > len) return false;
      proto = b[off + 9]!;
      this.fam = 4;
      this.src4 = ((b[off + 12]! << 24) | (b[off + 13]! << 16) | (b[off + 14]! << 8) | b[off + 15]!) >>> 0;
      this.dst4 = ((b[off + 16]! << 24) | (b[off + 17]! << 16) | (b[off + 18]! << 8) | b[off + 19]!) >>> 0;
      if ((((b[off + 6]! & 0x1f) << 8) | b[off + 7]!) !== 0) this.fragment = true;
      l4 = off + ihl;
    } else if (v === 6) {
      if (len < 40) return false;
      this.fam = 6;
      for (let w = 0; w < 4; w++) {
        const s = off + 8 + w * 4, d = off + 24 + w * 4;
        this.src6[w] = ((b[s]! << 24) | (b[s + 1]! << 16) | (b[s + 2]! << 8) | b[s + 3]!) >>> 0;
        this.dst6[w] = ((b[d]! << 24) | (b[d + 1]! << 16) | (b[d + 2]! << 8) | b[d + 3]!) >>> 0;
      }
      proto = b[off + 6]!;
      l4 = off + 40;
      const end = off + len;
      // Skip extension headers (hop-by-hop 0, routing 43, destination options 60, fragment 44).
      for (let n = 0; n < 8; n++) {
        if (proto === 0 || proto === 43 || proto === 60) {
          if (l4 + 8 > end) return false;
          const next = b[l4]!;
          l4 += (b[l4 + 1]! + 1) * 8;
          proto = next;
        } else if (proto === 44) {
          if (l4 + 8 > end) return false;
          if ((((b[l4 + 2]! << 8) | b[l4 + 3]!) >> 3) !== 0) this.fragment = true;
          proto = b[l4]!;
          l4 += 8;
        } else break;
      }
    } else {
      return false;
    }
    this.proto = proto;
    this.l4 = l4;
    this.sport = this.dport = 0;
    if (!this.fragment && (proto === IPProto.TCP || proto === IPProto.UDP || proto === IPProto.SCTP)) {
      if (l4 + 4 > off + len) return false;
      this.sport = (b[l4]! << 8) | b[l4 + 1]!;
      this.dport = (b[l4 + 2]! << 8) | b[l4 + 3]!;
    }
    return true;
  }

  /** Fills `key` with the packet's tuple, reversed when `reverse` (the tuple of the reply). */
  private fillKey(reverse: boolean): Uint32Array {
    const k = this.key;
    k[0] = (this.fam << 8) | this.proto;
    if (!reverse) k[1] = ((this.sport << 16) | this.dport) >>> 0;
    else k[1] = ((this.dport << 16) | this.sport) >>> 0;
    if (this.fam === 4) {
      k[2] = reverse ? this.dst4 : this.src4; k[3] = k[4] = k[5] = 0;
      k[6] = reverse ? this.src4 : this.dst4; k[7] = k[8] = k[9] = 0;
    } else {
      const a = reverse ? this.dst6 : this.src6, z = reverse ? this.src6 : this.dst6;
      for (let i = 0; i < 4; i++) { k[2 + i] = a[i]!; k[6 + i] = z[i]!; }
    }
    return k;
  }

  private dstIsLocal(): boolean {
    return this.fam === 4 ? in4(this.local.v4, 2, this.dst4) >= 0 : in6(this.local.v6, 8, this.dst6) >= 0;
  }

  private match(mode: number): boolean {
    const rules = this.rules, proto = this.proto, port = this.dport;
    for (let r = 0; r < rules.length; r++) {
      const rule = rules[r]!;
      if (mode !== MATCH_IPS_ONLY && rule.protos[proto] !== 1) continue;
      if (this.fam === 4) {
        if (in4(rule.src.v4, 2, this.src4) < 0) continue;
        const d = rule.dst4;
        for (let i = 0; i < d.length; i += 4) {
          if (this.dst4 < d[i]! || this.dst4 > d[i + 1]!) continue;
          if (mode === MATCH_IPS_ONLY) return true;
          if (mode === MATCH_FULL_RANGE ? d[i + 2] === 0 && d[i + 3] === 65535 : port >= d[i + 2]! && port <= d[i + 3]!) return true;
        }
      } else {
        if (in6(rule.src.v6, 8, this.src6) < 0) continue;
        const d = rule.dst6;
        for (let i = 0; i < d.length; i += 10) {
          if (cmp6(this.dst6, 0, d, i) < 0 || cmp6(this.dst6, 0, d, i + 4) > 0) continue;
          if (mode === MATCH_IPS_ONLY) return true;
          if (mode === MATCH_FULL_RANGE ? d[i + 8] === 0 && d[i + 9] === 65535 : port >= d[i + 8]! && port <= d[i + 9]!) return true;
        }
      }
    }
    return false;
  }

  /** Decides whether a packet that arrived from the tunnel may reach the host. Never throws. */
  runIn(b: Uint8Array, off: number, len: number): boolean {
    const c = this.counters;
    if (len === 0) return true;
    if (!this.parse(b, off, len)) { c.dropShort++; return false; }
    if (this.fragment) { c.acceptedIn++; return true; }
    if (this.fam === 4) {
      const d = this.dst4;
      if ((d >>> 28) === 0xe) { c.dropMulticast++; return false; }
      if ((d >>> 16) === 0xa9fe && d !== 0xa9fea9fe) { c.dropLinkLocal++; return false; }
    } else {
      const d0 = this.dst6[0]!;
      if ((d0 >>> 24) === 0xff) { c.dropMulticast++; return false; }
      if ((d0 >>> 22) === (0xfe80 >>> 6)) { c.dropLinkLocal++; return false; }
    }
    if (!this.dstIsLocal()) { c.dropNotLocal++; return false; }
    const proto = this.proto, end = off + len;
    let ok: boolean;
    if (proto === IPProto.ICMP || proto === IPProto.ICMPv6) {
      if (this.l4 >= end) { c.dropShort++; return false; }
      const t = b[this.l4]!;
      const replyOrError = proto === IPProto.ICMP
        ? t === 0 || t === 3 || t === 11 || t === 12
        : t === 129 || (t >= 1 && t <= 4);
      ok = replyOrError || this.match(MATCH_IPS_ONLY);
    } else if (proto === IPProto.TCP) {
      if (this.l4 + 14 > end) { c.dropShort++; return false; }
      const flags = b[this.l4 + 13]!;
      ok = (flags & 0x12) !== 0x02 || this.match(MATCH_PORTS);
    } else if (proto === IPProto.UDP || proto === IPProto.SCTP) {
      ok = this.flows.has(this.fillKey(true)) || this.match(MATCH_PORTS);
    } else if (proto === IPProto.TSMP) {
      ok = true;
    } else {
      ok = this.match(MATCH_FULL_RANGE);
    }
    if (ok) c.acceptedIn++;
    else c.dropNoRule++;
    return ok;
  }

  /** Looks at a packet going into the tunnel: records UDP/SCTP flows for their replies. Never drops. */
  runOut(b: Uint8Array, off: number, len: number): void {
    if (len < 20) return;
    const p = (b[off]! >> 4) === 4 ? b[off + 9]! : b[off + 6]!;
    // Cheap pre-check before a full parse: only UDP/SCTP (or IPv6 with extension headers) matter.
    if (p !== IPProto.UDP && p !== IPProto.SCTP && (b[off]! >> 4 !== 6 || (p !== 0 && p !== 43 && p !== 44 && p !== 60))) return;
    if (!this.parse(b, off, len) || this.fragment) return;
    if (this.proto === IPProto.UDP || this.proto === IPProto.SCTP) this.flows.record(this.fillKey(false));
  }
}
