// A WireGuard device without I/O (whitepaper sections 5 and 6; wireguard-go device/send.go,
// receive.go, timers.go, noise-protocol.go). The I/O layer hands it IP packets from the TUN and
// UDP datagrams from the socket, each in a buffer it owns, and calls tick() at least every 100 ms;
// the device answers through a WgSink. Transport packets are encrypted and decrypted in place, a
// batch at a time: the per-packet work (counters, headers, replay pre-check, keypair lookup) records
// a job in preallocated typed arrays, and flush() seals or opens all of them in one call of the
// transport AEAD (the native backend: one N-API call per buffer), then finishes each packet in order
// (timers, replay window, keypair confirmation, cryptokey routing, the sink). The per-packet path
// allocates nothing of its own (the per-packet node:crypto backend's cipher objects are the
// exception). Junk is counted in `counters`, never thrown.
import { randomBytes } from 'node:crypto';
import type { Endpoint } from '../net/endpoint.ts';
import { defaultCrypto, nativeAeadError } from '../crypto/backend.ts';
import { PerPacketTransport } from '../crypto/transport.ts';
import { AeadBatch, type CryptoBackend, type TransportAead } from '../crypto/types.ts';
import { AllowedIPs, formatPrefix, parsePrefix, type Prefix } from './allowedips.ts';
import { CookieChecker, equalBytes } from './cookie.ts';
import { Keypair } from './keypair.ts';
import {
  COOKIE_REPLY_SIZE, MessageType, messageTypeOf, Offsets, readU32LE, TRANSPORT_HEADER_SIZE, TRANSPORT_MIN_SIZE,
  writeTransportHeader,
} from './messages.ts';
import {
  consumeInitiation, consumeResponse, createInitiation, createResponse, deriveKeys, Handshake, HandshakeState, Noise,
  type StaticIdentity,
} from './noise.ts';
import { keyHex, Peer, STAGED_HEADROOM } from './peer.ts';
import { RateLimiter } from './ratelimiter.ts';
import { readCounter, REJECT_AFTER_MESSAGES, REKEY_AFTER_MESSAGES } from './replay.ts';
import { COUNTER_NAMES, type Clock, type CounterName, type DeviceOptions, type PeerConfig, type PeerStatus, type WgSink } from './api.ts';
import {
  KEEPALIVE_TIMEOUT_MS, MAX_TIMER_HANDSHAKES, PeerTimers, REJECT_AFTER_TIME_MS, REKEY_AFTER_TIME_MS,
  REKEY_TIMEOUT_JITTER_MAX_MS, REKEY_TIMEOUT_MS, ZERO_KEY_MATERIAL_AFTER_MS,
} from './timers.ts';

export type { Clock, WgSink, PeerConfig, PeerStatus, DeviceOptions, CounterName } from './api.ts';
export { COUNTER_NAMES } from './api.ts';

/**
 * Handshake messages per second (after mac1) above which the device puts itself under load for a
 * second: a backstop. The main signal is the handshake queue's depth (noteHandshakeQueueDepth, as
 * wireguard-go's IsUnderLoad); this rate is set above what one core can answer (about 4 DH per
 * handshake), so it only trips for callers that do not queue handshakes.
 */
export const UNDER_LOAD_HANDSHAKES_PER_SECOND = 8192;
/** Handshake queue depth at which the device is under load (wireguard-go: QueueHandshakeSize / 8). */
export const UNDER_LOAD_QUEUE_DEPTH = 128;
/** How long the device stays under load after the threshold is crossed (wireguard-go UnderLoadAfterTime). */
export const UNDER_LOAD_AFTER_MS = 1000;
/** Default TUN MTU. */
export const DEFAULT_MTU = 1420;
/**
 * Least time between two copies of one initiation (the initiationResendMs repeats, and the ones the
 * agent asks for after a map update). wireguard-go checks an initiation's TAI64N replay and flood
 * limits under a read lock and records them under the write lock (ConsumeMessageInitiation): two
 * copies that its handshake goroutines take at the same time both pass, it answers both, and the
 * second answer's keypair replaces the first, which we took; our data then goes unanswered until
 * the 15 s no-reply handshake. Copies this far apart reach it one after the other, and the later
 * one is dropped as a replay: scripts/wg-double-answer.mjs against wireguard-go v0.0.20250522 gave
 * two answers in 9 of 300 trials back to back and in 0 of 300 with the copies 30 ms apart (and
 * 100 ms, the gap before). Shorter is sooner: a copy asked for by the map update that told the peer
 * about us waits for the end of this gap (a second answer is still handled, double-answer.test).
 */
export const INITIATION_COPY_GAP_MS = 30;
/** Seal and open jobs the device queues before it flushes by itself (a batch is normally <= 128). */
export const MAX_QUEUED_JOBS = 1024;

interface IndexEntry {
  peer: Peer;
  /** null: the index names the peer's in-progress handshake. */
  keypair: Keypair | null;
}

/** Four bytes big-endian as a signed 32-bit integer (what an Int32Array holds). */
function readU32BEInt(buf: Uint8Array, o: number): number {
  return (buf[o]! << 24) | (buf[o + 1]! << 16) | (buf[o + 2]! << 8) | buf[o + 3]!;
}

/** Padded plaintext length for an IP packet of `len` bytes (wireguard-go calculatePaddingSize). */
export function paddedLength(len: number, mtu: number): number {
  let last = len;
  if (mtu > 0 && last > mtu) last %= mtu;
  let padded = (last + 15) & ~15;
  if (mtu > 0 && padded > mtu) padded = mtu;
  return len + (padded - last);
}

/** A WireGuard interface: peers, handshakes, timers, and the in-place data path. */
export class Device {
  private readonly clock: Clock;
  private readonly random: (n: number) => Uint8Array;
  private readonly log: (msg: string) => void;
  private readonly mtu: number;
  private readonly roaming: boolean;
  private readonly crypto: CryptoBackend;
  private readonly transport: TransportAead;
  private readonly batched: boolean;
  /** DeviceOptions.initiationResendMs (0: off). */
  private readonly initiationResendMs: number;
  private readonly noise: Noise;
  private identity: StaticIdentity | null = null;
  private readonly byKey = new Map<string, Peer>();
  private readonly index = new Map<number, IndexEntry>();
  private readonly allowed = new AllowedIPs<Peer>();
  private readonly checker: CookieChecker;
  private readonly limiter = new RateLimiter();
  private manualUnderLoad = false;
  private autoUnderLoadUntil = -Infinity;
  private loadWindowStart = -Infinity;
  private loadWindowCount = 0;
  private lastCollect = -Infinity;
  /** xorshift32 state, in a typed array so that updating it never boxes a number. */
  private readonly jitterState = new Uint32Array(1);
  private readonly releaseKeypair = (kp: Keypair): void => {
    const e = this.index.get(kp.localIndex);
    if (e !== undefined && e.keypair === kp) this.index.delete(kp.localIndex);
    // A queued job may still use its keys: free them when the queue is empty.
    if (this.flushing || this.nSeal > 0 || this.nOpen > 0) this.releaseLater.push(kp);
    else kp.zero();
  };
  private readonly releaseLater: Keypair[] = [];

