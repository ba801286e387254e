// WireGuard message layouts (whitepaper section 5.4, wireguard-go device/noise-protocol.go).
// Every message starts with a little-endian u32 whose value is the type (the top 3 bytes are zero).
//
// Type 1, handshake initiation, 148 bytes:     Type 2, handshake response, 92 bytes:
//   [0..4)     type = 1                          [0..4)    type = 2
//   [4..8)     sender index (LE)                 [4..8)    sender index (LE)
//   [8..40)    unencrypted ephemeral             [8..12)   receiver index (LE)
//   [40..88)   encrypted static (32 + 16)        [12..44)  unencrypted ephemeral
//   [88..116)  encrypted timestamp (12 + 16)     [44..60)  encrypted nothing (16)
//   [116..132) mac1                              [60..76)  mac1
//   [132..148) mac2                              [76..92)  mac2
//
// Type 3, cookie reply, 64 bytes:               Type 4, transport data, 16 + n + 16 bytes (n % 16 == 0):
//   [0..4)     type = 3                          [0..4)    type = 4
//   [4..8)     receiver index (LE)               [4..8)    receiver index (LE)
//   [8..32)    nonce (24, random)                [8..16)   counter (LE u64)
//   [32..64)   encrypted cookie (16 + 16)        [16..)    encrypted packet + 16-byte tag
//
// Sizes of types 1-3 are exact; type 4 needs at least 32 bytes (an empty plaintext is a keepalive).

/** Message type numbers. */
export const MessageType = {
  Initiation: 1,
  Response: 2,
  CookieReply: 3,
  Transport: 4,
} as const;
/** One of the message type numbers. */
export type MessageType = (typeof MessageType)[keyof typeof MessageType];

/** Size of a handshake initiation. */
export const INITIATION_SIZE = 148;
/** Size of a handshake response. */
export const RESPONSE_SIZE = 92;
/** Size of a cookie reply. */
export const COOKIE_REPLY_SIZE = 64;
/** Size of the transport header (type, receiver, counter). */
export const TRANSPORT_HEADER_SIZE = 16;
/** Smallest transport message: header and a bare tag (a keepalive). */
export const TRANSPORT_MIN_SIZE = 32;
/** AEAD tag size. */
export const TAG_SIZE = 16;

/** Field offsets, by message. */
export const Offsets = {
  initiation: { sender: 4, ephemeral: 8, encStatic: 40, encTimestamp: 88, mac1: 116, mac2: 132 },
  response: { sender: 4, receiver: 8, ephemeral: 12, encNothing: 44, mac1: 60, mac2: 76 },
  cookieReply: { receiver: 4, nonce: 8, encCookie: 32 },
  transport: { receiver: 4, counter: 8, content: 16 },
} as const;

/** Reads a little-endian u32. */
export function readU32LE(b: Uint8Array, off: number): number {
  return (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16) | (b[off + 3]! << 24)) >>> 0;
}

/** Writes a little-endian u32. */
export function writeU32LE(b: Uint8Array, off: number, v: number): void {
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = (v >>> 24) & 0xff;
}

/**
 * The type of the message at buf[off, off+len) if its type word and size are valid, else 0.
 * This is the size-checked dispatch that comes before any parsing.
 */
export function messageTypeOf(buf: Uint8Array, off: number, len: number): MessageType | 0 {
  if (len < 4) return 0;
  const t = readU32LE(buf, off);
  switch (t) {
    case MessageType.Initiation: return len === INITIATION_SIZE ? t : 0;
    case MessageType.Response: return len === RESPONSE_SIZE ? t : 0;
    case MessageType.CookieReply: return len === COOKIE_REPLY_SIZE ? t : 0;
    case MessageType.Transport: return len >= TRANSPORT_MIN_SIZE ? t : 0;
    default: return 0;
  }
}

/** A parsed handshake initiation; byte fields are views into the message. */
export interface Initiation {
  /** Initiator's index. */
  sender: number;
  /** Initiator's ephemeral public key. */
  ephemeral: Uint8Array;
  /** AEAD of the initiator's static public key. */
  encStatic: Uint8Array;
  /** AEAD of the TAI64N timestamp. */
  encTimestamp: Uint8Array;
}

/** A parsed handshake response; byte fields are views into the message. */
export interface Response {
  /** Responder's index. */
  sender: number;
  /** The initiator's index. */
  receiver: number;
  /** Responder's ephemeral public key. */
  ephemeral: Uint8Array;
  /** AEAD of the empty string. */
  encNothing: Uint8Array;
}

/** A parsed cookie reply; byte fields are views into the message. */
export interface CookieReply {
  /** The index of the handshake message this answers. */
  receiver: number;
  /** XChaCha20 nonce. */
  nonce: Uint8Array;
  /** XAEAD of the 16-byte cookie. */
  encCookie: Uint8Array;
}

