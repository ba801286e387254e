// quad-100's answers, without I/O: one query in, a reply or "forward this" out, exactly as
// tailscaled's resolver answers (TS:net/dns/resolver/tsdns.go respond, resolveLocal,
// respondReverse, marshalResponse; dns-netstack-portmap.md 1.6).
//
//   query      12-byte header, then the first question (others ignored). Shorter than a header:
//              dropped. QR=1, QDCOUNT 0 or an unparsable question: FORMERR echoing the header,
//              no question. A name with an empty or long label, or over 254 characters: FORMERR
//              with the question. Matching lowercases ASCII; the reply keeps the client's case.
//   names      *.onion NXDOMAIN; magicdns.localhost-tailscale-daemon. -> the service IPs;
//              A-B-C-D-via-N 4via6 names; ExtraRecords, then tailnet nodes; unknown names inside a
//              local zone NXDOMAIN, elsewhere forwarded. A: first IPv4, AAAA: first IPv6, ANY:
//              first address, none: NOERROR with no answer; NS/SOA/AXFR/HINFO NOTIMP; other
//              types NOERROR with no answer.
//   PTR        in-addr.arpa / 32-nibble ip6.arpa names of the service IPs, ExtraRecords and nodes
//              (4to6 addresses tried as IPv4 first); unknown ones inside a local zone NXDOMAIN,
//              else forwarded.
//   reply      QR=1, AA=1, RA=RD, opcode/TC/AD/CD echoed; every answer TTL 5; NXDOMAIN and
//              NOERROR-without-A/AAAA/ANY-answer carry the zone's SOA in the authority section
//              (owner = MNAME = RNAME = zone, serial = Unix time, other fields 10, TTL 10). No OPT.
//
// Queries are read and replies written by wire.ts (hand-written for speed, see there).
import { isIPv4 } from 'node:net';
import { type DnsConfig, EMPTY_CONFIG, SERVICE_FQDN, SERVICE_IP4, SERVICE_IP6, type Route, normIp, routeFor } from './config.ts';
import { ipv6Bytes, reverseToIPv4, reverseToIPv6, tailscale6to4, zoneContains } from './names.ts';
import { buildReply, encodeName, ipv4Bytes, readName, type WireAnswer, type WireSoa } from './wire.ts';

/** TTL of every answer (TS defaultTTL). */
export const ANSWER_TTL = 5;
/** TTL and timers of the negative-answer SOA (TS negativeTTL). */
export const NEGATIVE_TTL = 10;

/** DNS header flag bits (RFC 1035 4.1.1, RFC 4035 3.2). */
export const Flag = { QR: 0x8000, AA: 0x0400, TC: 0x0200, RD: 0x0100, RA: 0x0080, AD: 0x0020, CD: 0x0010, OPCODE: 0x7800 } as const;
/** Response codes. */
export const Rcode = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 } as const;
/** Record types quad-100 treats specially. */
export const QType = { A: 1, NS: 2, SOA: 6, PTR: 12, HINFO: 13, AAAA: 28, AXFR: 252, ANY: 255 } as const;

/** A parsed query: header fields and the first question. */
export interface Query {
  readonly id: number;
  /** The 16-bit flags word as sent. */
  readonly flags: number;
  /** Question name as sent (dns-packet text: no trailing dot, "." for the root). */
  readonly name: string;
  /** Lowercase FQDN of the name. */
  readonly fqdn: string;
  readonly type: number;
  readonly qclass: number;
  /** Offset just past the first question. */
  readonly end: number;
  /** The first question as sent: name, type, class (a view into the query). */
  readonly question: Uint8Array;
  /** The question name in wire form (answers' owner name). */
  readonly owner: Uint8Array;
}

/** What to do with a query. */
export type Outcome =
  | { readonly kind: 'reply'; readonly bytes: Uint8Array; readonly rcode: number }
  | { readonly kind: 'forward'; readonly query: Query; readonly route: Route | undefined }
  | { readonly kind: 'drop' };

