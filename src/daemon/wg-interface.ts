// A plain WireGuard interface (`meshd wg IFNAME`): the data plane configured through the wg
// configuration protocol on /var/run/wireguard/IFNAME.sock, like wireguard-go.
import { DataPlane } from './dataplane.ts';
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

/** Every this many ms, a line reports counters that changed. */
const COUNTER_LOG_MS = 10_000;

/** One running WireGuard interface. */
export class WgInterface {
  readonly dp: DataPlane;
  private readonly uapi: UapiServer;
  private readonly log: Logf;
  private counterTimer: NodeJS.Timeout | undefined;
  private lastCounters = '';
  private closed = false;

  private constructor(dp: DataPlane, opts: WgInterfaceOptions) {
    this.dp = dp;
    this.log = opts.log;
    this.uapi = new UapiServer(`${opts.uapiDir ?? UAPI_DIR}/${opts.name}.sock`, this, opts.log);
  }

  /** Creates the TUN device, starts the packet loops and the configuration socket. */
  static async create(opts: WgInterfaceOptions): Promise<WgInterface> {
    const dp = DataPlane.open({ name: opts.name, mtu: opts.mtu ?? 1420, log: opts.log });
    const wg = new WgInterface(dp, opts);
    try {
      await wg.uapi.listen();
    } catch (e) {
      await wg.close();
      throw e;
    }
    wg.counterTimer = setInterval(() => wg.logCounters(), COUNTER_LOG_MS);
    wg.counterTimer.unref();
    return wg;
  }

  private logCounters(): void {
    const text = Object.entries(this.dp.counters()).filter(([, v]) => v > 0).map(([k, v]) => `${k}=${v}`).join(' ');
    if (text !== this.lastCounters) {
      this.lastCounters = text;
      if (text) this.log(`counters: ${text}`);
    }
  }

  /** For the UAPI `meshd-counters` operation. */
  uapiCounters(): Record<string, number> {
    return this.dp.counters();
  }

  /** For the UAPI `get` operation. */
  uapiGet(): UapiState {
    const dev = this.dp.device;
    return {
      privateKey: dev.privateKey(),
      listenPort: this.dp.listenPort,
      fwmark: this.dp.fwmark,
      peers: dev.peers().map((p) => ({
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
    const dp = this.dp, dev = dp.device;
    if (op.fwmark !== undefined && op.fwmark !== dp.fwmark) dp.setMark(op.fwmark);
    if (op.listenPort !== undefined && op.listenPort !== dp.listenPort) {
      try {
        dp.bind(op.listenPort);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new UapiError(UapiErrno.portInUse, `listen port ${op.listenPort} is in use`);
        throw e;
      }
    }
    if (op.privateKey !== undefined) dev.setPrivateKey(op.privateKey);
    if (op.replacePeers) dev.removeAllPeers();
    for (const p of op.peers) {
      if (p.remove) { dev.removePeer(p.publicKey); continue; }
      if (p.updateOnly && !dev.hasPeer(p.publicKey)) continue;
      dev.setPeer(p.publicKey, {
        ...(p.endpoint ? { endpoint: dp.endpoints.of(p.endpoint.ip, p.endpoint.port) } : {}),
        ...(p.presharedKey ? { presharedKey: p.presharedKey } : {}),
        ...(p.persistentKeepalive !== undefined ? { persistentKeepalive: p.persistentKeepalive } : {}),
        replaceAllowedIPs: p.replaceAllowedIPs,
        allowedIPs: p.allowedIPs,
      });
    }
    dp.runTimers();
  }

  /** Stops the loops and removes the TUN device and the configuration socket. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.counterTimer) clearInterval(this.counterTimer);
    this.dp.close();
    await this.uapi.close();
  }
}
