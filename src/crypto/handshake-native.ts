// X25519 and BLAKE2s MAC / HMAC for the handshake through the addon's OpenSSL calls
// (native/src/hscrypto.c, native/README.md "Handshake crypto"). Why: through node:crypto one X25519
// costs a JWK parse and a KeyObject per call, and the keyed BLAKE2s MAC (which node:crypto lacks) ran
// on @noble; a responder under load answered tens of handshakes per second. Here a private key is
// imported once (OpenSSL computes its public key then) and its EVP_PKEY handle is cached by the
// identity of the key array, as x25519.ts caches KeyObjects. node:crypto and @noble stay as the
// references: tests compare all three, and the loader runs known-answer tests (RFC 7748 5.2, and a
// keyed BLAKE2s / HMAC value computed with @noble) before it is used.
import { native } from '../native/index.ts';
import { checkKey, clampPrivate, isZero, sameBytes } from './x25519.ts';
import { concat, nodeBlake2s } from './blake2s.ts';
import type { AeadKey, Blake2s, ChaChaPoly, X25519 } from './types.ts';

/** Opaque EVP_PKEY handle made by x25519Key. */
export type NativeKeyHandle = { readonly __brand: 'meshd.X25519Key' };

/** The addon's handshake exports. */
export interface NativeHandshakeAddon {
  x25519Key(priv: Uint8Array): NativeKeyHandle | null;
  x25519KeyPublic(key: NativeKeyHandle, out: Uint8Array): void;
  x25519Derive(key: NativeKeyHandle, pub: Uint8Array, out: Uint8Array): boolean;
  blake2sMac?(out: Uint8Array, key: Uint8Array, a: Uint8Array, b?: Uint8Array, c?: Uint8Array): void;
  blake2sHmac?(out: Uint8Array, key: Uint8Array, a: Uint8Array, b?: Uint8Array, c?: Uint8Array): void;
  chachaPolyInPlace?(encrypt: boolean, key: Uint8Array, counter: number, buf: Uint8Array, aad?: Uint8Array): boolean;
}

/**
 * ChaCha20-Poly1305 per message on the addon (a context per thread, re-keyed per call), for the
 * handshake's AEAD with its AAD: node:crypto builds a KeyObject and a cipher object per message.
 */
export class NativeChaChaPoly implements ChaChaPoly {
  private readonly run: NonNullable<NativeHandshakeAddon['chachaPolyInPlace']>;

  constructor(addon: NativeHandshakeAddon) {
    this.run = addon.chachaPolyInPlace!.bind(addon);
  }

  prepareKey(key: Uint8Array): AeadKey {
    if (key.length !== 32) throw new RangeError(`chacha20-poly1305: key must be 32 bytes, got ${key.length}`);
    return { raw: key };
  }

  sealInPlace(key: AeadKey, counter: number, buf: Uint8Array, off: number, len: number, aad?: Uint8Array): void {
    this.run(true, key.raw, counter, buf.subarray(off, off + len + 16), aad);
  }

  openInPlace(key: AeadKey, counter: number, buf: Uint8Array, off: number, len: number, aad?: Uint8Array): boolean {
    if (len < 16 || off < 0 || off + len > buf.length) return false;
    return this.run(false, key.raw, counter, buf.subarray(off, off + len), aad);
  }
}

/** X25519 on the addon: private keys become EVP_PKEY handles once, cached by array identity. */
export class NativeX25519 implements X25519 {
  private readonly addon: NativeHandshakeAddon;
  private readonly cache = new WeakMap<Uint8Array, { copy: Uint8Array; key: NativeKeyHandle | null }>();

  constructor(addon: NativeHandshakeAddon) {
    this.addon = addon;
  }

  private handle(priv: Uint8Array): NativeKeyHandle | null {
    const hit = this.cache.get(priv);
    if (hit !== undefined && sameBytes(hit.copy, priv)) return hit.key;
    const key = this.addon.x25519Key(priv);
    this.cache.set(priv, { copy: priv.slice(), key });
    return key;
  }

  generatePrivate(random: (n: number) => Uint8Array): Uint8Array {
    const k = random(32);
    checkKey(k, 'random private key');
    return clampPrivate(k);
  }

  publicFromPrivate(priv: Uint8Array): Uint8Array {
    checkKey(priv, 'private key');
    const h = this.handle(priv);
    if (h === null) throw new Error('x25519: OpenSSL refused the private key');
    const out = new Uint8Array(32);
    this.addon.x25519KeyPublic(h, out);
    return out;
  }

  shared(priv: Uint8Array, pub: Uint8Array): Uint8Array | null {
    checkKey(priv, 'private key');
    checkKey(pub, 'public key');
    const h = this.handle(priv);
    if (h === null) return null;
    const out = new Uint8Array(32);
    if (!this.addon.x25519Derive(h, pub, out)) return null;
    return isZero(out) ? null : out;
  }
}


