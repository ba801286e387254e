// WireGuard's timer constants (whitepaper 6.1 and 6.5, wireguard-go device/constants.go) and the
// per-peer timer state (wireguard-go device/timers.go). Timers are deadlines in monotonic ms that
// Device.tick() fires; "pending" means the deadline is finite. The hooks below are named after
// wireguard-go's and are called at the same points of the packet flow.

/** Initiator rekeys when sending on a keypair older than this (whitepaper: Rekey-After-Time). */
export const REKEY_AFTER_TIME_MS = 120_000;
/** Keypair unusable after this (Reject-After-Time). */
export const REJECT_AFTER_TIME_MS = 180_000;
/** Give up on a handshake after this (Rekey-Attempt-Time); as wireguard-go, counted in retries. */
export const REKEY_ATTEMPT_TIME_MS = 90_000;
/** Retransmit an initiation after this (Rekey-Timeout); also the minimum spacing of initiations. */
export const REKEY_TIMEOUT_MS = 5_000;
/** Random jitter added to Rekey-Timeout, 0..333 ms (wireguard-go RekeyTimeoutJitterMaxMs = 334). */
export const REKEY_TIMEOUT_JITTER_MAX_MS = 334;
/** Passive keepalive after receiving data and sending nothing (Keepalive-Timeout). */
export const KEEPALIVE_TIMEOUT_MS = 10_000;
/** Retries before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT = 18 (so 20 initiations are sent). */
export const MAX_TIMER_HANDSHAKES = REKEY_ATTEMPT_TIME_MS / REKEY_TIMEOUT_MS;
/** Erase all keys when no new handshake completes for this long (3 x Reject-After-Time). */
export const ZERO_KEY_MATERIAL_AFTER_MS = 3 * REJECT_AFTER_TIME_MS;
/** Staged packets per peer while there is no session (wireguard-go QueueStagedSize). */
export const MAX_STAGED_PACKETS = 128;

/** No deadline. */
const OFF = Infinity;

/** A peer's timers and the hooks that arm and disarm them. */
export class PeerTimers {
  /** Retransmit the initiation. */
  retransmitHandshake = OFF;
  /** Passive keepalive. */
  sendKeepalive = OFF;
  /** New handshake because sent data went unanswered. */
  newHandshake = OFF;
  /** Erase all key material. */
  zeroKeyMaterial = OFF;
  /** Persistent keepalive. */
  persistentKeepalive = OFF;
  /** Re-send the pending initiation's bytes (DeviceOptions.initiationResendMs). */
  resendInitiation = OFF;
  /** Retries so far of the current handshake. */
  handshakeAttempts = 0;
  /** The initiator already sent its one "last minute" initiation for the current keypair. */
  sentLastMinuteHandshake = false;
  /** Another keepalive is owed when the pending one fires. */
  needAnotherKeepalive = false;

  /** True when the deadline is set. */
  static pending(deadline: number): boolean {
    return deadline !== OFF;
  }

  /** Disarms every timer. */
  stopAll(): void {
    this.retransmitHandshake = this.sendKeepalive = this.newHandshake = this.zeroKeyMaterial = this.persistentKeepalive = this.resendInitiation = OFF;
  }

  /** After an authenticated transport packet with data was sent. */
  dataSent(now: number, jitter: number): void {
    if (this.newHandshake === OFF) this.newHandshake = now + KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS + jitter;
  }

  /** After an authenticated transport packet with data was received. */
  dataReceived(now: number): void {
    if (this.sendKeepalive === OFF) this.sendKeepalive = now + KEEPALIVE_TIMEOUT_MS;
    else this.needAnotherKeepalive = true;
  }

  /** After any authenticated packet (keepalive, data, handshake) was sent. */
  anyAuthenticatedPacketSent(): void {
    this.sendKeepalive = OFF;
  }

  /** After any authenticated packet was received. */
  anyAuthenticatedPacketReceived(): void {
    this.newHandshake = OFF;
  }

  /** Before an authenticated packet is sent or after one is received. */
  anyAuthenticatedPacketTraversal(now: number, persistentKeepaliveS: number): void {
    if (persistentKeepaliveS > 0) this.persistentKeepalive = now + persistentKeepaliveS * 1000;
  }

  /** After an initiation was sent. */
  handshakeInitiated(now: number, jitter: number): void {
    this.retransmitHandshake = now + REKEY_TIMEOUT_MS + jitter;
  }

  /** After a response was consumed, or the first packet on a responder's next keypair arrived. */
  handshakeComplete(): void {
    this.retransmitHandshake = OFF;
    this.resendInitiation = OFF;
    this.handshakeAttempts = 0;
    this.sentLastMinuteHandshake = false;
  }

  /** After a new session's keys were derived. */
  sessionDerived(now: number): void {
    this.zeroKeyMaterial = now + ZERO_KEY_MATERIAL_AFTER_MS;
  }
}
