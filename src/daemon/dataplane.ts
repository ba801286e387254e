// The WireGuard device runner: the middle of the packet path, wiring three layers, each in its own file:
//
//   host device (kernel TUN with offloads, or a userspace stack)      src/tun/tun.ts, src/tun/device.ts
//     -> TunWrapper: local handler, packet filter RunOut / RunIn        src/tun/wrapper.ts
//     -> this runner + the WireGuard Device (sans-I/O core)             src/wg/device.ts
//     -> Bind: the UDP socket (UdpBind) or magicsock, which owns it     src/net/bind.ts, src/magicsock
//        and adds disco, STUN and DERP
//
// Each arrow is one direction of calls: the runner calls down into the wrapper and the bind; they
// call up only through the callbacks the runner gave them (readFromTun, receiveBatch, receiveOne).
// Loops named after wireguard-go's routines:
//   readFromTun    TUN batch -> Device.sendPacketInPlace -> Bind.send ... flushUdp (RoutineReadFromTUN)
//   receiveBatch   UDP batch -> Device.receiveDatagramInPlace -> TunWrapper.write ... flushTun
//                  (RoutineReceiveIncoming); handshake messages are copied into their own queue
//   runHandshakes  the queue, in slices between data batches (RoutineHandshake)
// Nothing is allocated per data packet: packets are encrypted and decrypted in place in the
// receive batches and sent from there by reference.
import { Device, type Clock, type WgSink } from '../wg/device.ts';
import { HandshakeQueue, isHandshakeMessage } from '../wg/handshake-queue.ts';
import { isSackAck, LossMonitor, LOSSY_HOLD_MS } from '../wg/loss.ts';
import { Tun } from '../tun/tun.ts';
import { TunWrapper } from '../tun/wrapper.ts';
import type { HostDevice, LocalPacketHandler } from '../tun/device.ts';
import { UdpBind, type Bind, type BindReceiver } from '../net/bind.ts';
import type { RxBatch } from '../net/batch.ts';
import type { Endpoint, Endpoints } from '../net/endpoint.ts';
import type { Logf } from '../util/log.ts';
import type { PacketFilter } from '../filter/filter.ts';
import type { CryptoBackend } from '../crypto/types.ts';

/** Options for {@link DataPlane.open}. */
export interface DataPlaneOptions {
  /** TUN device name. */
  name: string;
  mtu: number;
  log: Logf;
  /** UDP port to listen on (0 = random), when the data plane opens its own socket. */
  port?: number;
  /** SO_MARK for the UDP socket (0 = none), when the data plane opens its own socket. */
  fwmark?: number;
  /** WireGuard follows peers to their latest source address (default true; false under magicsock). */
  roaming?: boolean;
  /** The host side to use instead of opening TUN device `name` (e.g. a userspace TCP/IP stack). */
  device?: HostDevice;
  /** The socket side to use (magicsock) instead of a plain UdpBind on `port`; closed with the data plane. */
  bind?: Bind;
  /** The WireGuard device's crypto backend (default: the device's default). */
  crypto?: CryptoBackend;
  /** Repeat a handshake's first initiation this often until answered (DeviceOptions.initiationResendMs; default 0, off). */
  initiationResendMs?: number;
  /** How often timers run (ms; default TICK_MS). Tests stretch it to show what runs between beats. */
  tickMs?: number;
}

/** How often timers run (ms); the WireGuard core needs at least every 100 ms. */
const TICK_MS = 100;
/** Time one slice of handshake work may take before data batches get their turn (ms). */
export const HANDSHAKE_SLICE_MS = 2;

/**
 * The device's clock, performance.now() in whole milliseconds, read
 * once per batch and held while the batch runs (as wireguard-go reads the time once per vector).
 * Both choices keep the per-packet path free of allocation: performance.now() allocates about 32
 * bytes per call on Node 20, and a fractional time passed between functions is boxed (16 bytes)
 * where an integer below 2^30 (12.4 days of process uptime; later, 16 bytes per packet) is not. WireGuard's timers are 100 ms and coarser.
 * Outside a batch (configuration calls) it reads the time afresh.
 */
export class BatchClock implements Clock {
  private t = 0;
  private depth = 0;

  /** Reads the time and holds it until the matching release(). Nests. */
  hold(): void {
    if (this.depth++ === 0) this.t = Math.floor(performance.now());
  }

  release(): void {
    if (this.depth > 0) this.depth--;
  }

  now(): number {
    return this.depth > 0 ? this.t : Math.floor(performance.now());
  }

