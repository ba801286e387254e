// The WireGuard handshake: Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s (whitepaper 5.4.2-5.4.5,
// wireguard-go device/noise-protocol.go).
//
//   IKpsk2:
//     <- s
//     ...
//     -> e, es, s, ss           (initiation, type 1)
//     <- e, ee, se, psk         (response, type 2)
//
// Each side keeps one Handshake per peer. The state machine is
//   Zeroed -> InitiationCreated -> ResponseConsumed                 (initiator)
//   Zeroed -> InitiationConsumed -> ResponseCreated                 (responder)
// and deriveKeypair() turns either final state into transport keys and zeroes the handshake.
// These functions do no I/O and never throw for bad input: they return null (or a reason).
import { kdf1, kdf2, kdf3 } from '../crypto/blake2s.ts';
import type { CryptoBackend } from '../crypto/types.ts';
import { parseInitiation, parseResponse, writeInitiation, writeResponse } from './messages.ts';
import { compareTai64n, tai64n, TAI64N_SIZE } from './tai64n.ts';

/** Noise protocol name (whitepaper 5.4). */
export const CONSTRUCTION = new TextEncoder().encode('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s');
/** Noise prologue (whitepaper 5.4). */
export const IDENTIFIER = new TextEncoder().encode('WireGuard v1 zx2c4 Jason@zx2c4.com');
/** wireguard-go HandshakeInitationRate: at most one accepted initiation per peer per 20 ms. */
export const HANDSHAKE_INITIATION_RATE_MS = 20;

/** Handshake states. */
export const HandshakeState = {
  Zeroed: 0,
  InitiationCreated: 1,
  InitiationConsumed: 2,
  ResponseCreated: 3,
  ResponseConsumed: 4,
} as const;
/** One of the handshake states. */
export type HandshakeState = (typeof HandshakeState)[keyof typeof HandshakeState];

const EMPTY = new Uint8Array(0);

/** Our static key pair. */
export interface StaticIdentity {
  /** Clamped private key. */
  privateKey: Uint8Array;
  /** Its public key. */
  publicKey: Uint8Array;
}

/** Per-backend constants Ci = HASH(CONSTRUCTION), Hi = HASH(Ci || IDENTIFIER). */
export class Noise {
  /** The backend all handshake crypto runs on. */
  readonly crypto: CryptoBackend;
  /** Initial chaining key. */
  readonly initialChainKey: Uint8Array;
  /** Initial hash. */
  readonly initialHash: Uint8Array;

  constructor(crypto: CryptoBackend) {
    this.crypto = crypto;
    this.initialChainKey = crypto.blake2s.hash(CONSTRUCTION);
    this.initialHash = crypto.blake2s.hash(this.initialChainKey, IDENTIFIER);
  }

  /** HASH(h || data). */
  mixHash(h: Uint8Array, data: Uint8Array): Uint8Array {
    return this.crypto.blake2s.hash(h, data);
  }

