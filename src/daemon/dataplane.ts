// The WireGuard data plane: a TUN device, a UDP socket and the WireGuard core wired together.
// The packet path (names after wireguard-go's routines):
//
//   TUN batch  --readFromTun-->  Device.sendPacketInPlace        --> UDP send batch
//   UDP batch  --receiveUdp-->   Device.receiveDatagramInPlace   --> TUN write batch
//
// Both run inside the native layer's read callbacks and flush once per batch; the sink copies each
// outgoing packet into a pooled TX slot, so nothing is allocated per packet.
import { Device, HANDSHAKE_BACKLOG_PER_BATCH, type WgSink } from '../wg/device.ts';
import { Endpoints } from '../net/endpoint.ts';
import { Tun } from '../tun/tun.ts';
import type { HostDevice, LocalPacketHandler } from '../tun/device.ts';
import { UdpSocket } from '../net/udp.ts';
import { offloadCounters } from '../net/offload.ts';
import { TxBatch, slotSizeFor, type RxBatch } from '../net/batch.ts';
import type { Logf } from '../util/log.ts';
import { PeerEndpoint } from '../magicsock/peer-endpoint.ts';
import type { Endpoint } from '../net/endpoint.ts';
import type { PacketFilter } from '../filter/filter.ts';

/** Where the data plane hands what is not plain WireGuard-over-UDP (magicsock implements it). */
export interface PacketRouter {
  /** The UDP endpoint for a WireGuard packet to a PeerEndpoint, or null (sent elsewhere, e.g. DERP, or dropped). */
  route(to: PeerEndpoint, buf: Uint8Array, off: number, len: number): Endpoint | null;
  /** A received datagram that is not WireGuard (STUN, disco, junk); buf is reused after return. */
  receiveOther(buf: Uint8Array, off: number, len: number, from: Endpoint): void;
}

/** Options for {@link DataPlane.open}. */
export interface DataPlaneOptions {
  /** TUN device name. */
  name: string;
  mtu: number;
  log: Logf;
  /** UDP port to listen on (0 = random). */
  port?: number;
  /** SO_MARK for the UDP socket (0 = none). */
  fwmark?: number;
  /** WireGuard follows peers to their latest source address (default true; false under magicsock). */
  roaming?: boolean;
  /** The host side to use instead of opening TUN device `name` (e.g. a userspace TCP/IP stack). */
  device?: HostDevice;
}

/** How often timers run (ms); the WireGuard core needs at least every 100 ms. */
const TICK_MS = 100;
/** Socket buffer size, as tailscale's magicsock uses. */
const SOCKET_BUFFER = 7 << 20;

/** A TUN device, a UDP socket and a WireGuard {@link Device} with the loops between them. */
export class DataPlane {
  readonly name: string;
  readonly mtu: number;
  readonly device: Device;
  /** Interns endpoints for configuration and for received datagrams (one object per address). */
  readonly endpoints = new Endpoints();
  /** The tailnet's packet filter: runIn on packets the tunnel delivers, runOut on packets it takes; none = pass all. */
  filter: PacketFilter | undefined;
  private readonly tun: HostDevice;
  private readonly tunRx: RxBatch;
  private udp: UdpSocket | undefined;
  private udpRx: RxBatch | undefined;
  private port = 0;
  private mark = 0;
  /** Datagrams encrypted in place in the TUN receive buffer: sent without a copy. */
  private readonly udpRef: TxBatch;
  /** Datagrams from anywhere else (handshakes, staged packets): copied. */
  private readonly udpCopy: TxBatch;
  /** Packets decrypted in place in the UDP receive buffer: written without a copy. */
  private tunRef: TxBatch | undefined;
  private readonly tunCopy: TxBatch;
  private readonly sink: WgSink;
  private readonly log: Logf;
  private ticker: NodeJS.Timeout | undefined;
  private closed = false;
  private dropTxFull = 0;
  /** Set by magicsock: routes PeerEndpoint sends and takes STUN/disco datagrams. */
  router: PacketRouter | undefined;
  /** Sees every packet from the host first and may consume it (MagicDNS, agent services). */
  local: LocalPacketHandler | undefined;