  wall(): number {
    return Date.now();
  }
}

/** A host device, a Bind and a WireGuard {@link Device} with the loops between them. */
export class DataPlane implements BindReceiver {
  readonly name: string;
  readonly mtu: number;
  readonly device: Device;
  /** The TUN-side layer: packet filter and local handler. */
  readonly tun: TunWrapper;
  /** The socket-side layer. */
  readonly sock: Bind;
  /** Handshake messages waiting for their slice. */
  readonly handshakes = new HandshakeQueue();
  private readonly tunRx: RxBatch;
  private readonly sink: WgSink;
  private readonly log: Logf;
  private readonly clock = new BatchClock();
  private ticker: NodeJS.Timeout | undefined;
  /** A timer run before the next beat (runTimersBy). */
  private early: NodeJS.Timeout | undefined;
  private readonly tickMs: number;
  private handshakeTask: NodeJS.Immediate | undefined;
  private readonly runHandshakesBound = (): void => this.runHandshakes();
  private closed = false;
  /** Whether the path loses packets (incoming counters, SACKs coming back; src/wg/loss.ts); GSO is paused while it does. */
  private readonly loss = new LossMonitor();
  private gsoPaused = false;
  private localDrops = 0;
  private lastLocal = 0;
  /** Pure TCP ACKs with SACK blocks that came through the tunnel (what we send is being lost). */
  private rxSackAcks = 0;
  /** MESHD_DISABLE_GSO_PAUSE=1: keep GSO on a lossy path too (for comparisons). */
  private readonly gsoPauseOff = process.env.MESHD_DISABLE_GSO_PAUSE === '1';

  private constructor(opts: DataPlaneOptions, host: HostDevice, bind: Bind) {
    this.name = opts.name;
    this.mtu = opts.mtu;
    this.log = opts.log;
    this.tickMs = opts.tickMs ?? TICK_MS;
    this.device = new Device({ clock: this.clock, log: opts.log, mtu: opts.mtu, roaming: opts.roaming ?? true, batched: true, ...(opts.crypto ? { crypto: opts.crypto } : {}),
      ...(opts.initiationResendMs ? { initiationResendMs: opts.initiationResendMs } : {}) });
    this.tun = new TunWrapper(host, opts.mtu);
    this.sock = bind;
    const tun = this.tun;
    this.sink = {
      sendUdp: (buf, off, len, to) => bind.send(buf, off, len, to),
      writeTun: (buf, off, len) => {
        if (isSackAck(buf, off, len)) this.rxSackAcks++;
        tun.write(buf, off, len);
      },
    };
    this.tunRx = tun.start((b) => this.readFromTun(b), (e) => this.log(`tun read stopped: ${e.message}`));
    bind.shareBuffer(this.tunRx.buf);
  }

  /** Creates the TUN device (MTU set, link up) unless opts.device is given, binds UDP unless opts.bind is given, and starts the loops and timers. */
  static open(opts: DataPlaneOptions): DataPlane {
    const host = opts.device ?? Tun.open(opts.name, { mtu: opts.mtu, up: true });
    let bind: Bind | undefined = opts.bind;
    let dp: DataPlane | undefined;
    try {
      bind ??= new UdpBind({ port: opts.port ?? 0, fwmark: opts.fwmark ?? 0, mtu: opts.mtu, log: opts.log });
      dp = new DataPlane(opts, host, bind);
      bind.open(dp);
      dp.ticker = setInterval(() => dp!.runTimers(), dp.tickMs);
    } catch (e) {
      if (dp) dp.close();
      else { bind?.close(); host.close(); }
      throw e;
    }
    return dp;
  }

  /** Interns endpoints for configuration and for received datagrams (one object per address). */
  get endpoints(): Endpoints {
    return this.sock.endpoints;
  }

  /** The tailnet's packet filter (on the TUN wrapper): RunIn on packets the tunnel delivers, RunOut on packets it takes; none = pass all. */
  get filter(): PacketFilter | undefined {
    return this.tun.filter;
  }

  set filter(f: PacketFilter | undefined) {
    this.tun.filter = f;
  }

  /** Sees every packet from the host first and may consume it (MagicDNS, agent services). */
  get local(): LocalPacketHandler | undefined {
    return this.tun.local;
  }

  set local(h: LocalPacketHandler | undefined) {
    this.tun.local = h;
  }

  /** The UDP port in use. */
  get listenPort(): number {
    return this.sock.port;
  }

