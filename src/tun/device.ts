// What the data plane needs from the host side of the tunnel: a device that hands it batches of
// IP packets the host sends and takes batches of IP packets for the host. The kernel TUN device
// (src/tun/tun.ts) is one; a userspace TCP/IP stack (src/netstack) is another.
import type { RxBatch, TxBatch } from '../net/batch.ts';
import type { PollStats } from '../native/index.ts';

/** Counters every host device reports. */
export interface HostDeviceStats {
  /** What the reader saw (undefined before startReading). */
  rx: PollStats | undefined;
  /** Packets written to the host. */
  txPackets: number;
  /** Packets given to writeBatch but dropped. */
  txDropped: number;
}

/** The host side of the data plane: packets from the host in batches, packets to the host in batches. */
export interface HostDevice {
  /** Interface name (or a label for devices that are not kernel interfaces). */
  readonly name: string;
  /** Current MTU. */
  readonly mtu: number;
  /** Starts delivering batches of packets from the host to onBatch, synchronously; the batch is reused after it returns. */
  startReading(onBatch: (batch: RxBatch) => void, onError?: (err: Error) => void): RxBatch;
  /** Writes tx.count packets to the host and empties tx; returns how many were taken. */
  writeBatch(tx: TxBatch): number;
  /** Counters. */
  stats(): HostDeviceStats;
  /** Stops reading and releases the device. Safe to call twice. */
  close(): void;
}

/**
 * Takes packets the host sends before WireGuard sees them: MagicDNS at 100.100.100.100 and
 * fd7a:115c:a1e0::53, services of the agent itself. Runs per packet on the data path: it must be
 * cheap for packets it does not want and must not throw.
 */
export interface LocalPacketHandler {
  /** True when the packet buf[off, off+len) was consumed (it never enters WireGuard); buf is reused after return. */
  handleOutbound(buf: Uint8Array, off: number, len: number): boolean;
}
