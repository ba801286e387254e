// X25519 (RFC 7748) with raw 32-byte keys: a fast backend on node:crypto and a reference backend on
// @noble/curves. node:crypto only takes keys as KeyObjects. Raw keys go in and out as JWK (RFC 8037
// OKP), which Node maps straight to OpenSSL's raw-key calls: measured on Node 20 / OpenSSL 3.0,
// importing a private key that way takes ~40 us against ~490 us through the PKCS#8 DER decoder, a
// public key ~10 us against ~85 us (SPKI), and exporting a public key ~1 us against ~70 us. The DER
// prefixes (RFC 8410) are kept for reference and tests. KeyObjects of long-lived keys are cached.
import { createPrivateKey, createPublicKey, diffieHellman, type KeyObject } from 'node:crypto';
import { createRequire } from 'node:module';
import type { X25519 } from './types.ts';

/** PKCS#8 DER prefix for an X25519 private key (RFC 8410 section 7); the 32 key bytes follow. */
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
/** SPKI DER prefix for an X25519 public key (RFC 8410 section 4); the 32 key bytes follow. */
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

/** Clamps a 32-byte scalar in place (RFC 7748 section 5, whitepaper 5.4.2) and returns it. */
export function clampPrivate(k: Uint8Array): Uint8Array {
  k[0] = k[0]! & 248;
  k[31] = (k[31]! & 127) | 64;
  return k;
}

/** True when all bytes are zero; constant time in the length. */
export function isZero(b: Uint8Array): boolean {
  let acc = 0;
  for (let i = 0; i < b.length; i++) acc |= b[i]!;
  return acc === 0;
}

/** Throws a RangeError naming `what` unless `k` is 32 bytes. */
export function checkKey(k: Uint8Array, what: string): void {
  if (k.length !== 32) throw new RangeError(`x25519: ${what} must be 32 bytes, got ${k.length}`);
}

/** Byte-wise equality. */
export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * KeyObjects cached by the identity of the key array, checked against a copy of its bytes so that a
 * later change (e.g. zeroing) is noticed. Static keys live in long-lived arrays and hit the cache;
 * ephemeral keys are collected with their arrays.
 */
class KeyObjectCache {
  private readonly map = new WeakMap<Uint8Array, { copy: Uint8Array; obj: KeyObject }>();
  private readonly make: (k: Uint8Array) => KeyObject;

  constructor(make: (k: Uint8Array) => KeyObject) {
    this.make = make;
  }

  get(k: Uint8Array): KeyObject {
    const hit = this.map.get(k);
    if (hit !== undefined && sameBytes(hit.copy, k)) return hit.obj;
    const obj = this.make(k);
    this.map.set(k, { copy: k.slice(), obj });
    return obj;
  }
}

function b64url(k: Uint8Array): string {
  return Buffer.from(k.buffer, k.byteOffset, k.length).toString('base64url');
}

// Node reads only `d` from a private OKP JWK (x must merely be a string); the public key is derived
// from d. The tests compare every result with @noble, so a Node that starts to check x shows up there.
const privCache = new KeyObjectCache((k) =>
  createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', d: b64url(k), x: '' }, format: 'jwk' }),
);
const pubCache = new KeyObjectCache((k) =>
  createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: b64url(k) }, format: 'jwk' }),
);

/** Raw 32-byte keys as PKCS#8 / SPKI DER (RFC 8410), for tools that want DER. */
export function x25519Der(kind: 'private' | 'public', k: Uint8Array): Buffer {
  return Buffer.concat([kind === 'private' ? PKCS8_PREFIX : SPKI_PREFIX, k]);
}

/** X25519 on node:crypto (OpenSSL). */
export const nodeX25519: X25519 = {
  generatePrivate(random) {
    const k = random(32);
    checkKey(k, 'random private key');
    return clampPrivate(k);
  },
  publicFromPrivate(priv) {
    checkKey(priv, 'private key');
    const jwk = createPublicKey(privCache.get(priv)).export({ format: 'jwk' });
    const pub = new Uint8Array(Buffer.from(jwk.x ?? '', 'base64url'));
    if (pub.length !== 32) throw new Error('x25519: node:crypto exported a malformed public key');
    return pub;
  },
  shared(priv, pub) {
    checkKey(priv, 'private key');
    checkKey(pub, 'public key');
    let out: Buffer;
    try {
      out = diffieHellman({ privateKey: privCache.get(priv), publicKey: pubCache.get(pub) });
    } catch {
      // OpenSSL refuses an all-zero result (low-order point); any other failure is a bad key too.
      return null;
    }
    const res = new Uint8Array(out.buffer, out.byteOffset, 32);
    return isZero(res) ? null : res;
  },
};

/**
 * @noble/curves' X25519, loaded on first use: only tests and the reference backend call it, and
 * loading ed25519.js costs the daemon ~8 MiB of resident memory at startup (measured, Node 20).
 */
let nobleX: (typeof import('@noble/curves/ed25519.js'))['x25519'] | undefined;
function nobleX25519(): NonNullable<typeof nobleX> {
  nobleX ??= (createRequire(import.meta.url)('@noble/curves/ed25519.js') as typeof import('@noble/curves/ed25519.js')).x25519;
  return nobleX;
}

/** X25519 on @noble/curves, the reference. */
export const nobleX25519Backend: X25519 = {
  generatePrivate(random) {
    const k = random(32);
    checkKey(k, 'random private key');
    return clampPrivate(k);
  },
  publicFromPrivate(priv) {
    checkKey(priv, 'private key');
    return nobleX25519().getPublicKey(priv);
  },
  shared(priv, pub) {
    checkKey(priv, 'private key');
    checkKey(pub, 'public key');
    let out: Uint8Array;
    try {
      out = nobleX25519().getSharedSecret(priv, pub);
    } catch {
      return null;
    }
    return isZero(out) ? null : out;
  },
};
