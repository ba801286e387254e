// The WireGuard cross-platform userspace configuration protocol ("UAPI"), as served by
// wireguard-go on /var/run/wireguard/IFNAME.sock and spoken by the `wg` tool.
// Spec: https://www.wireguard.com/xplatform/#configuration-protocol
//
//   request  := "get=1\n\n" | "set=1\n" (key "=" value "\n")* "\n"
//   response := (key "=" value "\n")* "errno=" N "\n\n"        (N = 0 or a negative errno)
//
// Unlike wireguard-go, a set operation is parsed and validated whole before anything is applied:
// a bad line rejects the operation and changes nothing.
import { isIP } from 'node:net';
import { ipv6Bytes, v6Text } from '../net/endpoint.ts';

/** Error codes on the wire: negative Linux errno values, as wireguard-go's ipc package sends. */
export const UapiErrno = {
  io: -5, // EIO
  invalid: -22, // EINVAL
  protocol: -71, // EPROTO
  portInUse: -98, // EADDRINUSE
  unknown: -55,
} as const;

/** A configuration error with the errno sent back to the client. */
export class UapiError extends Error {
  /** Negative errno for the `errno=` line. */
  readonly errno: number;
  constructor(errno: number, message: string) {
    super(message);
    this.name = 'UapiError';
    this.errno = errno;
  }
}

/** One peer section of a set operation. */
export interface UapiPeerSet {
  publicKey: Uint8Array;
  remove: boolean;
  updateOnly: boolean;
  presharedKey?: Uint8Array;
  endpoint?: { ip: string; port: number };
  persistentKeepalive?: number;
  replaceAllowedIPs: boolean;
  allowedIPs: string[];
}

/** A parsed, validated set operation. */
export interface UapiSet {
  privateKey?: Uint8Array | null;
  listenPort?: number;
  fwmark?: number;
  replacePeers: boolean;
  peers: UapiPeerSet[];
}

/** Device state for a get operation. */
export interface UapiState {
  privateKey: Uint8Array | null;
  listenPort: number;
  fwmark: number;
  peers: {
    publicKey: Uint8Array;
    presharedKey: Uint8Array;
    endpoint: string | null;
    lastHandshakeWallMs: number;
    txBytes: number;
    rxBytes: number;
    persistentKeepalive: number;
    allowedIPs: string[];
  }[];
}

/** Parses a 64-hex-digit key; throws UapiError naming the field. */
export function parseHexKey(field: string, value: string): Uint8Array {
  if (!/^[0-9a-fA-F]{64}$/.test(value)) throw new UapiError(UapiErrno.invalid, `${field}: want 64 hex digits`);
  return Uint8Array.from(Buffer.from(value, 'hex'));
}

/** Lower-case hex of a key. */
export function hexKey(key: Uint8Array): string {
  return Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex');
}

function parseUint(field: string, value: string, max: number): number {
  if (!/^\d{1,10}$/.test(value)) throw new UapiError(UapiErrno.invalid, `${field}: not a number: ${value}`);
  const n = Number(value);
  if (n > max) throw new UapiError(UapiErrno.invalid, `${field}: ${n} is larger than ${max}`);
  return n;
}

function parseTrue(field: string, value: string): true {
  if (value !== 'true') throw new UapiError(UapiErrno.invalid, `${field}: only "true" is valid, got ${value}`);
  return true;
}

/** Parses `ip:port` or `[ipv6]:port`. */
export function parseEndpointText(value: string): { ip: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d{1,5})$/.exec(value) ?? /^([0-9.]+):(\d{1,5})$/.exec(value);
  const ip = m?.[1];
  if (!m || ip === undefined) throw new UapiError(UapiErrno.invalid, `endpoint: want ip:port or [ipv6]:port, got ${value}`);
  const bare = ip.split('%')[0]!;
  if (isIP(bare) === 0) throw new UapiError(UapiErrno.invalid, `endpoint: not an IP address: ${ip}`);
  const port = Number(m[2]);
  if (port > 65535) throw new UapiError(UapiErrno.invalid, `endpoint: port out of range: ${port}`);
  return { ip: bare, port };
}

