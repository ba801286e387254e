// quad-100 on the data plane: UDP port 53 at 100.100.100.100 and fd7a:115c:a1e0::53, taken from
// the packets the host sends into the TUN before WireGuard sees them, answered with packets
// written back to the host. IP and UDP are parsed and written here, without I/O:
//
//   IPv4  RFC 791: version 4, IHL >= 5, no fragments, protocol 17, dst 100.100.100.100
//   IPv6  RFC 8200: version 6, next header 17 (no extension headers), dst fd7a:115c:a1e0::53
//   UDP   RFC 768: dst port 53, length within the packet; the checksum is not verified (the
//         packet never left the host); replies carry a full checksum (RFC 768, RFC 8200 8.1)
//
// The check runs for every packet the host sends: it looks at four bytes before deciding a packet is
// not for quad-100.
import { SERVICE_IP4, SERVICE_IP6 } from './config.ts';
import { ipv6Bytes } from './names.ts';

const SVC4 = SERVICE_IP4.split('.').map(Number);
const SVC6 = ipv6Bytes(SERVICE_IP6);
/** Largest DNS payload quad-100 writes back over UDP. */
export const MAX_UDP_PAYLOAD = 65535 - 8 - 40;

/** A client's UDP flow to quad-100: where the reply goes. */
export interface Flow {
  readonly v6: boolean;
  /** Client address bytes (4 or 16). */
  readonly client: Uint8Array;
  readonly clientPort: number;
  /** The service address the query went to (4 or 16 bytes). */
  readonly service: Uint8Array;
}

/** Where the payload of a quad-100 UDP packet is. */
export interface DnsPacket {
  readonly flow: Flow;
  readonly payloadOff: number;
  readonly payloadLen: number;
}

/** Verdict of {@link classify}. */
export const Verdict = { NOT_OURS: 0, DNS: 1, MALFORMED: 2, OTHER_SERVICE: 3 } as const;

/**
 * Is buf[off, off+len) a packet to a quad-100 address? NOT_OURS for every other packet (cheap);
 * DNS for UDP/53; OTHER_SERVICE for anything else to the service IPs; MALFORMED for a broken UDP packet to them.
 */
export function classify(buf: Uint8Array, off: number, len: number): number {
  if (len < 20) return Verdict.NOT_OURS;
  const v = buf[off]! >> 4;
  if (v === 4) {
    if (buf[off + 16] !== 100 || buf[off + 17] !== 100 || buf[off + 18] !== 100 || buf[off + 19] !== 100) return Verdict.NOT_OURS;
    if (buf[off + 9] !== 17) return Verdict.OTHER_SERVICE;
    const ihl = (buf[off]! & 15) * 4;
    const total = (buf[off + 2]! << 8) | buf[off + 3]!;
    // Fragments (MF set or an offset) are not reassembled: DNS queries fit in one packet.
    if (ihl < 20 || total > len || total < ihl + 8 || ((buf[off + 6]! & 0x3f) | buf[off + 7]!) !== 0) return Verdict.MALFORMED;
    const udp = off + ihl;
    if (((buf[udp + 2]! << 8) | buf[udp + 3]!) !== 53) return Verdict.OTHER_SERVICE;
    const ulen = (buf[udp + 4]! << 8) | buf[udp + 5]!;
    return ulen < 8 || ulen > total - ihl ? Verdict.MALFORMED : Verdict.DNS;
  }
  if (v === 6) {
    if (len < 48 || buf[off + 24] !== SVC6[0] || buf[off + 25] !== SVC6[1] || buf[off + 39] !== SVC6[15]) return Verdict.NOT_OURS;
    for (let i = 2; i < 15; i++) if (buf[off + 24 + i] !== SVC6[i]) return Verdict.NOT_OURS;
    if (buf[off + 6] !== 17) return Verdict.OTHER_SERVICE;
    const plen = (buf[off + 4]! << 8) | buf[off + 5]!;
    if (40 + plen > len || plen < 8) return Verdict.MALFORMED;
    const udp = off + 40;
    if (((buf[udp + 2]! << 8) | buf[udp + 3]!) !== 53) return Verdict.OTHER_SERVICE;
    const ulen = (buf[udp + 4]! << 8) | buf[udp + 5]!;
    return ulen < 8 || ulen > plen ? Verdict.MALFORMED : Verdict.DNS;
  }
  return Verdict.NOT_OURS;
}