  private constructor(opts: DataPlaneOptions, tun: HostDevice) {
    this.name = opts.name;
    this.mtu = opts.mtu;
    this.log = opts.log;
    this.tun = tun;
    this.device = new Device({ clock: { now: () => performance.now(), wall: () => Date.now() }, log: opts.log, mtu: opts.mtu, roaming: opts.roaming ?? true, batched: true });
    this.tunRx = tun.startReading((b) => this.readFromTun(b), (e) => this.log(`tun read stopped: ${e.message}`));
    this.udpRef = TxBatch.over(this.tunRx.buf);
    // Room for a full MTU packet plus the WireGuard header, tag and padding.
    const shape = { slots: 128, slotSize: slotSizeFor(opts.mtu + 32, 0, 32), headroom: 0 };
    this.udpCopy = new TxBatch(shape);
    this.tunCopy = new TxBatch(shape);
    const self = this;
    this.sink = {
      sendUdp(buf, off, len, toIn) {
        let to = toIn;
        if (to instanceof PeerEndpoint) {
          const r = self.router?.route(to, buf, off, len);
          if (!r) return;
          to = r;
        }
        if (buf === self.tunRx.buf) {
          if (!self.udpRef.pushRef(off, len, to.raw)) { self.flushUdp(); self.udpRef.pushRef(off, len, to.raw); }
        } else if (!self.udpCopy.push(buf, off, len, to.raw)) {
          self.flushUdp();
          if (!self.udpCopy.push(buf, off, len, to.raw)) self.dropTxFull++;
        }
      },
      writeTun(buf, off, len) {
        const f = self.filter;
        if (f !== undefined && !f.runIn(buf, off, len)) return;
        const ref = self.tunRef;
        if (ref !== undefined && buf === ref.buf) {
          if (!ref.pushRef(off, len)) { self.flushTun(); ref.pushRef(off, len); }
        } else if (!self.tunCopy.push(buf, off, len)) {
          self.flushTun();
          if (!self.tunCopy.push(buf, off, len)) self.dropTxFull++;
        }
      },
    };
  }

  /** Creates the TUN device (MTU set, link up) unless opts.device is given, binds UDP and starts the loops and timers. */
  static open(opts: DataPlaneOptions): DataPlane {
    const tun = opts.device ?? Tun.open(opts.name, { mtu: opts.mtu, up: true });
    let dp: DataPlane | undefined;
    try {
      dp = new DataPlane(opts, tun);
      dp.mark = opts.fwmark ?? 0;
      dp.bind(opts.port ?? 0);
      dp.ticker = setInterval(() => dp!.runTimers(), TICK_MS);
    } catch (e) {
      if (dp) dp.close();
      else tun.close();
      throw e;
    }
    return dp;
  }

  /** The UDP port in use. */
  get listenPort(): number {
    return this.port;
  }

  /** The socket mark in use. */
  get fwmark(): number {
    return this.mark;
  }

  /** (Re)binds the dual-stack UDP socket to `port` (0 = random). Throws EADDRINUSE errors as they are. */
  bind(port: number, force = false): void {
    const old = this.udp;
    if (old && port === this.port && port !== 0 && !force) return;
    // Free the old port first when rebinding to the same one (e.g. to apply a new mark).
    if (old && port === this.port) { this.flushUdp(); old.close(); this.udp = undefined; }
    const udp = UdpSocket.open({
      family: 6, port, rcvbuf: SOCKET_BUFFER, sndbuf: SOCKET_BUFFER, endpoints: this.endpoints,
      maxDatagram: this.mtu + 128, ...(this.mark ? { mark: this.mark } : {}),
    });
    if (this.udp) { this.flushUdp(); this.udp.close(); }
    this.udp = udp;
    this.port = udp.port;
    this.udpRx = udp.startReading((b) => this.receiveUdp(b), (e) => this.log(`udp read stopped: ${e.message}`));
    this.tunRef = TxBatch.over(this.udpRx.buf);
    this.log(`listening on UDP port ${this.port}`);
  }

  /** Sets SO_MARK on the UDP socket (rebinding it on the same port). */
  setMark(mark: number): void {
    this.mark = mark;
    if (this.udp) this.bind(this.port, true);
  }

  private readFromTun(b: RxBatch): void {
    const dev = this.device, sink = this.sink, f = this.filter, local = this.local;
    for (let i = 0; i < b.count; i++) {
      const off = b.offset(i);
      if (local !== undefined && local.handleOutbound(b.buf, off, b.lens[i]!)) continue;
      if (f !== undefined) f.runOut(b.buf, off, b.lens[i]!);
      dev.sendPacketInPlace(b.buf, off, b.lens[i]!, b.slotEnd(i) - off, sink);
    }
    this.flushUdp();
    this.flushTun();
  }