  // Queued transport jobs (see flush). Job i of a queue: the AEAD job in the AeadBatch, plus what
  // finishing it needs, in arrays allocated once (writing a reference into them allocates nothing).
  private readonly sealJobs = new AeadBatch(MAX_QUEUED_JOBS);
  private readonly sealBuf: Array<Uint8Array | undefined> = new Array<Uint8Array | undefined>(MAX_QUEUED_JOBS).fill(undefined);
  private readonly sealPeer: Array<Peer | undefined> = new Array<Peer | undefined>(MAX_QUEUED_JOBS).fill(undefined);
  private readonly sealTo: Array<Endpoint | undefined> = new Array<Endpoint | undefined>(MAX_QUEUED_JOBS).fill(undefined);
  /** The IP packet's length before padding (0: a keepalive). */
  private readonly sealInner = new Int32Array(MAX_QUEUED_JOBS);
  private nSeal = 0;
  private readonly openJobs = new AeadBatch(MAX_QUEUED_JOBS);
  private readonly openBuf: Array<Uint8Array | undefined> = new Array<Uint8Array | undefined>(MAX_QUEUED_JOBS).fill(undefined);
  private readonly openPeer: Array<Peer | undefined> = new Array<Peer | undefined>(MAX_QUEUED_JOBS).fill(undefined);
  private readonly openKp: Array<Keypair | undefined> = new Array<Keypair | undefined>(MAX_QUEUED_JOBS).fill(undefined);
  private readonly openFrom: Array<Endpoint | undefined> = new Array<Endpoint | undefined>(MAX_QUEUED_JOBS).fill(undefined);
  private nOpen = 0;
  private flushing = false;
  private readonly c: Record<CounterName, number>;

  /** Counters a user can read: dropped packets by reason, handshakes, etc. (names in COUNTER_NAMES). */
  readonly counters: Record<string, number>;

  constructor(opts: DeviceOptions) {
    this.clock = opts.clock;
    this.random = opts.random ?? ((n) => new Uint8Array(randomBytes(n)));
    this.log = opts.log ?? (() => {});
    this.mtu = opts.mtu ?? DEFAULT_MTU;
    this.roaming = opts.roaming ?? true;
    this.crypto = opts.crypto ?? defaultCrypto();
    if (opts.crypto === undefined) {
      const why = nativeAeadError();
      // NativeTransport.direct: ChaCha20 and Poly1305 called without EVP (native/src/aead.c).
      const direct = (this.crypto.transport as { readonly direct?: boolean } | undefined)?.direct === true;
      this.log(why === null ? `transport crypto: native batched ChaCha20-Poly1305 (OpenSSL ${direct ? 'ChaCha20_ctr32 and Poly1305, no EVP' : 'EVP'})` : `transport crypto: node:crypto per packet (native AEAD unavailable: ${why})`);
    }
    this.transport = this.crypto.transport ?? new PerPacketTransport(this.crypto.name, this.crypto.aead);
    this.batched = opts.batched ?? false;
    this.initiationResendMs = opts.initiationResendMs ?? 0;
    this.noise = new Noise(this.crypto);
    this.checker = new CookieChecker(this.crypto, this.random);
    const seed = this.random(4);
    this.jitterState[0] = readU32LE(seed, 0) | 1;
    const c = {} as Record<CounterName, number>;
    for (const n of COUNTER_NAMES) c[n] = 0;
    this.c = c;
    this.counters = c;
  }

  /**
   * True while handshakes need a valid mac2 (else they get a cookie reply) and pass a per-source
   * rate limiter. Set by the I/O layer when it sees a backlog; also true for UNDER_LOAD_AFTER_MS after
   * the device saw more than UNDER_LOAD_HANDSHAKES_PER_SECOND handshake messages in a second.
   */
  get underLoad(): boolean {
    return this.manualUnderLoad || this.clock.now() < this.autoUnderLoadUntil;
  }

  /** Setting true holds the device under load until set false; setting false also ends an automatic period. */
  set underLoad(v: boolean) {
    this.manualUnderLoad = v;
    if (!v) this.autoUnderLoadUntil = -Infinity;
  }

  // ---- configuration -------------------------------------------------------------------------

  /** Our static private key (for the configuration protocol's get), or null. */
  privateKey(): Uint8Array | null {
    return this.identity ? this.identity.privateKey : null;
  }

  /**
   * Makes sure a handshake with a peer that has no usable session is on its way now: a handshake
   * still waiting for its response has its first initiation sent again at once (as the
   * initiationResendMs repeat would later; a peer that answered drops it as a replay), else one is
   * started with a keepalive staged (sent once it completes, which confirms the session to the
   * responder, as wireguard-go's initiator does). Returns whether an initiation went out: false
   * for an unknown peer, a live session, or a handshake rate-limited without a pending initiation.
   */
  handshakeIfIdle(publicKey: Uint8Array, sink: WgSink): boolean {
    const peer = this.byKey.get(keyHex(publicKey));
    if (!peer) return false;
    const now = this.clock.now();
    const kp = peer.keypairs.current;
    if (kp !== null && this.usableForSending(kp, now)) return false;
    const before = this.c.txInitiations + this.c.txInitiationResends;
    if (peer.pendingInitiation !== null) this.resendInitiation(peer, sink, now);
    else this.sendKeepalive(peer, sink, now);
    return this.c.txInitiations + this.c.txInitiationResends > before;
  }

  /**
   * Repeats a peer's unanswered first initiation now (byte for byte, as initiationResendMs does);
   * starts nothing new. For when the peer may just have learned about us (a control map update):
   * false when there was none to repeat, or when its last send was under INITIATION_COPY_GAP_MS
   * ago (the copy then goes when that gap ends).
   */
  resendPendingInitiation(publicKey: Uint8Array, sink: WgSink): boolean {
    const peer = this.byKey.get(keyHex(publicKey));
    if (!peer || peer.pendingInitiation === null) return false;
    const before = this.c.txInitiationResends;
    this.resendInitiation(peer, sink, this.clock.now());
    return this.c.txInitiationResends > before;
  }

  /** True when a peer with this public key exists. */
  hasPeer(publicKey: Uint8Array): boolean {
    return this.byKey.has(keyHex(publicKey));
  }

