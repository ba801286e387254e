// Userspace networking (`--tun=userspace-networking`): the netstack as the data plane's host
// device, inbound flows forwarded to host sockets, and the SOCKS5 / HTTP proxies for outgoing
// connections. Dials go through the netstack when the destination is a tailnet address or
// routed to a peer (subnet routes, an exit node), else straight from the host, as tailscaled's
// UserDial does. Names: MagicDNS names of the map first, then the host's resolver.
import { createServer, connect, isIP, type Server, type Socket } from 'node:net';
import { lookup } from 'node:dns/promises';
import type { NetworkMap } from '../control/netmap.ts';
import { NetstackDevice } from '../netstack/device.ts';
import { Forwarder } from '../netstack/forward.ts';
import { dialRelay, type TcpRelay } from '../netstack/relay.ts';
import { formatAddr, parseAddr } from '../netstack/ip.ts';
import { AllowedIPs } from '../wg/allowedips.ts';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { newProxyCounters, serveSocks, type ProxyCounters, type ProxyDialer, type ProxyUpstream, type UdpAssociation } from '../proxy/socks5.ts';
import { serveHttpProxy } from '../proxy/http.ts';
import type { Logf } from '../util/log.ts';
import { native } from '../native/index.ts';

import { parseListenAddr, USERSPACE_TUN } from './upcheck.ts';

export { parseListenAddr, USERSPACE_TUN };

/** How long a dial may take (tailscale's SOCKS5 dial timeout is 5 s; the netstack gets longer on lossy paths). */
const DIAL_TIMEOUT_MS = 10_000;

/** Options of {@link Userspace}. */
export interface UserspaceOptions {
  log: Logf;
  /** --socks5-server ADDR:PORT. */
  socks5?: string | undefined;
  /** --outbound-http-proxy-listen ADDR:PORT. */
  httpProxy?: string | undefined;
  /** SOCKS5 username/password (RFC 1929); none = no auth. */
  socksAuth?: { user: string; pass: string } | undefined;
}

/** Listening handles per proxy socket (see addAcceptors). */
const ACCEPTORS = 32;
/** Most open connections per proxy listening socket (over all its handles); more are closed at once. */
const MAX_PROXY_CONNECTIONS = 4096;

/** Netstack, forwarder and proxies of one running agent. */
export class Userspace implements ProxyDialer {
  readonly device: NetstackDevice;
  private readonly forwarder: Forwarder;
  private readonly log: Logf;
  private readonly opts: UserspaceOptions;
  private readonly servers: Server[] = [];
  private readonly socksCounters: ProxyCounters = newProxyCounters();
  private readonly httpCounters: ProxyCounters = newProxyCounters();
  private names = new Map<string, string[]>();
  private routes = new AllowedIPs<true>();
  private readonly scratch = new Uint8Array(16);
  /** Addresses the proxies listen on (after start). */
  readonly listening: { socks5?: string; http?: string } = {};

  constructor(opts: UserspaceOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.device = new NetstackDevice({ mtu: 1280 });
    this.forwarder = new Forwarder(this.device.driver, (l) => this.log(`netstack: ${l}`));
  }

  /** Starts the proxy listeners; throws a one-line error when one cannot listen. */
  async start(): Promise<void> {
    const s5 = this.opts.socks5 ? parseListenAddr(this.opts.socks5, '--socks5-server') : undefined;
    const hp = this.opts.httpProxy ? parseListenAddr(this.opts.httpProxy, '--outbound-http-proxy-listen') : undefined;
    if (s5 && hp && s5.host === hp.host && s5.port === hp.port && s5.port !== 0) {
      // One listener for both, told apart by the first byte (0x05 = SOCKS5), as tailscaled's proxymux.
      const addr = await this.listen(s5, (sock) => this.mux(sock));
      this.listening.socks5 = addr;
      this.listening.http = addr;
      return;
    }
    if (s5) this.listening.socks5 = await this.listen(s5, (sock) => this.socks(sock));
    if (hp) this.listening.http = await this.listen(hp, (sock) => this.http(sock));
  }

  private async listen(a: { host: string; port: number }, onConn: (s: Socket) => void): Promise<string> {
    // One bound on open proxy connections across all handles of this socket (see addAcceptors).
    let open = 0;
    const accept = (s: Socket): void => {
      if (open >= MAX_PROXY_CONNECTIONS) { s.destroy(); return; }
      open++;
      s.once('close', () => { open--; });
      onConn(s);
    };
    const srv = createServer({ allowHalfOpen: true, highWaterMark: 256 * 1024, noDelay: true }, accept);
    await new Promise<void>((resolve, reject) => {
      srv.once('error', (e: NodeJS.ErrnoException) => reject(new Error(`cannot listen on ${a.host}:${a.port}: ${e.code ?? e.message}`)));
      srv.listen(a.port, a.host, () => resolve());
    });
    srv.on('error', (e) => this.log(`proxy listener: ${e.message}`));
    this.servers.push(srv);
    this.addAcceptors(srv, accept);
    const ad = srv.address();
    const text = typeof ad === 'object' && ad ? (ad.family === 'IPv6' ? `[${ad.address}]:${ad.port}` : `${ad.address}:${ad.port}`) : `${a.host}:${a.port}`;
    this.log(`proxy listening on ${text}`);
    return text;
  }

