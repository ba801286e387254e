// A UDP socket for the data plane: batched receive (recvmmsg) with interned source endpoints,
// batched send (sendmmsg), SO_MARK and forced buffer sizes. family 6 is dual-stack: IPv4 peers
// appear as family-4 endpoints and IPv4 destinations are sent as ::ffff:a.b.c.d.
//
// Offloads: runs of same-size datagrams (256 bytes or more: ACKs go one per message, so a dropped
// skb never takes several) to one endpoint go out as one UDP_SEGMENT (GSO) message,
// and UDP_GRO is on so the kernel hands over coalesced datagrams, which the native reader splits
// into slots. MESHD_DISABLE_UDP_GSO=1 / MESHD_DISABLE_UDP_GRO=1 (or gso/gro: false) turn them
// off; GSO also turns itself off for the socket when the kernel refuses it (EIO, EINVAL).
import { native, offloadSwitches, readerError, UDP_CTL, type PollHandle, type PollStats } from '../native/index.ts';
import { DEFAULT_HEADROOM, DEFAULT_MAX_DATAGRAM, DEFAULT_SLOTS, roundUp64, RxBatch, type TxBatch } from './batch.ts';
import { Endpoints, type Endpoint } from './endpoint.ts';

/** Socket buffer size asked for by default, each direction (tailscale's socketBufferSize, 7 MiB). */
export const DEFAULT_SOCKET_BUFFER = 7 << 20;

/** Options of UdpSocket.open. */
export interface UdpOptions {
  /** 4: IPv4 only; 6: dual-stack (IPV6_V6ONLY=0). */
  family: 4 | 6;
  /** Local port; 0 (default) picks a free one. */
  port?: number;
  /** Local address to bind to; default any. */
  bindAddress?: string;
  /** SO_MARK for outgoing packets (policy routing, e.g. exit nodes); needs CAP_NET_ADMIN. */
  mark?: number;
  /** Receive buffer bytes (default 7 MiB; SO_RCVBUFFORCE, else capped by net.core.rmem_max). */
  rcvbuf?: number;
  /** Send buffer bytes (default 7 MiB; SO_SNDBUFFORCE, else capped by net.core.wmem_max). */
  sndbuf?: number;
  /** Datagrams per receive batch (default 128). */
  slots?: number;
  /** Largest datagram received whole (default 2048); longer ones are dropped and counted. */
  maxDatagram?: number;
  /** Bytes before each received datagram (default 64). */
  headroom?: number;
  /** Endpoint interner shared with the rest of the data plane (default: a new one). */
  endpoints?: Endpoints;
  /** Send runs of equal datagrams with UDP_SEGMENT (default: true unless MESHD_DISABLE_UDP_GSO is set). */
  gso?: boolean;
  /** Receive coalesced datagrams with UDP_GRO (default: true unless MESHD_DISABLE_UDP_GRO is set). */
  gro?: boolean;
}

/** Counters of a UdpSocket. */
export interface UdpStats {
  /** What the latest reader saw (undefined before startReading). */
  rx: PollStats | undefined;
  /** Datagrams sent. */
  txPackets: number;
  /** Datagrams given to sendBatch/sendTo but dropped (queue full, unreachable, wrong family). */
  txDropped: number;
  /** Offloads now: gso turns off for good after the kernel refused a GSO send; gsoPaused while pauseGso(true). */
  offload: { gso: boolean; gro: boolean; gsoPaused: boolean };
  /** sendmmsg calls. */
  txSyscalls: number;
  /** UDP_SEGMENT messages sent, and the datagrams inside them. */
  txGsoMessages: number;
  txGsoDatagrams: number;
  /** Backpressure: waits for the socket to drain, and datagrams dropped when waiting did not help. */
  txWaits: number;
  txWaitDrops: number;
  /** GSO sends the kernel refused (then sent one by one), and the errno of the latest. */
  txGsoFallbacks: number;
  txGsoErrno: number;
}

/** A non-blocking UDP socket with batched, allocation-free receive and send. */
export class UdpSocket {
  /** The socket fd. */
  readonly fd: number;
  /** Bound local port. */
  readonly port: number;
  /** 4 or 6 (dual-stack). */
  readonly family: 4 | 6;
  /** Effective receive buffer size in bytes as the kernel reports it (twice what was granted). */
  readonly rcvbuf: number;
  /** Effective send buffer size in bytes as the kernel reports it. */
  readonly sndbuf: number;
  /** The interner that receive batches' endpoint(i) uses. */
  readonly endpoints: Endpoints;
  private readonly slots: number;
  private readonly slotSize: number;
  private readonly headroom: number;
  private reader: PollHandle | undefined;
  private lastReader: PollHandle | undefined;
  private closed = false;
  private txPackets = 0;
  private txDropped = 0;
  private readonly oneOff = new Int32Array(1);
  private readonly oneLen = new Int32Array(1);
  /** Send state shared with the addon (UDP_CTL indexes): flags and counters. */
  private readonly ctl = new Float64Array(UDP_CTL.LEN);
  /** UDP_GRO is on: the reader splits coalesced datagrams. */
  readonly gro: boolean;

  private constructor(opened: { fd: number; port: number; rcvbuf: number; sndbuf: number; gso: boolean; gro: boolean }, opts: UdpOptions, gso: boolean) {
    this.fd = opened.fd;
    this.gro = opened.gro;
    if (gso && opened.gso) this.ctl[UDP_CTL.FLAGS] = UDP_CTL.F_GSO;
    this.port = opened.port;
    this.rcvbuf = opened.rcvbuf;
    this.sndbuf = opened.sndbuf;
    this.family = opts.family;
    this.endpoints = opts.endpoints ?? new Endpoints();
    this.slots = opts.slots ?? DEFAULT_SLOTS;
    this.headroom = opts.headroom ?? DEFAULT_HEADROOM;
    this.slotSize = roundUp64(this.headroom + (opts.maxDatagram ?? DEFAULT_MAX_DATAGRAM));
  }