  /** The socket mark in use. */
  get fwmark(): number {
    return this.sock.mark;
  }

  /** (Re)binds the UDP socket to `port` (0 = random). Throws EADDRINUSE errors as they are. */
  bind(port: number, force = false): void {
    this.sock.bind(port, force);
  }

  /** Sets SO_MARK on the UDP socket (rebinding it on the same port). */
  setMark(mark: number): void {
    this.sock.setMark(mark);
  }

  /** RoutineReadFromTUN: packets from the host, encrypted in place and sent by reference. */
  private readFromTun(b: RxBatch): void {
    const dev = this.device, sink = this.sink, buf = b.buf, lens = b.lens;
    this.sock.shareBuffer(buf);
    this.clock.hold();
    for (let i = 0; i < b.count; i++) {
      const len = lens[i]!;
      if (len <= 0) continue; // taken by the local handler
      const off = b.offset(i);
      dev.sendPacketInPlace(buf, off, len, b.slotEnd(i) - off, sink);
    }
    this.flushUdp();
    this.flushTun();
    this.clock.release();
  }

  /** RoutineReceiveIncoming: datagrams from the Bind; data is decrypted in place, handshakes are queued. */
  receiveBatch(b: RxBatch): void {
    if (this.closed) return;
    const dev = this.device, sink = this.sink, buf = b.buf, lens = b.lens, hs = this.handshakes;
    this.tun.shareBuffer(buf);
    this.clock.hold();
    let queued = false;
    for (let i = 0; i < b.count; i++) {
      const len = lens[i]!;
      if (len <= 0) continue; // taken by the Bind (STUN, disco)
      const off = b.offset(i);
      if (isHandshakeMessage(buf, off, len)) {
        hs.push(buf, off, len, b.endpoint(i)); // a full queue drops and counts
        queued = true;
        continue;
      }
      dev.receiveDatagramInPlace(buf, off, len, b.endpoint(i), sink);
    }
    this.flushTun();
    this.flushUdp();
    this.clock.release();
    if (queued) this.scheduleHandshakes();
  }

  /** A WireGuard datagram that came another way (DERP): handshakes are queued, the rest handled now. */
  receiveOne(buf: Uint8Array, off: number, len: number, from: Endpoint): void {
    if (this.closed) return;
    if (isHandshakeMessage(buf, off, len)) {
      this.handshakes.push(buf, off, len, from);
      this.scheduleHandshakes();
      return;
    }
    this.clock.hold();
    this.device.receiveDatagramInPlace(buf, off, len, from, this.sink);
    this.clock.release();
    // DERP hands packets up one at a time, many per TCP read: decrypt and write them as one batch when
    // this read is done (the packets stay in the reader's chunk, which is not reused, until then).
    if (!this.oneFlushPending) {
      this.oneFlushPending = true;
      process.nextTick(this.flushOneBound);
    }
  }

  private oneFlushPending = false;
  private readonly flushOneBound = (): void => {
    this.oneFlushPending = false;
    if (this.closed) return;
    this.clock.hold();
    this.flushTun();
    this.flushUdp();
    this.clock.release();
  };

  private scheduleHandshakes(): void {
    if (this.handshakeTask === undefined && this.handshakes.length > 0) this.handshakeTask = setImmediate(this.runHandshakesBound);
  }

  /**
   * RoutineHandshake: answers queued handshake messages for up to HANDSHAKE_SLICE_MS (at least one),
   * then yields to I/O so data batches run between slices. The queue's depth puts the device under
   * load (cookie replies, rate limit) as in wireguard-go.
   */
  runHandshakes(): void {
    this.handshakeTask = undefined;
    if (this.closed) return;
    const hs = this.handshakes, dev = this.device, sink = this.sink, q = hs.buf;
    const deadline = performance.now() + HANDSHAKE_SLICE_MS;
    this.clock.hold();
    do {
      const off = hs.peekOffset();
      if (off < 0) break;
      dev.noteHandshakeQueueDepth(hs.length);
      dev.receiveDatagramInPlace(q, off, hs.peekLength(), hs.peekFrom(), sink);
      hs.shift();
    } while (performance.now() < deadline);
    this.flushUdp();
    this.flushTun();
    this.clock.release();
    this.scheduleHandshakes();
  }

  /** Writes one packet to the host as if the tunnel delivered it, without the packet filter (answers from local services); copied. */
  deliverToHost(buf: Uint8Array, off: number, len: number): void {
    if (this.closed) return;
    this.tun.deliver(buf, off, len);
    this.flushTun();
  }

