// The crypto primitives WireGuard needs (whitepaper section 5.4, data-plane reference 1.2), behind
// small interfaces so that a fast backend (node:crypto) and a reference backend (@noble) can be
// swapped and tested against each other. All keys and outputs are plain Uint8Arrays.

/** An AEAD key prepared once (per keypair) so that the per-packet path does no key setup. */
export interface AeadKey {
  /** The raw 32-byte key (kept for the reference backend and for zeroing). */
  readonly raw: Uint8Array;
}

/** X25519 (RFC 7748) with raw 32-byte keys. */
export interface X25519 {
  /** A fresh private key, clamped (whitepaper 5.4.2). */
  generatePrivate(random: (n: number) => Uint8Array): Uint8Array;
  /** The public key of a private key. */
  publicFromPrivate(priv: Uint8Array): Uint8Array;
  /** DH(priv, pub); null when the result is all zero (a low-order public key), as wireguard-go rejects it. */
  shared(priv: Uint8Array, pub: Uint8Array): Uint8Array | null;
}

/** BLAKE2s-based functions (whitepaper 5.4: HASH, HMAC, MAC, KDFn). */
export interface Blake2s {
  /** HASH: unkeyed BLAKE2s-256 of the concatenation of the parts. */
  hash(...parts: Uint8Array[]): Uint8Array;
  /** HMAC-BLAKE2s-256 (RFC 2104 with a 64-byte block) of the concatenation of the parts. */
  hmac(key: Uint8Array, ...parts: Uint8Array[]): Uint8Array;
  /** MAC: keyed BLAKE2s with a 16-byte digest length parameter (not a truncation). */
  mac(key: Uint8Array, data: Uint8Array): Uint8Array;
}

/** ChaCha20-Poly1305 (RFC 8439) with WireGuard's nonce: 4 zero bytes then the counter, LE u64. */
export interface ChaChaPoly {
  /** Prepares a 32-byte key for repeated use. */
  prepareKey(key: Uint8Array): AeadKey;
  /**
   * Encrypts buf[off, off+len) in place and writes the 16-byte tag at buf[off+len, off+len+16).
   * `counter` is an integer below 2^53 (see src/wg/replay.ts for why that is enough).
   */
  sealInPlace(key: AeadKey, counter: number, buf: Uint8Array, off: number, len: number, aad?: Uint8Array): void;
  /**
   * Decrypts buf[off, off+len) in place, where the last 16 bytes are the tag; on success the plaintext
   * is buf[off, off+len-16) and the result is true. On failure the result is false and the bytes are garbage.
   * Never throws for bad input.
   */
  openInPlace(key: AeadKey, counter: number, buf: Uint8Array, off: number, len: number, aad?: Uint8Array): boolean;
}

/** XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha), used only by cookie replies. */
export interface XChaChaPoly {
  /** Ciphertext || tag. */
  seal(key: Uint8Array, nonce24: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Uint8Array;
  /** The plaintext, or null when authentication fails. */
  open(key: Uint8Array, nonce24: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Uint8Array | null;
}

/** A transport-data key prepared for one direction (sealing or opening) of one keypair. */
export interface TransportKey {
  /** The per-packet backends' copy of the 32-byte key (zeroed on release); empty for the native backend. */
  readonly raw: Uint8Array;
  /** The native key-table id (0 for the per-packet backends). */
  readonly id: number;
  /** The per-packet backends' prepared key (undefined for the native backend). */
  readonly aead: AeadKey | undefined;
}

/**
 * A batch of transport packets, described by typed arrays that are allocated once and reused. Job i
 * is buf[offs[i], offs[i]+lens[i]) under keys[i] (ids[i] for the native backend) with counter
 * ctrs[i] (an integer below 2^53, exact in a double). Seal: lens[i] is the plaintext length and the
 * 16-byte tag is written after it. Open: lens[i] includes the tag; ok[i] is set to 1 or 0.
 */
export class AeadBatch {
  readonly keys: Array<TransportKey | undefined>;
  readonly ids: Int32Array;
  readonly ctrs: Float64Array;
  readonly offs: Int32Array;
  readonly lens: Int32Array;
  readonly ok: Uint8Array;

  readonly capacity: number;

  constructor(capacity: number) {
    this.capacity = capacity;
    this.keys = new Array<TransportKey | undefined>(capacity).fill(undefined);
    this.ids = new Int32Array(capacity);
    this.ctrs = new Float64Array(capacity);
    this.offs = new Int32Array(capacity);
    this.lens = new Int32Array(capacity);
    this.ok = new Uint8Array(capacity);
  }

  /** Writes job i. */
  set(i: number, key: TransportKey, counter: number, off: number, len: number): void {
    this.keys[i] = key;
    this.ids[i] = key.id;
    this.ctrs[i] = counter;
    this.offs[i] = off;
    this.lens[i] = len;
  }
}

/**
 * ChaCha20-Poly1305 for WireGuard transport data, a batch per call, in place (whitepaper 5.4.6:
 * nonce = 4 zero bytes then the counter LE). All of a call's packets are in one buffer.
 */
export interface TransportAead {
  /** 'native', 'node' or 'reference'. */
  readonly name: string;
  /** Prepares a 32-byte key for sealing (encrypt) or opening; one per keypair and direction. */
  prepare(key: Uint8Array, encrypt: boolean): TransportKey;
  /** Frees what prepare made (native contexts are freed and their key cleansed). Idempotent. */
  release(key: TransportKey): void;
  /** Seals jobs [start, end) of b in buf, in place. Throws only for programming errors (bad slices, freed keys). */
  seal(buf: Uint8Array, b: AeadBatch, start: number, end: number): void;
  /**
   * Opens jobs [start, end) of b in buf, in place; b.ok[i] = 1 when job i authenticated, else 0 and its
   * bytes must not be used (the native backend zeroes them). Returns how many authenticated.
   */
  open(buf: Uint8Array, b: AeadBatch, start: number, end: number): number;
}

/** Everything the WireGuard core needs from crypto. */
export interface CryptoBackend {
  /** 'node' or 'reference'. */
  readonly name: string;
  /** X25519. */
  readonly x25519: X25519;
  /** HASH, HMAC, MAC. */
  readonly blake2s: Blake2s;
  /** Transport and handshake AEAD. */
  readonly aead: ChaChaPoly;
  /** Cookie reply AEAD. */
  readonly xaead: XChaChaPoly;
  /** Transport data AEAD in batches; when absent the device loops over `aead` per packet. */
  readonly transport?: TransportAead;
}
