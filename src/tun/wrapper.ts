// The TUN-side wrapper of the packet path (tailscale's net/tstun Wrapper): sits between the host
// device (kernel TUN with offloads, or a userspace stack) and the WireGuard device runner.
//   from the host: the LocalPacketHandler sees each packet first and may consume it (MagicDNS,
//                  agent services), then the packet filter's RunOut (it learns outgoing flows);
//   to the host:   the packet filter's RunIn decides; deliver() skips it (answers from local services).
// The runner above calls down into it (start, write, deliver, flush); the wrapper calls up only
// through the batch callback it was started with. Nothing here allocates per packet.
import type { HostDevice, HostDeviceStats, LocalPacketHandler } from './device.ts';
import type { PacketFilter } from '../filter/filter.ts';
import { TxBatch, slotSizeFor, type RxBatch } from '../net/batch.ts';
import { offloadCounters } from '../net/offload.ts';

/** The filter and local-handler layer on the TUN side. */
export class TunWrapper {
  /** The host side. */
  readonly host: HostDevice;
  /** The tailnet's packet filter: RunIn on packets for the host, RunOut on packets from it; none = pass all. */
  filter: PacketFilter | undefined;
  /** Sees every packet from the host first and may consume it. */
  local: LocalPacketHandler | undefined;
  /** Packets decrypted in place in a shared (UDP receive) buffer: written without a copy. */
  private ref: TxBatch | undefined;
  /** Packets from anywhere else: copied. */
  private readonly copy: TxBatch;
  private dropTxFull = 0;

  constructor(host: HostDevice, mtu: number) {
    this.host = host;
    this.copy = new TxBatch({ slots: 128, slotSize: slotSizeFor(mtu + 32, 0, 32), headroom: 0 });
  }

  /**
   * Starts reading from the host. onBatch gets each batch after the local handler and RunOut; a
   * packet they consumed has length 0 and must be skipped. Returns the receive batch (its buffer is
   * where the runner encrypts in place).
   */
  start(onBatch: (b: RxBatch) => void, onError: (e: Error) => void): RxBatch {
    return this.host.startReading((b) => {
      const local = this.local, f = this.filter, buf = b.buf, lens = b.lens;
      if (local !== undefined || f !== undefined) {
        for (let i = 0; i < b.count; i++) {
          const off = b.offset(i), len = lens[i]!;
          if (local !== undefined && local.handleOutbound(buf, off, len)) { lens[i] = 0; continue; }
          if (f !== undefined) f.runOut(buf, off, len);
        }
      }
      onBatch(b);
    }, onError);
  }

  /** Marks `buf` (the UDP receive buffer) as living until flush(): write() points into it instead of copying. */
  shareBuffer(buf: Uint8Array): void {
    if (this.ref?.buf === buf) return;
    this.flush();
    this.ref = TxBatch.over(buf);
  }

  /** Queues a packet from the tunnel for the host if the filter's RunIn lets it in; written at flush(). */
  write(buf: Uint8Array, off: number, len: number): void {
    const f = this.filter;
    if (f !== undefined && !f.runIn(buf, off, len)) return; // counted by the filter
    const ref = this.ref;
    if (ref !== undefined && buf === ref.buf) {
      if (!ref.pushRef(off, len)) { this.flush(); ref.pushRef(off, len); }
    } else {
      this.deliver(buf, off, len);
    }
  }

  /** Queues a packet for the host without the filter (copied); written at flush(). */
  deliver(buf: Uint8Array, off: number, len: number): void {
    if (!this.copy.push(buf, off, len)) {
      this.flush();
      if (!this.copy.push(buf, off, len)) this.dropTxFull++;
    }
  }

  /** Writes what is queued to the host. */
  flush(): void {
    const ref = this.ref;
    if (ref !== undefined && ref.count > 0) this.host.writeBatch(ref);
    if (this.copy.count > 0) this.host.writeBatch(this.copy);
    ref?.clear();
    this.copy.clear();
  }

  /** The host device's counters. */
  stats(): HostDeviceStats {
    return this.host.stats();
  }

  /** Counters of this layer, by name (the filter's own are prefixed filter.). */
  counters(): Record<string, number> {
    const t = this.host.stats();
    const out: Record<string, number> = {
      rxTunPackets: t.rx?.packets ?? 0,
      dropTunTruncated: t.rx?.truncated ?? 0,
      dropTunWrite: t.txDropped,
      dropTunBatchFull: this.dropTxFull,
      ...offloadCounters(t, undefined),
    };
    for (const [k, v] of Object.entries(this.filter?.counters ?? {})) out[`filter.${k}`] = v;
    return out;
  }

  /** Closes the host device. */
  close(): void {
    this.host.close();
  }
}
