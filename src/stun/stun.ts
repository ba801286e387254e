// STUN (RFC 5389) binding requests and responses, exactly as Tailscale sends and parses them
// (tailscale net/stun/stun.go; reference data-plane.md 6.1, 6.2).
//
// Header (20 bytes):
//   [0..2)   message type: 0x0001 binding request, 0x0101 binding success response
//   [2..4)   length of the attributes that follow, BE
//   [4..8)   magic cookie 21 12 A4 42
//   [8..20)  transaction ID
// Attribute: type(2 BE) ‖ length(2 BE) ‖ value, padded to a multiple of 4.
//
// Tailscale's binding request (40 bytes; derper's and Headscale's STUN servers ignore anything else):
//   header(20, length 20) ‖ SOFTWARE 0x8022 len 8 "tailnode" ‖ FINGERPRINT 0x8028 len 4
//   CRC-32(bytes 0..32) XOR 0x5354554E, BE
// Response: XOR-MAPPED-ADDRESS (0x0020, or the non-standard 0x8020) = 0 ‖ family(1=v4, 2=v6) ‖
//   port XOR 0x2112 ‖ address XOR cookie (‖ txid for IPv6); MAPPED-ADDRESS (0x0001) is the fallback.
import { randomFillSync } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { ENDPOINT_RAW_LEN, Endpoints, type Endpoint } from '../net/endpoint.ts';

/** Bytes in a STUN transaction ID. */
export const TXID_LEN = 12;
/** Bytes in a STUN header. */
export const HEADER_LEN = 20;
/** Bytes in Tailscale's binding request. */
export const BINDING_REQUEST_LEN = 40;

const ATTR_MAPPED_ADDRESS = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS = 0x0020;
const ATTR_XOR_MAPPED_ADDRESS_ALT = 0x8020;
const ATTR_SOFTWARE = 0x8022;
const ATTR_FINGERPRINT = 0x8028;
const MAGIC = Uint8Array.from([0x21, 0x12, 0xa4, 0x42]);
const SOFTWARE = Uint8Array.from([0x74, 0x61, 0x69, 0x6c, 0x6e, 0x6f, 0x64, 0x65]); // "tailnode"
const FINGERPRINT_XOR = 0x5354554e; // RFC 5389 15.5

/** Why a packet was not accepted. */
export type StunError =
  | 'not-stun' | 'not-success-response' | 'not-binding-request' | 'malformed-attrs'
  | 'no-address' | 'wrong-software' | 'no-fingerprint' | 'wrong-fingerprint';

/** A parsed binding response: the transaction it answers and our address as the server saw it. */
export type StunResponse = { ok: true; txId: Uint8Array; endpoint: Endpoint } | { ok: false; error: StunError };

/** A parsed binding request (server side). */
export type StunRequest = { ok: true; txId: Uint8Array } | { ok: false; error: StunError };

const defaultEndpoints = new Endpoints(4096);

/** A new random transaction ID. */
export function newTxId(): Uint8Array {
  return randomFillSync(new Uint8Array(TXID_LEN));
}

/** RFC 5389 FINGERPRINT value of b. */
function fingerprint(b: Uint8Array): number {
  return (crc32(b) ^ FINGERPRINT_XOR) >>> 0;
}

/** Writes Tailscale's 40-byte binding request for txId at out[off..off+40); returns the length. */
export function writeBindingRequest(txId: Uint8Array, out: Uint8Array, off = 0): number {
  if (txId.length !== TXID_LEN) throw new TypeError(`stun: transaction ID must be ${TXID_LEN} bytes`);
  if (out.length - off < BINDING_REQUEST_LEN) throw new RangeError('stun: output too small for a binding request');
  const dv = new DataView(out.buffer, out.byteOffset + off, BINDING_REQUEST_LEN);
  dv.setUint16(0, 0x0001);
  dv.setUint16(2, 4 + SOFTWARE.length + 8);
  out.set(MAGIC, off + 4);
  out.set(txId, off + 8);
  dv.setUint16(20, ATTR_SOFTWARE);
  dv.setUint16(22, SOFTWARE.length);
  out.set(SOFTWARE, off + 24);
  dv.setUint16(32, ATTR_FINGERPRINT);
  dv.setUint16(34, 4);
  dv.setUint32(36, fingerprint(out.subarray(off, off + 32)));
  return BINDING_REQUEST_LEN;
}

/** Tailscale's binding request for txId (a new random one when omitted). */
export function bindingRequest(txId: Uint8Array = newTxId()): Uint8Array {
  const out = new Uint8Array(BINDING_REQUEST_LEN);
  writeBindingRequest(txId, out, 0);
  return out;
}

/** Whether b looks like a STUN message: 20+ bytes, top two bits zero, magic cookie (stun.Is). */
export function isStunPacket(b: Uint8Array): boolean {
  return b.length >= HEADER_LEN && (b[0]! & 0xc0) === 0 &&
    b[4] === 0x21 && b[5] === 0x12 && b[6] === 0xa4 && b[7] === 0x42;
}

/** Calls fn for each attribute in b; false when an attribute runs past the end. */
function forEachAttr(b: Uint8Array, fn: (type: number, value: Uint8Array) => void): boolean {
  let p = 0;
  while (p < b.length) {
    if (b.length - p < 4) return false;
    const type = (b[p]! << 8) | b[p + 1]!;
    const len = (b[p + 2]! << 8) | b[p + 3]!;
    const padded = (len + 3) & ~3;
    p += 4;
    if (padded > b.length - p) return false;
    fn(type, b.subarray(p, p + len));
    p += padded;
  }
  return true;
}