/** BLAKE2s with MAC and HMAC on the addon (hash stays on node:crypto, which is already fast). */
export function nativeBlake2s(addon: NativeHandshakeAddon): Blake2s {
  const mac = addon.blake2sMac!.bind(addon), hm = addon.blake2sHmac!.bind(addon);
  return {
    hash: nodeBlake2s.hash,
    hmac(key, ...parts) {
      if (key.length === 0 || key.length > 64) return nodeBlake2s.hmac(key, ...parts); // never in WireGuard (32-byte keys)
      const out = new Uint8Array(32);
      if (parts.length <= 3) hm(out, key, parts[0] ?? new Uint8Array(0), parts[1], parts[2]);
      else hm(out, key, concat(parts));
      return out;
    },
    mac(key, data) {
      if (key.length === 0 || key.length > 32) throw new RangeError(`blake2s mac: key must be 1..32 bytes, got ${key.length}`);
      const out = new Uint8Array(16);
      mac(out, key, data);
      return out;
    },
  };
}

/** The native handshake primitives, or why they are not used. */
export interface NativeHandshakeLoad {
  x25519: X25519 | null;
  blake2s: Blake2s | null;
  /** The handshake AEAD (null: node:crypto's). */
  aead?: ChaChaPoly | null;
  error: string | null;
}

// Key 0..31, counter 0x0102030405, AAD 010203, plaintext 0..14: sealed with node:crypto.
const KAT_AEAD = '318208d3d7ceb5cbdb140622c00fa903fafb8a29769b9a2c3266ccb0a5c72f';

function aeadSelfTest(a: ChaChaPoly): boolean {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i), aad = Uint8Array.of(1, 2, 3);
  const buf = new Uint8Array(15 + 16);
  for (let i = 0; i < 15; i++) buf[i] = i;
  const k = a.prepareKey(key);
  a.sealInPlace(k, 0x0102030405, buf, 0, 15, aad);
  if (Buffer.from(buf).toString('hex') !== KAT_AEAD) return false;
  const bad = buf.slice(); bad[3]! ^= 1;
  if (a.openInPlace(k, 0x0102030405, bad, 0, 31, aad)) return false;
  return a.openInPlace(k, 0x0102030405, buf, 0, 31, aad) && buf.subarray(0, 15).every((v, i) => v === i);
}

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));
// RFC 7748 section 5.2, first X25519 test vector.
const KAT_SCALAR = 'a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4';
const KAT_U = 'e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c';
const KAT_OUT = 'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552';
// Key 0..31, data 0..63: keyed BLAKE2s-128 and HMAC-BLAKE2s-256, computed with @noble/hashes.
const KAT_MAC = 'f1efa90d2547036841ecd3627fafbc36';
const KAT_HMAC = '3b35e945d05ac982850451ac8b6cdfffb98e56f50b95272fab665de081691056';

function selfTest(x: X25519, b: Blake2s | null, macHex: string, hmacHex: string): string | null {
  const got = x.shared(hex(KAT_SCALAR), hex(KAT_U));
  if (got === null || Buffer.from(got).toString('hex') !== KAT_OUT) return 'the native X25519 failed its RFC 7748 known-answer test';
  if (b !== null) {
    const key = Uint8Array.from({ length: 32 }, (_, i) => i), data = Uint8Array.from({ length: 64 }, (_, i) => i);
    if (Buffer.from(b.mac(key, data)).toString('hex') !== macHex) return 'the native BLAKE2s MAC failed its known-answer test';
    if (Buffer.from(b.hmac(key, data)).toString('hex') !== hmacHex) return 'the native HMAC-BLAKE2s failed its known-answer test';
  }
  return null;
}

/** Loads the native handshake primitives (MESHD_NATIVE_HANDSHAKE=0 turns them off). */
export function loadNativeHandshake(load: () => unknown = native, env: NodeJS.ProcessEnv = process.env): NativeHandshakeLoad {
  if (env['MESHD_NATIVE_HANDSHAKE'] === '0') return { x25519: null, blake2s: null, error: 'turned off by MESHD_NATIVE_HANDSHAKE=0' };
  let addon: NativeHandshakeAddon;
  try {
    addon = load() as NativeHandshakeAddon;
  } catch (e) {
    return { x25519: null, blake2s: null, error: (e as Error).message };
  }
  if (typeof addon.x25519Derive !== 'function') return { x25519: null, blake2s: null, error: 'the native addon has no X25519: run npm run build:native' };
  try {
    const x = new NativeX25519(addon);
    const b = typeof addon.blake2sMac === 'function' && typeof addon.blake2sHmac === 'function' ? nativeBlake2s(addon) : null;
    const err = selfTest(x, b, KAT_MAC, KAT_HMAC);
    if (err !== null) return { x25519: null, blake2s: null, error: err };
    const aead = typeof addon.chachaPolyInPlace === 'function' ? new NativeChaChaPoly(addon) : null;
    if (aead !== null && !aeadSelfTest(aead)) return { x25519: null, blake2s: null, error: 'the native handshake AEAD failed its known-answer test' };
    return { x25519: x, blake2s: b, aead, error: b === null ? 'OpenSSL has no BLAKE2SMAC or HMAC: BLAKE2s stays on node:crypto' : null };
  } catch (e) {
    return { x25519: null, blake2s: null, error: (e as Error).message };
  }
}
