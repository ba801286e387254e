// The bottom layer of the packet path: a Bind owns the UDP socket the WireGuard device sends from and
// receives on (wireguard-go's conn.Bind). The device runner above calls down into it -- send(),
// flush(), bind() -- and the Bind calls up only through the BindReceiver it was opened with, as
// wireguard-go's ReceiveFuncs do. Two implementations:
//   - UdpBind (here): one dual-stack socket, every datagram goes up; `meshd wg` uses it.
//   - MagicSock (src/magicsock): owns a UdpBind, keeps STUN and disco for itself, picks UDP or DERP
//     per peer, and hands WireGuard packets that arrived over DERP up through receiveOne.
import { UdpSocket } from './udp.ts';
import { Endpoints, type Endpoint } from './endpoint.ts';
import { TxBatch, slotSizeFor, type RxBatch } from './batch.ts';
import type { Logf } from '../util/log.ts';
import { offloadCounters } from './offload.ts';

/** What a Bind hands up to the device runner. */
export interface BindReceiver {
  /**
   * A batch of datagrams from the socket, each with batch.endpoint(i) as its source. A datagram a
   * lower layer consumed (STUN, disco) has length 0 and must be skipped. The batch is reused after return.
   */
  receiveBatch(batch: RxBatch): void;
  /** One WireGuard datagram that came another way (DERP) from `from`; buf is reused after return. */
  receiveOne(buf: Uint8Array, off: number, len: number, from: Endpoint): void;
}

/** The socket side of the data plane. */
export interface Bind {
  /** Interns endpoints for configuration and for received datagrams (one object per address). */
  readonly endpoints: Endpoints;
  /** The UDP port in use. */
  readonly port: number;
  /** SO_MARK in use (0 = none). */
  readonly mark: number;
  /** Starts handing received datagrams to `recv`; called once. */
  open(recv: BindReceiver): void;
  /** (Re)binds to `port` (0 = random; force rebinds on the same port). Throws EADDRINUSE errors as they are. */
  bind(port: number, force?: boolean): void;
  /** Sets SO_MARK (rebinding on the same port). */
  setMark(mark: number): void;
  /**
   * Queues one WireGuard datagram buf[off, off+len) for `to`; sent at flush(). The bytes must stay
   * valid until then. Not copied when buf is the buffer given to shareBuffer(), copied otherwise.
   */
  send(buf: Uint8Array, off: number, len: number, to: Endpoint): void;
  /** Marks `buf` (the TUN receive buffer) as living until flush(): send() points into it instead of copying. */
  shareBuffer(buf: Uint8Array): void;
  /** Sends what send() queued: one sendmmsg per batch. */
  flush(): void;
  /** Pauses (true) or resumes UDP GSO runs: while paused each datagram is its own skb (the path loses packets; src/wg/loss.ts). */
  pauseGso(paused: boolean): void;
  /** Counters, by name. */
  socketCounters(): Record<string, number>;
  /** Closes the socket. Safe to call twice. */
  close(): void;
}

/** Options for {@link UdpBind}. */
export interface UdpBindOptions {
  /** UDP port (0 = random). */
  port?: number;
  /** SO_MARK (0 = none). */
  fwmark?: number;
  /** Tunnel MTU: sizes the datagram slots. */
  mtu: number;
  log: Logf;
  /** Interner to share (magicsock and the device must agree on endpoint objects). */
  endpoints?: Endpoints;
}

/** Socket buffer size, as tailscale's magicsock uses. */
const SOCKET_BUFFER = 7 << 20;

/** A plain Bind: one dual-stack UDP socket, sends batched per flush. */
export class UdpBind implements Bind {
  readonly endpoints: Endpoints;
  private readonly mtu: number;
  private readonly log: Logf;
  private udp: UdpSocket | undefined;
  private recv: BindReceiver | undefined;
  private curPort = 0;
  private curMark = 0;
  /** Datagrams encrypted in place in the shared (TUN receive) buffer: sent without a copy. */
  private ref: TxBatch | undefined;
  /** Datagrams from anywhere else (handshakes, staged packets, DERP-bound copies): copied. */
  private readonly copy: TxBatch;
  private dropTxFull = 0;
  private closed = false;
  private gsoPaused = false;

