// The WireGuard data plane: a TUN device, a UDP socket and the WireGuard core wired together.
// The packet path (names after wireguard-go's routines):
//
//   TUN batch  --readFromTun-->  Device.sendPacketInPlace        --> UDP send batch
//   UDP batch  --receiveUdp-->   Device.receiveDatagramInPlace   --> TUN write batch
//
// Both run inside the native layer's read callbacks and flush once per batch; the sink copies each
// outgoing packet into a pooled TX slot, so nothing is allocated per packet.
import { Device, type WgSink } from '../wg/device.ts';
import { Endpoints } from '../net/endpoint.ts';
import { Tun } from '../tun/tun.ts';
import { UdpSocket } from '../net/udp.ts';
import { TxBatch, type RxBatch } from '../net/batch.ts';
import type { Logf } from '../util/log.ts';

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
  /** Interns endpoints for configuration (peers' addresses). */
  readonly endpoints = new Endpoints();
  private readonly tun: Tun;
  private udp: UdpSocket | undefined;
  private port = 0;
  private mark = 0;
  private readonly txUdp: TxBatch;
  private readonly txTun: TxBatch;
  private readonly sink: WgSink;
  private readonly log: Logf;
  private ticker: NodeJS.Timeout | undefined;
  private closed = false;

  private constructor(opts: DataPlaneOptions, tun: Tun) {
    this.name = opts.name;
    this.mtu = opts.mtu;
    this.log = opts.log;
    this.tun = tun;
    this.device = new Device({ clock: { now: () => performance.now(), wall: () => Date.now() }, log: opts.log, mtu: opts.mtu });
    // Room for a full MTU packet plus the WireGuard header, tag and padding.
    const slot = opts.mtu + 64;
    const txUdp = (this.txUdp = new TxBatch({ slots: 128, slotSize: slot, withAddrs: true }));
    const txTun = (this.txTun = new TxBatch({ slots: 128, slotSize: slot, withAddrs: false }));
    this.sink = {
      sendUdp(buf, off, len, to) { if (!txUdp.push(buf, off, len, to.raw)) txUdp.dropped++; },
      writeTun(buf, off, len) { if (!txTun.push(buf, off, len)) txTun.dropped++; },
    };
  }

  /** Creates the TUN device (MTU set, link up), binds UDP and starts the loops and timers. */
  static open(opts: DataPlaneOptions): DataPlane {
    const tun = Tun.open(opts.name, { mtu: opts.mtu });
    const dp = new DataPlane(opts, tun);
    try {
      dp.mark = opts.fwmark ?? 0;
      dp.bind(opts.port ?? 0);
      tun.startReading((b) => dp.readFromTun(b));
      dp.ticker = setInterval(() => dp.runTimers(), TICK_MS);
    } catch (e) {
      dp.close();
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
  bind(port: number): void {
    const old = this.udp;
    if (old && port === this.port && port !== 0) return;
    const udp = UdpSocket.open({ family: 6, port, rcvbuf: SOCKET_BUFFER, sndbuf: SOCKET_BUFFER, ...(this.mark ? { mark: this.mark } : {}) });
    old?.close();
    this.udp = udp;
    this.port = udp.port;
    udp.startReading((b) => this.receiveUdp(b));
    this.log(`listening on UDP port ${this.port}`);
  }

  /** Sets SO_MARK on the UDP socket. */
  setMark(mark: number): void {
    this.mark = mark;
    this.udp?.setMark(mark);
  }

  private readFromTun(b: RxBatch): void {
    const dev = this.device, sink = this.sink;
    for (let i = 0; i < b.count; i++) dev.sendPacketInPlace(b.buf, b.offset(i), b.lens[i]!, b.capacity(i), sink);
    this.flush();
  }

  private receiveUdp(b: RxBatch): void {
    const dev = this.device, sink = this.sink;
    for (let i = 0; i < b.count; i++) dev.receiveDatagramInPlace(b.buf, b.offset(i), b.lens[i]!, b.endpoint(i), sink);
    this.flush();
  }

  /** Runs due WireGuard timers now (also after configuration changes). */
  runTimers(): void {
    if (this.closed) return;
    this.device.tick(this.sink);
    this.flush();
  }

  private flush(): void {
    if (this.txUdp.count > 0) {
      this.udp?.sendBatch(this.txUdp);
      this.txUdp.clear();
    }
    if (this.txTun.count > 0) {
      this.tun.writeBatch(this.txTun);
      this.txTun.clear();
    }
  }

  /** Dropped-packet and other counters, by name. */
  counters(): Record<string, number> {
    return {
      ...this.device.counters,
      dropUdpSendFull: this.txUdp.dropped + (this.udp?.sendDropped ?? 0),
      dropTunWriteFull: this.txTun.dropped + this.tun.writeDropped,
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
