// The control-plane Noise IK handshake (TS:control/controlbase/handshake.go, messages.go).
//
// Noise_IK_25519_ChaChaPoly_BLAKE2s, prologue "Tailscale Control Protocol v<version>" (decimal):
//   <- s                      (the server's static key is known from GET /key)
//   ...
//   -> e, es, s, ss           initiation, empty payload
//   <- e, ee, se              response, empty payload
// Split() → (initiator→responder key, responder→initiator key).
//
// Initiation (client → server, 101 bytes, sent base64 in the X-Tailscale-Handshake header):
//   [0..2)   protocol version, big-endian uint16 (the capability version)
//   [2]      type 0x01
//   [3..5)   payload length, big-endian = 96
//   [5..37)  client ephemeral public key
//   [37..85) client machine public key, encrypted (32 + 16 tag)
//   [85..101) tag over the empty payload
// Response (server → client, 51 bytes, raw on the stream after the 101 headers):
//   [0]      type 0x02
//   [1..3)   payload length, big-endian = 48
//   [3..35)  server ephemeral public key
//   [35..51) tag over the empty payload
// Error (replaces the response): [0] type 0x03, [1..3) big-endian length, then that many bytes of
// unauthenticated ASCII text. A hint only.
//
// Sans-I/O: these functions take and return bytes. The ephemeral key can be injected for tests.
import { createCipheriv, createDecipheriv, createHash, hkdfSync } from 'node:crypto';
import { generateKeyPair, publicKeyOf, x25519, type MachinePublic, type PrivateKey } from '../keys.ts';

/** Noise protocol name; BLAKE2s(name) is the initial h and ck (Noise spec 5.2, name > 32 bytes). */
export const PROTOCOL_NAME = 'Noise_IK_25519_ChaChaPoly_BLAKE2s';
/** Prologue prefix; the decimal protocol version follows with no padding. */
export const PROLOGUE_PREFIX = 'Tailscale Control Protocol v';

/** Message types of the controlbase framing. */
export const MsgType = { initiation: 1, response: 2, error: 3, record: 4 } as const;

/** Bytes in the initiation header (version + type + length). */
export const INITIATION_HEADER_LEN = 5;
/** Bytes in every other message header (type + length). */
export const HEADER_LEN = 3;
/** Total bytes in an initiation message. */
export const INITIATION_LEN = INITIATION_HEADER_LEN + 32 + 48 + 16;
/** Total bytes in a response message. */
export const RESPONSE_LEN = HEADER_LEN + 32 + 16;

const TAG_LEN = 16;
const ZERO_NONCE = new Uint8Array(12);

/** The result of a finished handshake: one key per direction plus the handshake hash. */
export interface TransportKeys {
  /** Key for what this side sends. */
  readonly tx: Uint8Array;
  /** Key for what this side receives. */
  readonly rx: Uint8Array;
  /** Final h, usable as a channel binding. */
  readonly handshakeHash: Uint8Array;
}

function blake2s(...parts: Uint8Array[]): Uint8Array {
  const h = createHash('blake2s256');
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}

/** Symmetric state of the Noise spec (section 5.2), minus the cipher state we never keep. */
class SymmetricState {
  h: Uint8Array;
  ck: Uint8Array;
  done = false;

  constructor() {
    this.h = blake2s(new TextEncoder().encode(PROTOCOL_NAME));
    this.ck = this.h;
  }

  mixHash(data: Uint8Array): void {
    this.check();
    this.h = blake2s(this.h, data);
  }

  /** MixKey(DH(priv, pub)); returns the single-use key k used with the all-zero nonce. */
  mixDH(priv: Uint8Array, pub: Uint8Array): Uint8Array {
    this.check();
    const out = new Uint8Array(hkdfSync('blake2s256', x25519(priv, pub), this.ck, new Uint8Array(0), 64));
    this.ck = out.slice(0, 32);
    return out.slice(32, 64);
  }

  /** EncryptAndHash: seals plaintext with k, nonce 0, AAD = h; mixes the ciphertext into h. */
  encryptAndHash(k: Uint8Array, plaintext: Uint8Array): Uint8Array {
    this.check();
    const c = createCipheriv('chacha20-poly1305', k, ZERO_NONCE, { authTagLength: TAG_LEN });
    c.setAAD(this.h, { plaintextLength: plaintext.length });
    const ct = Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
    const out = new Uint8Array(ct);
    this.mixHash(out);
    return out;
  }

