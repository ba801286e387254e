// Transport keypairs and the previous/current/next rotation (whitepaper 5.4.5-5.4.6, wireguard-go
// device/keypair.go and BeginSymmetricSession / ReceivedWithKeypair in noise-protocol.go).
//
// The initiator uses a new keypair at once: it becomes `current`, the old current (or the unconfirmed
// next) becomes `previous`. The responder must not send with a new keypair until the initiator has
// used it, so it parks it in `next`; the first authenticated transport packet received under `next`
// confirms it and promotes it to `current`.
import type { TransportAead, TransportKey } from '../crypto/types.ts';
import { ReplayFilter } from './replay.ts';
import type { SessionKeys } from './noise.ts';

/** One session's keys and counters. */
export class Keypair {
  /** Prepared sending key (for the native backend: a keyed OpenSSL context per thread). */
  readonly sendKey: TransportKey;
  /** Prepared receiving key. */
  readonly recvKey: TransportKey;
  /** Next counter to send with (a number exact below 2^53; see replay.ts). */
  sendCounter = 0;
  /** Receive replay window. */
  readonly replay = new ReplayFilter();
  /** True when we were the initiator of the handshake that made this keypair. */
  readonly isInitiator: boolean;
  /** Monotonic ms when the keypair was made. */
  readonly created: number;
  /** Our index: transport messages to us carry it. */
  readonly localIndex: number;
  /** The peer's index: we write it into transport messages we send. */
  readonly remoteIndex: number;
  /**
   * remoteIndex as its 4 wire bytes (LE). A u32 above 2^30 is not a small integer in V8, so
   * writing it from a number can box it per packet; copying bytes never does.
   */
  readonly remoteIndexBytes = new Uint8Array(4);

  private readonly transport: TransportAead;

  constructor(transport: TransportAead, keys: SessionKeys, now: number) {
    this.transport = transport;
    this.sendKey = transport.prepare(keys.send, true);
    this.recvKey = transport.prepare(keys.recv, false);
    keys.send.fill(0);
    keys.recv.fill(0);
    this.isInitiator = keys.isInitiator;
    this.created = now;
    this.localIndex = keys.localIndex;
    this.remoteIndex = keys.remoteIndex;
    const r = keys.remoteIndex;
    this.remoteIndexBytes.set([r & 0xff, (r >>> 8) & 0xff, (r >>> 16) & 0xff, (r >>> 24) & 0xff]);
  }

  /**
   * Zeroes the raw key bytes we hold and frees the prepared keys: the native backend frees its
   * OpenSSL contexts, which cleanses the key schedule. The node:crypto KeyObjects of the per-packet
   * backend cannot be wiped from JavaScript; dropping the last reference is the best available.
   * The device calls this only when no queued seal or open still uses the keypair. Idempotent.
   */
  zero(): void {
    this.transport.release(this.sendKey);
    this.transport.release(this.recvKey);
  }
}

/** A peer's three keypair slots. */
export class Keypairs {
  /** The keypair before current, kept to decrypt packets still in flight. */
  previous: Keypair | null = null;
  /** The keypair we send with. */
  current: Keypair | null = null;
  /** Responder only: a new keypair waiting for its first received packet. */
  next: Keypair | null = null;

  /** Installs a freshly derived keypair; `release` is called for every keypair that falls out. */
  install(kp: Keypair, release: (old: Keypair) => void): void {
    if (kp.isInitiator) {
      if (this.next !== null) {
        // An unconfirmed next keypair is still usable for receiving: keep it as previous.
        const old = this.previous;
        this.previous = this.next;
        this.next = null;
        if (this.current !== null) release(this.current);
        if (old !== null) release(old);
      } else {
        if (this.previous !== null) release(this.previous);
        this.previous = this.current;
      }
      this.current = kp;
    } else {
      if (this.next !== null) release(this.next);
      this.next = kp;
      if (this.previous !== null) release(this.previous);
      this.previous = null;
    }
  }

  /**
   * Called after a transport packet authenticated under `kp`. When `kp` is the waiting next
   * keypair it is promoted to current and the result is true (the handshake is now complete).
   */
  receivedWith(kp: Keypair, release: (old: Keypair) => void): boolean {
    if (this.next !== kp) return false;
    if (this.previous !== null) release(this.previous);
    this.previous = this.current;
    this.current = kp;
    this.next = null;
    return true;
  }

  /** Puts `kp` in place of the current keypair `old` (which is released); false if `old` is not current. */
  replaceCurrent(old: Keypair, kp: Keypair, release: (old: Keypair) => void): boolean {
    if (this.current !== old) return false;
    this.current = kp;
    release(old);
    return true;
  }

  /** Releases all three. */
  clear(release: (old: Keypair) => void): void {
    for (const kp of [this.previous, this.current, this.next]) if (kp !== null) release(kp);
    this.previous = this.current = this.next = null;
  }
}
