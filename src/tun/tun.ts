// A Linux TUN device (IFF_TUN | IFF_NO_PI: each read/write is one bare IPv4 or IPv6 packet), read
// in batches on the event loop and written in batches. The device lives as long as the fd: close()
// removes it. Needs root or CAP_NET_ADMIN in the device's network namespace.
//
// Offloads: by default the device is opened with IFF_VNET_HDR and TUNSETOFFLOAD (checksum, TSO4/6,
// and USO4/6 where the kernel has them). The kernel then hands over TCP/UDP super-packets of up to
// 64 KiB, which the native reader splits into MTU-sized packets with correct checksums, one per
// slot; writeBatch coalesces consecutive segments of one flow into one super-packet write. Users
// of Tun still see MTU-sized packets in slots. MESHD_DISABLE_TUN_OFFLOAD=1 (or offload: false)
// opens a plain TUN; MESHD_DISABLE_TUN_GRO=1 keeps TSO reads but writes packets one by one.
import { native, offloadSwitches, readerError, TUN_CTL, type PollHandle, type PollStats } from '../native/index.ts';
import type { HostDevice } from './device.ts';
import { DEFAULT_HEADROOM, DEFAULT_SLOTS, DEFAULT_TAILROOM, RxBatch, slotSizeFor, type TxBatch } from '../net/batch.ts';

/** Options of Tun.open. */
export interface TunOptions {
  /** MTU to set on the device. */
  mtu: number;
  /** Bring the device up after opening (default false: the router adds addresses first). */
  up?: boolean;
  /** Packets per read batch (default 128). */
  slots?: number;
  /** Bytes before each received packet (default 64). */
  headroom?: number;
  /** Bytes after each received packet of MTU size (default 64). */
  tailroom?: number;
  /** Extra IFF_* flags (native().tunFlags); default none. */
  flags?: number;
  /** Open with IFF_VNET_HDR and TSO/USO (default: true unless MESHD_DISABLE_TUN_OFFLOAD is set). */
  offload?: boolean;
  /** Coalesce written segments (default: true unless MESHD_DISABLE_TUN_GRO is set). */
  gro?: boolean;
}

/** Which offloads a Tun has, and why not when it has none. */
export interface TunOffloadState {
  /** Opened with IFF_VNET_HDR (reads and writes carry a virtio-net header). */
  vnetHdr: boolean;
  /** The kernel hands over TCP super-packets (TSO4/TSO6 accepted). */
  tso: boolean;
  /** The kernel hands over UDP super-packets (USO4/USO6 accepted, Linux 6.2+). */
  uso: boolean;
  /** Writes coalesce TCP segments (off after a refused probe or write). */
  tcpGro: boolean;
  /** Writes coalesce UDP datagrams (needs uso). */
  udpGro: boolean;
  /** Why an offload is off, when the kernel or a switch turned it off. */
  reason?: string;
}

/** Counters of a Tun. */
export interface TunStats {
  /** What the latest reader saw (undefined before startReading). */
  rx: PollStats | undefined;
  /** Packets written. */
  txPackets: number;
  /** Packets given to writeBatch but dropped (queue full, malformed, device down). */
  txDropped: number;
  /** Offload state (read it here, not from open(): coalescing may be switched off later). */
  offload: TunOffloadState;
  /** write()/writev() calls that succeeded. */
  txWrites: number;
  /** Coalesced super-packets written, and the packets inside them. */
  txCoalescedFrames: number;
  txCoalescedPackets: number;
  /** Backpressure: waits for the device to drain, and packets dropped when waiting did not help. */
  txWaits: number;
  txWaitDrops: number;
  /** Coalesced writes the kernel refused (EINVAL), written one by one instead. */
  txGroFallbacks: number;
  /** Packets written uncoalesced because a checksum was wrong. */
  txBadChecksum: number;
}

/** A TUN device with batched, allocation-free reads and writes. */
export class Tun implements HostDevice {
  /** Interface name the kernel gave the device. */
  readonly name: string;
  /** The device fd (non-blocking, close-on-exec). */
  readonly fd: number;
  /** Current MTU. */
  mtu: number;
  private readonly slots: number;
  private readonly headroom: number;
  private readonly tailroom: number;
  private reader: PollHandle | undefined;
  private lastReader: PollHandle | undefined;
  private rx: RxBatch | undefined;
  private closed = false;
  private txPackets = 0;
  private txDropped = 0;
  /** Write state shared with the addon (TUN_CTL indexes): flags and counters. */
  private readonly ctl = new Float64Array(TUN_CTL.LEN);
  private readonly offload: { vnetHdr: boolean; tso: boolean; uso: boolean; reason?: string };
  private probed = false;

