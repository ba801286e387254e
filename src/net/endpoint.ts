// UDP endpoints as the data plane sees them: interned, so that one address:port is one object and
// the WireGuard core can compare endpoints with === and keep them without copying per packet.
//
// Raw form (as the native layer reports a datagram's source, ENDPOINT_RAW_LEN bytes per slot):
//   [0..16)  IPv6 address, or IPv4-mapped IPv6 (::ffff:a.b.c.d) for IPv4
//   [16..18) port, big-endian
//   [18]     family: 4 or 6
//   [19]     reserved (0)
import { isIPv4, isIPv6 } from 'node:net';

/** Bytes per endpoint in the native layer's address arrays. */
export const ENDPOINT_RAW_LEN = 20;

/** One UDP address:port. Never construct directly: use {@link Endpoints.intern} or {@link parseEndpoint}. */
export class Endpoint {
  /** Stable text form: `1.2.3.4:5` or `[2001:db8::1]:5`. */
  readonly key: string;
  /** IP bytes (4 or 16) followed by the port, big-endian; what cookies MAC (whitepaper 5.4.7). */
  readonly addrBytes: Uint8Array;
  /** The raw form above, ready to hand to the native send path. */
  readonly raw: Uint8Array;

  /** 4 or 6. */
  readonly family: 4 | 6;
  /** IP address in text form. */
  readonly ip: string;
  /** UDP port. */
  readonly port: number;

  constructor(family: 4 | 6, ip: string, port: number, raw: Uint8Array) {
    this.family = family;
    this.ip = ip;
    this.port = port;
    this.raw = raw;
    this.key = family === 4 ? `${ip}:${port}` : `[${ip}]:${port}`;
    const ipLen = family === 4 ? 4 : 16;
    this.addrBytes = new Uint8Array(ipLen + 2);
    this.addrBytes.set(raw.subarray(16 - ipLen, 16), 0);
    this.addrBytes[ipLen] = raw[16]!;
    this.addrBytes[ipLen + 1] = raw[17]!;
  }

  /**
   * Told where an authenticated packet from the peer this endpoint names came from, when the
   * device does not roam (the Bind routes: a magicsock PeerEndpoint keeps it, see
   * src/magicsock/peer-endpoint.ts). A plain address ignores it. Called per packet: no allocation.
   */
  noteAuthenticatedFrom(_from: Endpoint): void {}

  /** What the handshake rate limiter keys on: the IP, as wireguard-go does (PeerEndpoint names a DERP sender instead). */
  get limiterKey(): string {
    return this.ip;
  }

  toString(): string {
    return this.key;
  }
}

function v4Text(raw: Uint8Array, off: number): string {
  return `${raw[off + 12]}.${raw[off + 13]}.${raw[off + 14]}.${raw[off + 15]}`;
}

/** RFC 5952 text of the IPv6 address at raw[off..off+16). */
export function v6Text(raw: Uint8Array, off = 0): string {
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((raw[off + i]! << 8) | raw[off + i + 1]!).toString(16));
  // Compress the longest run of zero groups (RFC 5952).
  let best = -1, bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') { i++; continue; }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) { best = i; bestLen = j - i; }
    i = j;
  }
  if (best < 0) return groups.join(':');
  return `${groups.slice(0, best).join(':')}::${groups.slice(best + bestLen).join(':')}`;
}

/** Writes an IP address (text) and port into raw form at out[off..off+20). Throws on a bad address. */
export function writeEndpointRaw(ip: string, port: number, out: Uint8Array, off = 0): 4 | 6 {
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new RangeError(`bad port ${port}`);
  out.fill(0, off, off + ENDPOINT_RAW_LEN);
  let family: 4 | 6;
  if (isIPv4(ip)) {
    family = 4;
    out[off + 10] = 0xff;
    out[off + 11] = 0xff;
    const parts = ip.split('.');
    for (let i = 0; i < 4; i++) out[off + 12 + i] = Number(parts[i]);
  } else if (isIPv6(ip)) {
    family = 6;
    const bytes = ipv6Bytes(ip);
    out.set(bytes, off);
    // An IPv4-mapped IPv6 address is an IPv4 endpoint.
    if (bytes.subarray(0, 10).every((b) => b === 0) && bytes[10] === 0xff && bytes[11] === 0xff) family = 4;
  } else {
    throw new TypeError(`not an IP address: ${ip}`);
  }
  out[off + 16] = port >> 8;
  out[off + 17] = port & 0xff;
  out[off + 18] = family;
  return family;
}