  private socks(s: Socket): void {
    serveSocks(s, this, { auth: this.opts.socksAuth, counters: this.socksCounters, log: (l) => this.log(l) });
  }

  private http(s: Socket): void {
    serveHttpProxy(s, this, { counters: this.httpCounters, log: (l) => this.log(l) });
  }

  private mux(s: Socket): void {
    const t = setTimeout(() => s.destroy(), 15_000);
    s.once('data', (first: Buffer) => {
      clearTimeout(t);
      s.pause();
      s.unshift(first);
      if (first[0] === 5) this.socks(s); else this.http(s);
      s.resume();
    });
    s.on('error', () => clearTimeout(t));
  }

  /**
   * More handles on the listening socket: libuv (1.45+) accepts one connection per readiness event
   * and handle, so with one handle a burst of clients waits in the backlog one loop turn each (the
   * connection rate was the loop-turn rate). ACCEPTORS handles, each on a dup of the same socket,
   * take up to that many per turn (one more syscall per handle and connection: the others' accept
   * gets EAGAIN in libuv, no JavaScript runs). Best effort: without the addon's dupFd, one handle.
   */
  private addAcceptors(srv: Server, onConn: (s: Socket) => void): void {
    const fd = (srv as unknown as { _handle?: { fd?: number } })._handle?.fd;
    let dup: ((fd: number) => number) | undefined;
    try { dup = native().dupFd?.bind(native()); } catch { dup = undefined; }
    if (dup === undefined || typeof fd !== 'number' || fd < 0) return;
    for (let i = 1; i < ACCEPTORS; i++) {
      let nfd: number;
      try { nfd = dup(fd); } catch { return; }
      const extra = createServer({ allowHalfOpen: true, highWaterMark: 256 * 1024, noDelay: true }, onConn);
      extra.on('error', (e) => this.log(`proxy listener: ${e.message}`));
      extra.listen({ fd: nfd });
      this.servers.push(extra);
    }
  }

  /** Follows the network map: our addresses, MagicDNS names, and what peers route (allowed IPs per peer). */
  setMap(m: NetworkMap, allowed: Map<number, string[]>, promiscuous: boolean): void {
    const stack = this.device.stack;
    stack.setAddresses(m.self?.addresses ?? []);
    stack.promiscuous = promiscuous;
    const names = new Map<string, string[]>();
    const add = (fqdn: string, addrs: readonly string[]): void => {
      const ips = addrs.map((a) => a.split('/')[0]!).sort((x, y) => Number(x.includes(':')) - Number(y.includes(':')));
      const n = fqdn.toLowerCase().replace(/\.$/, '');
      if (!n) return;
      if (!names.has(n)) names.set(n, ips);
      const short = n.split('.')[0]!;
      if (!names.has(short)) names.set(short, ips);
    };
    if (m.self) add(m.self.name, m.self.addresses);
    for (const p of m.peers.values()) add(p.name || p.hostname, p.addresses);
    this.names = names;
    const routes = new AllowedIPs<true>();
    for (const list of allowed.values()) for (const c of list) { try { routes.insert(c, true); } catch { /* skip */ } }
    this.routes = routes;
  }

  /** True when ip goes through the tailnet (a peer's address or route), false when the host reaches it directly. */
  viaTailnet(ip: string): boolean {
    const f = parseAddr(ip, this.scratch);
    if (f === 4) return this.routes.lookupV4(this.scratch, 0) !== undefined || (this.scratch[0] === 100 && (this.scratch[1]! & 0xc0) === 64);
    if (f === 6) return this.routes.lookupV6(this.scratch, 0) !== undefined;
    return false;
  }