  private constructor(name: string, fd: number, opts: TunOptions, offload: { vnetHdr: boolean; tso: boolean; uso: boolean; reason?: string }, gro: boolean) {
    this.name = name;
    this.fd = fd;
    this.mtu = opts.mtu;
    this.offload = offload;
    if (offload.vnetHdr) {
      this.ctl[TUN_CTL.FLAGS] = TUN_CTL.F_VNET | (gro ? TUN_CTL.F_TCP_GRO | (offload.uso ? TUN_CTL.F_UDP_GRO : 0) : 0);
    }
    if (offload.vnetHdr && !gro) this.offload.reason = 'coalescing off (MESHD_DISABLE_TUN_GRO or gro: false)';
    this.slots = opts.slots ?? DEFAULT_SLOTS;
    this.headroom = opts.headroom ?? DEFAULT_HEADROOM;
    this.tailroom = opts.tailroom ?? DEFAULT_TAILROOM;
  }

  /** Opens (creates) TUN device `name` with the given MTU; throws a NativeError with code and advice. */
  static open(name: string, opts: TunOptions): Tun {
    const n = native();
    const sw = offloadSwitches();
    const wantOffload = opts.offload ?? sw.tunOffload;
    let offload: { vnetHdr: boolean; tso: boolean; uso: boolean; reason?: string } = { vnetHdr: false, tso: false, uso: false };
    let opened: { fd: number; name: string } | undefined;
    if (wantOffload) {
      try {
        opened = n.tunOpen(name, (opts.flags ?? 0) | n.tunFlags.IFF_VNET_HDR);
      } catch (err) {
        // A kernel without IFF_VNET_HDR says EINVAL; so does a bad name, which the plain open
        // below reports again as it is.
        if ((err as { code?: string }).code !== 'EINVAL') throw err;
        offload.reason = 'the kernel refuses IFF_VNET_HDR: plain TUN';
      }
    }
    if (opened) {
      const f = n.tunOffloadFlags;
      try {
        n.tunSetOffload(opened.fd, f.CSUM | f.TSO4 | f.TSO6);
        offload = { vnetHdr: true, tso: true, uso: false };
        try {
          n.tunSetOffload(opened.fd, f.CSUM | f.TSO4 | f.TSO6 | f.USO4 | f.USO6);
          offload.uso = true;
        } catch {
          offload.reason = 'the kernel refuses USO (Linux < 6.2): UDP is neither split nor coalesced';
        }
      } catch (err) {
        // The kernel refuses TCP offloads: reopen a plain TUN (the device goes with the fd).
        n.close(opened.fd);
        opened = undefined;
        offload.reason = `the kernel refuses TUN offloads (${(err as { code?: string }).code ?? String(err)}): plain TUN`;
      }
    } else if (!wantOffload) {
      offload.reason = 'offloads off (MESHD_DISABLE_TUN_OFFLOAD or offload: false)';
    }
    const { fd, name: actual } = opened ?? n.tunOpen(name, opts.flags ?? 0);
    const tun = new Tun(actual, fd, opts, offload, opts.gro ?? sw.tunGro);
    try {
      n.setMtu(actual, opts.mtu);
      if (opts.up) tun.setUp(true);
    } catch (err) {
      n.close(fd);
      throw err;
    }
    return tun;
  }

  /** Sets the MTU; while reading, at most the MTU the read slots were sized for. */
  setMtu(mtu: number): void {
    if (this.rx && mtu > this.rx.capacity - this.tailroom) {
      throw new RangeError(`setMtu ${mtu}: read slots hold ${this.rx.capacity - this.tailroom} bytes; stopReading() first`);
    }
    native().setMtu(this.name, mtu);
    this.mtu = mtu;
  }

  /** Brings the device up or down. */
  setUp(up: boolean): void {
    native().setUp(this.name, up);
    if (up && !this.probed) this.probeGro();
  }