/** Validates a CIDR and returns it in canonical form (host bits cleared, as wireguard-go prints). */
export function canonicalCidr(value: string): string {
  const slash = value.indexOf('/');
  if (slash < 0) throw new UapiError(UapiErrno.invalid, `allowed_ip: want address/prefix, got ${value}`);
  const ip = value.slice(0, slash);
  const bitsText = value.slice(slash + 1);
  const fam = isIP(ip);
  if (fam === 0 || !/^\d{1,3}$/.test(bitsText)) throw new UapiError(UapiErrno.invalid, `allowed_ip: bad prefix ${value}`);
  const bits = Number(bitsText);
  if (bits > (fam === 4 ? 32 : 128)) throw new UapiError(UapiErrno.invalid, `allowed_ip: prefix length too long in ${value}`);
  if (fam === 4) {
    const parts = ip.split('.').map(Number);
    let n = ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
    n = bits === 0 ? 0 : (n & (0xffffffff << (32 - bits))) >>> 0;
    return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}/${bits}`;
  }
  const bytes = ipv6Bytes(ip);
  for (let i = 0; i < 16; i++) {
    const keep = Math.max(0, Math.min(8, bits - i * 8));
    bytes[i]! &= keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff;
  }
  return `${v6Text(bytes)}/${bits}`;
}

/** Parses the body of a set operation (the lines after "set=1", without the blank terminator). */
export function parseSet(lines: string[]): UapiSet {
  const op: UapiSet = { replacePeers: false, peers: [] };
  let peer: UapiPeerSet | undefined;
  for (const line of lines) {
    const eq = line.indexOf('=');
    if (eq < 0) throw new UapiError(UapiErrno.protocol, `failed to parse line ${JSON.stringify(line)}`);
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === 'public_key') {
      peer = { publicKey: parseHexKey(key, value), remove: false, updateOnly: false, replaceAllowedIPs: false, allowedIPs: [] };
      op.peers.push(peer);
      continue;
    }
    if (!peer) {
      switch (key) {
        case 'private_key': {
          const k = parseHexKey(key, value);
          op.privateKey = k.every((b) => b === 0) ? null : k;
          break;
        }
        case 'listen_port': op.listenPort = parseUint(key, value, 65535); break;
        case 'fwmark': op.fwmark = parseUint(key, value, 0xffffffff); break;
        case 'replace_peers': op.replacePeers = parseTrue(key, value); break;
        default: throw new UapiError(UapiErrno.invalid, `invalid UAPI device key: ${key}`);
      }
      continue;
    }
    switch (key) {
      case 'remove': peer.remove = parseTrue(key, value); break;
      case 'update_only': peer.updateOnly = parseTrue(key, value); break;
      case 'preshared_key': peer.presharedKey = parseHexKey(key, value); break;
      case 'endpoint': peer.endpoint = parseEndpointText(value); break;
      case 'persistent_keepalive_interval': peer.persistentKeepalive = parseUint(key, value, 65535); break;
      case 'replace_allowed_ips': peer.replaceAllowedIPs = parseTrue(key, value); break;
      case 'allowed_ip': peer.allowedIPs.push(canonicalCidr(value)); break;
      case 'protocol_version':
        if (value !== '1') throw new UapiError(UapiErrno.invalid, `invalid protocol version: ${value}`);
        break;
      default: throw new UapiError(UapiErrno.invalid, `invalid UAPI peer key: ${key}`);
    }
  }
  return op;
}

/** Formats a get response body (without the errno line). */
export function formatGet(s: UapiState): string {
  const out: string[] = [];
  if (s.privateKey) out.push(`private_key=${hexKey(s.privateKey)}`);
  if (s.listenPort) out.push(`listen_port=${s.listenPort}`);
  if (s.fwmark) out.push(`fwmark=${s.fwmark}`);
  for (const p of s.peers) {
    out.push(`public_key=${hexKey(p.publicKey)}`, `preshared_key=${hexKey(p.presharedKey)}`, 'protocol_version=1');
    if (p.endpoint) out.push(`endpoint=${p.endpoint}`);
    const ms = p.lastHandshakeWallMs;
    out.push(
      `last_handshake_time_sec=${Math.floor(ms / 1000)}`,
      `last_handshake_time_nsec=${(ms % 1000) * 1_000_000}`,
      `tx_bytes=${p.txBytes}`,
      `rx_bytes=${p.rxBytes}`,
      `persistent_keepalive_interval=${p.persistentKeepalive}`,
    );
    for (const a of p.allowedIPs) out.push(`allowed_ip=${a}`);
  }
  return out.map((l) => `${l}\n`).join('');
}
