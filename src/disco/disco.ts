// Disco: Tailscale's path-discovery messages (tailscale disco/disco.go; reference data-plane.md 3).
//
// Outer packet (UDP payload, or the payload of a DERP SendPacket/RecvPacket frame):
//   [0..6)    magic "TS💬" = 54 53 F0 9F 92 AC
//   [6..38)   sender's disco public key (X25519)
//   [38..62)  NaCl nonce
//   [62..78)  Poly1305 tag        } NaCl box (sender disco private, receiver disco public)
//   [78..)    ciphertext of inner  }
// Inner payload: type(1) ‖ version(1, 0) ‖ body; receivers ignore trailing bytes.
//   0x01 Ping:  txid(12) [‖ sender node key(32)] ‖ zero padding
//   0x02 Pong:  txid(12) ‖ source IP(16, v4-mapped) ‖ source port(2 BE)
//   0x03 CallMeMaybe: N × (IP(16) ‖ port(2 BE)); version != 0 or a bad length = no endpoints
//   0x04/05/06 BindUDPRelayEndpoint(Challenge|Answer): VNI(4) ‖ generation(4) ‖ remote disco(32) ‖ challenge(32)
//   0x07 CallMeMaybeVia: relay endpoint (below)
//   0x08 AllocateUDPRelayEndpointRequest: client disco(32) × 2 ‖ generation(4)
//   0x09 AllocateUDPRelayEndpointResponse: generation(4) ‖ relay endpoint
//   relay endpoint: server disco(32) ‖ client disco(32) × 2 ‖ lamport(8) ‖ VNI(4) ‖ bind lifetime ns(8) ‖
//     steady-state lifetime ns(8) ‖ N ≥ 1 × (IP(16) ‖ port(2))
// All integers big-endian. 64-bit fields are bigint (nanosecond lifetimes and Lamport IDs can pass 2^53).
// Deviation: for 0x07-0x09 with version != 0 tailscale returns an empty message; we report
// 'unsupported-version' instead (meshd does not act on relay messages either way).
import { ENDPOINT_RAW_LEN, Endpoints, type Endpoint } from '../net/endpoint.ts';
import { NONCE_LEN, boxOpenAfter, seal } from '../crypto/box.ts';

/** The 6-byte disco magic "TS💬". */
export const DISCO_MAGIC = Uint8Array.from([0x54, 0x53, 0xf0, 0x9f, 0x92, 0xac]);
/** Bytes in a disco key. */
export const DISCO_KEY_LEN = 32;
/** Offset of the nonce in an outer packet (magic + sender key). */
export const DISCO_HEADER_LEN = DISCO_MAGIC.length + DISCO_KEY_LEN;
/** Smallest outer packet that can hold an (empty) box: header + nonce + tag. */
export const DISCO_MIN_PACKET_LEN = DISCO_HEADER_LEN + NONCE_LEN + 16;
/** Inner header: type + version. */
export const DISCO_MSG_HEADER_LEN = 2;
/** Bytes per endpoint entry (IP 16 + port 2). */
export const DISCO_EP_LEN = 18;

/** Message type bytes (disco.go MessageType). */
export const DiscoType = {
  ping: 0x01,
  pong: 0x02,
  callMeMaybe: 0x03,
  bindUdpRelayEndpoint: 0x04,
  bindUdpRelayEndpointChallenge: 0x05,
  bindUdpRelayEndpointAnswer: 0x06,
  callMeMaybeVia: 0x07,
  allocateUdpRelayEndpointRequest: 0x08,
  allocateUdpRelayEndpointResponse: 0x09,
} as const;

/** Fields shared by the three UDP-relay bind handshake messages. */
export interface BindUdpRelayFields { vni: number; generation: number; remoteKey: Uint8Array; challenge: Uint8Array }

/** A peer relay server endpoint (disco.go UDPRelayEndpoint). */
export interface UdpRelayEndpoint {
  serverDisco: Uint8Array;
  clientDisco: [Uint8Array, Uint8Array];
  lamportId: bigint;
  vni: number;
  bindLifetimeNs: bigint;
  steadyStateLifetimeNs: bigint;
  addrPorts: Endpoint[];
}

