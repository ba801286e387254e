// A stack-wide memory budget for TCP buffers, sans-I/O: Linux's tcp_mem for our netstack.
//
// Each connection charges what it may come to hold: the bytes its application has not consumed
// (Tcb.unread), the receive window it has advertised and not yet seen filled (data the peer may
// send at any time: RFC 9293 3.8.6.2.2 forbids taking it back), and its send buffer's bytes. The
// stack adds the charges up here, and the connections consult the total:
//
//   used <= pressure ... buffers auto-tune (Tcb.rcvBuf doubles, the send ring follows cwnd) while
//                        all growth beyond the initial sizes (`grown`, given back when a
//                        connection ends) stays within pressure too
//   used >  pressure ... pressure: no buffer grows until used falls below low (3/4 of pressure);
//                        counted in `bufPressure`, refusals in `bufGrowDenied`
//   used reaches hard .. a new receive window is only what the budget can still hold, a write only
//                        what fits; each connection keeps its share regardless: hard / (2 x the
//                        connections charging), between rcvBufMin / sndBufMin (as Linux guarantees
//                        tcp_rmem[0] and tcp_wmem[0] to every socket) and its initial buffer, so
//                        none stalls for good and 100 idle connections' windows do not squeeze the
//                        next one to a trickle; windows already advertised are honoured, never shrunk
//
// The thresholds follow Linux's proportions (tcp_init_mem: low = 3/4 of pressure, hard = twice
// low). gVisor, tailscaled's stack, has no global cap: only per-connection ceilings
// (TCPReceiveBufferSizeRangeOption's Max, 8 MiB in tailscale's wgengine/netstack).
//
// Bound: the bytes held for receive (unread plus out-of-order, which lie inside the advertised
// window) and send never exceed hard plus each connection's share: 2 x hard in all (plus the
// minimums when more than hard / (2 x rcvBufMin) connections charge). Windows in
// SYN segments are clamped but charged from ESTABLISHED on, so a SYN flood reserves nothing.
// Memory a send ring allocated stays with it until the connection ends (ByteRing never shrinks);
// the budget counts its bytes held, as Linux counts sk_wmem_queued.

/** Thresholds of a {@link BufferBudget} in bytes. */
export interface BudgetLimits {
  /** Above this total, no buffer grows (until the total falls below 3/4 of it). */
  pressure: number;
  /** The total that new windows and writes stay within (beyond each connection's minimum). */
  hard: number;
}

/** The stack-wide sum of what TCP connections hold or have promised to take; one per Netstack. */
export class BufferBudget {
  /** Bytes charged by all connections now. */
  used = 0;
  /** Highest `used` seen. */
  peak = 0;
  /** Bytes by which connections' buffers grew beyond their initial sizes (until they end). */
  grown = 0;
  /** Connections charging (from their first charge until TIME-WAIT or CLOSED). */
  members = 0;
  /** Between crossing `pressure` and falling below `low`: no buffer grows. */
  underPressure = false;
  readonly pressure: number;
  readonly low: number;
  readonly hard: number;
  private readonly counters: Record<string, number>;

  constructor(limits: BudgetLimits, counters: Record<string, number>) {
    const { pressure, hard } = limits;
    if (!(pressure > 0) || !(hard >= pressure)) {
      throw new RangeError(`netstack buffer budget: need 0 < pressure <= hard, got pressure ${pressure} and hard ${hard}`);
    }
    this.pressure = pressure;
    this.low = Math.floor(pressure * 0.75);
    this.hard = hard;
    this.counters = counters;
  }

  /** A connection's charge moved by `delta` bytes (either sign). */
  charge(delta: number): void {
    const u = (this.used += delta);
    if (u > this.peak) this.peak = u;
    if (this.underPressure) {
      if (u < this.low) this.underPressure = false;
    } else if (u > this.pressure) {
      this.underPressure = true;
      this.counters.bufPressure = (this.counters.bufPressure ?? 0) + 1;
    }
  }

  /**
   * Takes `delta` bytes of growth for a buffer when the stack is not under pressure and both the
   * bytes charged and the growth of all buffers stay within the pressure threshold; false when refused.
   * Growth is counted at once, though a window charges only when advertised: several connections
   * tuning in one input batch cannot all pass the threshold together.
   */
  tryGrow(delta: number): boolean {
    if (this.underPressure || this.used + delta > this.pressure || this.grown + delta > this.pressure) return false;
    this.grown += delta;
    return true;
  }

  /** A connection ended: its buffers' growth is given back. */
  shrink(delta: number): void {
    this.grown -= delta;
  }

  /** What each connection may hold in each direction whatever the total: half the hard limit split evenly (the caller bounds it by its minimum and initial buffer). */
  get share(): number {
    return Math.floor(this.hard / (2 * Math.max(1, this.members)));
  }

  /** Bytes that may still be committed before the hard limit (negative when past it). */
  get headroom(): number {
    return this.hard - this.used;
  }
}
