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
// The signal is the incoming direction's loss; a path lossy one way only is not seen from the
// sending side (the peer's receive side pauses its own sends instead).

/** A verdict is taken once this many packets (received + lost) are in the window, or after WINDOW_MS. */
export const LOSS_WINDOW_PACKETS = 200;
/** Longest window (ms). */
export const LOSS_WINDOW_MS = 1_000;
/** A window is lossy at this share of its packets lost (1%)... */
export const LOSSY_FRACTION = 0.01;
/** ...and at least this many lost (a lone gap says little). */
export const LOSSY_MIN_LOST = 3;
/** A lossy verdict holds this long (ms) after the last lossy window: a lossy link tends to stay so. */
export const LOSSY_HOLD_MS = 30_000;

/** The path-loss verdict over the device's receive counters. */
export class LossMonitor {
  private start = -Infinity;
  private rx0 = 0;
  private lost0 = 0;
  private lossyUntil = -Infinity;
  /** Lossy windows seen (for counters). */
  lossyWindows = 0;

  /**
   * Feeds the cumulative counters (received transport messages, counters skipped, counters that
   * arrived late) at `now`; returns whether the path counts as lossy now.
   */
  update(now: number, received: number, skipped: number, late: number): boolean {
    const lost = skipped - late;
    if (this.start === -Infinity) {
      this.start = now;
      this.rx0 = received;
      this.lost0 = lost;
      return false;
    }
    const dRx = received - this.rx0, dLost = lost - this.lost0;
    if (dRx + dLost >= LOSS_WINDOW_PACKETS || now - this.start >= LOSS_WINDOW_MS) {
      if (dLost >= LOSSY_MIN_LOST && dLost >= LOSSY_FRACTION * (dRx + dLost)) {
        this.lossyUntil = now + LOSSY_HOLD_MS;
        this.lossyWindows++;
      }
      this.start = now;
      this.rx0 = received;
      this.lost0 = lost;
    }
    return now < this.lossyUntil;
  }
}
