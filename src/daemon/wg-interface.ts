// A plain WireGuard interface: a TUN device, a UDP socket and the WireGuard core wired together,
// configured through the wg configuration protocol (like wireguard-go). The packet path:
//
//   TUN batch  --RoutineReadFromTUN-->  Device.sendPacketInPlace  --> UDP send batch
//   UDP batch  --RoutineReceiveIncoming--> Device.receiveDatagramInPlace --> TUN write batch
//
// Both loops run inside the native layer's read callbacks and flush once per batch; the sink
// copies each outgoing packet into a pooled TX slot, so nothing is allocated per packet.
import { Device, type WgSink } from '../wg/device.ts';
import { Endpoints, type Endpoint } from '../net/endpoint.ts';
import { Tun } from '../tun/tun.ts';
import { UdpSocket } from '../net/udp.ts';
import { TxBatch, type RxBatch } from '../net/batch.ts';
import { UapiServer, UAPI_DIR } from '../uapi/server.ts';
import { UapiErrno, UapiError, type UapiSet, type UapiState } from '../uapi/protocol.ts';
import type { Logf } from '../util/log.ts';

/** Options for {@link WgInterface.create}. */
export interface WgInterfaceOptions {
  name: string;
  mtu?: number;
  log: Logf;
  /** Directory for the UAPI socket; default /var/run/wireguard. */
  uapiDir?: string;
}

/** How often timers run (ms); the WireGuard core needs at least every 100 ms. */
const TICK_MS = 100;
/** Every this many ms, a line reports dropped-packet counters that changed. */
const COUNTER_LOG_MS = 10_000;

/** One running WireGuard interface. */
export class WgInterface {
  readonly name: string;
  readonly mtu: number;
  readonly device: Device;
  private readonly tun: Tun;
  private udp: UdpSocket | undefined;
  private listenPort = 0;
  private fwmark = 0;
  private readonly endpoints = new Endpoints();
  private readonly txUdp: TxBatch;
  private readonly txTun: TxBatch;
  private readonly sink: WgSink;
  private readonly uapi: UapiServer;
  private readonly log: Logf;
  private ticker: NodeJS.Timeout | undefined;
  private counterTimer: NodeJS.Timeout | undefined;
  private lastCounters = '';
  private closed = false;

  private constructor(opts: WgInterfaceOptions, tun: Tun) {
    this.name = opts.name;
    this.mtu = opts.mtu ?? 1420;
    this.log = opts.log;
    this.tun = tun;
    this.device = new Device({ clock: { now: () => performance.now(), wall: () => Date.now() }, log: opts.log, mtu: this.mtu });
    // Room for a full MTU packet plus the WireGuard header, tag and padding.
    const slot = this.mtu + 64;
    this.txUdp = new TxBatch({ slots: 128, slotSize: slot, withAddrs: true });
    this.txTun = new TxBatch({ slots: 128, slotSize: slot, withAddrs: false });
    const txUdp = this.txUdp, txTun = this.txTun;
    this.sink = {
      sendUdp(buf, off, len, to) { if (!txUdp.push(buf, off, len, to.raw)) txUdp.dropped++; },
      writeTun(buf, off, len) { if (!txTun.push(buf, off, len)) txTun.dropped++; },
    };
    this.uapi = new UapiServer(`${opts.uapiDir ?? UAPI_DIR}/${opts.name}.sock`, this, opts.log);
  }

  /** Creates the TUN device, starts the packet loops and the configuration socket. */
  static async create(opts: WgInterfaceOptions): Promise<WgInterface> {
    const tun = Tun.open(opts.name, { mtu: opts.mtu ?? 1420 });
    const wg = new WgInterface(opts, tun);
    try {
      await wg.uapi.listen();
      wg.bind(0);
      tun.startReading((b) => wg.onTunBatch(b));
      wg.ticker = setInterval(() => wg.onTick(), TICK_MS);
      wg.counterTimer = setInterval(() => wg.logCounters(), COUNTER_LOG_MS);
      wg.counterTimer.unref();
    } catch (e) {
      await wg.close();
      throw e;
    }
    return wg;
  }