/** Parses a binding request and accepts it only if it carries SOFTWARE=tailnode and a valid trailing FINGERPRINT. */
export function parseBindingRequest(b: Uint8Array): StunRequest {
  if (!isStunPacket(b)) return { ok: false, error: 'not-stun' };
  if (b[0] !== 0x00 || b[1] !== 0x01) return { ok: false, error: 'not-binding-request' };
  let softwareOk = false;
  let lastAttr = -1;
  let gotFp = -1;
  const ok = forEachAttr(b.subarray(HEADER_LEN), (type, v) => {
    lastAttr = type;
    if (type === ATTR_SOFTWARE && v.length === SOFTWARE.length && v.every((x, i) => x === SOFTWARE[i])) softwareOk = true;
    if (type === ATTR_FINGERPRINT && v.length === 4) gotFp = ((v[0]! << 24) | (v[1]! << 16) | (v[2]! << 8) | v[3]!) >>> 0;
  });
  if (!ok) return { ok: false, error: 'malformed-attrs' };
  if (!softwareOk) return { ok: false, error: 'wrong-software' };
  if (lastAttr !== ATTR_FINGERPRINT) return { ok: false, error: 'no-fingerprint' };
  if (gotFp !== fingerprint(b.subarray(0, b.length - 8))) return { ok: false, error: 'wrong-fingerprint' };
  return { ok: true, txId: b.slice(8, 8 + TXID_LEN) };
}

/** Decodes a (XOR-)MAPPED-ADDRESS value into raw endpoint form; false when malformed. */
function decodeAddress(v: Uint8Array, xor: Uint8Array | undefined, raw: Uint8Array): boolean {
  if (v.length < 4) return false;
  const fam = v[1];
  const addrLen = fam === 1 ? 4 : fam === 2 ? 16 : 0;
  if (addrLen === 0 || v.length - 4 < addrLen) return false;
  let port = (v[2]! << 8) | v[3]!;
  if (xor) port ^= 0x2112;
  raw.fill(0);
  const base = 16 - addrLen;
  if (addrLen === 4) { raw[10] = 0xff; raw[11] = 0xff; }
  for (let i = 0; i < addrLen; i++) raw[base + i] = xor ? v[4 + i]! ^ xor[i]! : v[4 + i]!;
  // An IPv4-mapped IPv6 answer is an IPv4 address (Go's Unmap).
  let mapped = addrLen === 4;
  if (!mapped) {
    mapped = raw[10] === 0xff && raw[11] === 0xff;
    for (let i = 0; i < 10 && mapped; i++) if (raw[i] !== 0) mapped = false;
  }
  raw[16] = port >> 8;
  raw[17] = port & 0xff;
  raw[18] = mapped ? 4 : 6;
  return true;
}

/**
 * Parses a binding success response: XOR-MAPPED-ADDRESS (0x0020 or 0x8020) wins, MAPPED-ADDRESS is
 * the fallback, other attributes are ignored, bytes past the declared length are ignored.
 */
export function parseBindingResponse(b: Uint8Array, endpoints: Endpoints = defaultEndpoints): StunResponse {
  if (!isStunPacket(b)) return { ok: false, error: 'not-stun' };
  if (b[0] !== 0x01 || b[1] !== 0x01) return { ok: false, error: 'not-success-response' };
  const attrsLen = (b[2]! << 8) | b[3]!;
  if (attrsLen > b.length - HEADER_LEN) return { ok: false, error: 'malformed-attrs' };
  const txId = b.subarray(8, 8 + TXID_LEN);
  const xorKey = new Uint8Array(16);
  xorKey.set(MAGIC, 0);
  xorKey.set(txId, 4);
  const xorRaw = new Uint8Array(ENDPOINT_RAW_LEN);
  const fallbackRaw = new Uint8Array(ENDPOINT_RAW_LEN);
  let haveXor = false, haveFallback = false, bad = false;
  const ok = forEachAttr(b.subarray(HEADER_LEN, HEADER_LEN + attrsLen), (type, v) => {
    if (type === ATTR_XOR_MAPPED_ADDRESS || type === ATTR_XOR_MAPPED_ADDRESS_ALT) {
      if (decodeAddress(v, xorKey, xorRaw)) haveXor = true;
      else bad = true;
    } else if (type === ATTR_MAPPED_ADDRESS) {
      if (decodeAddress(v, undefined, fallbackRaw)) haveFallback = true;
      else bad = true;
    }
  });
  if (!ok || bad) return { ok: false, error: 'malformed-attrs' };
  if (!haveXor && !haveFallback) return { ok: false, error: 'no-address' };
  return { ok: true, txId: b.slice(8, 8 + TXID_LEN), endpoint: endpoints.intern(haveXor ? xorRaw : fallbackRaw) };
}

/** A binding success response for txId carrying endpoint in XOR-MAPPED-ADDRESS (what derper sends). */
export function bindingResponse(txId: Uint8Array, endpoint: Endpoint): Uint8Array {
  const addrLen = endpoint.family === 4 ? 4 : 16;
  const out = new Uint8Array(HEADER_LEN + 8 + addrLen);
  const dv = new DataView(out.buffer);
  dv.setUint16(0, 0x0101);
  dv.setUint16(2, 8 + addrLen);
  out.set(MAGIC, 4);
  out.set(txId, 8);
  dv.setUint16(20, ATTR_XOR_MAPPED_ADDRESS);
  dv.setUint16(22, 4 + addrLen);
  out[25] = endpoint.family === 4 ? 1 : 2;
  dv.setUint16(26, endpoint.port ^ 0x2112);
  const xorKey = new Uint8Array(16);
  xorKey.set(MAGIC, 0);
  xorKey.set(txId, 4);
  const ip = endpoint.raw.subarray(16 - addrLen, 16);
  for (let i = 0; i < addrLen; i++) out[28 + i] = ip[i]! ^ xorKey[i]!;
  return out;
}