  /** Sets (or clears) our static private key; re-derives each peer's static-static DH and expires sessions. */
  setPrivateKey(key: Uint8Array | null): void {
    if (key !== null && key.length !== 32) throw new RangeError(`private key must be 32 bytes, got ${key.length}`);
    if (key === null ? this.identity === null : this.identity !== null && equalBytes(key, this.identity.privateKey)) return;
    if (key === null) {
      this.identity = null;
    } else {
      const priv = key.slice();
      // Clamp as X25519 does, so that what we store is what we use.
      priv[0] = priv[0]! & 248;
      priv[31] = (priv[31]! & 127) | 64;
      const pub = this.crypto.x25519.publicFromPrivate(priv);
      // A peer with our own public key would be talking to itself (wireguard-go removes it).
      const self = this.byKey.get(keyHex(pub));
      if (self !== undefined) this.removePeerObject(self);
      this.identity = { privateKey: priv, publicKey: pub };
    }
    this.checker.init(this.identity?.publicKey ?? null);
    const now = this.clock.now();
    for (const peer of this.byKey.values()) {
      this.precompute(peer);
      this.expireCurrentKeypairs(peer, now);
    }
  }

  /** Our static public key, or null when no private key is set. */
  publicKey(): Uint8Array | null {
    return this.identity === null ? null : this.identity.publicKey.slice();
  }

  /** Creates or updates the peer with this public key. Throws on bad configuration, changing nothing. */
  setPeer(publicKey: Uint8Array, cfg: PeerConfig): void {
    if (publicKey.length !== 32) throw new RangeError(`peer public key must be 32 bytes, got ${publicKey.length}`);
    const prefixes: Prefix[] = (cfg.allowedIPs ?? []).map((s) => parsePrefix(s));
    if (cfg.presharedKey != null && cfg.presharedKey.length !== 32) {
      throw new RangeError(`preshared key must be 32 bytes, got ${cfg.presharedKey.length}`);
    }
    const ka = cfg.persistentKeepalive;
    if (ka !== undefined && !(Number.isInteger(ka) && ka >= 0 && ka <= 65535)) {
      throw new RangeError(`persistent keepalive must be 0..65535 seconds, got ${ka}`);
    }
    if (this.identity !== null && equalBytes(publicKey, this.identity.publicKey)) {
      this.log(`ignoring peer ${keyHex(publicKey).slice(0, 8)}: it has our own public key`);
      return;
    }
    let peer = this.byKey.get(keyHex(publicKey));
    if (peer === undefined) {
      peer = new Peer(this.crypto, publicKey);
      this.byKey.set(peer.id, peer);
      this.precompute(peer);
    }
    if (cfg.presharedKey !== undefined) {
      peer.handshake.presharedKey = cfg.presharedKey === null ? new Uint8Array(32) : cfg.presharedKey.slice();
    }
    if (cfg.endpoint !== undefined) peer.endpoint = cfg.endpoint;
    // A map re-sends every peer: an unchanged set costs O(its prefixes), not a rebuild of the table.
    if (cfg.replaceAllowedIPs === true && !this.allowed.hasExactly(peer, prefixes.map(formatPrefix))) {
      this.allowed.removeValue(peer);
      for (const p of prefixes) this.allowed.insert(p, peer);
    } else if (cfg.replaceAllowedIPs !== true) {
      for (const p of prefixes) this.allowed.insert(p, peer);
    }
    if (ka !== undefined) {
      const old = peer.persistentKeepalive;
      peer.persistentKeepalive = ka;
      // Turning it on sends a keepalive right away (wireguard-go uapi), here on the next tick.
      if (old === 0 && ka > 0) peer.timers.persistentKeepalive = this.clock.now();
      if (ka === 0) peer.timers.persistentKeepalive = Infinity;
    }
  }

  /** Removes a peer and everything it owns. */
  removePeer(publicKey: Uint8Array): void {
    const peer = this.byKey.get(keyHex(publicKey));
    if (peer !== undefined) this.removePeerObject(peer);
  }

  /** Removes every peer. */
  removeAllPeers(): void {
    for (const peer of [...this.byKey.values()]) this.removePeerObject(peer);
  }

  /**
   * Calls f for each peer that has moved bytes (rx or tx non-zero) with its hex key, public key
   * (not a copy: do not change it) and byte counts. Allocates nothing: for per-second sampling,
   * where peers() would copy every peer of a large tailnet.
   */
  forEachPeerTraffic(f: (id: string, publicKey: Uint8Array, rxBytes: number, txBytes: number) => void): void {
    for (const p of this.byKey.values()) {
      if (p.rxBytes !== 0 || p.txBytes !== 0) f(p.id, p.publicKey, p.rxBytes, p.txBytes);
    }
  }

  /** A snapshot of every peer. */
  peers(): PeerStatus[] {
    return [...this.byKey.values()].map((p) => ({
      publicKey: p.publicKey.slice(),
      presharedKey: p.handshake.presharedKey.slice(),
      endpoint: p.endpoint,
      allowedIPs: this.allowed.prefixesOf(p),
      lastHandshakeWallMs: p.lastHandshakeWallMs,
      rxBytes: p.rxBytes,
      txBytes: p.txBytes,
      persistentKeepalive: p.persistentKeepalive,
    }));
  }

  // ---- outbound ------------------------------------------------------------------------------

  /**
   * Outbound: an IP packet at buf[off, off+len). There are >= 16 bytes of headroom before off and
   * the buffer's room after off is `cap` bytes (>= len + 16 + 15). Encrypts in place (header at
   * off-16) and calls sink.sendUdp; without a session, stages a copy (max 128, oldest dropped) and
   * starts a handshake. No matching allowed IP: dropped and counted. A batched device only queues
   * the seal: the bytes must stay put until flush(), which seals and sends.
   */
  sendPacketInPlace(buf: Uint8Array, off: number, len: number, cap: number, sink: WgSink): void {
    this.sendPacket(buf, off, len, cap, sink);
    if (!this.batched) this.flush(sink);
  }

  private sendPacket(buf: Uint8Array, off: number, len: number, cap: number, sink: WgSink): void {
    if (off < TRANSPORT_HEADER_SIZE || cap < len + 31 || off + cap > buf.length) {
      this.c.dropTxBadBuffer++;
      return;
    }
    const v = len > 0 ? buf[off]! >> 4 : 0;
    if (!((v === 4 && len >= 20) || (v === 6 && len >= 40))) {
      this.c.dropTxNotIP++;
      return;
    }
    const peer = this.allowed.lookupDestination(buf, off, len);
    if (peer === undefined) {
      this.c.dropTxNoRoute++;
      return;
    }
    const now = this.clock.now();
    const kp = peer.keypairs.current;
    if (peer.staged.length === 0 && kp !== null && this.usableForSending(kp, now)) {
      this.queueSeal(peer, kp, buf, off, len, sink);
      return;
    }
    if (!peer.stage(buf, off, len)) this.c.dropTxStagedOverflow++;
    this.sendStaged(peer, sink, now);
  }