  /** AEAD(key, 0, plaintext, aad) into a new array. */
  seal(key: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array {
    const a = this.crypto.aead;
    const out = new Uint8Array(plaintext.length + 16);
    out.set(plaintext);
    a.sealInPlace(a.prepareKey(key), 0, out, 0, plaintext.length, aad);
    return out;
  }

  /** The plaintext of AEAD(key, 0, ·, aad), or null. */
  open(key: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null {
    const a = this.crypto.aead;
    // A copy, also when `sealed` is a Buffer (whose slice() is a view: opening in place would
    // overwrite the message the handshake still hashes).
    const buf = new Uint8Array(sealed);
    if (!a.openInPlace(a.prepareKey(key), 0, buf, 0, buf.length, aad)) return null;
    return buf.subarray(0, buf.length - 16);
  }
}

/** The handshake state kept per peer. */
export class Handshake {
  /** Where the state machine is. */
  state: HandshakeState = HandshakeState.Zeroed;
  /** Running hash H. */
  hash: Uint8Array = new Uint8Array(32);
  /** Chaining key C. */
  chainKey: Uint8Array = new Uint8Array(32);
  /** Our ephemeral private key. */
  localEphemeral: Uint8Array = new Uint8Array(32);
  /** The peer's ephemeral public key. */
  remoteEphemeral: Uint8Array = new Uint8Array(32);
  /** Our index for this handshake (0 = none). */
  localIndex = 0;
  /** The peer's index. */
  remoteIndex = 0;
  /** The peer's static public key. */
  readonly remoteStatic: Uint8Array;
  private staticStatic: Uint8Array | null = null;
  private staticStaticOf: (() => Uint8Array | null) | undefined;
  /**
   * DH(our static, peer static), or null when there is no private key or the result is zero.
   * Computed at first use when deferred (deferStaticStatic): a map of 10,000 peers costs no DH
   * until a peer handshakes (wireguard-go computes it in NewPeer; tailscale configures only
   * active peers into it).
   */
  get precomputedStaticStatic(): Uint8Array | null {
    const f = this.staticStaticOf;
    if (f !== undefined) { this.staticStatic = f(); this.staticStaticOf = undefined; }
    return this.staticStatic;
  }

  set precomputedStaticStatic(v: Uint8Array | null) {
    this.staticStatic = v;
    this.staticStaticOf = undefined;
  }

  /** Sets the static-static secret to what `compute` returns, called when a handshake first needs it. */
  deferStaticStatic(compute: () => Uint8Array | null): void {
    this.staticStatic = null;
    this.staticStaticOf = compute;
  }
  /** Pre-shared key, 32 zero bytes when unused. */
  presharedKey: Uint8Array = new Uint8Array(32);
  /** Greatest TAI64N timestamp accepted from the peer. */
  lastTimestamp: Uint8Array = new Uint8Array(TAI64N_SIZE);
  /** Monotonic ms of the last accepted initiation. */
  lastInitiationConsumption = -Infinity;
  /** Monotonic ms of the last initiation we sent. */
  lastSentHandshake = -Infinity;

  constructor(remoteStatic: Uint8Array) {
    this.remoteStatic = remoteStatic;
  }

  /** Zeroes the ephemeral state (wireguard-go Handshake.Clear); keeps timestamps and static keys. */
  clear(): void {
    this.localEphemeral.fill(0);
    this.remoteEphemeral.fill(0);
    this.chainKey.fill(0);
    this.hash.fill(0);
    this.localIndex = 0;
    this.state = HandshakeState.Zeroed;
  }
}

/**
 * Builds an initiation (mac fields zero) for `hs` with index `localIndex`:
 *   -> e, es, s, ss
 * Null when there is no usable static-static secret or a DH result is zero.
 */
export function createInitiation(n: Noise, id: StaticIdentity, hs: Handshake, localIndex: number,
  random: (k: number) => Uint8Array, wallMs: number): Uint8Array | null {
  const x = n.crypto.x25519;
  if (hs.precomputedStaticStatic === null) return null;
  let h = n.mixHash(n.initialHash, hs.remoteStatic);
  let c: Uint8Array = n.initialChainKey;
  // e
  const ePriv = x.generatePrivate(random);
  const ePub = x.publicFromPrivate(ePriv);
  c = kdf1(n.crypto.blake2s, c, ePub);
  h = n.mixHash(h, ePub);
  // es
  const es = x.shared(ePriv, hs.remoteStatic);
  if (es === null) return null;
  let k: Uint8Array;
  [c, k] = kdf2(n.crypto.blake2s, c, es);
  // s
  const encStatic = n.seal(k, id.publicKey, h);
  h = n.mixHash(h, encStatic);
  // ss
  [c, k] = kdf2(n.crypto.blake2s, c, hs.precomputedStaticStatic);
  // payload: TAI64N timestamp
  const encTimestamp = n.seal(k, tai64n(wallMs), h);
  h = n.mixHash(h, encTimestamp);

  hs.hash = h;
  hs.chainKey = c;
  hs.localEphemeral = ePriv;
  hs.localIndex = localIndex;
  hs.state = HandshakeState.InitiationCreated;
  return writeInitiation({ sender: localIndex, ephemeral: ePub, encStatic, encTimestamp });
}

/** Why an initiation was refused (counter names in the device). */
export type InitiationRefusal = 'invalid' | 'unknownPeer' | 'replay' | 'flood';

/**
 * Consumes an initiation (mac1 already checked) and, if it is good, moves the peer's handshake to
 * InitiationConsumed. `lookup` maps the decrypted static key to the peer's handshake.
 */
export function consumeInitiation<P extends { handshake: Handshake }>(n: Noise, id: StaticIdentity, msg: Uint8Array,
  lookup: (staticPublic: Uint8Array) => P | undefined, nowMs: number): P | InitiationRefusal {
  const x = n.crypto.x25519;
  const m = parseInitiation(msg);
  let h = n.mixHash(n.initialHash, id.publicKey);
  h = n.mixHash(h, m.ephemeral);
  let c = kdf1(n.crypto.blake2s, n.initialChainKey, m.ephemeral);
  // es (from the responder's side: DH(S_r, E_i))
  const es = x.shared(id.privateKey, m.ephemeral);
  if (es === null) return 'invalid';
  let k: Uint8Array;
  [c, k] = kdf2(n.crypto.blake2s, c, es);
  // s
  const peerStatic = n.open(k, m.encStatic, h);
  if (peerStatic === null) return 'invalid';
  h = n.mixHash(h, m.encStatic);
  const peer = lookup(peerStatic);
  if (peer === undefined) return 'unknownPeer';
  const hs = peer.handshake;
  if (hs.precomputedStaticStatic === null) return 'invalid';
  // ss
  [c, k] = kdf2(n.crypto.blake2s, c, hs.precomputedStaticStatic);
  const timestamp = n.open(k, m.encTimestamp, h);
  if (timestamp === null) return 'invalid';
  h = n.mixHash(h, m.encTimestamp);
  // Replay and flood protection (whitepaper 5.1; wireguard-go ConsumeMessageInitiation).
  if (compareTai64n(timestamp, hs.lastTimestamp) <= 0) return 'replay';
  if (nowMs < hs.lastInitiationConsumption + HANDSHAKE_INITIATION_RATE_MS) return 'flood';

  hs.hash = h;
  hs.chainKey = c;
  hs.remoteIndex = m.sender;
  hs.remoteEphemeral = m.ephemeral.slice();
  hs.lastTimestamp = timestamp.slice();
  hs.lastInitiationConsumption = nowMs;
  hs.state = HandshakeState.InitiationConsumed;
  return peer;
}

/**
 * Builds the response (mac fields zero) to a consumed initiation, with our index `localIndex`:
 *   <- e, ee, se, psk
 * Null when the handshake is not in InitiationConsumed or a DH result is zero.
 */
export function createResponse(n: Noise, hs: Handshake, localIndex: number,
  random: (k: number) => Uint8Array): Uint8Array | null {
  if (hs.state !== HandshakeState.InitiationConsumed) return null;
  const x = n.crypto.x25519;
  const b = n.crypto.blake2s;
  // e
  const ePriv = x.generatePrivate(random);
  const ePub = x.publicFromPrivate(ePriv);
  let h = n.mixHash(hs.hash, ePub);
  let c = kdf1(b, hs.chainKey, ePub);
  // ee
  const ee = x.shared(ePriv, hs.remoteEphemeral);
  if (ee === null) return null;
  c = kdf1(b, c, ee);
  // se (from the responder's side: DH(E_r, S_i))
  const se = x.shared(ePriv, hs.remoteStatic);
  if (se === null) return null;
  c = kdf1(b, c, se);
  // psk
  const [c2, tau, k] = kdf3(b, c, hs.presharedKey);
  c = c2;
  h = n.mixHash(h, tau);
  const encNothing = n.seal(k, EMPTY, h);
  h = n.mixHash(h, encNothing);

  hs.hash = h;
  hs.chainKey = c;
  hs.localEphemeral = ePriv;
  hs.localIndex = localIndex;
  hs.state = HandshakeState.ResponseCreated;
  return writeResponse({ sender: localIndex, receiver: hs.remoteIndex, ephemeral: ePub, encNothing });
}

/**
 * Consumes a response (mac1 checked; the caller found `hs` by the receiver index) and moves the
 * handshake to ResponseConsumed. False when it does not authenticate.
 */
export function consumeResponse(n: Noise, id: StaticIdentity, hs: Handshake, msg: Uint8Array): boolean {
  if (hs.state !== HandshakeState.InitiationCreated) return false;
  const x = n.crypto.x25519;
  const b = n.crypto.blake2s;
  const m = parseResponse(msg);
  if (m.receiver !== hs.localIndex) return false;
  // e
  let h = n.mixHash(hs.hash, m.ephemeral);
  let c = kdf1(b, hs.chainKey, m.ephemeral);
  // ee
  const ee = x.shared(hs.localEphemeral, m.ephemeral);
  if (ee === null) return false;
  c = kdf1(b, c, ee);
  // se (from the initiator's side: DH(S_i, E_r))
  const se = x.shared(id.privateKey, m.ephemeral);
  if (se === null) return false;
  c = kdf1(b, c, se);
  // psk
  const [c2, tau, k] = kdf3(b, c, hs.presharedKey);
  c = c2;
  h = n.mixHash(h, tau);
  if (n.open(k, m.encNothing, h) === null) return false;
  h = n.mixHash(h, m.encNothing);

  hs.hash = h;
  hs.chainKey = c;
  hs.remoteIndex = m.sender;
  hs.state = HandshakeState.ResponseConsumed;
  return true;
}

/** Transport keys from a finished handshake. */
export interface SessionKeys {
  /** Key we encrypt with. */
  send: Uint8Array;
  /** Key we decrypt with. */
  recv: Uint8Array;
  /** True when we sent the initiation. */
  isInitiator: boolean;
  /** Our index for the session. */
  localIndex: number;
  /** The peer's index for the session. */
  remoteIndex: number;
}

/**
 * (T1, T2) = KDF2(C, empty): the initiator sends with T1, the responder with T2 (whitepaper 5.4.5).
 * Zeroes the handshake. Null unless the handshake is in ResponseConsumed or ResponseCreated.
 */
export function deriveKeys(n: Noise, hs: Handshake): SessionKeys | null {
  let isInitiator: boolean;
  if (hs.state === HandshakeState.ResponseConsumed) isInitiator = true;
  else if (hs.state === HandshakeState.ResponseCreated) isInitiator = false;
  else return null;
  const [t1, t2] = kdf2(n.crypto.blake2s, hs.chainKey, EMPTY);
  const keys: SessionKeys = {
    send: isInitiator ? t1 : t2,
    recv: isInitiator ? t2 : t1,
    isInitiator,
    localIndex: hs.localIndex,
    remoteIndex: hs.remoteIndex,
  };
  hs.clear();
  return keys;
}