/** A disco message (the decrypted inner payload). */
export type DiscoMessage =
  | { type: 'ping'; txId: Uint8Array; nodeKey?: Uint8Array; padding: number }
  | { type: 'pong'; txId: Uint8Array; src: Endpoint }
  | { type: 'call-me-maybe'; endpoints: Endpoint[] }
  | ({ type: 'bind-udp-relay-endpoint' | 'bind-udp-relay-endpoint-challenge' | 'bind-udp-relay-endpoint-answer' } & BindUdpRelayFields)
  | { type: 'call-me-maybe-via'; relay: UdpRelayEndpoint }
  | { type: 'allocate-udp-relay-endpoint-request'; clientDisco: [Uint8Array, Uint8Array]; generation: number }
  | { type: 'allocate-udp-relay-endpoint-response'; generation: number; relay: UdpRelayEndpoint };

/** Why an inner payload was not understood. */
export type DiscoParseError = 'short' | 'unknown-type' | 'unsupported-version';

/** Result of parsing an inner payload. */
export type DiscoParse = { ok: true; msg: DiscoMessage } | { ok: false; error: DiscoParseError };

/** Why an outer packet was dropped. */
export type DiscoDropReason = 'not-disco' | 'unknown-sender' | 'bad-box' | DiscoParseError;

/** Result of opening and parsing an outer packet. */
export type DiscoDecode =
  | { ok: true; sender: Uint8Array; msg: DiscoMessage }
  | { ok: false; error: DiscoDropReason; sender?: Uint8Array };

const defaultEndpoints = new Endpoints(4096);

/** Whether p starts with the disco magic and is long enough for magic, sender key and nonce (LooksLikeDiscoWrapper). */
export function looksLikeDisco(p: Uint8Array): boolean {
  if (p.length < DISCO_HEADER_LEN + NONCE_LEN) return false;
  for (let i = 0; i < DISCO_MAGIC.length; i++) if (p[i] !== DISCO_MAGIC[i]) return false;
  return true;
}

/** The sender disco key inside an outer packet (a view, no copy), or undefined when p is not disco. */
export function discoSender(p: Uint8Array): Uint8Array | undefined {
  return looksLikeDisco(p) ? p.subarray(DISCO_MAGIC.length, DISCO_HEADER_LEN) : undefined;
}

/** Seals an inner payload into an outer packet from senderDiscoPub, with the shared key box.before(receiver, sender). */
export function sealDisco(senderDiscoPub: Uint8Array, shared: Uint8Array, inner: Uint8Array): Uint8Array {
  if (senderDiscoPub.length !== DISCO_KEY_LEN) throw new TypeError('disco: sender key must be 32 bytes');
  const sealed = seal(shared, inner);
  const out = new Uint8Array(DISCO_HEADER_LEN + sealed.length);
  out.set(DISCO_MAGIC, 0);
  out.set(senderDiscoPub, DISCO_MAGIC.length);
  out.set(sealed, DISCO_HEADER_LEN);
  return out;
}

/** Opens an outer packet with the shared key for its sender; undefined when not disco or forged. */
export function openDisco(p: Uint8Array, shared: Uint8Array): Uint8Array | undefined {
  if (!looksLikeDisco(p)) return undefined;
  return boxOpenAfter(shared, p.subarray(DISCO_HEADER_LEN, DISCO_HEADER_LEN + NONCE_LEN), p.subarray(DISCO_HEADER_LEN + NONCE_LEN));
}

/** Marshals, seals and frames msg: the bytes to put in a UDP datagram or a DERP SendPacket. */
export function encodeDisco(msg: DiscoMessage, senderDiscoPub: Uint8Array, shared: Uint8Array): Uint8Array {
  return sealDisco(senderDiscoPub, shared, marshalDisco(msg));
}

