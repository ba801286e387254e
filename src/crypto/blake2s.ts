// BLAKE2s (RFC 7693) as WireGuard uses it (whitepaper 5.4): HASH = BLAKE2s-256, HMAC = HMAC-BLAKE2s-256,
// MAC = keyed BLAKE2s with a 16-byte digest length parameter, and the HKDF-like KDF1/2/3 built on HMAC.
// node:crypto has blake2s256 (hash and HMAC) but no keyed or short-output BLAKE2s, so MAC is @noble in
// both backends.
import { createHash, createHmac } from 'node:crypto';
import { blake2s } from '@noble/hashes/blake2.js';
import { hmac } from '@noble/hashes/hmac.js';
import type { Blake2s } from './types.ts';

function macNoble(key: Uint8Array, data: Uint8Array): Uint8Array {
  if (key.length === 0 || key.length > 32) throw new RangeError(`blake2s mac: key must be 1..32 bytes, got ${key.length}`);
  return blake2s(data, { key, dkLen: 16 });
}

/** The parts joined (a single part is returned as it is). */
export function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function asU8(b: Buffer): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.length);
}

/** BLAKE2s functions on node:crypto (MAC on @noble). */
export const nodeBlake2s: Blake2s = {
  hash(...parts) {
    const h = createHash('blake2s256');
    for (const p of parts) h.update(p);
    return asU8(h.digest());
  },
  hmac(key, ...parts) {
    const h = createHmac('blake2s256', key);
    for (const p of parts) h.update(p);
    return asU8(h.digest());
  },
  mac: macNoble,
};

/** BLAKE2s functions on @noble/hashes, the reference. */
export const nobleBlake2s: Blake2s = {
  hash(...parts) {
    return blake2s(concat(parts));
  },
  hmac(key, ...parts) {
    return hmac(blake2s, key, concat(parts));
  },
  mac: macNoble,
};

const ONE = Uint8Array.of(1);

/** KDF1(key, input) = T1 (whitepaper 5.4, HKDF with HMAC-BLAKE2s). */
export function kdf1(b: Blake2s, key: Uint8Array, input: Uint8Array): Uint8Array {
  const prk = b.hmac(key, input);
  const t1 = b.hmac(prk, ONE);
  prk.fill(0);
  return t1;
}

/** KDF2(key, input) = [T1, T2]. */
export function kdf2(b: Blake2s, key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array] {
  const prk = b.hmac(key, input);
  const t1 = b.hmac(prk, ONE);
  const t2 = b.hmac(prk, t1, Uint8Array.of(2));
  prk.fill(0);
  return [t1, t2];
}

/** KDF3(key, input) = [T1, T2, T3]. */
export function kdf3(b: Blake2s, key: Uint8Array, input: Uint8Array): [Uint8Array, Uint8Array, Uint8Array] {
  const prk = b.hmac(key, input);
  const t1 = b.hmac(prk, ONE);
  const t2 = b.hmac(prk, t1, Uint8Array.of(2));
  const t3 = b.hmac(prk, t2, Uint8Array.of(3));
  prk.fill(0);
  return [t1, t2, t3];
}
