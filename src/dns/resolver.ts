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
// The question is written back with its exact type and class; records are encoded by dns-packet.
import { packet, type Packet } from './codec.ts';
import { Buffer } from 'node:buffer';
import { isIPv4 } from 'node:net';
import { type DnsConfig, EMPTY_CONFIG, SERVICE_FQDN, SERVICE_IP4, SERVICE_IP6, type Route, normIp, routeFor } from './config.ts';
import { asciiLower, DnsNameError, reverseToIPv4, reverseToIPv6, tailscale6to4, toFQDN, zoneContains } from './names.ts';

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
type ParseFail = { readonly fail: 'short' } | { readonly fail: 'header'; readonly id: number; readonly flags: number } | { readonly fail: 'name'; readonly q: Query };

/** Parses the header and first question; never throws. */
export function parseQuery(buf: Uint8Array): Query | ParseFail {
  if (buf.length < 12) return { fail: 'short' };
  const id = (buf[0]! << 8) | buf[1]!;
  const flags = (buf[2]! << 8) | buf[3]!;
  const qd = (buf[4]! << 8) | buf[5]!;
  if ((flags & Flag.QR) !== 0 || qd === 0) return { fail: 'header', id, flags };
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  let name: string;
  let end: number;
  try {
    name = packet.name.decode(b, 12);
    end = 12 + packet.name.decode.bytes;
  } catch {
    return { fail: 'header', id, flags };
  }
  if (end + 4 > buf.length) return { fail: 'header', id, flags };
  const type = (buf[end]! << 8) | buf[end + 1]!;
  const qclass = (buf[end + 2]! << 8) | buf[end + 3]!;
  let fqdn: string;
  const q = { id, flags, name, fqdn: '', type, qclass, end: end + 4 };
  try {
    fqdn = asciiLower(toFQDN(name));
  } catch (e) {
    if (e instanceof DnsNameError) return { fail: 'name', q };
    throw e;
  }
  return { ...q, fqdn };
}

/** True when parseQuery failed. */
function failed(r: Query | ParseFail): r is ParseFail {
  return 'fail' in r;
}

/** A record to write: dns-packet's answer shape. */
type Rec = Packet.Answer;

/** Writes a reply: header from the query, the question as sent (unless `noQuestion`), records. */
export function writeReply(q: { id: number; flags: number; name?: string; type?: number; qclass?: number }, rcode: number,
  opts: { aa?: boolean; raFromRd?: boolean; answers?: Rec[]; authorities?: Rec[] } = {}): Uint8Array {
  let flags = q.flags & (Flag.OPCODE | Flag.TC | Flag.RD | Flag.RA | Flag.AD | Flag.CD);
  if (opts.aa !== false) flags |= Flag.AA;
  if (opts.raFromRd !== false && (flags & Flag.RD) !== 0) flags |= Flag.RA;
  flags |= rcode & 0xf;
  const hasQ = q.name !== undefined && q.type !== undefined;
  const msg: Packet.Packet = {
    type: 'response', id: q.id, flags,
    questions: hasQ ? [{ name: q.name!, type: 'A', class: 'IN' }] : [],
    answers: opts.answers ?? [], authorities: opts.authorities ?? [],
  };
  const out = packet.encode(msg);
  if (hasQ) {
    // The exact type and class as sent (dns-packet would rename unknown classes).
    const at = 12 + packet.name.encodingLength(q.name!);
    out.writeUInt16BE(q.type!, at);
    out.writeUInt16BE(q.qclass!, at + 2);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** The negative-caching SOA of a zone (TS marshalSOA). */
function soa(zone: string, nowSec: number): Rec {
  const z = zone === '.' ? '.' : zone.slice(0, -1);
  return {
    name: z, type: 'SOA', class: 'IN', ttl: NEGATIVE_TTL,
    data: { mname: z, rname: z, serial: nowSec >>> 0, refresh: NEGATIVE_TTL, retry: NEGATIVE_TTL, expire: NEGATIVE_TTL, minimum: NEGATIVE_TTL },
  };
}

function ipRecord(name: string, ip: string): Rec {
  return isIPv4(ip) ? { name, type: 'A', class: 'IN', ttl: ANSWER_TTL, data: ip } : { name, type: 'AAAA', class: 'IN', ttl: ANSWER_TTL, data: ip };
}

/** The tailnet resolver core: answers from a {@link DnsConfig}, swapped whole on each map. */
export class Resolver {
  private cfg: DnsConfig = EMPTY_CONFIG;
  readonly counters: ResolverCounters = { local: 0, forwarded: 0, formErr: 0, dropShort: 0 };
  /** Wall clock in seconds (SOA serial). */
  private readonly nowSec: () => number;

  constructor(opts: { nowSec?: () => number } = {}) {
    this.nowSec = opts.nowSec ?? (() => Math.floor(Date.now() / 1000));
  }

  /** Replaces the configuration; the next query sees it. */
  setConfig(cfg: DnsConfig): void {
    this.cfg = cfg;
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
      const bytes = p.fail === 'header' ? writeReply({ id: p.id, flags: p.flags }, Rcode.FORMERR) : writeReply(p.q, Rcode.FORMERR);
      return { kind: 'reply', bytes, rcode: Rcode.FORMERR };
    }
    if (p.type === QType.PTR) return this.respondReverse(p);
    const [ip, rcode] = this.resolveLocal(p.fqdn, p.type);
    if (rcode === Rcode.REFUSED) return this.forward(p);
    let zone: string | undefined;
    if (rcode === Rcode.NXDOMAIN || (rcode === Rcode.NOERROR && ip === undefined && (p.type === QType.A || p.type === QType.AAAA || p.type === QType.ANY))) {
      zone = this.zoneOf(p.fqdn);
    }
    return this.reply(p, rcode, ip === undefined ? [] : [ipRecord(p.name, ip)], zone);
  }

  private reply(q: Query, rcode: number, answers: Rec[], zone: string | undefined): Outcome {
    this.counters.local++;
    const authorities = zone !== undefined ? [soa(zone, this.nowSec())] : [];
    return { kind: 'reply', bytes: writeReply(q, rcode, { answers: rcode === Rcode.NOERROR ? answers : [], authorities }), rcode };
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
      return this.reply(q, Rcode.NXDOMAIN, [], zone);
    }
    const target = name === '.' ? '.' : name.slice(0, -1);
    return this.reply(q, Rcode.NOERROR, [{ name: q.name, type: 'PTR', class: 'IN', ttl: ANSWER_TTL, data: target }], undefined);
  }

  private nameForIp(ip: string): string | undefined {
    const n = normIp(ip);
    if (n === SERVICE_IP4 || n === SERVICE_IP6) return SERVICE_FQDN;
    return this.cfg.resolver.hostByIp.get(n) ?? this.cfg.nodes.nameOf(n);
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