/** Parses an initiation (msg must be exactly INITIATION_SIZE bytes). */
export function parseInitiation(msg: Uint8Array): Initiation {
  const o = Offsets.initiation;
  if (msg.length !== INITIATION_SIZE) throw new RangeError(`initiation must be ${INITIATION_SIZE} bytes, got ${msg.length}`);
  return {
    sender: readU32LE(msg, o.sender),
    ephemeral: msg.subarray(o.ephemeral, o.ephemeral + 32),
    encStatic: msg.subarray(o.encStatic, o.encStatic + 48),
    encTimestamp: msg.subarray(o.encTimestamp, o.encTimestamp + 28),
  };
}

/** Writes an initiation (macs left zero) into a fresh INITIATION_SIZE buffer. */
export function writeInitiation(m: Initiation): Uint8Array {
  const o = Offsets.initiation;
  const out = new Uint8Array(INITIATION_SIZE);
  writeU32LE(out, 0, MessageType.Initiation);
  writeU32LE(out, o.sender, m.sender);
  out.set(checkLen(m.ephemeral, 32, 'ephemeral'), o.ephemeral);
  out.set(checkLen(m.encStatic, 48, 'encrypted static'), o.encStatic);
  out.set(checkLen(m.encTimestamp, 28, 'encrypted timestamp'), o.encTimestamp);
  return out;
}

/** Parses a response (msg must be exactly RESPONSE_SIZE bytes). */
export function parseResponse(msg: Uint8Array): Response {
  const o = Offsets.response;
  if (msg.length !== RESPONSE_SIZE) throw new RangeError(`response must be ${RESPONSE_SIZE} bytes, got ${msg.length}`);
  return {
    sender: readU32LE(msg, o.sender),
    receiver: readU32LE(msg, o.receiver),
    ephemeral: msg.subarray(o.ephemeral, o.ephemeral + 32),
    encNothing: msg.subarray(o.encNothing, o.encNothing + 16),
  };
}

/** Writes a response (macs left zero) into a fresh RESPONSE_SIZE buffer. */
export function writeResponse(m: Response): Uint8Array {
  const o = Offsets.response;
  const out = new Uint8Array(RESPONSE_SIZE);
  writeU32LE(out, 0, MessageType.Response);
  writeU32LE(out, o.sender, m.sender);
  writeU32LE(out, o.receiver, m.receiver);
  out.set(checkLen(m.ephemeral, 32, 'ephemeral'), o.ephemeral);
  out.set(checkLen(m.encNothing, 16, 'encrypted nothing'), o.encNothing);
  return out;
}

/** Parses a cookie reply (msg must be exactly COOKIE_REPLY_SIZE bytes). */
export function parseCookieReply(msg: Uint8Array): CookieReply {
  const o = Offsets.cookieReply;
  if (msg.length !== COOKIE_REPLY_SIZE) throw new RangeError(`cookie reply must be ${COOKIE_REPLY_SIZE} bytes, got ${msg.length}`);
  return {
    receiver: readU32LE(msg, o.receiver),
    nonce: msg.subarray(o.nonce, o.nonce + 24),
    encCookie: msg.subarray(o.encCookie, o.encCookie + 32),
  };
}

/** Writes a cookie reply into a fresh COOKIE_REPLY_SIZE buffer. */
export function writeCookieReply(m: CookieReply): Uint8Array {
  const o = Offsets.cookieReply;
  const out = new Uint8Array(COOKIE_REPLY_SIZE);
  writeU32LE(out, 0, MessageType.CookieReply);
  writeU32LE(out, o.receiver, m.receiver);
  out.set(checkLen(m.nonce, 24, 'nonce'), o.nonce);
  out.set(checkLen(m.encCookie, 32, 'encrypted cookie'), o.encCookie);
  return out;
}

/**
 * Writes a transport header at buf[off, off+16): type 4, the receiver index (its 4 LE bytes), and the
 * counter (< 2^53) as LE u64.
 */
export function writeTransportHeader(buf: Uint8Array, off: number, receiverLE: Uint8Array, counter: number): void {
  buf[off] = MessageType.Transport;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + 4] = receiverLE[0]!;
  buf[off + 5] = receiverLE[1]!;
  buf[off + 6] = receiverLE[2]!;
  buf[off + 7] = receiverLE[3]!;
  writeU32LE(buf, off + 8, counter >>> 0);
  writeU32LE(buf, off + 12, Math.floor(counter / 4294967296));
}

function checkLen(b: Uint8Array, n: number, what: string): Uint8Array {
  if (b.length !== n) throw new RangeError(`${what} must be ${n} bytes, got ${b.length}`);
  return b;
}
