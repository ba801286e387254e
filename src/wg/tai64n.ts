// TAI64N timestamps (whitepaper 5.1, http://cr.yp.to/libtai/tai64.html), as wireguard-go's tai64n
// package writes them: 8 bytes big-endian 2^62 + 10 + Unix seconds, then 4 bytes big-endian
// nanoseconds with the low 24 bits cleared, so the timestamp does not leak the exact clock
// ("whitening", about 16.8 ms granularity). Timestamps compare bytewise.

/** Size of a TAI64N timestamp. */
export const TAI64N_SIZE = 12;

const WHITENER_MASK = 0xffffff;

/** The TAI64N timestamp of a Unix time in milliseconds. */
export function tai64n(unixMs: number): Uint8Array {
  const out = new Uint8Array(TAI64N_SIZE);
  const secs = Math.floor(unixMs / 1000);
  const nanos = Math.floor((unixMs - secs * 1000) * 1e6) & ~WHITENER_MASK;
  const low = 10 + secs; // the label 2^62 + 10 (TAI is 10 s ahead of UTC at 1970)
  const hi = 0x40000000 + Math.floor(low / 4294967296);
  const lo = low >>> 0;
  const dv = new DataView(out.buffer);
  dv.setUint32(0, hi);
  dv.setUint32(4, lo);
  dv.setUint32(8, nanos >>> 0);
  return out;
}

/** Bytewise comparison: negative, zero or positive as a is before, equal to, or after b. */
export function compareTai64n(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < TAI64N_SIZE; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return 0;
}
