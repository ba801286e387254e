// Small byte helpers shared by the tests.
import { randomBytes } from 'node:crypto';

/** Bytes from hex (whitespace ignored). */
export function hex(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
}

/** Lower-case hex of bytes. */
export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');
}

/** Cryptographically random bytes as a plain Uint8Array. */
export function rand(n: number): Uint8Array {
  return new Uint8Array(randomBytes(n));
}

/** A deterministic byte source for reproducible tests (xorshift32, seeded). */
export function seededRandom(seed: number): (n: number) => Uint8Array {
  let x = seed >>> 0 || 1;
  return (n: number) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      x ^= x << 13; x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5; x >>>= 0;
      out[i] = x & 0xff;
    }
    return out;
  };
}