  /**
   * Some kernels (with e269d79c7d35, before 89add40066f9, e.g. 6.6.44) refuse coalesced writes
   * with EINVAL. After link-up, write one coalesced TCP (and UDP) probe the kernel drops anyway;
   * on EINVAL stop coalescing on this device, as tailscale's probeTCPGRO does.
   */
  private probeGro(): void {
    const flags = this.ctl[TUN_CTL.FLAGS]!;
    if (!(flags & TUN_CTL.F_VNET) || !(flags & (TUN_CTL.F_TCP_GRO | TUN_CTL.F_UDP_GRO))) return;
    const n = native();
    const tcp = n.tunProbeGro(this.fd, false);
    if (tcp === 5 /* EIO: link down */) return;
    this.probed = true;
    const udp = flags & TUN_CTL.F_UDP_GRO ? n.tunProbeGro(this.fd, true) : 0;
    if (tcp !== 0 || udp !== 0) {
      this.ctl[TUN_CTL.FLAGS] = flags & ~(TUN_CTL.F_TCP_GRO | TUN_CTL.F_UDP_GRO);
      this.offload.reason = `the kernel refuses coalesced writes (errno ${tcp || udp}): coalescing off`;
    }
  }

  /**
   * Starts reading: onBatch(batch) runs once per batch of up to `slots` packets, synchronously; the
   * batch's contents are reused after it returns. onError gets a fatal read error (reading has
   * stopped then); without onError such an error is thrown as an uncaught exception.
   */
  startReading(onBatch: (batch: RxBatch) => void, onError?: (err: Error) => void): RxBatch {
    if (this.closed) throw new Error(`tun ${this.name}: closed`);
    if (this.reader) throw new Error(`tun ${this.name}: already reading`);
    const batch = new RxBatch({ slots: this.slots, slotSize: slotSizeFor(this.mtu, this.headroom, this.tailroom), headroom: this.headroom });
    const name = this.name;
    this.rx = batch;
    const rx = { buf: batch.buf, slotSize: batch.slotSize, headroom: batch.headroom, slots: batch.slots, lens: batch.lens, vnet: this.offload.vnetHdr };
    this.reader = this.lastReader = native().pollStart(this.fd, 'tun', rx, (count: number): void => {
      if (count >= 0) {
        batch.count = count;
        onBatch(batch);
        return;
      }
      this.reader = undefined;
      this.rx = undefined;
      const err = readerError(`tun ${name}`, count);
      if (onError) onError(err);
      else throw err;
    });
    return batch;
  }

  /** Stops reading (also from inside onBatch: no further batch is delivered). */
  stopReading(): void {
    if (this.reader) native().pollStop(this.reader);
    this.reader = undefined;
    this.rx = undefined;
  }

  /** Lets a running reader keep the process alive (true, the default) or not. */
  ref(ref: boolean): void {
    if (this.reader) native().pollRef(this.reader, ref);
  }

  /**
   * Writes tx.count packets, then empties tx; returns how many were written. With offloads,
   * consecutive segments of one TCP (or UDP) flow go out as one super-packet write, and the first
   * packet of each such run is rewritten in place (lengths, checksum): the bytes in tx.buf are not
   * kept intact. When the device is full it waits briefly (bounded) instead of dropping.
   */
  writeBatch(tx: TxBatch): number {
    const count = tx.count;
    const written = count === 0 ? 0 : native().tunWrite(this.fd, tx.buf, tx.offsets, tx.lens, count, this.ctl);
    tx.count = 0;
    this.txPackets += written;
    this.txDropped += count - written;
    return written;
  }

  /** Counters for this device. */
  stats(): TunStats {
    const c = this.ctl, f = c[TUN_CTL.FLAGS]!;
    return {
      rx: this.lastReader ? native().pollStats(this.lastReader) : undefined,
      txPackets: this.txPackets,
      txDropped: this.txDropped,
      offload: { ...this.offload, tcpGro: (f & TUN_CTL.F_TCP_GRO) !== 0, udpGro: (f & TUN_CTL.F_UDP_GRO) !== 0 },
      txWrites: c[TUN_CTL.WRITES]!,
      txCoalescedFrames: c[TUN_CTL.FRAMES]!,
      txCoalescedPackets: c[TUN_CTL.MERGED]!,
      txWaits: c[TUN_CTL.WAITS]!,
      txWaitDrops: c[TUN_CTL.WAIT_DROPS]!,
      txGroFallbacks: c[TUN_CTL.GRO_FALLBACKS]!,
      txBadChecksum: c[TUN_CTL.BAD_CSUM]!,
    };
  }

  /** Stops reading and closes the fd, which removes the device. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.stopReading();
    this.closed = true;
    native().close(this.fd);
  }
}