  private usableForSending(kp: Keypair, now: number): boolean {
    return kp.sendCounter < REJECT_AFTER_MESSAGES && now - kp.created < REJECT_AFTER_TIME_MS;
  }

  /**
   * Takes a counter from kp, writes the transport header at off-16 and the zero padding, and queues
   * the seal of buf[off, off+padded) (wireguard-go SendStagedPackets + the first half of
   * RoutineEncryption); flush() seals the queue in one call and sends (finishSeal).
   */
  private queueSeal(peer: Peer, kp: Keypair, buf: Uint8Array, off: number, len: number, sink: WgSink): void {
    const to = peer.endpoint;
    if (to === null) {
      this.c.dropTxNoEndpoint++;
      return;
    }
    if (this.nSeal === MAX_QUEUED_JOBS) {
      if (this.flushing) {
        this.c.dropTxQueueFull++;
        return;
      }
      this.flush(sink);
    }
    const counter = kp.sendCounter++;
    const padded = paddedLength(len, this.mtu);
    if (padded > len) buf.fill(0, off + len, off + padded);
    writeTransportHeader(buf, off - TRANSPORT_HEADER_SIZE, kp.remoteIndexBytes, counter);
    const i = this.nSeal++;
    this.sealJobs.set(i, kp.sendKey, counter, off, padded);
    this.sealBuf[i] = buf;
    this.sealPeer[i] = peer;
    this.sealTo[i] = to;
    this.sealInner[i] = len;
  }

  /** Sends sealed job i (wireguard-go RoutineSequentialSender): timers, the sink, rekey checks. */
  private finishSeal(i: number, sink: WgSink, now: number): void {
    const peer = this.sealPeer[i]!, buf = this.sealBuf[i]!, to = this.sealTo[i]!;
    this.sealBuf[i] = undefined;
    const off = this.sealJobs.offs[i]!;
    const total = TRANSPORT_HEADER_SIZE + this.sealJobs.lens[i]! + 16;
    const t = peer.timers;
    t.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    t.anyAuthenticatedPacketSent();
    sink.sendUdp(buf, off - TRANSPORT_HEADER_SIZE, total, to);
    peer.txBytes += total;
    if (this.sealInner[i]! > 0) {
      this.c.txData++;
      if (!PeerTimers.pending(t.newHandshake)) t.dataSent(now, this.jitter());
    } else {
      this.c.txKeepalives++;
    }
    this.keepKeyFreshSending(peer, sink, now);
  }

  /**
   * Seals and opens everything queued, then finishes each packet in order: sends sealed datagrams
   * and delivers opened packets (see receiveTransport). The I/O layer of a batched device calls it
   * once per batch, before it sends or writes, and before it reuses any buffer it passed in. Finishing
   * a packet may queue more (a confirmed keypair sends the staged packets); those are done here too.
   * Re-entrant calls (from inside the sink) return at once.
   */
  flush(sink: WgSink): void {
    if (this.flushing) return;
    this.flushing = true;
    try {
      const now = this.clock.now();
      while (this.nOpen > 0 || this.nSeal > 0) {
        if (this.nOpen > 0) this.flushOpens(sink, now);
        if (this.nSeal > 0) this.flushSeals(sink, now);
      }
    } finally {
      this.flushing = false;
      // Only an exception (a sink that threw) leaves jobs here: drop them rather than seal twice.
      if (this.nSeal > 0 || this.nOpen > 0) {
        this.sealBuf.fill(undefined, 0, this.nSeal);
        this.openBuf.fill(undefined, 0, this.nOpen);
        this.nSeal = this.nOpen = 0;
      }
      const r = this.releaseLater;
      if (r.length > 0) {
        for (let i = 0; i < r.length; i++) r[i]!.zero();
        r.length = 0;
      }
    }
  }

  private flushSeals(sink: WgSink, now: number): void {
    const jobs = this.sealJobs, bufs = this.sealBuf;
    let sealed = 0;
    for (let i = 0; i < this.nSeal; i++) {
      if (i === sealed) {
        // One call per run of jobs in the same buffer (a TUN batch is one run).
        const end = this.nSeal;
        for (let s = sealed; s < end;) {
          const buf = bufs[s]!;
          let e = s + 1;
          while (e < end && bufs[e] === buf) e++;
          this.transport.seal(buf, jobs, s, e);
          s = e;
        }
        sealed = end;
      }
      this.finishSeal(i, sink, now);
    }
    this.nSeal = 0;
  }

  private flushOpens(sink: WgSink, now: number): void {
    const jobs = this.openJobs, bufs = this.openBuf;
    let opened = 0;
    for (let i = 0; i < this.nOpen; i++) {
      if (i === opened) {
        const end = this.nOpen;
        for (let s = opened; s < end;) {
          const buf = bufs[s]!;
          let e = s + 1;
          while (e < end && bufs[e] === buf) e++;
          this.transport.open(buf, jobs, s, e);
          s = e;
        }
        opened = end;
      }
      this.finishOpen(i, sink, now);
    }
    this.nOpen = 0;
  }

  /** Sends the staged packets if there is a usable session, else starts a handshake. */
  private sendStaged(peer: Peer, sink: WgSink, now: number): void {
    if (peer.staged.length === 0) return;
    const kp = peer.keypairs.current;
    if (kp === null || !this.usableForSending(kp, now)) {
      this.sendInitiation(peer, false, sink, now);
      return;
    }
    while (peer.staged.length > 0) {
      // keepKeyFreshSending may start a handshake meanwhile; the keypair stays usable until its limits.
      if (!this.usableForSending(kp, now)) {
        this.sendInitiation(peer, false, sink, now);
        return;
      }
      const s = peer.staged.shift()!;
      this.queueSeal(peer, kp, s.buf, STAGED_HEADROOM, s.len, sink);
    }
  }

  private sendKeepalive(peer: Peer, sink: WgSink, now: number): void {
    if (peer.staged.length === 0) peer.stageKeepalive();
    this.sendStaged(peer, sink, now);
  }

  private keepKeyFreshSending(peer: Peer, sink: WgSink, now: number): void {
    const kp = peer.keypairs.current;
    if (kp === null) return;
    if (kp.sendCounter > REKEY_AFTER_MESSAGES || (kp.isInitiator && now - kp.created > REKEY_AFTER_TIME_MS)) {
      this.sendInitiation(peer, false, sink, now);
    }
  }