/** The flow and payload of a packet {@link classify} called DNS (addresses copied: buf is reused). */
export function parseDnsPacket(buf: Uint8Array, off: number): DnsPacket {
  if (buf[off]! >> 4 === 4) {
    const ihl = (buf[off]! & 15) * 4, udp = off + ihl;
    const ulen = (buf[udp + 4]! << 8) | buf[udp + 5]!;
    return {
      flow: { v6: false, client: buf.slice(off + 12, off + 16), clientPort: (buf[udp]! << 8) | buf[udp + 1]!, service: buf.slice(off + 16, off + 20) },
      payloadOff: udp + 8, payloadLen: ulen - 8,
    };
  }
  const udp = off + 40;
  const ulen = (buf[udp + 4]! << 8) | buf[udp + 5]!;
  return {
    flow: { v6: true, client: buf.slice(off + 8, off + 24), clientPort: (buf[udp]! << 8) | buf[udp + 1]!, service: buf.slice(off + 24, off + 40) },
    payloadOff: udp + 8, payloadLen: ulen - 8,
  };
}

/** One's-complement sum of 16-bit words (RFC 1071), unfolded. */
function sum16(b: Uint8Array, off: number, len: number, acc: number): number {
  let i = off;
  const end = off + (len & ~1);
  for (; i < end; i += 2) acc += (b[i]! << 8) | b[i + 1]!;
  if (len & 1) acc += b[i]! << 8;
  return acc;
}

function fold(acc: number): number {
  while (acc > 0xffff) acc = (acc % 0x10000) + Math.floor(acc / 0x10000);
  return acc;
}

/**
 * Writes the reply packet for `flow` carrying `payload` into `out` at 0 (service -> client, port 53
 * -> client port, TTL/hop limit 64, checksums); returns its length.
 */
export function writeUdpReply(out: Uint8Array, flow: Flow, payload: Uint8Array): number {
  const plen = Math.min(payload.length, MAX_UDP_PAYLOAD);
  const ulen = 8 + plen;
  let udp: number;
  let pseudo: number;
  if (!flow.v6) {
    udp = 20;
    out[0] = 0x45; out[1] = 0;
    out[2] = (20 + ulen) >> 8; out[3] = (20 + ulen) & 0xff;
    out[4] = 0; out[5] = 0; out[6] = 0x40; out[7] = 0; // DF, no fragments
    out[8] = 64; out[9] = 17; out[10] = 0; out[11] = 0;
    out.set(flow.service, 12);
    out.set(flow.client, 16);
    const c = (~fold(sum16(out, 0, 20, 0))) & 0xffff;
    out[10] = c >> 8; out[11] = c & 0xff;
    pseudo = sum16(out, 12, 8, 17 + ulen);
  } else {
    udp = 40;
    out[0] = 0x60; out[1] = 0; out[2] = 0; out[3] = 0;
    out[4] = ulen >> 8; out[5] = ulen & 0xff; out[6] = 17; out[7] = 64;
    out.set(flow.service, 8);
    out.set(flow.client, 24);
    pseudo = sum16(out, 8, 32, 17 + ulen);
  }
  out[udp] = 0; out[udp + 1] = 53;
  out[udp + 2] = flow.clientPort >> 8; out[udp + 3] = flow.clientPort & 0xff;
  out[udp + 4] = ulen >> 8; out[udp + 5] = ulen & 0xff;
  out[udp + 6] = 0; out[udp + 7] = 0;
  out.set(plen === payload.length ? payload : payload.subarray(0, plen), udp + 8);
  let c = (~fold(sum16(out, udp, ulen, pseudo))) & 0xffff;
  if (c === 0) c = 0xffff; // RFC 768: a computed zero is sent as all ones
  out[udp + 6] = c >> 8; out[udp + 7] = c & 0xff;
  return udp + ulen;
}