  constructor(opts: UdpBindOptions) {
    this.endpoints = opts.endpoints ?? new Endpoints();
    this.mtu = opts.mtu;
    this.log = opts.log;
    this.curMark = opts.fwmark ?? 0;
    // Room for a full MTU packet plus the WireGuard header, tag and padding.
    this.copy = new TxBatch({ slots: 128, slotSize: slotSizeFor(opts.mtu + 32, 0, 32), headroom: 0 });
    this.bind(opts.port ?? 0);
  }

  get port(): number {
    return this.curPort;
  }

  get mark(): number {
    return this.curMark;
  }

  open(recv: BindReceiver): void {
    if (this.recv) throw new Error('bind: already open');
    this.recv = recv;
    this.startReading();
  }

  private startReading(): void {
    const udp = this.udp, recv = this.recv;
    if (!udp || !recv) return;
    udp.startReading((b) => recv.receiveBatch(b), (e) => this.log(`udp read stopped: ${e.message}`));
  }

  bind(port: number, force = false): void {
    if (this.closed) throw new Error('bind: closed');
    const old = this.udp;
    if (old && port === this.curPort && port !== 0 && !force) return;
    // Free the old port first when rebinding to the same one (e.g. to apply a new mark).
    if (old && port === this.curPort) { this.flush(); old.close(); this.udp = undefined; }
    const udp = UdpSocket.open({
      family: 6, port, rcvbuf: SOCKET_BUFFER, sndbuf: SOCKET_BUFFER, endpoints: this.endpoints,
      maxDatagram: this.mtu + 128, ...(this.curMark ? { mark: this.curMark } : {}),
    });
    if (this.udp) { this.flush(); this.udp.close(); }
    this.udp = udp;
    udp.pauseGso(this.gsoPaused);
    this.curPort = udp.port;
    this.startReading();
    this.log(`listening on UDP port ${this.curPort}`);
  }

  setMark(mark: number): void {
    this.curMark = mark;
    if (this.udp) this.bind(this.curPort, true);
  }

  shareBuffer(buf: Uint8Array): void {
    if (this.ref?.buf === buf) return;
    this.flush();
    this.ref = TxBatch.over(buf);
  }

  send(buf: Uint8Array, off: number, len: number, to: Endpoint): void {
    const ref = this.ref;
    if (ref !== undefined && buf === ref.buf) {
      if (!ref.pushRef(off, len, to.raw)) { this.flush(); ref.pushRef(off, len, to.raw); }
    } else if (!this.copy.push(buf, off, len, to.raw)) {
      this.flush();
      if (!this.copy.push(buf, off, len, to.raw)) this.dropTxFull++;
    }
  }

  pauseGso(paused: boolean): void {
    this.gsoPaused = paused;
    this.udp?.pauseGso(paused);
  }

  /** Sends one datagram right away (disco, STUN); false when not sent. */
  sendTo(data: Uint8Array, to: Endpoint): boolean {
    return this.udp?.sendTo(data, to) ?? false;
  }

  flush(): void {
    const udp = this.udp, ref = this.ref;
    if (udp) {
      if (ref !== undefined && ref.count > 0) udp.sendBatch(ref);
      if (this.copy.count > 0) udp.sendBatch(this.copy);
    }
    ref?.clear();
    this.copy.clear();
  }

  socketCounters(): Record<string, number> {
    const u = this.udp?.stats();
    return {
      rxUdpDatagrams: u?.rx?.packets ?? 0,
      dropUdpKernel: u?.rx?.kernelDrops ?? 0,
      dropUdpTruncated: u?.rx?.truncated ?? 0,
      dropUdpSend: u?.txDropped ?? 0,
      dropUdpBatchFull: this.dropTxFull,
      ...offloadCounters({ rx: undefined, txPackets: 0, txDropped: 0 }, u),
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.udp?.close();
    this.udp = undefined;
  }
}