  private keepKeyFreshReceiving(peer: Peer, sink: WgSink, now: number): void {
    if (peer.timers.sentLastMinuteHandshake) return;
    const kp = peer.keypairs.current;
    if (kp !== null && kp.isInitiator && now - kp.created > REJECT_AFTER_TIME_MS - KEEPALIVE_TIMEOUT_MS - REKEY_TIMEOUT_MS) {
      peer.timers.sentLastMinuteHandshake = true;
      this.sendInitiation(peer, false, sink, now);
    }
  }

  /** Sends a handshake initiation, at most one per REKEY_TIMEOUT (wireguard-go SendHandshakeInitiation). */
  private sendInitiation(peer: Peer, isRetry: boolean, sink: WgSink, now: number): void {
    if (!isRetry) peer.timers.handshakeAttempts = 0;
    const hs = peer.handshake;
    if (now - hs.lastSentHandshake < REKEY_TIMEOUT_MS) return;
    hs.lastSentHandshake = now;
    if (this.identity === null) return;
    if (hs.localIndex !== 0) this.index.delete(hs.localIndex);
    const idx = this.newIndex(peer);
    const msg = createInitiation(this.noise, this.identity, hs, idx, this.random, this.clock.wall());
    if (msg === null) {
      this.index.delete(idx);
      hs.localIndex = 0;
      this.log(`peer ${peer.id.slice(0, 8)}: cannot create initiation (invalid static key)`);
      return;
    }
    peer.cookies.addMacs(msg, now);
    peer.timers.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    peer.timers.anyAuthenticatedPacketSent();
    if (peer.endpoint !== null) {
      sink.sendUdp(msg, 0, msg.length, peer.endpoint);
      peer.txBytes += msg.length;
      this.c.txInitiations++;
    } else {
      this.c.dropTxNoEndpoint++;
    }
    peer.timers.handshakeInitiated(now, this.jitter());
    peer.answered = null;
    // Only a handshake's first initiation is repeated: a peer that missed it because it did not
    // know us yet gets it again soon; one that stays silent costs no more than the usual retries.
    peer.pendingInitiation = null;
    peer.timers.resendInitiation = Infinity;
    if (this.initiationResendMs > 0 && !isRetry && peer.endpoint !== null) {
      peer.pendingInitiation = msg;
      peer.pendingInitiationSentAt = now;
      peer.timers.resendInitiation = now + this.initiationResendMs;
    }
  }

  /**
   * Sends the pending initiation again, unchanged, while its handshake still waits for a response;
   * within INITIATION_COPY_GAP_MS of its last send, at the end of that gap instead.
   */
  private resendInitiation(peer: Peer, sink: WgSink, now: number): void {
    const msg = peer.pendingInitiation;
    const t = peer.timers;
    if (msg === null || peer.endpoint === null || peer.handshake.state !== HandshakeState.InitiationCreated) {
      peer.pendingInitiation = null;
      return;
    }
    const gapEnd = peer.pendingInitiationSentAt + INITIATION_COPY_GAP_MS;
    if (now < gapEnd) {
      // Too soon after the last copy (see INITIATION_COPY_GAP_MS): it goes when the gap ends.
      if (gapEnd < t.resendInitiation) t.resendInitiation = gapEnd;
      return;
    }
    sink.sendUdp(msg, 0, msg.length, peer.endpoint);
    peer.pendingInitiationSentAt = now;
    peer.txBytes += msg.length;
    this.c.txInitiationResends++;
    // No repeat within half an interval of the retry, which sends a new initiation anyway.
    const next = now + this.initiationResendMs;
    if (next + this.initiationResendMs / 2 <= t.retransmitHandshake) t.resendInitiation = next;
    else peer.pendingInitiation = null;
  }

  private sendResponse(peer: Peer, sink: WgSink, now: number, to: Endpoint): void {
    const hs = peer.handshake;
    hs.lastSentHandshake = now;
    if (hs.localIndex !== 0) {
      this.index.delete(hs.localIndex);
      hs.localIndex = 0;
    }
    const idx = this.newIndex(peer);
    const msg = createResponse(this.noise, hs, idx, this.random);
    if (msg === null) {
      this.index.delete(idx);
      this.c.dropRxHandshakeInvalid++;
      return;
    }
    peer.cookies.addMacs(msg, now);
    if (!this.beginSession(peer, now)) return;
    peer.timers.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    peer.timers.anyAuthenticatedPacketSent();
    sink.sendUdp(msg, 0, msg.length, to);
    peer.txBytes += msg.length;
    this.c.txResponses++;
  }

  /** Turns a finished handshake into a keypair in the right slot (wireguard-go BeginSymmetricSession). */
  private beginSession(peer: Peer, now: number): boolean {
    const hsIndex = peer.handshake.localIndex;
    const keys = deriveKeys(this.noise, peer.handshake);
    if (keys === null) return false;
    const kp = new Keypair(this.transport, keys, now);
    // The handshake's index now names the keypair.
    this.index.set(hsIndex, { peer, keypair: kp });
    peer.keypairs.install(kp, this.releaseKeypair);
    peer.timers.sessionDerived(now);
    return true;
  }

  // ---- inbound -------------------------------------------------------------------------------

  /**
   * Inbound: a UDP datagram buf[off, off+len) from `from`. Transport data is decrypted in place and
   * the IP packet passed to sink.writeTun; handshakes are answered through sink.sendUdp; junk,
   * replays and bad MACs are dropped and counted. Never throws for bad input. A batched device
   * only queues the open of a transport message: the bytes must stay put until flush(), which opens
   * and delivers; a handshake message first flushes what is queued, so packets are handled in order.
   */
  receiveDatagramInPlace(buf: Uint8Array, off: number, len: number, from: Endpoint, sink: WgSink): void {
    const type = messageTypeOf(buf, off, len);
    if (type === MessageType.Transport) {
      this.receiveTransport(buf, off, len, from, sink);
      if (!this.batched) this.flush(sink);
      return;
    }
    if (this.nOpen > 0 || this.nSeal > 0) this.flush(sink);
    switch (type) {
      case MessageType.Initiation:
        this.receiveHandshake(MessageType.Initiation, buf.subarray(off, off + len), from, sink);
        break;
      case MessageType.Response:
        this.receiveHandshake(MessageType.Response, buf.subarray(off, off + len), from, sink);
        break;
      case MessageType.CookieReply:
        this.receiveCookieReply(buf.subarray(off, off + len));
        break;
      default:
        this.c.dropRxJunk++;
    }
    // A completed handshake may have queued the staged packets or a keepalive.
    if (!this.batched) this.flush(sink);
  }