  private receiveUdp(b: RxBatch): void {
    const dev = this.device, sink = this.sink, buf = b.buf;
    // A batch holding many handshakes means they queued in the kernel: the device is under load.
    let handshakes = 0;
    for (let i = 0; i < b.count; i++) { const t = buf[b.offset(i)]; if (t === 1 || t === 2) handshakes++; }
    if (handshakes >= HANDSHAKE_BACKLOG_PER_BATCH) dev.noteHandshakeBacklog();
    const router = this.router;
    for (let i = 0; i < b.count; i++) {
      const off = b.offset(i), len = b.lens[i]!;
      // WireGuard: type 1-4 then three zero bytes; anything else is STUN, disco or junk (magicsock demux).
      if (router !== undefined && (len < 4 || buf[off]! - 1 >>> 0 > 3 || buf[off + 1] !== 0 || buf[off + 2] !== 0 || buf[off + 3] !== 0)) {
        router.receiveOther(buf, off, len, b.endpoint(i));
        continue;
      }
      dev.receiveDatagramInPlace(buf, off, len, b.endpoint(i), sink);
    }
    this.flushTun();
    this.flushUdp();
  }

  /** Sends one datagram from the WireGuard socket (disco, STUN); false when not sent. */
  sendDatagram(data: Uint8Array, to: Endpoint): boolean {
    return this.udp?.sendTo(data, to) ?? false;
  }

  /** Hands a WireGuard datagram that came another way (DERP) to the device, as if from `from`. */
  receiveWireGuard(buf: Uint8Array, off: number, len: number, from: Endpoint): void {
    if (this.closed) return;
    this.device.receiveDatagramInPlace(buf, off, len, from, this.sink);
    this.flushTun();
    this.flushUdp();
  }

  /** Writes one packet to the host as if the tunnel delivered it, without the packet filter (answers from local services); copied. */
  deliverToHost(buf: Uint8Array, off: number, len: number): void {
    if (this.closed) return;
    if (!this.tunCopy.push(buf, off, len)) {
      this.flushTun();
      if (!this.tunCopy.push(buf, off, len)) { this.dropTxFull++; return; }
    }
    this.flushTun();
  }

  /** Runs due WireGuard timers now (also after configuration changes). */
  runTimers(): void {
    if (this.closed) return;
    this.device.tick(this.sink);
    this.flushUdp();
    this.flushTun();
  }

  private flushUdp(): void {
    this.device.flush(this.sink); // seals (and opens) the batch's queued transport packets in one call
    const udp = this.udp;
    if (udp) {
      if (this.udpRef.count > 0) udp.sendBatch(this.udpRef);
      if (this.udpCopy.count > 0) udp.sendBatch(this.udpCopy);
    }
    this.udpRef.clear();
    this.udpCopy.clear();
  }

  private flushTun(): void {
    this.device.flush(this.sink);
    const ref = this.tunRef;
    if (ref && ref.count > 0) this.tun.writeBatch(ref);
    if (this.tunCopy.count > 0) this.tun.writeBatch(this.tunCopy);
    ref?.clear();
    this.tunCopy.clear();
  }

  /** Dropped-packet and other counters, by name. */
  counters(): Record<string, number> {
    const t = this.tun.stats(), u = this.udp?.stats();
    return {
      ...this.device.counters,
      rxUdpDatagrams: u?.rx?.packets ?? 0,
      rxTunPackets: t.rx?.packets ?? 0,
      dropUdpTruncated: u?.rx?.truncated ?? 0,
      dropTunTruncated: t.rx?.truncated ?? 0,
      dropUdpSend: u?.txDropped ?? 0,
      dropTunWrite: t.txDropped,
      dropTxBatchFull: this.dropTxFull,
      ...offloadCounters(t, u),
      ...Object.fromEntries(Object.entries(this.filter?.counters ?? {}).map(([k, v]) => [`filter.${k}`, v])),
    };
  }

  /** Stops the loops, closes the socket and removes the TUN device. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.ticker) clearInterval(this.ticker);
    this.udp?.close();
    this.tun.close();
  }
}
