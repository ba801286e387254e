// Is the path losing packets? Read from the WireGuard senders' own counters: every transport message
// carries a counter that its sender increments by one, so the counters a receiver never sees (after
// authentication, net of those that arrive late: reordering) are what the path lost on the way in
// (Device counters rxTransport, rxCountersSkipped, rxCountersLate; see ReplayFilter). No I/O: the
// caller feeds the counters with `now` and gets the verdict.
//
// What it is for: UDP GSO sends a run of up to 64 datagrams as one skb until the device segments
// it, and whatever drops skbs before that (a full qdisc, a policer or firewall on a veth path, the
// chaos lab's nftables rule) drops the whole run. For a TCP flow inside the tunnel a lost run is a
// lost window: no SACK comes back, recovery waits for the retransmission timeout, and Linux's RTT
// samples from the timestamps echoed after a spurious retransmission then grow that timeout to
// seconds (chaos lab loss10: transfers of 7-300+ s with GSO, 3.5-4.8 s without). So while the path
// loses packets, the data plane sends each datagram as its own skb (UdpSocket.pauseGso) and a drop
// takes one datagram, as on the wire; the cost is CPU per datagram on a path that is slow anyway.
// Two signals: the incoming direction's loss (the counters), and for the outgoing direction, whose
// counters only the peer sees, the TCP ACKs coming back with SACK blocks (isSackAck: the receiver
// holds data past a hole). The second matters when the way back does not lose (the peer's ACKs came
// over DERP in one chaos run, so the data's sender saw no gaps and resumed GSO into the loss).

/** A window closes once this many packets (received + lost) are in it, or after WINDOW_MS; it turns lossy as soon as it qualifies. */
export const LOSS_WINDOW_PACKETS = 200;
/** Longest window (ms). */
export const LOSS_WINDOW_MS = 1_000;
/** A window is lossy at this share of its packets lost (1%)... */
export const LOSSY_FRACTION = 0.01;
/** ...and at least this many lost (a lone gap says little). */
export const LOSSY_MIN_LOST = 3;
/** A lossy verdict holds this long (ms) after the last lossy window: a lossy link tends to stay so. */
export const LOSSY_HOLD_MS = 30_000;
/**
 * A window is lossy when this many ACKs with SACK blocks came in, and at least 10% of what came in
 * (a lossy path sends hundreds a second; a single drop at the peer's full socket, a handful).
 */
export const LOSSY_MIN_SACKS = 8;
export const LOSSY_SACK_FRACTION = 0.1;

/**
 * Whether pkt[off, off+len) is a pure TCP ACK (no payload) carrying a SACK option (RFC 2018, kind 5):
 * the peer's TCP holds data past a hole, so something we sent it was lost (or reordered). IPv4
 * without fragments and IPv6 without extension headers; anything else is false. No allocation.
 */
export function isSackAck(pkt: Uint8Array, off: number, len: number): boolean {
  if (len < 20) return false;
  const v = pkt[off]! >> 4;
  let l4: number;
  if (v === 4) {
    if (pkt[off + 9] !== 6 || (pkt[off + 6]! & 0x3f) !== 0 || pkt[off + 7] !== 0) return false; // TCP, not a fragment
    l4 = off + (pkt[off]! & 15) * 4;
  } else if (v === 6) {
    if (len < 40 || pkt[off + 6] !== 6) return false;
    l4 = off + 40;
  } else {
    return false;
  }
  if (l4 + 20 > off + len) return false;
  const hl = (pkt[l4 + 12]! >> 4) * 4;
  // Pure ACK: the segment ends with its header; room for a SACK block (10 bytes) past the 20.
  if (hl < 32 || l4 + hl !== off + len || (pkt[l4 + 13]! & 0x10) === 0) return false;
  for (let i = l4 + 20, end = l4 + hl; i < end;) {
    const kind = pkt[i]!;
    if (kind === 0) return false;
    if (kind === 1) { i++; continue; }
    if (kind === 5) return true;
    if (i + 1 >= end || pkt[i + 1]! < 2) return false;
    i += pkt[i + 1]!;
  }
  return false;
}

/** The path-loss verdict over the device's receive counters. */
export class LossMonitor {
  private start = -Infinity;
  private rx0 = 0;
  private lost0 = 0;
  private sacks0 = 0;
  private lossyUntil = -Infinity;
  /** Lossy windows seen (for counters). */
  lossyWindows = 0;

  /**
   * Feeds the cumulative counters (received transport messages, counters skipped, counters that
   * arrived late, pure ACKs with SACK blocks received) at `now`; returns whether the path counts as
   * lossy now. A window turns lossy as soon as it qualifies (no wait for its end: a bulk sender gets
   * few ACKs, and every GSO run sent meanwhile may be dropped whole).
   */
  update(now: number, received: number, skipped: number, late: number, sacks = 0): boolean {
    const lost = skipped - late;
    if (this.start === -Infinity) {
      this.newWindow(now, received, lost, sacks);
      return false;
    }
    const dRx = received - this.rx0, dLost = lost - this.lost0, dSacks = sacks - this.sacks0;
    const lossIn = dLost >= LOSSY_MIN_LOST && dLost >= LOSSY_FRACTION * (dRx + dLost);
    const lossOut = dSacks >= LOSSY_MIN_SACKS && dSacks >= LOSSY_SACK_FRACTION * dRx;
    if (lossIn || lossOut) {
      this.lossyUntil = now + LOSSY_HOLD_MS;
      this.lossyWindows++;
      this.newWindow(now, received, lost, sacks);
    } else if (dRx + dLost >= LOSS_WINDOW_PACKETS || now - this.start >= LOSS_WINDOW_MS) {
      this.newWindow(now, received, lost, sacks);
    }
    return now < this.lossyUntil;
  }

  private newWindow(now: number, received: number, lost: number, sacks: number): void {
    this.start = now;
    this.rx0 = received;
    this.lost0 = lost;
    this.sacks0 = sacks;
  }
}