  /**
   * The first half of a transport message (wireguard-go RoutineReceiveIncoming): keypair by index,
   * age, counter, a replay pre-check that changes nothing, then queues the open; finishOpen does
   * the rest after flush() opened the queue in one call.
   */
  private receiveTransport(buf: Uint8Array, off: number, len: number, from: Endpoint, sink: WgSink): void {
    const entry = this.index.get(readU32LE(buf, off + Offsets.transport.receiver));
    if (entry === undefined || entry.keypair === null) {
      this.c.dropRxUnknownIndex++;
      return;
    }
    const { peer, keypair: kp } = entry;
    const now = this.clock.now();
    if (now - kp.created >= REJECT_AFTER_TIME_MS) {
      this.c.dropRxExpiredKeypair++;
      return;
    }
    const counter = readCounter(buf, off + Offsets.transport.counter);
    if (counter < 0) {
      this.c.dropRxCounterTooLarge++;
      return;
    }
    if (!kp.replay.check(counter, REJECT_AFTER_MESSAGES)) {
      this.c.dropRxReplay++;
      return;
    }
    if (this.nOpen === MAX_QUEUED_JOBS) {
      if (this.flushing) {
        this.c.dropRxQueueFull++;
        return;
      }
      this.flush(sink);
    }
    const i = this.nOpen++;
    this.openJobs.set(i, kp.recvKey, counter, off + TRANSPORT_HEADER_SIZE, len - TRANSPORT_HEADER_SIZE);
    this.openBuf[i] = buf;
    this.openPeer[i] = peer;
    this.openKp[i] = kp;
    this.openFrom[i] = from;
  }

  /** Finishes opened job i (wireguard-go RoutineSequentialReceiver), in arrival order. */
  private finishOpen(i: number, sink: WgSink, now: number): void {
    const jobs = this.openJobs;
    const buf = this.openBuf[i]!, peer = this.openPeer[i]!, kp = this.openKp[i]!, from = this.openFrom[i]!;
    this.openBuf[i] = undefined;
    this.openKp[i] = undefined;
    this.openFrom[i] = undefined;
    if (jobs.ok[i] !== 1) {
      this.c.dropRxDecryptFailed++;
      return;
    }
    const p = jobs.offs[i]!;
    // Read again from the header rather than from the Float64Array: a double from there is boxed
    // when stored into the replay window's fields.
    const counter = readCounter(buf, p - TRANSPORT_HEADER_SIZE + Offsets.transport.counter);
    const len = jobs.lens[i]! + TRANSPORT_HEADER_SIZE;
    const replay = kp.replay, skipped = replay.skipped, late = replay.late;
    if (!replay.validate(counter, REJECT_AFTER_MESSAGES)) {
      this.c.dropRxReplay++;
      return;
    }
    // The path's loss, by the sender's counters (LossMonitor reads these).
    this.c.rxTransport++;
    this.c.rxCountersSkipped += replay.skipped - skipped;
    this.c.rxCountersLate += replay.late - late;
    // Authenticated: the peer is at `from` now (roaming, whitepaper 2.1); a routing Bind's endpoint
    // (magicsock) is told instead and decides itself.
    if (this.roaming) peer.endpoint = from;
    else peer.endpoint?.noteAuthenticatedFrom(from);
    // The peer sends under the keypair we took: it kept that answer (see takeAnotherAnswer).
    if (peer.answered !== null && peer.answered.keypair === kp) peer.answered = null;
    if (peer.keypairs.receivedWith(kp, this.releaseKeypair)) {
      peer.timers.handshakeComplete();
      peer.lastHandshakeWallMs = this.clock.wall();
      this.c.handshakesCompleted++;
      this.sendStaged(peer, sink, now);
    }
    this.keepKeyFreshReceiving(peer, sink, now);
    peer.timers.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    peer.timers.anyAuthenticatedPacketReceived();
    peer.rxBytes += len;
    const plainLen = len - TRANSPORT_MIN_SIZE;
    if (plainLen === 0) {
      this.c.rxKeepalives++;
      return;
    }
    peer.timers.dataReceived(now);
    // Strip padding using the inner IP length, then check the source against the sender's allowed IPs.
    const v = buf[p]! >> 4;
    let innerLen: number;
    if (v === 4 && plainLen >= 20) {
      innerLen = (buf[p + 2]! << 8) | buf[p + 3]!;
      if (innerLen < 20) innerLen = plainLen + 1;
    } else if (v === 6 && plainLen >= 40) {
      innerLen = 40 + ((buf[p + 4]! << 8) | buf[p + 5]!);
    } else {
      innerLen = plainLen + 1;
    }
    if (innerLen > plainLen) {
      this.c.dropRxBadInner++;
      return;
    }
    if (!this.sourceAllowed(peer, buf, p, innerLen)) {
      this.c.dropRxSourceNotAllowed++;
      return;
    }
    this.c.rxData++;
    sink.writeTun(buf, p, innerLen);
  }

  /**
   * Cryptokey routing on receive: the IP packet at buf[p, p+len) (at least a full header) has a
   * source the allowed-IPs table gives to `peer`. The answer for the peer's last source is kept in
   * peer.rxSource while the table's version holds: a download's packets all come from one address.
   */
  private sourceAllowed(peer: Peer, buf: Uint8Array, p: number, len: number): boolean {
    const c = peer.rxSource, ver = this.allowed.version;
    if (buf[p]! >> 4 === 4) {
      const a = (buf[p + 12]! << 24) | (buf[p + 13]! << 16) | (buf[p + 14]! << 8) | buf[p + 15]!;
      if (c[0] === ver && c[1] === a) return true;
      if (this.allowed.lookupSource(buf, p, len) !== peer) return false;
      c[0] = ver;
      c[1] = a;
      return true;
    }
    const a0 = readU32BEInt(buf, p + 8), a1 = readU32BEInt(buf, p + 12), a2 = readU32BEInt(buf, p + 16), a3 = readU32BEInt(buf, p + 20);
    if (c[2] === ver && c[3] === a0 && c[4] === a1 && c[5] === a2 && c[6] === a3) return true;
    if (this.allowed.lookupSource(buf, p, len) !== peer) return false;
    c[2] = ver;
    c[3] = a0;
    c[4] = a1;
    c[5] = a2;
    c[6] = a3;
    return true;
  }