  /** DecryptAndHash: opens ciphertext with k, nonce 0, AAD = h; throws on a bad tag. */
  decryptAndHash(k: Uint8Array, ciphertext: Uint8Array): Uint8Array {
    this.check();
    if (ciphertext.length < TAG_LEN) throw new Error('noise: ciphertext shorter than a tag');
    const body = ciphertext.subarray(0, ciphertext.length - TAG_LEN);
    const d = createDecipheriv('chacha20-poly1305', k, ZERO_NONCE, { authTagLength: TAG_LEN });
    d.setAAD(this.h, { plaintextLength: body.length });
    d.setAuthTag(ciphertext.subarray(ciphertext.length - TAG_LEN));
    let pt: Buffer;
    try {
      pt = Buffer.concat([d.update(body), d.final()]);
    } catch {
      throw new Error('noise: handshake authentication failed');
    }
    this.mixHash(ciphertext);
    return new Uint8Array(pt);
  }

  /** Split(): HKDF(ck, empty) → (k1 initiator→responder, k2 responder→initiator). */
  split(): [Uint8Array, Uint8Array] {
    this.check();
    this.done = true;
    const out = new Uint8Array(hkdfSync('blake2s256', new Uint8Array(0), this.ck, new Uint8Array(0), 64));
    return [out.slice(0, 32), out.slice(32, 64)];
  }

  private check(): void {
    if (this.done) throw new Error('noise: handshake state used after Split');
  }
}

/** The prologue bytes for a protocol version. */
export function prologue(version: number): Uint8Array {
  return new TextEncoder().encode(PROLOGUE_PREFIX + String(version));
}

/** A client handshake waiting for the server's response. */
export interface ClientHandshake {
  /** The 101-byte initiation message to send. */
  readonly initiation: Uint8Array;
  /** Protocol version written into the initiation. */
  readonly version: number;
  /** Completes the handshake with the 51-byte response; throws on an error message or a bad tag. */
  finish(response: Uint8Array): TransportKeys;
}

/** Options for {@link clientHandshake}. */
export interface ClientHandshakeOptions {
  /** The client's machine private key (Noise static s). */
  machinePrivate: PrivateKey;
  /** The server's Noise public key from GET /key (Noise static rs). */
  serverPublic: MachinePublic;
  /** Protocol (= capability) version, 0..65535. */
  version: number;
  /** Ephemeral private key; only tests pass one. */
  ephemeralPrivate?: PrivateKey;
}

/** Starts a client handshake: builds the initiation (-> e, es, s, ss) and returns the continuation. */
export function clientHandshake(opts: ClientHandshakeOptions): ClientHandshake {
  const { machinePrivate, serverPublic, version } = opts;
  if (!Number.isInteger(version) || version < 0 || version > 0xffff) throw new RangeError(`noise: bad version ${version}`);
  const s = new SymmetricState();
  s.mixHash(prologue(version));
  // <- s
  s.mixHash(serverPublic);
  // -> e, es, s, ss
  const ePriv = opts.ephemeralPrivate ?? generateKeyPair().privateKey;
  const ePub = publicKeyOf(ePriv);
  const init = new Uint8Array(INITIATION_LEN);
  const dv = new DataView(init.buffer);
  dv.setUint16(0, version);
  init[2] = MsgType.initiation;
  dv.setUint16(3, INITIATION_LEN - INITIATION_HEADER_LEN);
  init.set(ePub, 5);
  s.mixHash(ePub);
  let k = s.mixDH(ePriv, serverPublic); // es
  init.set(s.encryptAndHash(k, publicKeyOf(machinePrivate)), 37); // s
  k = s.mixDH(machinePrivate, serverPublic); // ss
  init.set(s.encryptAndHash(k, new Uint8Array(0)), 85); // empty payload

  let used = false;
  return {
    initiation: init,
    version,
    finish(resp: Uint8Array): TransportKeys {
      if (used) throw new Error('noise: handshake continuation used twice');
      used = true;
      const parsed = parseResponse(resp);
      if (parsed.kind === 'error') throw new HandshakeRefusedError(parsed.message);
      // <- e, ee, se
      s.mixHash(parsed.ephemeral);
      s.mixDH(ePriv, parsed.ephemeral); // ee
      const k2 = s.mixDH(machinePrivate, parsed.ephemeral); // se
      s.decryptAndHash(k2, parsed.tag);
      const h = s.h;
      const [c1, c2] = s.split();
      return { tx: c1, rx: c2, handshakeHash: h };
    },
  };
}

