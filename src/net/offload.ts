// Offload state and counters of a TUN and a UDP socket, flattened into the name=number form that
// `meshd counters` and the agent's counter log print. Devices that are not a kernel TUN (a
// userspace stack) simply have no offload fields.
import type { HostDeviceStats } from '../tun/device.ts';
import type { TunStats } from '../tun/tun.ts';
import type { UdpStats } from './udp.ts';

const b = (v: boolean | undefined): number => (v ? 1 : 0);

/** Offload flags (1 on, 0 off) and counters for DataPlane.counters(). */
export function offloadCounters(tun: HostDeviceStats | TunStats, udp: UdpStats | undefined): Record<string, number> {
  const out: Record<string, number> = {};
  if ('offload' in tun) {
    const o = tun.offload, rx = tun.rx;
    Object.assign(out, {
      offloadTunVnetHdr: b(o.vnetHdr), offloadTunTso: b(o.tso), offloadTunUso: b(o.uso),
      offloadTunTcpGro: b(o.tcpGro), offloadTunUdpGro: b(o.udpGro),
      rxTunGsoReads: rx?.gsoReads ?? 0, rxTunGsoSegments: rx?.gsoSegments ?? 0, rxTunCsumCompleted: rx?.csumCompleted ?? 0,
      dropTunBadGso: rx?.badGso ?? 0,
      txTunWrites: tun.txWrites, txTunCoalescedFrames: tun.txCoalescedFrames, txTunCoalescedPackets: tun.txCoalescedPackets,
      txTunGroFallbacks: tun.txGroFallbacks, txTunBadChecksum: tun.txBadChecksum,
      txTunWaits: tun.txWaits, dropTunWaitFull: tun.txWaitDrops,
    });
  }
  if (udp) {
    Object.assign(out, {
      offloadUdpGso: b(udp.offload.gso), offloadUdpGsoPaused: b(udp.offload.gsoPaused), offloadUdpGro: b(udp.offload.gro),
      rxUdpGroMessages: udp.rx?.groMessages ?? 0, rxUdpGroSegments: udp.rx?.groSegments ?? 0,
      txUdpSyscalls: udp.txSyscalls, txUdpGsoMessages: udp.txGsoMessages, txUdpGsoDatagrams: udp.txGsoDatagrams,
      txUdpGsoFallbacks: udp.txGsoFallbacks, txUdpWaits: udp.txWaits, dropUdpWaitFull: udp.txWaitDrops,
    });
  }
  return out;
}