/**
 * Opens and parses an outer packet. sharedFor returns the precomputed key for a sender disco key,
 * or undefined for senders we do not know (those packets are dropped unopened). Never throws.
 */
export function decodeDisco(
  p: Uint8Array,
  sharedFor: (senderDiscoPub: Uint8Array) => Uint8Array | undefined,
  endpoints: Endpoints = defaultEndpoints,
): DiscoDecode {
  const sender = discoSender(p);
  if (!sender) return { ok: false, error: 'not-disco' };
  const shared = sharedFor(sender);
  if (!shared) return { ok: false, error: 'unknown-sender', sender };
  const inner = openDisco(p, shared);
  if (!inner) return { ok: false, error: 'bad-box', sender };
  const r = parseDisco(inner, endpoints);
  if (!r.ok) return { ok: false, error: r.error, sender };
  return { ok: true, sender, msg: r.msg };
}

function u32(p: Uint8Array, off: number): number {
  return ((p[off]! << 24) | (p[off + 1]! << 16) | (p[off + 2]! << 8) | p[off + 3]!) >>> 0;
}

function u64(p: Uint8Array, off: number): bigint {
  return (BigInt(u32(p, off)) << 32n) | BigInt(u32(p, off + 4));
}

function putU32(p: Uint8Array, off: number, v: number): void {
  p[off] = v >>> 24; p[off + 1] = (v >>> 16) & 0xff; p[off + 2] = (v >>> 8) & 0xff; p[off + 3] = v & 0xff;
}

function putU64(p: Uint8Array, off: number, v: bigint): void {
  putU32(p, off, Number((v >> 32n) & 0xffffffffn));
  putU32(p, off + 4, Number(v & 0xffffffffn));
}