/** Counters of the resolver core. */
export interface ResolverCounters {
  /** Answered from the tailnet (including NXDOMAIN in its zones). */
  local: number;
  /** Handed to the forwarder. */
  forwarded: number;
  /** Answered FORMERR. */
  formErr: number;
  /** Dropped: shorter than a DNS header. */
  dropShort: number;
}

/** Why a query could not be parsed (FORMERR). */
type ParseFail = { readonly fail: 'short' } | { readonly fail: 'header'; readonly id: number; readonly flags: number };

/** Parses the header and first question; never throws. The Query holds views into `buf`. */
export function parseQuery(buf: Uint8Array): Query | ParseFail {
  if (buf.length < 12) return { fail: 'short' };
  const id = (buf[0]! << 8) | buf[1]!;
  const flags = (buf[2]! << 8) | buf[3]!;
  const qd = (buf[4]! << 8) | buf[5]!;
  if ((flags & Flag.QR) !== 0 || qd === 0) return { fail: 'header', id, flags };
  const n = readName(buf, 12);
  if (typeof n === 'string' || n.end + 4 > buf.length) return { fail: 'header', id, flags };
  const end = n.end + 4;
  return {
    id, flags, name: n.text, fqdn: n.lower, type: (buf[n.end]! << 8) | buf[n.end + 1]!, qclass: (buf[n.end + 2]! << 8) | buf[n.end + 3]!,
    end, question: buf.subarray(12, end), owner: n.wire,
  };
}

/** True when parseQuery failed. */
function failed(r: Query | ParseFail): r is ParseFail {
  return 'fail' in r;
}

/** The reply flags: QR, AA (unless aa=false), RA when RD (unless raFromRd=false), opcode/TC/RD/RA/AD/CD echoed, rcode. */
function replyFlags(qflags: number, rcode: number, aa: boolean, raFromRd: boolean): number {
  let flags = Flag.QR | (qflags & (Flag.OPCODE | Flag.TC | Flag.RD | Flag.RA | Flag.AD | Flag.CD));
  if (aa) flags |= Flag.AA;
  if (raFromRd && (flags & Flag.RD) !== 0) flags |= Flag.RA;
  return flags | (rcode & 0xf);
}

/** A reply with the query's header and question and no records (FORMERR, SERVFAIL, NOTIMP, ...). */
export function writeReply(q: { id: number; flags: number; question?: Uint8Array }, rcode: number, opts: { aa?: boolean; raFromRd?: boolean } = {}): Uint8Array {
  return buildReply(q.id, replyFlags(q.flags, rcode, opts.aa !== false, opts.raFromRd !== false), q.question, undefined, undefined, undefined);
}

/** The tailnet resolver core: answers from a {@link DnsConfig}, swapped whole on each map. */
export class Resolver {
  private cfg: DnsConfig = EMPTY_CONFIG;
  /** Zones in wire form (SOA owner names), per config. */
  private zoneWire = new Map<string, Uint8Array>();
  /** IPv6 answer addresses in wire form, per config. */
  private v6Bytes = new Map<string, Uint8Array>();
  readonly counters: ResolverCounters = { local: 0, forwarded: 0, formErr: 0, dropShort: 0 };
  /** Wall clock in seconds (SOA serial). */
  private readonly nowSec: () => number;

  constructor(opts: { nowSec?: () => number } = {}) {
    this.nowSec = opts.nowSec ?? (() => Math.floor(Date.now() / 1000));
  }

  /** Replaces the configuration; the next query sees it. */
  setConfig(cfg: DnsConfig): void {
    this.cfg = cfg;
    this.zoneWire = new Map();
    this.v6Bytes = new Map();
  }

  /** The configuration in force. */
  get config(): DnsConfig {
    return this.cfg;
  }

