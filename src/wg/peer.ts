// A WireGuard peer's state (wireguard-go device/peer.go): static key and handshake, keypairs,
// timers, cookie generator, endpoint, and the packets staged while there is no session. The
// behaviour lives in Device; this is the data it works on.
import type { Endpoint } from '../net/endpoint.ts';
import type { CryptoBackend } from '../crypto/types.ts';
import { CookieGenerator } from './cookie.ts';
import { Keypairs, type Keypair } from './keypair.ts';
import { Handshake } from './noise.ts';
import { MAX_STAGED_PACKETS, PeerTimers } from './timers.ts';

/** A packet waiting for a session: plaintext at buf[HEADROOM, HEADROOM+len), room for padding and tag. */
export interface StagedPacket {
  /** Buffer with transport-header headroom. */
  buf: Uint8Array;
  /** Plaintext length (0 = keepalive). */
  len: number;
}

/**
 * What consuming another answer to our last answered initiation needs (Device: a peer that
 * answered one initiation twice keeps the second answer's keypair): the handshake state just
 * before the first answer, and the responder ephemerals already taken.
 */
export interface AnsweredInitiation {
  readonly hash: Uint8Array;
  readonly chainKey: Uint8Array;
  readonly localEphemeral: Uint8Array;
  readonly localIndex: number;
  /** Monotonic ms of the first answer. */
  readonly at: number;
  /** The keypair we send with, from the answer taken last. */
  keypair: Keypair;
  /** Responder ephemerals of the answers taken (an answer seen again changes nothing). */
  readonly seen: Uint8Array[];
}

/** Bytes reserved in front of a staged packet for the transport header. */
export const STAGED_HEADROOM = 16;

/** Hex text of a key, used as a map key. */
export function keyHex(k: Uint8Array): string {
  return Buffer.from(k.buffer, k.byteOffset, k.length).toString('hex');
}

/** One configured peer. */
export class Peer {
  /** The peer's static public key. */
  readonly publicKey: Uint8Array;
  /** Hex of publicKey. */
  readonly id: string;
  /** Handshake state. */
  readonly handshake: Handshake;
  /** previous/current/next keypairs. */
  readonly keypairs = new Keypairs();
  /** Timer deadlines. */
  readonly timers = new PeerTimers();
  /** mac1/mac2 for messages we send to this peer. */
  readonly cookies: CookieGenerator;
  /** Where to send; follows the latest authenticated packet. */
  endpoint: Endpoint | null = null;
  /** Persistent keepalive interval in seconds, 0 = off. */
  persistentKeepalive = 0;
  /** Packets waiting for a session, oldest first. */
  readonly staged: StagedPacket[] = [];
  /** Bytes received from this peer (UDP payload of authenticated messages). */
  rxBytes = 0;
  /** Bytes sent to this peer (UDP payload). */
  txBytes = 0;
  /** Wall-clock ms of the last completed handshake, 0 = never. */
  lastHandshakeWallMs = 0;
  /** The initiation last sent, macs included, while timers.resendInitiation may send it again. */
  pendingInitiation: Uint8Array | null = null;
  /** Monotonic ms when pendingInitiation last went out (its first send or a copy). */
  pendingInitiationSentAt = -Infinity;
  /** Our last answered initiation, until a packet arrives under its keypair (see AnsweredInitiation). */
  answered: AnsweredInitiation | null = null;
  /**
   * The last inner source address the allowed-IPs table gave to this peer, so the next packet from
   * it skips the trie walk (32 or 128 bits): [0] the table's version for the IPv4 entry (0: none),
   * [1] the IPv4 address; [2] the version for the IPv6 entry, [3..6] its address as four words.
   * Int32 words, so that storing them never boxes a number.
   */
  readonly rxSource = new Int32Array(7);

  constructor(crypto: CryptoBackend, publicKey: Uint8Array) {
    this.publicKey = publicKey.slice();
    this.id = keyHex(publicKey);
    this.handshake = new Handshake(this.publicKey);
    this.cookies = new CookieGenerator(crypto, this.publicKey);
  }

  /** Stages an empty packet (a keepalive). */
  stageKeepalive(): void {
    this.staged.push({ buf: new Uint8Array(STAGED_HEADROOM + 32), len: 0 });
  }

  /** Stages a copy of buf[off, off+len); returns false when the oldest packet had to be dropped. */
  stage(buf: Uint8Array, off: number, len: number): boolean {
    const copy = new Uint8Array(STAGED_HEADROOM + len + 32);
    copy.set(buf.subarray(off, off + len), STAGED_HEADROOM);
    this.staged.push({ buf: copy, len });
    if (this.staged.length > MAX_STAGED_PACKETS) {
      this.staged.shift();
      return false;
    }
    return true;
  }
}
