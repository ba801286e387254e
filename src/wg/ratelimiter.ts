// Per-source token bucket for handshake messages under load (wireguard-go ratelimiter/ratelimiter.go):
// 20 per second with a burst of 5, in milliseconds instead of nanoseconds. Entries idle for more
// than a second are collected.

/** Handshakes per second allowed per source while under load. */
export const HANDSHAKES_PER_SECOND = 20;
/** Burst size. */
export const HANDSHAKE_BURST = 5;
const PACKET_COST = 1000 / HANDSHAKES_PER_SECOND;
const MAX_TOKENS = PACKET_COST * HANDSHAKE_BURST;
const IDLE_MS = 1000;
/** Most sources tracked at once; beyond that new sources are refused until collection. */
const MAX_ENTRIES = 65536;

interface Bucket {
  tokens: number;
  last: number;
}

/** Token buckets keyed by source. */
export class RateLimiter {
  private readonly table = new Map<string, Bucket>();

  /** True when one more handshake from `key` is allowed at `now` (monotonic ms). */
  allow(key: string, now: number): boolean {
    const e = this.table.get(key);
    if (e === undefined) {
      if (this.table.size >= MAX_ENTRIES) return false;
      this.table.set(key, { tokens: MAX_TOKENS - PACKET_COST, last: now });
      return true;
    }
    e.tokens = Math.min(MAX_TOKENS, e.tokens + (now - e.last));
    e.last = now;
    if (e.tokens > PACKET_COST) {
      e.tokens -= PACKET_COST;
      return true;
    }
    return false;
  }

  /** Drops buckets idle for more than a second. */
  collect(now: number): void {
    for (const [k, e] of this.table) if (now - e.last > IDLE_MS) this.table.delete(k);
  }

  /** Number of tracked sources. */
  get size(): number {
    return this.table.size;
  }
}