/** The server sent a type-3 error message instead of a response. */
export class HandshakeRefusedError extends Error {
  /** Server's text, unauthenticated. */
  readonly serverMessage: string;
  constructor(serverMessage: string) {
    super(`noise: server refused the handshake: ${JSON.stringify(serverMessage)}`);
    this.name = 'HandshakeRefusedError';
    this.serverMessage = serverMessage;
  }
}

/** A parsed server handshake message. */
export type ParsedResponse =
  | { kind: 'response'; ephemeral: Uint8Array; tag: Uint8Array }
  | { kind: 'error'; message: string };

/**
 * How many bytes the server's handshake message needs given its first bytes: the header (3)
 * first, then the full length. Returns the total once the header is known.
 */
export function responseLength(head: Uint8Array): number {
  if (head.length < HEADER_LEN) return HEADER_LEN;
  return HEADER_LEN + ((head[1]! << 8) | head[2]!);
}

/** Parses a complete response or error message (length checked against the header). */
export function parseResponse(b: Uint8Array): ParsedResponse {
  if (b.length < HEADER_LEN) throw new Error('noise: short handshake response');
  const type = b[0]!;
  const len = (b[1]! << 8) | b[2]!;
  if (b.length !== HEADER_LEN + len) throw new Error(`noise: response length ${b.length} does not match header ${len}`);
  if (type === MsgType.error) {
    return { kind: 'error', message: Buffer.from(b.subarray(HEADER_LEN)).toString('latin1') };
  }
  if (type !== MsgType.response) throw new Error(`noise: unexpected response message type ${type}`);
  if (len !== RESPONSE_LEN - HEADER_LEN) throw new Error(`noise: wrong length ${len} for handshake response`);
  return { kind: 'response', ephemeral: b.slice(3, 35), tag: b.slice(35, 51) };
}

/** What a server learns from an accepted initiation. */
export interface ServerAccept {
  /** The 51-byte response to send. */
  readonly response: Uint8Array;
  /** Transport keys from the server's side (tx = responder→initiator). */
  readonly keys: TransportKeys;
  /** The client's machine public key. */
  readonly clientPublic: MachinePublic;
  /** The version from the initiation header. */
  readonly version: number;
}

/**
 * Server side of the handshake, for in-process tests (headscale is the real responder).
 * Reads an initiation, returns the response and keys; throws on any mismatch.
 */
export function serverAccept(serverPrivate: PrivateKey, init: Uint8Array, ephemeralPrivate?: PrivateKey): ServerAccept {
  if (init.length !== INITIATION_LEN) throw new Error('wrong handshake initiation size');
  const dv = new DataView(init.buffer, init.byteOffset, init.byteLength);
  const version = dv.getUint16(0);
  if (init[2] !== MsgType.initiation) throw new Error('unexpected handshake message type');
  if (dv.getUint16(3) !== INITIATION_LEN - INITIATION_HEADER_LEN) throw new Error('wrong handshake initiation length');
  const s = new SymmetricState();
  s.mixHash(prologue(version));
  s.mixHash(publicKeyOf(serverPrivate));
  const re = init.slice(5, 37);
  s.mixHash(re);
  let k = s.mixDH(serverPrivate, re); // es
  const clientPublic = s.decryptAndHash(k, init.subarray(37, 85)) as MachinePublic;
  k = s.mixDH(serverPrivate, clientPublic); // ss
  s.decryptAndHash(k, init.subarray(85, 101));
  // <- e, ee, se
  const ePriv = ephemeralPrivate ?? generateKeyPair().privateKey;
  const ePub = publicKeyOf(ePriv);
  const resp = new Uint8Array(RESPONSE_LEN);
  resp[0] = MsgType.response;
  resp[1] = 0;
  resp[2] = RESPONSE_LEN - HEADER_LEN;
  resp.set(ePub, 3);
  s.mixHash(ePub);
  s.mixDH(ePriv, re); // ee
  k = s.mixDH(ePriv, clientPublic); // se
  resp.set(s.encryptAndHash(k, new Uint8Array(0)), 35);
  const h = s.h;
  const [c1, c2] = s.split();
  return { response: resp, keys: { tx: c2, rx: c1, handshakeHash: h }, clientPublic, version };
}
