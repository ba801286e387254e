// Sliding-window replay protection for transport counters (whitepaper 5.4.6, RFC 6479), with the
// same acceptance window as wireguard-go's replay/replay.go (128 blocks of 64 bits, window
// (128 - 1) * 64 = 8128 counters).
//
// Counter representation: a 64-bit counter is a JavaScript number, exact below 2^53. A sender starts
// at 0 and rekeys within 120 s, so no real peer gets anywhere near 2^53 (that would be 5e13 packets
// per second). The limits are therefore scaled into the exact range and written down here, not
// left to rounding:
//   - the receiver rejects, before decryption, any counter whose high 32-bit word is >= 2^21 (that is,
//     >= 2^53), and after decryption any counter >= REJECT_AFTER_MESSAGES;
//   - the sender stops using a keypair at REJECT_AFTER_MESSAGES and rekeys at REKEY_AFTER_MESSAGES.
// The ring here uses 32-bit words (256 of them, 8192 bits) so bit operations stay in int32 range;
// the window is still 8128, which keeps at least one whole word of slack like wireguard-go's ring.

/** Whitepaper: 2^60. Scaled to the exact range of a double; unreachable in practice either way. */
export const REKEY_AFTER_MESSAGES = 2 ** 52;
/** Whitepaper: 2^64 - 2^13 - 1. Scaled to 2^53 - 2^13 - 1 (see the header). */
export const REJECT_AFTER_MESSAGES = 2 ** 53 - 2 ** 13 - 1;
/** Counters this far behind the highest one seen are too old (wireguard-go: 8128). */
export const REPLAY_WINDOW = 8128;

const WORD_BITS = 32;
const RING_WORDS = 256;
const RING_MASK = RING_WORDS - 1;

/** Reads the LE u64 counter at buf[off, off+8); -1 when it is >= 2^53 (rejected outright). */
export function readCounter(buf: Uint8Array, off: number): number {
  const lo = (buf[off]! | (buf[off + 1]! << 8) | (buf[off + 2]! << 16) | (buf[off + 3]! << 24)) >>> 0;
  const hi = (buf[off + 4]! | (buf[off + 5]! << 8) | (buf[off + 6]! << 16) | (buf[off + 7]! << 24)) >>> 0;
  if (hi >= 0x200000) return -1;
  return hi * 4294967296 + lo;
}

/** The replay window of one receiving keypair. */
export class ReplayFilter {
  private last = 0;
  private any = false;
  private readonly ring = new Uint32Array(RING_WORDS);
  /**
   * Path loss as the sender's counters show it (only authenticated counters count): `skipped` grows
   * by the counters a new highest one jumps over, `late` by each accepted counter below the highest
   * (a skipped one arriving after all: reordering). skipped - late is what the path lost so far.
   */
  skipped = 0;
  late = 0;

  /** Forgets everything (a fresh keypair). */
  reset(): void {
    this.last = 0;
    this.any = false;
    this.ring.fill(0);
  }

  /**
   * The cheap pre-check before decryption: false when validate() would certainly refuse `counter`
   * (too old, already seen, or >= limit). Changes nothing.
   */
  check(counter: number, limit: number = REJECT_AFTER_MESSAGES): boolean {
    if (!(counter >= 0 && counter < limit)) return false;
    if (counter > this.last) return true;
    if (this.last - counter > REPLAY_WINDOW) return false;
    const word = Math.floor(counter / WORD_BITS);
    return (this.ring[word & RING_MASK]! & (1 << (counter - word * WORD_BITS))) === 0;
  }

  /**
   * Accepts an authenticated counter exactly once: false for a counter already seen, one more than
   * REPLAY_WINDOW behind the newest, or >= limit. Call only after the packet authenticated.
   */
  validate(counter: number, limit: number = REJECT_AFTER_MESSAGES): boolean {
    if (!(counter >= 0 && counter < limit)) return false;
    const word = Math.floor(counter / WORD_BITS);
    let ahead = false;
    if (counter > this.last) {
      const current = Math.floor(this.last / WORD_BITS);
      const diff = Math.min(word - current, RING_WORDS);
      for (let i = 1; i <= diff; i++) this.ring[(current + i) & RING_MASK] = 0;
      this.skipped += counter - this.last - (this.any ? 1 : 0);
      this.last = counter;
      ahead = true;
    } else if (this.last - counter > REPLAY_WINDOW) {
      return false;
    }
    const idx = word & RING_MASK;
    const bit = 1 << (counter - word * WORD_BITS);
    const old = this.ring[idx]!;
    if ((old & bit) !== 0) return false;
    this.ring[idx] = old | bit;
    if (!ahead && this.any) this.late++;
    this.any = true;
    return true;
  }
}