  /** Starts a handshake with a peer that has no session (Device.handshakeIfIdle); false if none was needed. */
  handshakeIfIdle(publicKey: Uint8Array): boolean {
    if (this.closed) return false;
    this.clock.hold();
    const started = this.device.handshakeIfIdle(publicKey, this.sink);
    this.flushUdp();
    this.clock.release();
    return started;
  }

  /** Repeats a peer's unanswered first initiation now (Device.resendPendingInitiation); false if none. */
  resendPendingInitiation(publicKey: Uint8Array): boolean {
    if (this.closed) return false;
    this.clock.hold();
    const sent = this.device.resendPendingInitiation(publicKey, this.sink);
    this.flushUdp();
    // Not now: the copy waits for the end of INITIATION_COPY_GAP_MS. The map update that asked for
    // it may be the one that told the peer about us, so it goes at that end, not at the next beat
    // (up to 100 ms later; the bench-nat timeline showed a first reply waiting for it).
    if (!sent) this.runTimersBy(this.device.nextTimerDue());
    this.clock.release();
    return sent;
  }

  /** Runs the timers at `due` (the device's clock) when that comes before the next beat. */
  private runTimersBy(due: number): void {
    if (!Number.isFinite(due) || this.closed) return;
    const wait = due - this.clock.now();
    if (wait >= this.tickMs) return;
    clearTimeout(this.early);
    // +1: the device's clock is whole ms, and a timer may fire a fraction early by it; if it is
    // still early, it is armed again.
    this.early = setTimeout(() => {
      this.early = undefined;
      this.runTimers();
      const next = this.device.nextTimerDue();
      if (next > this.clock.now()) this.runTimersBy(next); // (never a busy loop on a timer left due)
    }, Math.max(0, Math.ceil(wait) + 1));
    this.early.unref();
  }

  /** Runs due WireGuard timers now (also after configuration changes). */
  runTimers(): void {
    if (this.closed) return;
    this.clock.hold();
    this.checkLoss(this.clock.now());
    this.device.tick(this.sink);
    this.flushUdp();
    this.flushTun();
    this.clock.release();
  }

  /**
   * While the path loses packets, each datagram leaves as its own skb: a GSO run is dropped whole
   * by whatever drops skbs before segmentation, and a TCP inside recovers from that only by its RTO.
   */
  private checkLoss(now: number): void {
    if (this.gsoPauseOff) return;
    const c = this.device.counters;
    // Datagrams dropped here (a full socket receive buffer, the device's open queue) are missing from
    // the counters too, but say nothing about the path: they do not count.
    // (A rebound socket's drop count starts again at 0: only increases are added.)
    const local = (c.dropRxQueueFull ?? 0) + (this.sock.socketCounters().dropUdpKernel ?? 0);
    this.localDrops += Math.max(0, local - this.lastLocal);
    this.lastLocal = local;
    const lossy = this.loss.update(now, c.rxTransport ?? 0, (c.rxCountersSkipped ?? 0) - this.localDrops, c.rxCountersLate ?? 0, this.rxSackAcks);
    if (lossy === this.gsoPaused) return;
    this.gsoPaused = lossy;
    this.sock.pauseGso(lossy);
    this.log(lossy ? 'the path loses packets: UDP GSO paused (one datagram per skb)' : `no loss for ${LOSSY_HOLD_MS / 1000} s: UDP GSO resumed`);
  }

  /** Sends what the device queued on the Bind. */
  private flushUdp(): void {
    this.device.flush(this.sink); // seals (and opens) the batch's queued transport packets in one call
    this.sock.flush();
  }

  private flushTun(): void {
    this.device.flush(this.sink);
    this.tun.flush();
  }

  /** Dropped-packet and other counters, by name. */
  counters(): Record<string, number> {
    return {
      ...this.device.counters,
      ...this.sock.socketCounters(),
      ...this.tun.counters(),
      dropRxHandshakeQueueFull: this.handshakes.dropped,
      lossyWindows: this.loss.lossyWindows,
      rxTcpSackAcks: this.rxSackAcks,
      handshakeQueueDepth: this.handshakes.length,
    };
  }

  /** Stops the loops, closes the socket (the Bind) and removes the TUN device. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.ticker) clearInterval(this.ticker);
    clearTimeout(this.early);
    if (this.handshakeTask) clearImmediate(this.handshakeTask);
    this.handshakes.clear();
    this.sock.close();
    this.tun.close();
  }
}
