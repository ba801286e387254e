// NaCl crypto_box as Tailscale uses it for disco messages and the DERP handshake (Go
// golang.org/x/crypto/nacl/box): X25519 -> HSalsa20 (precomputed shared key, `box.before`) ->
// XSalsa20-Poly1305 (`secretbox`).
//
// Layouts:
//   box (secretbox output):   tag(16) ‖ ciphertext(n)                     = n + 16 bytes
//   sealed (Go SealTo/Seal):  nonce(24) ‖ tag(16) ‖ ciphertext(n)         = n + 40 bytes
// The second is what disco (after its magic and sender key) and DERP ClientInfo/ServerInfo carry
// (tailscale types/key/node.go SealTo, types/key/disco.go DiscoShared.Seal).
//
// X25519 uses node:crypto through src/crypto/x25519.ts (raw keys as JWK, cached KeyObjects); HSalsa20 and
// XSalsa20-Poly1305 come from @noble/ciphers. A reference X25519 (@noble/curves) is tested
// against this one in test/crypto/box.test.ts.
import { generateKeyPairSync, randomFillSync } from 'node:crypto';
import { hsalsa, xsalsa20poly1305 } from '@noble/ciphers/salsa.js';
import { nodeX25519 } from './x25519.ts';

/** Bytes in an X25519 key (public, private or shared). */
export const KEY_LEN = 32;
/** Bytes in a NaCl box nonce. */
export const NONCE_LEN = 24;
/** Bytes in the Poly1305 tag that starts a box. */
export const TAG_LEN = 16;
/** Bytes a sealed message adds to its plaintext: nonce + tag. */
export const SEAL_OVERHEAD = NONCE_LEN + TAG_LEN;

// "expand 32-byte k" as little-endian words (Salsa20 sigma).
const SIGMA = Uint32Array.from([0x61707865, 0x3320646e, 0x79622d32, 0x6b206574]);

function checkKey(k: Uint8Array, what: string): void {
  if (!(k instanceof Uint8Array) || k.length !== KEY_LEN) {
    throw new TypeError(`box: ${what} must be ${KEY_LEN} bytes, got ${k instanceof Uint8Array ? k.length : typeof k}`);
  }
}

/** A fresh random X25519 key pair (raw 32-byte keys). */
export function generateKeyPair(): { privateKey: Uint8Array; publicKey: Uint8Array } {
  const { privateKey } = generateKeyPairSync('x25519');
  const der = privateKey.export({ format: 'der', type: 'pkcs8' });
  const priv = new Uint8Array(der.subarray(der.length - KEY_LEN));
  return { privateKey: priv, publicKey: publicKeyOf(priv) };
}

/** The X25519 public key of a raw 32-byte private key. */
export function publicKeyOf(priv: Uint8Array): Uint8Array {
  checkKey(priv, 'private key');
  return nodeX25519.publicFromPrivate(priv);
}

/** X25519(priv, pub), RFC 7748. Throws when the result is all zero (low-order public key). */
export function x25519(priv: Uint8Array, pub: Uint8Array): Uint8Array {
  checkKey(priv, 'private key');
  checkKey(pub, 'public key');
  // nodeX25519 imports raw keys as JWK (~40 us against ~490 us through the PKCS#8 DER decoder) and
  // keeps the KeyObjects of long-lived keys (ours): the DERP handshake and each peer's first disco
  // key cost ~1 ms each the DER way, on the busy first map. It returns null for an all-zero result.
  const out = nodeX25519.shared(priv, pub);
  if (out === null) throw new RangeError('box: X25519 failed or produced the all-zero shared secret (low-order or invalid public key)');
  return new Uint8Array(out);
}

/** HSalsa20(key, 16-byte input) -> 32-byte subkey (the XSalsa20 / box.before core). */
export function hsalsa20(key: Uint8Array, input16: Uint8Array): Uint8Array {
  checkKey(key, 'key');
  if (input16.length !== 16) throw new TypeError(`box: HSalsa20 input must be 16 bytes, got ${input16.length}`);
  const k = new Uint32Array(8);
  const i = new Uint32Array(4);
  const dvk = new DataView(key.buffer, key.byteOffset, 32);
  const dvi = new DataView(input16.buffer, input16.byteOffset, 16);
  for (let j = 0; j < 8; j++) k[j] = dvk.getUint32(j * 4, true);
  for (let j = 0; j < 4; j++) i[j] = dvi.getUint32(j * 4, true);
  const o = new Uint32Array(8);
  hsalsa(SIGMA, k, i, o);
  const out = new Uint8Array(32);
  const dvo = new DataView(out.buffer);
  for (let j = 0; j < 8; j++) dvo.setUint32(j * 4, o[j]!, true);
  k.fill(0);
  o.fill(0);
  return out;
}

const ZERO16 = new Uint8Array(16);

/** crypto_box_beforenm: the precomputed shared key HSalsa20(X25519(myPriv, theirPub), 0). */
export function boxBefore(theirPub: Uint8Array, myPriv: Uint8Array): Uint8Array {
  const s = x25519(myPriv, theirPub);
  const k = hsalsa20(s, ZERO16);
  s.fill(0);
  return k;
}

/** crypto_box_afternm in the tag ‖ ciphertext layout: seals plaintext with a precomputed key. */
export function boxSealAfter(shared: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array): Uint8Array {
  checkKey(shared, 'shared key');
  if (nonce.length !== NONCE_LEN) throw new TypeError(`box: nonce must be ${NONCE_LEN} bytes, got ${nonce.length}`);
  return xsalsa20poly1305(shared, nonce).encrypt(plaintext);
}

/** crypto_box_open_afternm: the plaintext of tag ‖ ciphertext, or undefined when it does not authenticate. */
export function boxOpenAfter(shared: Uint8Array, nonce: Uint8Array, box: Uint8Array): Uint8Array | undefined {
  checkKey(shared, 'shared key');
  if (nonce.length !== NONCE_LEN) throw new TypeError(`box: nonce must be ${NONCE_LEN} bytes, got ${nonce.length}`);
  if (box.length < TAG_LEN) return undefined;
  try {
    return xsalsa20poly1305(shared, nonce).decrypt(box);
  } catch {
    return undefined;
  }
}

/** Go's Seal/SealTo: a random nonce, then the box; returns nonce(24) ‖ tag(16) ‖ ciphertext. */
export function seal(shared: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const nonce = randomFillSync(new Uint8Array(NONCE_LEN));
  const box = boxSealAfter(shared, nonce, plaintext);
  const out = new Uint8Array(NONCE_LEN + box.length);
  out.set(nonce, 0);
  out.set(box, NONCE_LEN);
  return out;
}

/** Go's Open/OpenFrom: opens nonce(24) ‖ tag(16) ‖ ciphertext; undefined when short or forged. */
export function open(shared: Uint8Array, sealed: Uint8Array): Uint8Array | undefined {
  if (sealed.length < SEAL_OVERHEAD) return undefined;
  return boxOpenAfter(shared, sealed.subarray(0, NONCE_LEN), sealed.subarray(NONCE_LEN));
}