  /** Opens and binds a socket; throws a NativeError (code EADDRINUSE, EPERM, ...) with advice. */
  static open(opts: UdpOptions): UdpSocket {
    const sw = offloadSwitches();
    const opened = native().udpOpen({
      gro: opts.gro ?? sw.udpGro,
      family: opts.family,
      port: opts.port ?? 0,
      rcvbuf: opts.rcvbuf ?? DEFAULT_SOCKET_BUFFER,
      sndbuf: opts.sndbuf ?? DEFAULT_SOCKET_BUFFER,
      ...(opts.bindAddress !== undefined ? { bindAddress: opts.bindAddress } : {}),
      ...(opts.mark !== undefined ? { mark: opts.mark } : {}),
    });
    return new UdpSocket(opened, opts, opts.gso ?? sw.udpGso);
  }

  /**
   * Starts receiving: onBatch(batch) runs once per batch, synchronously; batch.endpoint(i) gives
   * packet i's interned source. The contents are reused after onBatch returns. onError gets a
   * fatal receive error (reading has stopped); without it the error is thrown as uncaught.
   */
  startReading(onBatch: (batch: RxBatch) => void, onError?: (err: Error) => void): RxBatch {
    if (this.closed) throw new Error(`udp :${this.port}: closed`);
    if (this.reader) throw new Error(`udp :${this.port}: already reading`);
    const batch = new RxBatch({ slots: this.slots, slotSize: this.slotSize, headroom: this.headroom }, this.endpoints);
    const port = this.port;
    const rx = { buf: batch.buf, slotSize: batch.slotSize, headroom: batch.headroom, slots: batch.slots, lens: batch.lens, addrs: batch.addrs, gro: this.gro };
    this.reader = this.lastReader = native().pollStart(this.fd, 'udp', rx, (count: number): void => {
      if (count >= 0) {
        batch.count = count;
        onBatch(batch);
        return;
      }
      this.reader = undefined;
      const err = readerError(`udp :${port}`, count);
      if (onError) onError(err);
      else throw err;
    });
    return batch;
  }

  /** Stops receiving (also from inside onBatch: no further batch is delivered). */
  stopReading(): void {
    if (this.reader) native().pollStop(this.reader);
    this.reader = undefined;
  }

  /** Lets a running reader keep the process alive (true, the default) or not. */
  ref(ref: boolean): void {
    if (this.reader) native().pollRef(this.reader, ref);
  }

  /**
   * Sends tx.count datagrams to their endpoints (sendmmsg, with UDP_SEGMENT for runs of equal
   * datagrams to one endpoint), then empties tx; returns how many were sent. When the socket is
   * full it waits briefly (bounded) for it to drain instead of dropping.
   */
  sendBatch(tx: TxBatch): number {
    const count = tx.count;
    const sent = count === 0 ? 0 : native().udpSend(this.fd, tx.buf, tx.offsets, tx.lens, tx.addrs, count, this.ctl);
    tx.count = 0;
    this.txPackets += sent;
    this.txDropped += count - sent;
    return sent;
  }

  /**
   * Pauses (true) or resumes GSO runs: while paused every datagram leaves as its own skb. For a path
   * that loses packets: a run is one skb until the device segments it, and whatever drops skbs before
   * that drops the whole run, which a TCP inside the tunnel can only recover from by its RTO.
   */
  pauseGso(paused: boolean): void {
    const f = this.ctl[UDP_CTL.FLAGS]!;
    this.ctl[UDP_CTL.FLAGS] = paused ? f | UDP_CTL.F_GSO_PAUSED : f & ~UDP_CTL.F_GSO_PAUSED;
  }

  /** Sends one datagram (control traffic: disco, STUN); true when the kernel took it. */
  sendTo(data: Uint8Array, to: Endpoint): boolean {
    this.oneOff[0] = 0;
    this.oneLen[0] = data.length;
    const sent = native().udpSend(this.fd, data, this.oneOff, this.oneLen, to.raw, 1, this.ctl);
    this.txPackets += sent;
    this.txDropped += 1 - sent;
    return sent === 1;
  }

  /** Counters for this socket. */
  stats(): UdpStats {
    const c = this.ctl;
    return {
      rx: this.lastReader ? native().pollStats(this.lastReader) : undefined,
      txPackets: this.txPackets,
      txDropped: this.txDropped,
      offload: { gso: (c[UDP_CTL.FLAGS]! & UDP_CTL.F_GSO) !== 0, gro: this.gro, gsoPaused: (c[UDP_CTL.FLAGS]! & UDP_CTL.F_GSO_PAUSED) !== 0 },
      txSyscalls: c[UDP_CTL.CALLS]!,
      txGsoMessages: c[UDP_CTL.GSO_MSGS]!,
      txGsoDatagrams: c[UDP_CTL.GSO_DGRAMS]!,
      txWaits: c[UDP_CTL.WAITS]!,
      txWaitDrops: c[UDP_CTL.WAIT_DROPS]!,
      txGsoFallbacks: c[UDP_CTL.GSO_FALLBACKS]!,
      txGsoErrno: c[UDP_CTL.GSO_ERRNO]!,
    };
  }

  /** Stops receiving and closes the socket. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.stopReading();
    this.closed = true;
    native().close(this.fd);
  }
}
