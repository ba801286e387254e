// ChaCha20-Poly1305 (RFC 8439) with WireGuard's 96-bit nonce (whitepaper 5.4.6: 32 zero bits, then
// the 64-bit counter little-endian), sealed and opened in place; and XChaCha20-Poly1305
// (draft-irtf-cfrg-xchacha-03) for cookie replies (whitepaper 5.4.7).
//
// The fast backend is node:crypto. Node creates one cipher object per call and returns update()'s
// output in a fresh Buffer, which is copied back into the caller's memory: that is the floor of what
// node:crypto forces. Everything else (key setup, nonce buffer) is done once.
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject } from 'node:crypto';
import { chacha20poly1305, xchacha20poly1305 } from '@noble/ciphers/chacha.js';
import type { AeadKey, ChaChaPoly, XChaChaPoly } from './types.ts';

/** Poly1305 tag length in bytes. */
export const TAG_LEN = 16;

const TWO_32 = 4294967296;

function checkKey(key: Uint8Array): void {
  if (key.length !== 32) throw new RangeError(`chacha20-poly1305: key must be 32 bytes, got ${key.length}`);
}

/** Writes the WireGuard nonce for `counter` (< 2^53) into a 12-byte array. */
export function writeNonce(nonce: Uint8Array, counter: number): void {
  const lo = counter >>> 0;
  const hi = Math.floor(counter / TWO_32);
  nonce[0] = 0; nonce[1] = 0; nonce[2] = 0; nonce[3] = 0;
  nonce[4] = lo & 0xff; nonce[5] = (lo >>> 8) & 0xff; nonce[6] = (lo >>> 16) & 0xff; nonce[7] = lo >>> 24;
  nonce[8] = hi & 0xff; nonce[9] = (hi >>> 8) & 0xff; nonce[10] = (hi >>> 16) & 0xff; nonce[11] = hi >>> 24;
}

interface NodeAeadKey extends AeadKey {
  readonly obj: KeyObject;
}

const AUTH_TAG = { authTagLength: TAG_LEN } as const;

/** ChaCha20-Poly1305 on node:crypto (OpenSSL). */
export class NodeChaChaPoly implements ChaChaPoly {
  /** One nonce buffer reused by every call (node copies it into the cipher context). */
  private readonly nonce = Buffer.alloc(12);

  prepareKey(key: Uint8Array): AeadKey {
    checkKey(key);
    const k: NodeAeadKey = { raw: key, obj: createSecretKey(key) };
    return k;
  }

  sealInPlace(key: AeadKey, counter: number, buf: Uint8Array, off: number, len: number, aad?: Uint8Array): void {
    writeNonce(this.nonce, counter);
    const c = createCipheriv('chacha20-poly1305', (key as NodeAeadKey).obj, this.nonce, AUTH_TAG);
    if (aad !== undefined) c.setAAD(aad, { plaintextLength: len });
    if (len > 0) buf.set(c.update(buf.subarray(off, off + len)), off);
    c.final();
    buf.set(c.getAuthTag(), off + len);
  }

  openInPlace(key: AeadKey, counter: number, buf: Uint8Array, off: number, len: number, aad?: Uint8Array): boolean {
    if (len < TAG_LEN) return false;
    const ctLen = len - TAG_LEN;
    writeNonce(this.nonce, counter);
    const d = createDecipheriv('chacha20-poly1305', (key as NodeAeadKey).obj, this.nonce, AUTH_TAG);
    d.setAuthTag(buf.subarray(off + ctLen, off + len));
    if (aad !== undefined) d.setAAD(aad, { plaintextLength: ctLen });
    const pt = ctLen > 0 ? d.update(buf.subarray(off, off + ctLen)) : null;
    try {
      d.final();
    } catch {
      return false;
    }
    // Only authenticated plaintext is written back.
    if (pt !== null) buf.set(pt, off);
    return true;
  }
}

/** ChaCha20-Poly1305 on @noble/ciphers, the reference. */
export class NobleChaChaPoly implements ChaChaPoly {
  private readonly nonce = new Uint8Array(12);

  prepareKey(key: Uint8Array): AeadKey {
    checkKey(key);
    return { raw: key };
  }

  sealInPlace(key: AeadKey, counter: number, buf: Uint8Array, off: number, len: number, aad?: Uint8Array): void {
    writeNonce(this.nonce, counter);
    const out = chacha20poly1305(key.raw, this.nonce, aad).encrypt(buf.subarray(off, off + len));
    buf.set(out, off);
  }

  openInPlace(key: AeadKey, counter: number, buf: Uint8Array, off: number, len: number, aad?: Uint8Array): boolean {
    if (len < TAG_LEN) return false;
    writeNonce(this.nonce, counter);
    let pt: Uint8Array;
    try {
      pt = chacha20poly1305(key.raw, this.nonce, aad).decrypt(buf.subarray(off, off + len));
    } catch {
      return false;
    }
    buf.set(pt, off);
    return true;
  }
}

/** XChaCha20-Poly1305 on @noble/ciphers (node:crypto has no XChaCha); used by both backends. */
export const nobleXChaChaPoly: XChaChaPoly = {
  seal(key, nonce24, plaintext, aad) {
    checkKey(key);
    return xchacha20poly1305(key, nonce24, aad).encrypt(plaintext);
  },
  open(key, nonce24, sealed, aad) {
    checkKey(key);
    try {
      return xchacha20poly1305(key, nonce24, aad).decrypt(sealed);
    } catch {
      return null;
    }
  },
};
