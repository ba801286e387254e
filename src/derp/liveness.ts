// DERP connection liveness, without I/O: when to ping the server and when to give a connection up.
//
// A TCP connection to a DERP server that crosses a black hole (a NAT or firewall that silently
// drops, a path that went away) stays "open" on both ends. A side with data queued finds out when
// the write makes no progress (client.ts writeTimeoutMs), but a side with nothing to send waits for
// its kernel's retransmission backoff, which after a minute-long outage fires ~50 s after the path
// is back (chaos lab, derpdown). The server sends KeepAlive only every 60 s and the read deadline is
// 120 s (derp.KeepAlive, derp_client.go recvTimeout), far too slow to notice.
//
// DERP has Ping/Pong frames for this (derp.go: FramePing 0x12 / FramePong 0x13, 8-byte payload;
// derper answers every Ping; tailscale's magicsock pings its DERP connections after a rebind and
// closes those that do not answer within 3 s: magicsock/derp.go maybeCloseDERPsOnRebind). This core
// pings
//   - when we sent something since the last frame we read and nothing was read for activePingMs
//     (a live peer behind the server usually answers; when it does not, the server still does), or
//   - when nothing at all was read for idlePingMs;
// and declares the connection dead when no byte at all arrives within pingTimeoutMs after a ping.
// Any byte read (a pong, a packet, a keep-alive) counts as an answer. At most one ping is
// outstanding, and after an answer the idle clock starts again, so an idle connection sends at
// most one ping per idlePingMs (and one per activePingMs while it sends without hearing back).

/** Timing of the liveness check (ms). */
export interface DerpLivenessOptions {
  /** Nothing read this long while idle: ping. Default 15 s (4 pings a minute at most when idle). */
  idlePingMs?: number;
  /** Sent something but read nothing for this long: ping. Default 3 s. */
  activePingMs?: number;
  /** No byte read this long after a ping: the connection is dead. Default 5 s. */
  pingTimeoutMs?: number;
}

/** What the caller should do now. */
export type LivenessAction = 'none' | 'ping' | 'dead';

/** Defaults: see DerpLivenessOptions. */
export const DERP_IDLE_PING_MS = 15_000;
export const DERP_ACTIVE_PING_MS = 3_000;
export const DERP_PING_TIMEOUT_MS = 5_000;

/** One connection's liveness state on the caller's clock (monotonic ms). */
export class DerpLiveness {
  readonly idlePingMs: number;
  readonly activePingMs: number;
  readonly pingTimeoutMs: number;
  private lastRead = 0;
  private sentSinceRead = false;
  private pingAt: number | undefined;

  constructor(opts: DerpLivenessOptions = {}) {
    this.idlePingMs = opts.idlePingMs ?? DERP_IDLE_PING_MS;
    this.activePingMs = opts.activePingMs ?? DERP_ACTIVE_PING_MS;
    this.pingTimeoutMs = opts.pingTimeoutMs ?? DERP_PING_TIMEOUT_MS;
    for (const [k, v] of Object.entries({ idlePingMs: this.idlePingMs, activePingMs: this.activePingMs, pingTimeoutMs: this.pingTimeoutMs })) {
      if (!(v > 0) || !Number.isFinite(v)) throw new RangeError(`derp liveness: ${k} must be a positive number of ms, got ${v}`);
    }
  }

  /** A connection came up at `now`: it counts as just heard from. */
  reset(now: number): void {
    this.lastRead = now;
    this.sentSinceRead = false;
    this.pingAt = undefined;
  }

  /** Bytes arrived from the server (any frame answers a ping). */
  onRead(now: number): void {
    this.lastRead = now;
    this.sentSinceRead = false;
    this.pingAt = undefined;
  }

  /** We queued something for the server (the hot path: one store). */
  onSend(): void {
    this.sentSinceRead = true;
  }

  /** Whether a ping is waiting for an answer. */
  get pinging(): boolean {
    return this.pingAt !== undefined;
  }

  /** Called periodically (see tickMs); 'ping' means a ping was just counted as sent at `now`. */
  tick(now: number): LivenessAction {
    if (this.pingAt !== undefined) return now - this.pingAt >= this.pingTimeoutMs ? 'dead' : 'none';
    const quiet = now - this.lastRead;
    if (quiet >= this.idlePingMs || (this.sentSinceRead && quiet >= this.activePingMs)) {
      this.pingAt = now;
      return 'ping';
    }
    return 'none';
  }

  /** A tick interval fine enough for these timings (a fifth of the shortest). */
  get tickMs(): number {
    return Math.max(10, Math.floor(Math.min(this.activePingMs, this.pingTimeoutMs, this.idlePingMs) / 5));
  }
}
