// The contract between the WireGuard core and its callers: the I/O layer (Clock, WgSink, the
// buffers it passes to Device) and the `wg` configuration protocol (PeerConfig, PeerStatus,
// counter names). Device re-exports all of it; import from either.
import type { Endpoint } from '../net/endpoint.ts';
import type { CryptoBackend } from '../crypto/types.ts';

/** Time source: monotonic ms for timers, wall ms for what users read. */
export interface Clock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Unix milliseconds, for last_handshake_time. */
  wall(): number;
}

/** Where the device's output goes. */
export interface WgSink {
  /** Send bytes buf[off, off+len) to `to`. The bytes stay valid until the I/O layer's flush at the end of the current batch; the sink must not keep them longer. */
  sendUdp(buf: Uint8Array, off: number, len: number, to: Endpoint): void;
  /** Deliver a decrypted IP packet buf[off, off+len) to the TUN. Same lifetime rule. */
  writeTun(buf: Uint8Array, off: number, len: number): void;
}

/** What setPeer changes; absent fields are left as they are. */
export interface PeerConfig {
  /** The peer's UDP endpoint; null forgets it. */
  endpoint?: Endpoint | null;
  /** CIDRs routed to this peer (added to the existing ones unless replaceAllowedIPs). */
  allowedIPs?: string[];
  /** Remove the peer's existing allowed IPs first. */
  replaceAllowedIPs?: boolean;
  /** Persistent keepalive interval in seconds, 0 = off. */
  persistentKeepalive?: number;
  /** Pre-shared key (32 bytes); null = none (32 zero bytes). */
  presharedKey?: Uint8Array | null;
}

/** A peer as the configuration protocol reports it. */
export interface PeerStatus {
  /** Static public key. */
  publicKey: Uint8Array;
  /** Pre-shared key (zeros when none). */
  presharedKey: Uint8Array;
  /** Current endpoint. */
  endpoint: Endpoint | null;
  /** Allowed IPs in canonical CIDR text. */
  allowedIPs: string[];
  /** Unix ms of the last completed handshake, 0 = never. */
  lastHandshakeWallMs: number;
  /** Bytes received. */
  rxBytes: number;
  /** Bytes sent. */
  txBytes: number;
  /** Persistent keepalive in seconds. */
  persistentKeepalive: number;
}

/** Options for a Device. */
export interface DeviceOptions {
  /** Time source. */
  clock: Clock;
  /** Random bytes (default node:crypto randomBytes). */
  random?: (n: number) => Uint8Array;
  /** Log sink for rare events (default: none). */
  log?: (msg: string) => void;
  /** TUN MTU for padding (default 1420). */
  mtu?: number;
  /**
   * Crypto backend (default defaultCrypto(): node:crypto with the native batched transport AEAD when
   * the addon loads, else node:crypto alone).
   */
  crypto?: CryptoBackend;
  /**
   * Follow a peer to the source of its latest authenticated packet (default true, whitepaper 2.1).
   * Off when endpoints are magicsock peers, which choose the path themselves (tailscale does the same).
   */
  roaming?: boolean;
  /**
   * Batch transport crypto (default false). False: every call finishes its packets before it
   * returns. True: sendPacketInPlace and receiveDatagramInPlace only queue a transport packet's seal
   * or open, and the I/O layer calls Device.flush(sink) once per batch, before it sends, writes or
   * reuses a buffer it passed in; flush seals/opens the whole queue in one AEAD call.
   */
  batched?: boolean;
  /**
   * Re-send the first initiation of a handshake, byte for byte, this often (ms) until its response
   * or its REKEY_TIMEOUT retry (default 0: off, as wireguard-go). For tailnet peers: a node that
   * sends at once after joining reaches peers whose control has not told them about it yet, which
   * drop the initiation; the same bytes a second later get through instead of the retry 5 s later.
   * A responder that did get the first copy drops the others as replays (equal TAI64N timestamp).
   */
  initiationResendMs?: number;
}

/** Names of the counters in Device.counters. */
export const COUNTER_NAMES = [
  // traffic
  'txData', 'txKeepalives', 'txInitiations', 'txInitiationResends', 'txResponses', 'txCookieReplies',
  'rxData', 'rxKeepalives', 'rxInitiations', 'rxResponses', 'rxCookieReplies',
  'handshakesCompleted', 'handshakesGivenUp', 'rxResponsesReplacing', 'keyZeroings', 'underLoadEntered',
  // path loss by the senders' counters (ReplayFilter): lost so far = rxCountersSkipped - rxCountersLate
  'rxTransport', 'rxCountersSkipped', 'rxCountersLate',
  // outbound drops
  'dropTxNotIP', 'dropTxBadBuffer', 'dropTxNoRoute', 'dropTxNoEndpoint', 'dropTxStagedOverflow', 'dropTxStagedFlushed',
  'dropTxQueueFull',
  // inbound drops
  'dropRxJunk', 'dropRxBadMac1', 'dropRxNeedCookie', 'dropRxRateLimited', 'dropRxNoPrivateKey',
  'dropRxHandshakeInvalid', 'dropRxUnknownPeer', 'dropRxReplayedInitiation', 'dropRxInitiationFlood',
  'dropRxUnknownIndex', 'dropRxBadCookieReply', 'dropRxExpiredKeypair', 'dropRxCounterTooLarge',
  'dropRxDecryptFailed', 'dropRxReplay', 'dropRxBadInner', 'dropRxSourceNotAllowed', 'dropRxQueueFull',
] as const;
/** One counter name. */
export type CounterName = (typeof COUNTER_NAMES)[number];