  /** Answers one query (UDP or TCP payload without the length prefix). Never throws. */
  respond(buf: Uint8Array): Outcome {
    const p = parseQuery(buf);
    if (failed(p)) {
      if (p.fail === 'short') { this.counters.dropShort++; return { kind: 'drop' }; }
      this.counters.formErr++;
      return { kind: 'reply', bytes: writeReply({ id: p.id, flags: p.flags }, Rcode.FORMERR), rcode: Rcode.FORMERR };
    }
    if (p.type === QType.PTR) return this.respondReverse(p);
    const [ip, rcode] = this.resolveLocal(p.fqdn, p.type);
    if (rcode === Rcode.REFUSED) return this.forward(p);
    let zone: string | undefined;
    if (rcode === Rcode.NXDOMAIN || (rcode === Rcode.NOERROR && ip === undefined && (p.type === QType.A || p.type === QType.AAAA || p.type === QType.ANY))) {
      zone = this.zoneOf(p.fqdn);
    }
    return this.reply(p, rcode, ip === undefined ? undefined : this.ipAnswer(ip), zone);
  }

  /** The A/AAAA answer for an address (IPv6 bytes memoized per config). */
  private ipAnswer(ip: string): WireAnswer {
    if (!ip.includes(':')) return { type: QType.A, ttl: ANSWER_TTL, rdata: ipv4Bytes(ip) };
    let b = this.v6Bytes.get(ip);
    if (!b) { b = ipv6Bytes(ip); if (this.v6Bytes.size < 4096) this.v6Bytes.set(ip, b); }
    return { type: QType.AAAA, ttl: ANSWER_TTL, rdata: b };
  }

  private reply(q: Query, rcode: number, answer: WireAnswer | undefined, zone: string | undefined): Outcome {
    this.counters.local++;
    let soa: WireSoa | undefined;
    if (zone !== undefined) {
      let z = this.zoneWire.get(zone);
      if (!z) { z = encodeName(zone); this.zoneWire.set(zone, z); }
      soa = { zone: z, ttl: NEGATIVE_TTL, serial: this.nowSec() >>> 0, timer: NEGATIVE_TTL };
    }
    const flags = replyFlags(q.flags, rcode, true, true);
    const bytes = buildReply(q.id, flags, q.question, q.owner, rcode === Rcode.NOERROR ? answer : undefined, soa);
    return { kind: 'reply', bytes, rcode };
  }

  private forward(q: Query): Outcome {
    this.counters.forwarded++;
    return { kind: 'forward', query: q, route: routeFor(this.cfg.resolver.routes, q.fqdn) };
  }

  /** The local zone holding `fqdn` (TS authoritativeZoneFor). */
  private zoneOf(fqdn: string): string | undefined {
    for (const z of this.cfg.resolver.localDomains) if (zoneContains(z, fqdn)) return z;
    return undefined;
  }

  /** TS resolveLocal: [address or none, rcode]; REFUSED means "forward". */
  private resolveLocal(fqdn: string, type: number): [string | undefined, number] {
    if (fqdn === 'onion.' || fqdn.endsWith('.onion.')) return [undefined, Rcode.NXDOMAIN];
    if (fqdn === SERVICE_FQDN) {
      if (type === QType.A) return [SERVICE_IP4, Rcode.NOERROR];
      if (type === QType.AAAA) return [SERVICE_IP6, Rcode.NOERROR];
    }
    const via = viaAddress(fqdn, type);
    if (via !== undefined) return [via || undefined, Rcode.NOERROR];
    const cfg = this.cfg;
    const addrs = cfg.resolver.hosts.get(fqdn) ?? cfg.nodes.lookup(fqdn);
    if (addrs === undefined) {
      return [undefined, this.zoneOf(fqdn) !== undefined ? Rcode.NXDOMAIN : Rcode.REFUSED];
    }
    switch (type) {
      case QType.A: return [addrs.find((a) => !a.includes(':')), Rcode.NOERROR];
      case QType.AAAA: return [addrs.find((a) => a.includes(':')), Rcode.NOERROR];
      case QType.ANY: return [addrs[0], Rcode.NOERROR];
      case QType.NS: case QType.SOA: case QType.AXFR: case QType.HINFO: return [undefined, Rcode.NOTIMP];
      default: return [undefined, Rcode.NOERROR];
    }
  }