  private receiveHandshake(type: 1 | 2, msg: Uint8Array, from: Endpoint, sink: WgSink): void {
    if (!this.checker.checkMac1(msg)) {
      this.c.dropRxBadMac1++;
      return;
    }
    const now = this.clock.now();
    this.noteHandshakeLoad(now);
    if (this.underLoad) {
      if (!this.checker.checkMac2(msg, from.addrBytes, now)) {
        const reply = this.checker.createReply(msg, readU32LE(msg, 4), from.addrBytes, now);
        sink.sendUdp(reply, 0, COOKIE_REPLY_SIZE, from);
        this.c.txCookieReplies++;
        this.c.dropRxNeedCookie++;
        return;
      }
      // wireguard-go limits per source IP (not port): a cookie is per address and port, so this is the
      // stricter key. Endpoints that are not addresses (a DERP peer) name their real source instead.
      if (!this.limiter.allow(from.limiterKey, now)) {
        this.c.dropRxRateLimited++;
        return;
      }
    }
    const id = this.identity;
    if (id === null) {
      this.c.dropRxNoPrivateKey++;
      return;
    }
    if (type === MessageType.Initiation) {
      const r = consumeInitiation(this.noise, id, msg, (k) => this.byKey.get(keyHex(k)), now);
      switch (r) {
        case 'invalid': this.c.dropRxHandshakeInvalid++; return;
        case 'unknownPeer': this.c.dropRxUnknownPeer++; return;
        case 'replay': this.c.dropRxReplayedInitiation++; return;
        case 'flood': this.c.dropRxInitiationFlood++; return;
      }
      const peer = r;
      this.c.rxInitiations++;
      peer.rxBytes += msg.length;
      if (this.roaming) peer.endpoint = from;
      else peer.endpoint?.noteAuthenticatedFrom(from);
      peer.timers.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
      peer.timers.anyAuthenticatedPacketReceived();
      this.sendResponse(peer, sink, now, from);
      return;
    }
    // Response: the receiver index names our pending handshake.
    const entry = this.index.get(readU32LE(msg, Offsets.response.receiver));
    if (entry !== undefined && entry.keypair !== null && this.takeAnotherAnswer(entry.peer, entry.keypair, id, msg, from, sink, now)) return;
    if (entry === undefined || entry.keypair !== null) {
      this.c.dropRxUnknownIndex++;
      return;
    }
    const peer = entry.peer;
    const hs = peer.handshake;
    // Copies: consumeResponse replaces hash and chainKey, and deriveKeys zeroes the handshake.
    const before = { hash: hs.hash.slice(), chainKey: hs.chainKey.slice(), localEphemeral: hs.localEphemeral.slice(), localIndex: hs.localIndex };
    if (hs.state !== HandshakeState.InitiationCreated || !consumeResponse(this.noise, id, hs, msg)) {
      this.c.dropRxHandshakeInvalid++;
      return;
    }
    this.c.rxResponses++;
    peer.rxBytes += msg.length;
    if (this.roaming) peer.endpoint = from;
    else peer.endpoint?.noteAuthenticatedFrom(from);
    peer.timers.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    peer.timers.anyAuthenticatedPacketReceived();
    if (!this.beginSession(peer, now)) return;
    const eph = Offsets.response.ephemeral;
    peer.answered = { ...before, at: now, keypair: peer.keypairs.current!, seen: [msg.slice(eph, eph + 32)] };
    peer.timers.handshakeComplete();
    peer.pendingInitiation = null;
    peer.lastHandshakeWallMs = this.clock.wall();
    this.c.handshakesCompleted++;
    this.sendKeepalive(peer, sink, now);
  }

  /**
   * Another answer to our last answered initiation, while nothing has arrived under the keypair
   * we took from the first: the peer answered the initiation twice, and keeps only the last
   * answer's keypair. wireguard-go can: it checks an initiation's replay and flood limits under a
   * read lock and records them later (ConsumeMessageInitiation), so two copies its handshake
   * goroutines take together both pass (copies come from our initiationResendMs repeats, and from
   * a path that goes over DERP and UDP at once). Taking the first answer only, our data would go
   * under a keypair the peer has dropped, unanswered until the 15 s no-reply handshake. So the
   * later answer's keypair replaces the current one (same index), and a keepalive under it
   * confirms it to the peer. Within REKEY_TIMEOUT of the first answer; an answer seen before
   * changes nothing. False: not such an answer (the caller counts the drop).
   */
  private takeAnotherAnswer(peer: Peer, kp: Keypair, id: StaticIdentity, msg: Uint8Array, from: Endpoint, sink: WgSink, now: number): boolean {
    const a = peer.answered;
    if (a === null || a.keypair !== kp || peer.keypairs.current !== kp || now - a.at >= REKEY_TIMEOUT_MS) return false;
    const eph = Offsets.response.ephemeral;
    const e = msg.subarray(eph, eph + 32);
    for (const s of a.seen) if (equalBytes(s, e)) return false;
    const hs = new Handshake(peer.publicKey);
    hs.presharedKey = peer.handshake.presharedKey;
    hs.hash = a.hash.slice();
    hs.chainKey = a.chainKey.slice();
    hs.localEphemeral.set(a.localEphemeral);
    hs.localIndex = a.localIndex;
    hs.state = HandshakeState.InitiationCreated;
    const keys = consumeResponse(this.noise, id, hs, msg) ? deriveKeys(this.noise, hs) : null;
    if (keys === null) return false;
    const next = new Keypair(this.transport, keys, now);
    this.index.set(a.localIndex, { peer, keypair: next });
    peer.keypairs.replaceCurrent(kp, next, this.releaseKeypair);
    a.keypair = next;
    a.seen.push(e.slice());
    this.c.rxResponses++;
    this.c.rxResponsesReplacing++;
    peer.rxBytes += msg.length;
    if (this.roaming) peer.endpoint = from;
    else peer.endpoint?.noteAuthenticatedFrom(from);
    peer.timers.anyAuthenticatedPacketTraversal(now, peer.persistentKeepalive);
    peer.timers.anyAuthenticatedPacketReceived();
    this.log(`peer ${peer.id.slice(0, 8)}: answered our initiation again; using the later answer's keys`);
    this.sendKeepalive(peer, sink, now);
    return true;
  }

  private receiveCookieReply(msg: Uint8Array): void {
    const entry = this.index.get(readU32LE(msg, Offsets.cookieReply.receiver));
    if (entry === undefined) {
      this.c.dropRxUnknownIndex++;
      return;
    }
    if (entry.peer.cookies.consumeReply(msg, this.clock.now())) {
      this.c.rxCookieReplies++;
      // The pending initiation's mac2 is stale now: the retry makes a new one with the cookie.
      entry.peer.pendingInitiation = null;
      entry.peer.timers.resendInitiation = Infinity;
    } else {
      this.c.dropRxBadCookieReply++;
    }
  }

  /**
   * The runner's handshake queue holds `depth` messages (called before each one is processed): at
   * UNDER_LOAD_QUEUE_DEPTH or more the device is under load, and stays so for UNDER_LOAD_AFTER_MS
   * after the queue drains (wireguard-go IsUnderLoad).
   */
  noteHandshakeQueueDepth(depth: number): void {
    if (depth < UNDER_LOAD_QUEUE_DEPTH) return;
    const now = this.clock.now();
    if (now >= this.autoUnderLoadUntil) this.c.underLoadEntered++;
    this.autoUnderLoadUntil = now + UNDER_LOAD_AFTER_MS;
  }