  /** Resolves a name the tailnet's way: an IP as is, MagicDNS names from the map, then the host resolver (IPv4 first). */
  async resolve(host: string): Promise<string[]> {
    const h = host.replace(/^\[|\]$/g, '');
    if (isIP(h)) return [h];
    const n = h.toLowerCase().replace(/\.$/, '');
    const magic = this.names.get(n);
    if (magic && magic.length > 0) return magic;
    try {
      const r = await lookup(n, { all: true });
      return r.sort((a, b) => a.family - b.family).map((a) => a.address);
    } catch (e) {
      const err = new Error(`cannot resolve ${host}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      throw Object.assign(err, { code: 'ENOTFOUND' });
    }
  }

  /** ProxyDialer: resolve, then connect through the netstack or from the host. */
  async dial(host: string, port: number): Promise<ProxyUpstream> {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw Object.assign(new Error(`bad port ${port}`), { code: 'EINVAL' });
    const ips = await this.resolve(host);
    let last: unknown;
    for (const ip of ips.slice(0, 4)) {
      try {
        return this.viaTailnet(ip) ? await this.dialNetstack(ip, port) : await dialHost(ip, port);
      } catch (e) {
        last = e;
      }
    }
    throw last ?? Object.assign(new Error(`no address for ${host}`), { code: 'ENOTFOUND' });
  }

  /**
   * ProxyDialer: a UDP association. Datagrams to tailnet addresses leave from an ephemeral port of
   * the netstack (replies to it come back), others from a host UDP socket, as tailscaled's UserDial.
   */
  associateUdp(onReply: (host: string, port: number, data: Uint8Array) => void): UdpAssociation {
    const stack = this.device.stack, driver = this.device.driver;
    const bound = stack.bindUdpEphemeral((d) => onReply(formatAddr(d.family, d.src), d.srcPort, d.buf.subarray(d.off, d.off + d.len)));
    const hosts: { 4?: UdpSocket; 6?: UdpSocket } = {};
    const dst = new Uint8Array(16);
    let closed = false;
    const hostSocket = (family: 4 | 6): UdpSocket => {
      let s = hosts[family];
      if (s === undefined) {
        s = hosts[family] = createSocket(family === 4 ? 'udp4' : 'udp6');
        s.on('message', (m, r) => onReply(r.address, r.port, m));
        s.on('error', (e) => this.log(`socks5 UDP: ${e.message}`));
      }
      return s;
    };
    const sendTo = (ip: string, port: number, data: Uint8Array): void => {
      if (closed) return;
      if (this.viaTailnet(ip)) {
        const family = parseAddr(ip, dst);
        const src = family === 0 ? undefined : stack.localAddress(family);
        if (bound === undefined || src === undefined || family === 0) { this.socksCounters.udpDropped++; return; }
        if (!stack.sendUdp(family, src, bound.port, dst, port, data, 0, data.length)) this.socksCounters.udpDropped++;
        driver.schedule();
      } else {
        hostSocket(isIP(ip) === 6 ? 6 : 4).send(data, port, ip);
      }
    };
    return {
      send: (host, port, data) => {
        if (!Number.isInteger(port) || port < 1 || port > 65535) { this.socksCounters.udpDropped++; return; }
        if (isIP(host.replace(/^\[|\]$/g, ''))) { sendTo(host.replace(/^\[|\]$/g, ''), port, data); return; }
        this.resolve(host).then((ips) => sendTo(ips[0]!, port, data), () => { this.socksCounters.udpDropped++; });
      },
      close: () => {
        closed = true;
        bound?.close();
        hosts[4]?.close();
        hosts[6]?.close();
      },
    };
  }

  /** A TCP connection through the netstack to a tailnet address (relayed without node:stream, see netstack/relay.ts). */
  dialNetstack(ip: string, port: number): Promise<TcpRelay> {
    return dialRelay(this.device.stack, this.kick, ip, port, DIAL_TIMEOUT_MS);
  }

  private readonly kick = (): void => { this.device.driver.schedule(); };

  /** Counters for status: stack, forwarder, proxies. */
  counters(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [k, v] of Object.entries(this.device.stack.counters)) out[`netstack.${k}`] = v;
    out['netstack.connections'] = this.device.stack.connectionCount;
    for (const [k, v] of Object.entries(this.forwarder.counters)) out[`netstack.${k}`] = v;
    for (const [k, v] of Object.entries(this.socksCounters)) out[`socks5.${k}`] = v;
    for (const [k, v] of Object.entries(this.httpCounters)) out[`httpproxy.${k}`] = v;
    return out;
  }

  /** Stops listeners and forwarding; the device is closed by the data plane. */
  close(): void {
    for (const s of this.servers) s.close();
    this.servers.length = 0;
    this.forwarder.close();
  }
}

/** A TCP connection from the host, bounded by the dial timeout. */
function dialHost(ip: string, port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: ip, port, timeout: DIAL_TIMEOUT_MS, allowHalfOpen: true });
    s.once('timeout', () => s.destroy(Object.assign(new Error(`timed out connecting to ${ip}:${port}`), { code: 'ETIMEDOUT' })));
    s.once('connect', () => { s.setTimeout(0); s.setNoDelay(true); s.off('error', reject); resolve(s); });
    s.once('error', reject);
  });
}