/** Parses an IPv6 address in text form (with optional embedded IPv4 tail) into 16 bytes. */
export function ipv6Bytes(ip: string): Uint8Array {
  const out = new Uint8Array(16);
  let text = ip;
  const pct = text.indexOf('%');
  if (pct >= 0) text = text.slice(0, pct);
  let tail: number[] = [];
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    tail = text.slice(lastColon + 1).split('.').map(Number);
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head, rest] = text.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const r = rest !== undefined && rest !== '' ? rest.split(':') : [];
  const groups = rest === undefined ? h : [...h, ...new Array<string>(8 - h.length - r.length).fill('0'), ...r];
  if (groups.length !== 8) throw new TypeError(`not an IPv6 address: ${ip}`);
  for (let i = 0; i < 8; i++) {
    const g = parseInt(groups[i]!, 16);
    out[i * 2] = g >> 8;
    out[i * 2 + 1] = g & 0xff;
  }
  if (tail.length === 4) out.set(tail, 12);
  return out;
}

/**
 * Interns endpoints: the same address and port always give the same object, found from raw bytes
 * without allocating for IPv4 (the common case on the packet path).
 */
export class Endpoints {
  // Two levels keyed by small integers (a.b.c, then d:port, 24 bits each): always SMIs, so a
  // lookup allocates nothing. One 48-bit key would be a heap number, boxed on every Map.get.
  private readonly v4 = new Map<number, Map<number, Endpoint>>();
  private v4Count = 0;
  private readonly v6 = new Map<string, Endpoint>();
  private readonly limit: number;

  constructor(limit = 65536) {
    this.limit = limit;
  }

  /** The endpoint for raw[off..off+20). */
  intern(raw: Uint8Array, off = 0): Endpoint {
    const port = (raw[off + 16]! << 8) | raw[off + 17]!;
    if (raw[off + 18] === 4) {
      const hi = (raw[off + 12]! << 16) | (raw[off + 13]! << 8) | raw[off + 14]!;
      const lo = (raw[off + 15]! << 16) | port;
      let inner = this.v4.get(hi);
      let ep = inner?.get(lo);
      if (ep === undefined) {
        if (this.v4Count >= this.limit) {
          this.v4.clear();
          this.v4Count = 0;
          inner = undefined;
        }
        if (inner === undefined) {
          inner = new Map<number, Endpoint>();
          this.v4.set(hi, inner);
        }
        ep = new Endpoint(4, v4Text(raw, off), port, raw.slice(off, off + ENDPOINT_RAW_LEN));
        inner.set(lo, ep);
        this.v4Count++;
      }
      return ep;
    }
    const ip = v6Text(raw, off);
    const key = `${ip}|${port}`;
    let ep = this.v6.get(key);
    if (ep === undefined) {
      if (this.v6.size >= this.limit) this.v6.clear();
      ep = new Endpoint(6, ip, port, raw.slice(off, off + ENDPOINT_RAW_LEN));
      this.v6.set(key, ep);
    }
    return ep;
  }

  /** The endpoint for an IP address and port. */
  of(ip: string, port: number): Endpoint {
    const raw = new Uint8Array(ENDPOINT_RAW_LEN);
    writeEndpointRaw(ip, port, raw, 0);
    return this.intern(raw, 0);
  }

  /** Parses `1.2.3.4:51820` or `[2001:db8::1]:51820`; throws a clear error otherwise. */
  parse(text: string): Endpoint {
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
    if (!m) throw new TypeError(`bad endpoint ${JSON.stringify(text)}: want ip:port or [ipv6]:port`);
    const port = Number(m[2]);
    if (port > 65535) throw new TypeError(`bad endpoint ${JSON.stringify(text)}: port out of range`);
    return this.of(m[1]!, port);
  }
}