/**
 * Splits the reply packet out[0, len) into fragments of at most `mtu` bytes (RFC 791 2.3 for IPv4,
 * RFC 8200 4.5 for IPv6: a Fragment header, offsets in 8-byte units) and hands each to `emit`;
 * a packet that fits is emitted as it is. `frag` is scratch space of at least `mtu` bytes; `id`
 * identifies the datagram. The host's stack reassembles, as it would from gVisor's netstack.
 */
export function emitFragments(out: Uint8Array, len: number, mtu: number, id: number, frag: Uint8Array,
  emit: (buf: Uint8Array, off: number, len: number) => void): number {
  if (len <= mtu) { emit(out, 0, len); return 1; }
  const v6 = out[0]! >> 4 === 6;
  const hlen = v6 ? 40 : 20;
  const per = Math.floor((mtu - hlen - (v6 ? 8 : 0)) / 8) * 8;
  let n = 0;
  for (let at = hlen; at < len; at += per) {
    const chunk = Math.min(per, len - at);
    const more = at + chunk < len;
    const offUnits = (at - hlen) / 8;
    frag.set(out.subarray(0, hlen), 0);
    let o: number;
    if (!v6) {
      const total = 20 + chunk;
      frag[2] = total >> 8; frag[3] = total & 0xff;
      frag[4] = (id >> 8) & 0xff; frag[5] = id & 0xff;
      frag[6] = (more ? 0x20 : 0) | ((offUnits >> 8) & 0x1f); frag[7] = offUnits & 0xff;
      frag[10] = 0; frag[11] = 0;
      const c = (~fold(sum16(frag, 0, 20, 0))) & 0xffff;
      frag[10] = c >> 8; frag[11] = c & 0xff;
      o = 20;
    } else {
      const plen = 8 + chunk;
      frag[4] = plen >> 8; frag[5] = plen & 0xff; frag[6] = 44;
      frag[40] = 17; frag[41] = 0;
      frag[42] = (offUnits >> 5) & 0xff; frag[43] = ((offUnits & 0x1f) << 3) | (more ? 1 : 0);
      frag[44] = (id >>> 24) & 0xff; frag[45] = (id >>> 16) & 0xff; frag[46] = (id >>> 8) & 0xff; frag[47] = id & 0xff;
      o = 48;
    }
    frag.set(out.subarray(at, at + chunk), o);
    emit(frag, 0, o + chunk);
    n++;
  }
  return n;
}

/** True when the IPv4 header checksum of a packet verifies (tests). */
export function ipv4ChecksumOk(b: Uint8Array, off = 0): boolean {
  return fold(sum16(b, off, (b[off]! & 15) * 4, 0)) === 0xffff;
}

/** True when the UDP checksum of an IPv4 or IPv6 packet verifies (tests). */
export function udpChecksumOk(b: Uint8Array, off = 0): boolean {
  const v6 = b[off]! >> 4 === 6;
  const udp = off + (v6 ? 40 : (b[off]! & 15) * 4);
  const ulen = (b[udp + 4]! << 8) | b[udp + 5]!;
  const pseudo = v6 ? sum16(b, off + 8, 32, 17 + ulen) : sum16(b, off + 12, 8, 17 + ulen);
  return fold(sum16(b, udp, ulen, pseudo)) === 0xffff;
}

/** SVC4 as bytes (tests build packets with it). */
export const SERVICE_IP4_BYTES = Uint8Array.from(SVC4);
/** SVC6 as bytes. */
export const SERVICE_IP6_BYTES = SVC6;