  /** TS respondReverse. */
  private respondReverse(q: Query): Outcome {
    if (hasBonjourPrefix(q.fqdn)) {
      // The forwarder's own NXDOMAIN for DNS-SD browsing (TS forwardWithDestChan): no AA, no SOA.
      this.counters.local++;
      return { kind: 'reply', bytes: writeReply(q, Rcode.NXDOMAIN, { aa: false }), rcode: Rcode.NXDOMAIN };
    }
    const ip = reverseToIPv4(q.fqdn) ?? reverseToIPv6(q.fqdn);
    if (ip === undefined) return this.forward(q);
    let name: string | undefined;
    const v4 = tailscale6to4(ip);
    if (v4 !== undefined) name = this.nameForIp(v4);
    name ??= this.nameForIp(ip);
    if (name === undefined) {
      const zone = this.zoneOf(q.fqdn);
      if (zone === undefined) return this.forward(q);
      return this.reply(q, Rcode.NXDOMAIN, undefined, zone);
    }
    return this.reply(q, Rcode.NOERROR, { type: QType.PTR, ttl: ANSWER_TTL, rdata: encodeName(name) }, undefined);
  }

  /** `ip` is canonical text (reverseToIPv4/6 and tailscale6to4 give it so). */
  private nameForIp(ip: string): string | undefined {
    if (ip === SERVICE_IP4 || ip === SERVICE_IP6) return SERVICE_FQDN;
    return this.cfg.resolver.hostByIp.get(ip) ?? this.cfg.nodes.nameOf(ip);
  }
}

/** RFC 6763 browsing names `b|db|r|dr|lb._dns-sd._udp.<domain>` (TS hasRDNSBonjourPrefix). */
export function hasBonjourPrefix(fqdn: string): boolean {
  const dot = fqdn.indexOf('.');
  const first = fqdn.slice(0, dot);
  return (first === 'b' || first === 'db' || first === 'r' || first === 'dr' || first === 'lb') && fqdn.startsWith('_dns-sd._udp.', dot + 1);
}

/**
 * 4via6 names `A-B-C-D-via-N[.ts.net|.tailscale.net]` (TS resolveViaDomain): the AAAA in
 * fd7a:115c:a1e0:b1a::/64 (site N in bytes 8-11, the IPv4 in 12-15); '' for an A or ANY query
 * that gets an empty NOERROR; undefined when the name is not one.
 */
export function viaAddress(fqdn: string, type: number): string | undefined {
  if (type !== QType.A && type !== QType.AAAA && type !== QType.ANY) return undefined;
  const name = fqdn.slice(0, -1);
  if (name.length < 13 || !name.includes('-via-')) return undefined;
  const dot = name.indexOf('.');
  const first = dot < 0 ? name : name.slice(0, dot);
  const domain = dot < 0 ? '' : name.slice(dot + 1);
  const under = (s: string) => domain === s || domain.endsWith(`.${s}`);
  if (!(domain === '' || under('ts.net') || under('tailscale.net'))) return undefined;
  const at = first.indexOf('-via-');
  if (at < 0) return undefined;
  const ip4 = first.slice(0, at).replaceAll('-', '.');
  const siteText = first.slice(at + 5);
  if (!isIPv4(ip4) || !/^(0x[0-9a-f]+|0o?[0-7]+|[0-9]+)$/.test(siteText)) return undefined;
  const site = Number(siteText.startsWith('0') && !siteText.startsWith('0x') && siteText.length > 1 ? `0o${siteText.replace(/^0o?/, '')}` : siteText);
  if (!Number.isSafeInteger(site) || site > 0xffffffff) return undefined;
  if (type === QType.A) return '';
  const o = ip4.split('.').map(Number);
  const hex = (n: number) => n.toString(16);
  return normIp(`fd7a:115c:a1e0:b1a:${hex(site >>> 16)}:${hex(site & 0xffff)}:${hex((o[0]! << 8) | o[1]!)}:${hex((o[2]! << 8) | o[3]!)}`);
}