  /** (Re)binds the UDP socket to `port` (0 = random), dual-stack. */
  private bind(port: number): void {
    const old = this.udp;
    if (old && port === this.listenPort && port !== 0) return;
    let udp: UdpSocket;
    try {
      udp = UdpSocket.open({ family: 6, port, ...(this.fwmark ? { mark: this.fwmark } : {}) , rcvbuf: 7 << 20, sndbuf: 7 << 20 });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EADDRINUSE') throw new UapiError(UapiErrno.portInUse, `listen port ${port} is in use`);
      throw e;
    }
    old?.close();
    this.udp = udp;
    this.listenPort = udp.port;
    udp.startReading((b) => this.onUdpBatch(b));
    this.log(`listening on UDP port ${this.listenPort}`);
  }

  private onTunBatch(b: RxBatch): void {
    const dev = this.device, sink = this.sink;
    for (let i = 0; i < b.count; i++) {
      dev.sendPacketInPlace(b.buf, b.offset(i), b.lens[i]!, b.capacity(i), sink);
    }
    this.flush();
  }

  private onUdpBatch(b: RxBatch): void {
    const dev = this.device, sink = this.sink;
    for (let i = 0; i < b.count; i++) {
      dev.receiveDatagramInPlace(b.buf, b.offset(i), b.lens[i]!, b.endpoint(i), sink);
    }
    this.flush();
  }

  private onTick(): void {
    this.device.tick(this.sink);
    this.flush();
  }

  private flush(): void {
    if (this.txUdp.count > 0) {
      if (this.udp) this.udp.sendBatch(this.txUdp);
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
      udpSendDropped: this.txUdp.dropped + (this.udp?.sendDropped ?? 0),
      tunWriteDropped: this.txTun.dropped + this.tun.writeDropped,
    };
  }

  private logCounters(): void {
    const c = this.counters();
    const text = Object.entries(c).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(' ');
    if (text !== this.lastCounters) {
      this.lastCounters = text;
      if (text) this.log(`counters: ${text}`);
    }
  }

  /** For the UAPI `meshd-counters` operation. */
  uapiCounters(): Record<string, number> {
    return this.counters();
  }

  /** For the UAPI `get` operation. */
  uapiGet(): UapiState {
    return {
      privateKey: this.device.privateKey(),
      listenPort: this.listenPort,
      fwmark: this.fwmark,
      peers: this.device.peers().map((p) => ({
        publicKey: p.publicKey,
        presharedKey: p.presharedKey,
        endpoint: p.endpoint ? p.endpoint.key : null,
        lastHandshakeWallMs: p.lastHandshakeWallMs,
        txBytes: p.txBytes,
        rxBytes: p.rxBytes,
        persistentKeepalive: p.persistentKeepalive,
        allowedIPs: p.allowedIPs,
      })),
    };
  }

  /** For the UAPI `set` operation: validated already, applied in order. */
  uapiSet(op: UapiSet): void {
    if (op.fwmark !== undefined && op.fwmark !== this.fwmark) {
      this.fwmark = op.fwmark;
      this.udp?.setMark(op.fwmark);
    }
    if (op.listenPort !== undefined && op.listenPort !== this.listenPort) this.bind(op.listenPort);
    if (op.privateKey !== undefined) this.device.setPrivateKey(op.privateKey);
    if (op.replacePeers) this.device.removeAllPeers();
    for (const p of op.peers) {
      if (p.remove) { this.device.removePeer(p.publicKey); continue; }
      if (p.updateOnly && !this.device.hasPeer(p.publicKey)) continue;
      let endpoint: Endpoint | undefined;
      if (p.endpoint) endpoint = this.endpoints.of(p.endpoint.ip, p.endpoint.port);
      this.device.setPeer(p.publicKey, {
        ...(endpoint ? { endpoint } : {}),
        ...(p.presharedKey ? { presharedKey: p.presharedKey } : {}),
        ...(p.persistentKeepalive !== undefined ? { persistentKeepalive: p.persistentKeepalive } : {}),
        replaceAllowedIPs: p.replaceAllowedIPs,
        allowedIPs: p.allowedIPs,
      });
    }
    this.onTick();
  }

  /** Stops the loops and removes the TUN device and the configuration socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.ticker) clearInterval(this.ticker);
    if (this.counterTimer) clearInterval(this.counterTimer);
    this.udp?.close();
    this.tun.close();
    await this.uapi.close();
  }
}
