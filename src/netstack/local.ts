// The netstack as a LocalPacketHandler (src/tun/device.ts) inside a TUN-mode agent: packets the
// host sends to chosen service addresses (MagicDNS at 100.100.100.100 and fd7a:115c:a1e0::53) are
// consumed before WireGuard sees them and answered through DataPlane.deliverToHost. Services
// listen with listen(addr, port, onConnection) and get node:stream Duplexes; UDP with bindUdp().
//
//   const local = new LocalServices({ addresses: ['100.100.100.100', 'fd7a:115c:a1e0::53'],
//     deliver: (b, o, l) => dp.deliverToHost(b, o, l), next: dnsUdpHandler });
//   dp.local = local;
//   local.listen('100.100.100.100', 53, (sock) => serveDnsOverTcp(sock));
//
// Packets to other addresses go to `next` (another LocalPacketHandler) or on to WireGuard.
import type { LocalPacketHandler } from '../tun/device.ts';
import { NetstackDriver } from './device.ts';
import { parseAddr } from './ip.ts';
import type { UdpHandler } from './stack.ts';
import { TcpStream } from './stream.ts';

/** Options of {@link LocalServices}. */
export interface LocalServicesOptions {
  /** Service addresses to take packets for. */
  addresses: readonly string[];
  /** Writes one packet to the host (DataPlane.deliverToHost); buf is reused after return. */
  deliver: (buf: Uint8Array, off: number, len: number) => void;
  /** Tried for packets not to our addresses, before WireGuard. */
  next?: LocalPacketHandler | undefined;
  mtu?: number;
}

/** A small netstack for the agent's own services in TUN mode. */
export class LocalServices implements LocalPacketHandler {
  readonly driver: NetstackDriver;
  private readonly next: LocalPacketHandler | undefined;
  private readonly v4: Uint8Array[] = [];
  private readonly v6: Uint8Array[] = [];
  private readonly deliver: (buf: Uint8Array, off: number, len: number) => void;
  private pending: Uint8Array[] = [];

  constructor(opts: LocalServicesOptions) {
    this.deliver = opts.deliver;
    this.next = opts.next;
    this.driver = new NetstackDriver({ mtu: opts.mtu ?? 1280, output: (b, o, l) => { if (this.pending.length < 4096) this.pending.push(b.slice(o, o + l)); this.driver.schedule(); } });
    this.driver.setFlush(() => {
      const list = this.pending;
      this.pending = [];
      for (const p of list) this.deliver(p, 0, p.length);
    });
    for (const a of opts.addresses) {
      const b = new Uint8Array(16);
      const f = parseAddr(a, b);
      if (f === 4) this.v4.push(b); else if (f === 6) this.v6.push(b); else throw new TypeError(`LocalServices: bad address ${JSON.stringify(a)}`);
      this.driver.stack.addServiceAddress(a);
    }
  }

  /** LocalPacketHandler: consumes packets to the service addresses. */
  handleOutbound(buf: Uint8Array, off: number, len: number): boolean {
    if (len >= 20) {
      const v = buf[off]! >> 4;
      const list = v === 4 ? this.v4 : v === 6 && len >= 40 ? this.v6 : undefined;
      if (list !== undefined) {
        const d = off + (v === 4 ? 16 : 24), n = v === 4 ? 4 : 16;
        for (const a of list) {
          let k = 0;
          while (k < n && a[k] === buf[d + k]) k++;
          if (k === n) {
            const s = this.driver.stack;
            s.input(buf, off, len);
            s.endBatch();
            this.driver.schedule();
            return true;
          }
        }
      }
    }
    return this.next?.handleOutbound(buf, off, len) ?? false;
  }

  /** Accepts TCP connections to addr:port (addr one of the service addresses); returns a function that stops listening. */
  listen(addr: string, port: number, onConnection: (sock: TcpStream) => void): () => void {
    const kick = (): void => this.driver.schedule();
    return this.driver.stack.listen(port, (t) => { onConnection(new TcpStream(t, kick)); }, { addr });
  }

  /** Takes UDP datagrams to `port`; answer with driver.stack.sendUdp (then driver.schedule()). */
  bindUdp(port: number, h: UdpHandler): () => void {
    return this.driver.stack.bindUdp(port, h);
  }

  /** Counters of the stack. */
  get counters(): Record<string, number> {
    return this.driver.stack.counters;
  }

  /** Aborts connections and stops timers. */
  close(): void {
    this.driver.close();
  }
}