/** Reads an 18-byte IP(16) ‖ port entry at p[off..] into an interned endpoint (v4-mapped -> IPv4). */
function readEndpoint(p: Uint8Array, off: number, endpoints: Endpoints, raw: Uint8Array): Endpoint {
  raw.set(p.subarray(off, off + 18), 0);
  let mapped = raw[10] === 0xff && raw[11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (raw[i] !== 0) mapped = false;
  raw[18] = mapped ? 4 : 6;
  raw[19] = 0;
  return endpoints.intern(raw, 0);
}

/** Writes ep as IP(16, v4-mapped for IPv4) ‖ port(2 BE) at p[off..off+18). */
function writeEndpoint(ep: Endpoint, p: Uint8Array, off: number): void {
  p.set(ep.raw.subarray(0, 18), off);
}

const RELAY_FIXED_LEN = 32 * 3 + 8 + 4 + 8 + 8; // 124
const BIND_LEN = 72;
const ALLOC_REQ_LEN = 68;

function parseRelayEndpoint(p: Uint8Array, endpoints: Endpoints): UdpRelayEndpoint | undefined {
  if (p.length < RELAY_FIXED_LEN + DISCO_EP_LEN || (p.length - RELAY_FIXED_LEN) % DISCO_EP_LEN !== 0) return undefined;
  const raw = new Uint8Array(ENDPOINT_RAW_LEN);
  const addrPorts: Endpoint[] = [];
  for (let off = RELAY_FIXED_LEN; off < p.length; off += DISCO_EP_LEN) addrPorts.push(readEndpoint(p, off, endpoints, raw));
  return {
    serverDisco: p.slice(0, 32),
    clientDisco: [p.slice(32, 64), p.slice(64, 96)],
    lamportId: u64(p, 96),
    vni: u32(p, 104),
    bindLifetimeNs: u64(p, 108),
    steadyStateLifetimeNs: u64(p, 116),
    addrPorts,
  };
}

function writeRelayEndpoint(r: UdpRelayEndpoint, p: Uint8Array, off: number): void {
  p.set(r.serverDisco, off);
  p.set(r.clientDisco[0], off + 32);
  p.set(r.clientDisco[1], off + 64);
  putU64(p, off + 96, r.lamportId);
  putU32(p, off + 104, r.vni);
  putU64(p, off + 108, r.bindLifetimeNs);
  putU64(p, off + 116, r.steadyStateLifetimeNs);
  let o = off + RELAY_FIXED_LEN;
  for (const ep of r.addrPorts) { writeEndpoint(ep, p, o); o += DISCO_EP_LEN; }
}

const BIND_NAMES = {
  [DiscoType.bindUdpRelayEndpoint]: 'bind-udp-relay-endpoint',
  [DiscoType.bindUdpRelayEndpointChallenge]: 'bind-udp-relay-endpoint-challenge',
  [DiscoType.bindUdpRelayEndpointAnswer]: 'bind-udp-relay-endpoint-answer',
} as const;

/**
 * Parses an inner payload (disco.Parse), leniently: trailing bytes are ignored, a CallMeMaybe with a
 * bad length or version is valid with no endpoints, unknown types are reported, never thrown.
 */
export function parseDisco(p: Uint8Array, endpoints: Endpoints = defaultEndpoints): DiscoParse {
  if (p.length < DISCO_MSG_HEADER_LEN) return { ok: false, error: 'short' };
  const type = p[0]!;
  const ver = p[1]!;
  const b = p.subarray(DISCO_MSG_HEADER_LEN);
  switch (type) {
    case DiscoType.ping: {
      if (b.length < 12) return { ok: false, error: 'short' };
      if (b.length >= 12 + 32) return { ok: true, msg: { type: 'ping', txId: b.slice(0, 12), nodeKey: b.slice(12, 44), padding: b.length - 44 } };
      return { ok: true, msg: { type: 'ping', txId: b.slice(0, 12), padding: b.length - 12 } };
    }
    case DiscoType.pong: {
      if (b.length < 30) return { ok: false, error: 'short' };
      return { ok: true, msg: { type: 'pong', txId: b.slice(0, 12), src: readEndpoint(b, 12, endpoints, new Uint8Array(ENDPOINT_RAW_LEN)) } };
    }
    case DiscoType.callMeMaybe: {
      const eps: Endpoint[] = [];
      if (ver === 0 && b.length > 0 && b.length % DISCO_EP_LEN === 0) {
        const raw = new Uint8Array(ENDPOINT_RAW_LEN);
        for (let off = 0; off < b.length; off += DISCO_EP_LEN) eps.push(readEndpoint(b, off, endpoints, raw));
      }
      return { ok: true, msg: { type: 'call-me-maybe', endpoints: eps } };
    }
    case DiscoType.bindUdpRelayEndpoint:
    case DiscoType.bindUdpRelayEndpointChallenge:
    case DiscoType.bindUdpRelayEndpointAnswer: {
      if (b.length < BIND_LEN) return { ok: false, error: 'short' };
      return { ok: true, msg: { type: BIND_NAMES[type], vni: u32(b, 0), generation: u32(b, 4), remoteKey: b.slice(8, 40), challenge: b.slice(40, 72) } };
    }
    case DiscoType.callMeMaybeVia: {
      if (ver !== 0) return { ok: false, error: 'unsupported-version' };
      const relay = parseRelayEndpoint(b, endpoints);
      if (!relay) return { ok: false, error: 'short' };
      return { ok: true, msg: { type: 'call-me-maybe-via', relay } };
    }
    case DiscoType.allocateUdpRelayEndpointRequest: {
      if (ver !== 0) return { ok: false, error: 'unsupported-version' };
      if (b.length < ALLOC_REQ_LEN) return { ok: false, error: 'short' };
      return { ok: true, msg: { type: 'allocate-udp-relay-endpoint-request', clientDisco: [b.slice(0, 32), b.slice(32, 64)], generation: u32(b, 64) } };
    }
    case DiscoType.allocateUdpRelayEndpointResponse: {
      if (ver !== 0) return { ok: false, error: 'unsupported-version' };
      if (b.length < 4) return { ok: false, error: 'short' };
      const relay = parseRelayEndpoint(b.subarray(4), endpoints);
      if (!relay) return { ok: false, error: 'short' };
      return { ok: true, msg: { type: 'allocate-udp-relay-endpoint-response', generation: u32(b, 0), relay } };
    }
    default:
      return { ok: false, error: 'unknown-type' };
  }
}

function isZero(k: Uint8Array): boolean {
  let acc = 0;
  for (const x of k) acc |= x;
  return acc === 0;
}

function checkLen(v: Uint8Array, n: number, what: string): void {
  if (v.length !== n) throw new TypeError(`disco: ${what} must be ${n} bytes, got ${v.length}`);
}

/** Marshals msg into its inner payload (disco.Message.AppendMarshal). Throws on malformed fields. */
export function marshalDisco(msg: DiscoMessage): Uint8Array {
  let out: Uint8Array;
  switch (msg.type) {
    case 'ping': {
      checkLen(msg.txId, 12, 'ping txid');
      const hasKey = msg.nodeKey !== undefined && !isZero(msg.nodeKey);
      if (msg.nodeKey !== undefined) checkLen(msg.nodeKey, 32, 'ping node key');
      if (!Number.isInteger(msg.padding) || msg.padding < 0) throw new RangeError('disco: ping padding must be a non-negative integer');
      out = new Uint8Array(2 + 12 + (hasKey ? 32 : 0) + msg.padding);
      out[0] = DiscoType.ping;
      out.set(msg.txId, 2);
      if (hasKey) out.set(msg.nodeKey!, 14);
      return out;
    }
    case 'pong':
      checkLen(msg.txId, 12, 'pong txid');
      out = new Uint8Array(2 + 30);
      out[0] = DiscoType.pong;
      out.set(msg.txId, 2);
      writeEndpoint(msg.src, out, 14);
      return out;
    case 'call-me-maybe':
      out = new Uint8Array(2 + DISCO_EP_LEN * msg.endpoints.length);
      out[0] = DiscoType.callMeMaybe;
      msg.endpoints.forEach((ep, i) => writeEndpoint(ep, out, 2 + i * DISCO_EP_LEN));
      return out;
    case 'bind-udp-relay-endpoint':
    case 'bind-udp-relay-endpoint-challenge':
    case 'bind-udp-relay-endpoint-answer':
      checkLen(msg.remoteKey, 32, 'remote key');
      checkLen(msg.challenge, 32, 'challenge');
      out = new Uint8Array(2 + BIND_LEN);
      out[0] = msg.type === 'bind-udp-relay-endpoint' ? DiscoType.bindUdpRelayEndpoint
        : msg.type === 'bind-udp-relay-endpoint-challenge' ? DiscoType.bindUdpRelayEndpointChallenge
          : DiscoType.bindUdpRelayEndpointAnswer;
      putU32(out, 2, msg.vni);
      putU32(out, 6, msg.generation);
      out.set(msg.remoteKey, 10);
      out.set(msg.challenge, 42);
      return out;
    case 'call-me-maybe-via':
      out = new Uint8Array(2 + RELAY_FIXED_LEN + DISCO_EP_LEN * msg.relay.addrPorts.length);
      out[0] = DiscoType.callMeMaybeVia;
      writeRelayEndpoint(msg.relay, out, 2);
      return out;
    case 'allocate-udp-relay-endpoint-request':
      out = new Uint8Array(2 + ALLOC_REQ_LEN);
      out[0] = DiscoType.allocateUdpRelayEndpointRequest;
      out.set(msg.clientDisco[0], 2);
      out.set(msg.clientDisco[1], 34);
      putU32(out, 66, msg.generation);
      return out;
    case 'allocate-udp-relay-endpoint-response':
      out = new Uint8Array(2 + 4 + RELAY_FIXED_LEN + DISCO_EP_LEN * msg.relay.addrPorts.length);
      out[0] = DiscoType.allocateUdpRelayEndpointResponse;
      putU32(out, 2, msg.generation);
      writeRelayEndpoint(msg.relay, out, 6);
      return out;
  }
}
