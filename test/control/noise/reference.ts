// A second, independent implementation of the control Noise IK initiator built only from the noble
// libraries (BLAKE2s, HKDF, ChaCha20-Poly1305, X25519), for cross-checking handshake.ts byte for byte.
import { blake2s } from '@noble/hashes/blake2.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { x25519 } from '@noble/curves/ed25519.js';

const cat = (...a: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(a.reduce((n, x) => n + x.length, 0));
  let o = 0;
  for (const x of a) { out.set(x, o); o += x.length; }
  return out;
};

/** Builds the initiation and the state needed to finish, with all randomness injected. */
export function referenceInitiation(version: number, s: Uint8Array, rs: Uint8Array, e: Uint8Array) {
  let h = blake2s(new TextEncoder().encode('Noise_IK_25519_ChaChaPoly_BLAKE2s'));
  let ck = h;
  const mixHash = (d: Uint8Array): void => { h = blake2s(cat(h, d)); };
  const mixKey = (dh: Uint8Array): Uint8Array => {
    const out = hkdf(blake2s, dh, ck, new Uint8Array(0), 64);
    ck = out.slice(0, 32);
    return out.slice(32);
  };
  const enc = (k: Uint8Array, pt: Uint8Array): Uint8Array => {
    const ct = chacha20poly1305(k, new Uint8Array(12), h).encrypt(pt);
    mixHash(ct);
    return ct;
  };
  mixHash(new TextEncoder().encode(`Tailscale Control Protocol v${version}`));
  mixHash(rs);
  const ePub = x25519.getPublicKey(e);
  mixHash(ePub);
  const k1 = mixKey(x25519.getSharedSecret(e, rs));
  const sCt = enc(k1, x25519.getPublicKey(s));
  const k2 = mixKey(x25519.getSharedSecret(s, rs));
  const tag = enc(k2, new Uint8Array(0));
  const header = Uint8Array.of(version >> 8, version & 0xff, 1, 0, 96);
  const finish = (resp: Uint8Array): { tx: Uint8Array; rx: Uint8Array } => {
    const re = resp.slice(3, 35);
    mixHash(re);
    mixKey(x25519.getSharedSecret(e, re));
    const k = mixKey(x25519.getSharedSecret(s, re));
    chacha20poly1305(k, new Uint8Array(12), h).decrypt(resp.slice(35, 51));
    const out = hkdf(blake2s, new Uint8Array(0), ck, new Uint8Array(0), 64);
    return { tx: out.slice(0, 32), rx: out.slice(32) };
  };
  return { initiation: cat(header, ePub, sCt, tag), finish };
}

/** Reference transport seal: ChaCha20-Poly1305 with a big-endian counter nonce and empty AAD. */
export function referenceSeal(key: Uint8Array, counter: bigint, pt: Uint8Array): Uint8Array {
  const nonce = new Uint8Array(12);
  new DataView(nonce.buffer).setBigUint64(4, counter, false);
  const ct = chacha20poly1305(key, nonce).encrypt(pt);
  return cat(Uint8Array.of(4, ct.length >> 8, ct.length & 0xff), ct);
}