  private noteHandshakeLoad(now: number): void {
    if (now - this.loadWindowStart >= 1000) {
      this.loadWindowStart = now;
      this.loadWindowCount = 0;
    }
    if (++this.loadWindowCount > UNDER_LOAD_HANDSHAKES_PER_SECOND) {
      if (now >= this.autoUnderLoadUntil) this.c.underLoadEntered++;
      this.autoUnderLoadUntil = now + UNDER_LOAD_AFTER_MS;
    }
  }

  // ---- timers --------------------------------------------------------------------------------

  /** Runs due timers (wireguard-go device/timers.go). Call at least every 100 ms. */
  tick(sink: WgSink): void {
    this.runTimers(sink);
    if (!this.batched) this.flush(sink);
  }

  private runTimers(sink: WgSink): void {
    const now = this.clock.now();
    for (const peer of this.byKey.values()) {
      const t = peer.timers;
      if (now >= t.retransmitHandshake) {
        t.retransmitHandshake = Infinity;
        this.expiredRetransmitHandshake(peer, sink, now);
      }
      if (now >= t.sendKeepalive) {
        t.sendKeepalive = Infinity;
        this.sendKeepalive(peer, sink, now);
        if (t.needAnotherKeepalive) {
          t.needAnotherKeepalive = false;
          t.sendKeepalive = now + KEEPALIVE_TIMEOUT_MS;
        }
      }
      if (now >= t.newHandshake) {
        t.newHandshake = Infinity;
        this.log(`peer ${peer.id.slice(0, 8)}: no reply to data for ${(KEEPALIVE_TIMEOUT_MS + REKEY_TIMEOUT_MS) / 1000} s, new handshake`);
        this.sendInitiation(peer, false, sink, now);
      }
      if (now >= t.zeroKeyMaterial) {
        t.zeroKeyMaterial = Infinity;
        this.zeroAndFlushAll(peer);
      }
      if (now >= t.persistentKeepalive) {
        t.persistentKeepalive = Infinity;
        if (peer.persistentKeepalive > 0) this.sendKeepalive(peer, sink, now);
      }
      if (now >= t.resendInitiation) {
        t.resendInitiation = Infinity;
        this.resendInitiation(peer, sink, now);
      }
    }
    if (now - this.lastCollect >= 1000) {
      this.lastCollect = now;
      this.limiter.collect(now);
    }
  }

  /**
   * Monotonic ms of the earliest pending timer (Infinity when none). Optional for the I/O layer:
   * calling tick() at that time, rather than only on its 100 ms beat, makes retransmissions as
   * precise as wireguard-go's and makes crossing initiations (both sides retrying in the same
   * beat) rarer.
   */
  nextTimerDue(): number {
    let due = Infinity;
    for (const peer of this.byKey.values()) {
      const t = peer.timers;
      due = Math.min(due, t.retransmitHandshake, t.sendKeepalive, t.newHandshake, t.zeroKeyMaterial, t.persistentKeepalive, t.resendInitiation);
    }
    return due;
  }

  private expiredRetransmitHandshake(peer: Peer, sink: WgSink, now: number): void {
    const t = peer.timers;
    if (t.handshakeAttempts > MAX_TIMER_HANDSHAKES) {
      this.log(`peer ${peer.id.slice(0, 8)}: handshake did not complete after ${MAX_TIMER_HANDSHAKES + 2} attempts, giving up`);
      this.c.handshakesGivenUp++;
      t.sendKeepalive = Infinity;
      this.c.dropTxStagedFlushed += peer.staged.length;
      peer.staged.length = 0;
      if (!PeerTimers.pending(t.zeroKeyMaterial)) t.zeroKeyMaterial = now + ZERO_KEY_MATERIAL_AFTER_MS;
      return;
    }
    t.handshakeAttempts++;
    this.sendInitiation(peer, true, sink, now);
  }

  private zeroAndFlushAll(peer: Peer): void {
    peer.keypairs.clear(this.releaseKeypair);
    peer.pendingInitiation = null;
    peer.answered = null;
    const hs = peer.handshake;
    if (hs.localIndex !== 0) this.index.delete(hs.localIndex);
    hs.clear();
    this.c.dropTxStagedFlushed += peer.staged.length;
    peer.staged.length = 0;
    this.c.keyZeroings++;
  }

  // ---- helpers -------------------------------------------------------------------------------

  private precompute(peer: Peer): void {
    const hs = peer.handshake;
    const id = this.identity;
    if (id === null) hs.precomputedStaticStatic = null;
    else hs.deferStaticStatic(() => this.crypto.x25519.shared(id.privateKey, hs.remoteStatic));
  }

  /** wireguard-go ExpireCurrentKeypairs: forget the handshake and stop sending on current/next. */
  private expireCurrentKeypairs(peer: Peer, now: number): void {
    const hs = peer.handshake;
    if (hs.localIndex !== 0) this.index.delete(hs.localIndex);
    hs.clear();
    hs.lastSentHandshake = now - REKEY_TIMEOUT_MS - 1000;
    if (peer.keypairs.current !== null) peer.keypairs.current.sendCounter = REJECT_AFTER_MESSAGES;
    if (peer.keypairs.next !== null) peer.keypairs.next.sendCounter = REJECT_AFTER_MESSAGES;
  }

  private removePeerObject(peer: Peer): void {
    peer.keypairs.clear(this.releaseKeypair);
    peer.answered = null;
    if (peer.handshake.localIndex !== 0) this.index.delete(peer.handshake.localIndex);
    peer.handshake.clear();
    peer.timers.stopAll();
    peer.staged.length = 0;
    this.allowed.removeValue(peer);
    this.byKey.delete(peer.id);
  }

  /**
   * A fresh random index not in use, registered for the peer's handshake. Our indices are 30 bits
   * (1..2^30-1): the index is opaque to the peer, and keeping it a V8 small integer means looking up
   * a received transport packet's index never boxes a number.
   */
  private newIndex(peer: Peer): number {
    for (;;) {
      const b = this.random(4);
      const idx = readU32LE(b, 0) & 0x3fffffff;
      if (idx === 0 || this.index.has(idx)) continue;
      this.index.set(idx, { peer, keypair: null });
      return idx;
    }
  }

  /** 0..REKEY_TIMEOUT_JITTER_MAX_MS-1 from a cheap PRNG (jitter needs no secrecy). */
  private jitter(): number {
    let x = this.jitterState[0]!;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.jitterState[0] = x;
    return (x >>> 0) % REKEY_TIMEOUT_JITTER_MAX_MS;
  }
}
