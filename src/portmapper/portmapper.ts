// Port mapping on the home router, as tailscale's net/portmapper does it (reference
// dns-netstack-portmap.md 3.1-3.5): find the gateway (the first default route whose gateway is
// RFC 1918), probe which of NAT-PMP, PCP and UPnP IGD it speaks (250 ms, cached 10 min), ask it to
// forward an external UDP port to our WireGuard port (NAT-PMP first, PCP when only PCP answered,
// else UPnP), renew at half the lease, and delete the mapping on close. The mapped address goes to
// control as our first endpoint (type 3, portmapped) and in call-me-maybe, so peers behind NATs that
// could not reach us otherwise can.
//
// Differences from tailscale, on purpose: the PCP delete repeats the MAP's nonce (RFC 6887 15;
// miniupnpd refuses a delete with a new nonce, so tailscale's delete leaves the mapping until it
// expires); the UPnP external port is first the internal port (a restart replaces its old mapping
// instead of leaving it), then a random one; a NAT-PMP map is retried once after 250 ms.
import { createSocket, type Socket } from 'node:dgram';
import { randomBytes, randomInt } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import {
  MAP_LIFETIME_S, PCP_RESULTS, PMP_PORT, SSDP_GROUP, SSDP_PORT, parsePcp, parsePmp, parseRootDescription,
  parseSoapResponse, parseSsdp, pcpAnnounce, pcpMapRequest, pmpAddressRequest, pmpMapRequest, soapBody,
  ssdpSearch, type SsdpAnswer, type UpnpService,
} from './codec.ts';
import type { Logf } from '../util/log.ts';

/** How long a probe listens for NAT-PMP/PCP (tailscale: 250 ms). */
export const PROBE_TIMEOUT_MS = 250;
/** How long it listens for SSDP: miniupnpd delays its answers by up to MX (2 s) seconds. */
export const SSDP_WAIT_MS = 2_200;
/** Services seen this recently are not probed again (tailscale: 10 min). */
export const PROBE_CACHE_MS = 10 * 60_000;
/** One mapping attempt may take this long in all. */
export const MAP_TIMEOUT_MS = 3_000;
/** After a failed attempt, wait this long before the next (tailscale retries at each re-STUN, 20-26 s). */
export const RETRY_MS = 15_000;
/** HTTP requests to the IGD time out after this long. */
const HTTP_TIMEOUT_MS = 2_000;

/** The gateway and our address on its network. */
export interface Gateway { gw: string; self: string; iface: string }

/** What a probe found. */
export interface ProbeResult { upnp: boolean; pmp: boolean; pcp: boolean }

/** A live mapping. */
export interface Mapping {
  proto: 'pmp' | 'pcp' | 'upnp';
  /** The external address as ip:port. */
  external: string;
  externalIp: string;
  externalPort: number;
  internalPort: number;
  gateway: Gateway;
  /** When to renew, and when it expires (ms on the mapper's clock). */
  renewAt: number;
  expiresAt: number;
  /** PCP: the MAP's nonce (a delete must repeat it). UPnP: the service used. */
  nonce?: Uint8Array;
  service?: UpnpService;
}

/** Options for {@link PortMapper}. */
export interface PortMapperOptions {
  log: Logf;
  /** Our WireGuard UDP port (the internal port to map). */
  localPort: () => number;
  /** Called when the mapping appeared, changed or went away. */
  onChange: () => void;
  /** The gateway; default: from /proc/net/route (RFC 1918 gateways only). */
  gateway?: () => Gateway | undefined;
  /** NAT-PMP/PCP and SSDP ports on the gateway (tests). */
  pmpPort?: number;
  ssdpPort?: number;
  /** Skip UPnP (tailscale's TS_DISABLE_UPNP). */
  disableUpnp?: boolean;
  now?: () => number;
}

/** True for 10/8, 172.16/12 and 192.168/16 (and loopback, for tests). */
export function isPrivateV4(ip: string): boolean {
  const p = ip.split('.').map(Number);
  if (p.length !== 4 || p.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) return false;
  return p[0] === 10 || (p[0] === 172 && p[1]! >= 16 && p[1]! <= 31) || (p[0] === 192 && p[1] === 168) || p[0] === 127;
}

/**
 * The likely home router (tailscale likelyHomeRouterIPLinux): the first /proc/net/route entry that
 * is up with a gateway flag and an RFC 1918 gateway; our address is the first IPv4 one on that
 * interface. `routeText` is the file's content.
 */
export function gatewayFromRoutes(routeText: string, addrsOf: (iface: string) => string[]): Gateway | undefined {
  for (const line of routeText.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const flags = parseInt(f[3]!, 16);
    if ((flags & 0x3) !== 0x3) continue; // RTF_UP | RTF_GATEWAY
    const g = parseInt(f[2]!, 16);
    if (!Number.isFinite(g) || g === 0) continue;
    const gw = `${g & 0xff}.${(g >>> 8) & 0xff}.${(g >>> 16) & 0xff}.${g >>> 24}`;
    if (!isPrivateV4(gw)) continue;
    const self = addrsOf(f[0]!)[0];
    if (!self) continue;
    return { gw, self, iface: f[0]! };
  }
  return undefined;
}

function defaultGateway(): Gateway | undefined {
  let text: string;
  try { text = readFileSync('/proc/net/route', 'utf8'); } catch { return undefined; }
  const ifs = networkInterfaces();
  return gatewayFromRoutes(text, (name) => (ifs[name] ?? []).filter((a) => a.family === 'IPv4').map((a) => a.address));
}

/** A UDP4 socket with a queue of received datagrams and a wait for the next matching one. */
class Udp {
  private readonly sock: Socket;
  private readonly waiters = new Set<() => void>();
  readonly got: { data: Uint8Array; address: string; port: number }[] = [];
  private constructor(sock: Socket) {
    this.sock = sock;
    sock.on('message', (data, rinfo) => {
      this.got.push({ data: new Uint8Array(data), address: rinfo.address, port: rinfo.port });
      for (const w of [...this.waiters]) w();
    });
    sock.on('error', () => { /* a send to an unreachable gateway: treated as no answer */ });
  }
  static async open(): Promise<Udp> {
    const sock = createSocket({ type: 'udp4' });
    await new Promise<void>((resolve, reject) => { sock.once('error', reject); sock.bind(0, () => { sock.off('error', reject); resolve(); }); });
    return new Udp(sock);
  }
  send(data: Uint8Array, port: number, host: string): void {
    this.sock.send(data, port, host, () => { /* errors surface as silence */ });
  }
  /** Resolves when pred is true of what arrived, or at the deadline (ms from now). */
  wait(pred: () => boolean, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => { if (!pred()) return; clearTimeout(t); this.waiters.delete(done); resolve(); };
      const t = setTimeout(() => { this.waiters.delete(done); resolve(); }, ms);
      this.waiters.add(done);
      done();
    });
  }
  close(): void {
    try { this.sock.close(); } catch { /* closed */ }
  }
}

/** The mapper of one running node. */
export class PortMapper {
  private readonly opts: PortMapperOptions;
  private readonly now: () => number;
  private readonly pmpPort: number;
  private readonly ssdpPort: number;
  private current: Mapping | undefined;
  private probed: { at: number; gw: Gateway; result: ProbeResult; upnp: SsdpAnswer[]; pmpEpoch?: number } | undefined;
  private working: Promise<void> | undefined;
  private nextTry = -Infinity;
  private closed = false;
  private lastNoGateway = false;

  constructor(opts: PortMapperOptions) {
    this.opts = opts;
    this.now = opts.now ?? (() => performance.now());
    this.pmpPort = opts.pmpPort ?? PMP_PORT;
    this.ssdpPort = opts.ssdpPort ?? SSDP_PORT;
  }

  /** The live mapping, if any (expired ones are not returned). */
  get mapping(): Mapping | undefined {
    const m = this.current;
    return m && this.now() < m.expiresAt ? m : undefined;
  }

  /** The mapped endpoint ("ip:port") to advertise, if any. */
  get external(): string | undefined {
    return this.mapping?.external;
  }

  private gateway(): Gateway | undefined {
    return (this.opts.gateway ?? defaultGateway)();
  }

  /**
   * Which services the gateway offers (the probe behind netcheck's PortMapping line); a result
   * younger than 10 min for the same gateway is reused unless `all`. With `all` it listens until
   * every service answered or SSDP_WAIT_MS passed (miniupnpd delays SSDP answers by up to the
   * M-SEARCH's MX, 2 s); otherwise it stops 50 ms after a NAT-PMP/PCP answer or at the first
   * UPnP one. undefined without a gateway.
   */
  async probe(all = false): Promise<ProbeResult | undefined> {
    const gw = this.gateway();
    if (!gw) return undefined;
    const p = this.probed;
    if (!all && p && p.gw.gw === gw.gw && p.gw.self === gw.self && this.now() - p.at < PROBE_CACHE_MS &&
      (p.result.pmp || p.result.pcp || p.result.upnp)) return p.result;
    const udp = await Udp.open();
    try {
      const result: ProbeResult = { upnp: false, pmp: false, pcp: false };
      const upnp: SsdpAnswer[] = [];
      let pmpEpoch: number | undefined;
      const start = this.now();
      udp.send(pmpAddressRequest(), this.pmpPort, gw.gw);
      udp.send(pcpAnnounce(gw.self), this.pmpPort, gw.gw);
      if (!this.opts.disableUpnp) {
        udp.send(ssdpSearch('ssdp:all'), this.ssdpPort, gw.gw);
        udp.send(ssdpSearch('urn:schemas-upnp-org:device:InternetGatewayDevice:1'), this.ssdpPort, SSDP_GROUP);
      }
      let pmpAt = Infinity, consumed = 0;
      const enough = () => {
        for (; consumed < udp.got.length; consumed++) {
          const g = udp.got[consumed]!;
          if (g.port === this.pmpPort && g.address === gw.gw) {
            const pcp = parsePcp(g.data);
            if (pcp) { if (pcp.op === 0 && pcp.result === 0) result.pcp = true; }
            else {
              const pmp = parsePmp(g.data);
              if (pmp?.kind === 'address' && pmp.result === 0) { result.pmp = true; pmpEpoch = pmp.epoch; }
            }
            if (result.pmp || result.pcp) pmpAt = Math.min(pmpAt, this.now());
            continue;
          }
          const s = parseSsdp(g.data);
          if (s && !upnp.some((u) => u.usn === s.usn && u.location === s.location)) { result.upnp = true; upnp.push(s); }
        }
        const upnpDone = result.upnp || !!this.opts.disableUpnp;
        if (result.pmp && result.pcp && upnpDone) return true;
        if (all) return false;
        // A NAT-PMP/PCP answer (and 50 ms for the other of the two) or a UPnP one: enough to map.
        return result.upnp || this.now() - pmpAt >= 50;
      };
      const until = all ? SSDP_WAIT_MS : this.opts.disableUpnp ? PROBE_TIMEOUT_MS : SSDP_WAIT_MS;
      // Woken by each packet, and every 25 ms for the 50 ms after a NAT-PMP/PCP answer.
      for (let i = 0; i < 1000 && !enough() && this.now() - start < until; i++) {
        await udp.wait(enough, Math.max(1, Math.min(25, until - (this.now() - start))));
      }
      // Highest USN first: IGD:2 devices sort before IGD:1 (tailscale).
      upnp.sort((a, b) => (a.usn < b.usn ? 1 : a.usn > b.usn ? -1 : 0));
      this.probed = { at: this.now(), gw, result, upnp: upnp.slice(0, 10), ...(pmpEpoch !== undefined ? { pmpEpoch } : {}) };
      return result;
    } finally {
      udp.close();
    }
  }

  /**
   * Makes sure a mapping exists when the gateway offers one: starts (once) a probe and a map when
   * there is none, or a renewal past renewAt. Cheap to call often; failures wait RETRY_MS.
   */
  ensure(): void {
    if (this.closed || this.working) return;
    const now = this.now();
    const m = this.current;
    const gw = this.gateway();
    if (m && (!gw || gw.gw !== m.gateway.gw || gw.self !== m.gateway.self || m.internalPort !== this.opts.localPort())) {
      // The network or our port changed: the old mapping is of no use (released best-effort).
      this.current = undefined;
      void this.release(m);
      this.opts.onChange();
    } else if (m && now < m.renewAt) {
      return;
    }
    if (!gw) {
      if (!this.lastNoGateway) this.opts.log('portmap: no RFC 1918 gateway, nothing to map');
      this.lastNoGateway = true;
      return;
    }
    this.lastNoGateway = false;
    if (now < this.nextTry) return;
    this.working = this.create(gw).finally(() => { this.working = undefined; });
  }

  /** Waits for a running attempt (tests, netcheck). */
  async settled(): Promise<void> {
    await this.working;
  }

  private async create(gw: Gateway): Promise<void> {
    const before = this.current?.external;
    try {
      const probe = await this.probe();
      if (this.closed) return;
      if (!probe || (!probe.pmp && !probe.pcp && !probe.upnp)) {
        this.nextTry = this.now() + RETRY_MS;
        if (this.current) { this.current = undefined; this.opts.onChange(); }
        return;
      }
      const port = this.opts.localPort();
      const prev = this.current;
      let m: Mapping | undefined;
      if (probe.pmp) m = await this.mapPmp(gw, port, prev);
      if (!m && probe.pcp) m = await this.mapPcp(gw, port, prev);
      if (!m && probe.upnp) m = await this.mapUpnp(gw, port, prev);
      if (this.closed) { if (m) await this.release(m); return; }
      if (!m) {
        this.nextTry = this.now() + RETRY_MS;
        if (this.current && this.now() >= this.current.expiresAt) this.current = undefined;
      } else {
        this.current = m;
        this.nextTry = -Infinity;
        if (m.external !== before) this.opts.log(`portmap: ${m.proto} mapped ${m.external} -> :${m.internalPort} for ${Math.round((m.expiresAt - this.now()) / 1000)} s`);
      }
      if (this.current?.external !== before) this.opts.onChange();
    } catch (e) {
      this.opts.log(`portmap: ${(e as Error).message}`);
      this.nextTry = this.now() + RETRY_MS;
    }
  }

  private lease(lifetimeS: number): { renewAt: number; expiresAt: number } {
    const now = this.now();
    return { renewAt: now + (lifetimeS * 1000) / 2, expiresAt: now + lifetimeS * 1000 };
  }

  private async mapPmp(gw: Gateway, port: number, prev: Mapping | undefined): Promise<Mapping | undefined> {
    const udp = await Udp.open();
    try {
      const suggested = prev?.proto === 'pmp' ? prev.externalPort : 0;
      let ip: string | undefined, map: { externalPort: number; lifetimeS: number } | undefined, err = '';
      const look = () => {
        for (const g of udp.got) {
          if (g.port !== this.pmpPort || g.address !== gw.gw) continue;
          const r = parsePmp(g.data);
          if (!r) continue;
          if (r.result !== 0) { err = `NAT-PMP ${r.kind} result ${r.result}`; continue; }
          if (r.kind === 'address') ip = r.ip;
          else if (r.internalPort === port) map = { externalPort: r.externalPort, lifetimeS: r.lifetimeS };
        }
        return (ip !== undefined && map !== undefined) || err !== '';
      };
      for (let attempt = 0; attempt < 2 && !look(); attempt++) {
        udp.send(pmpAddressRequest(), this.pmpPort, gw.gw);
        udp.send(pmpMapRequest(port, suggested, MAP_LIFETIME_S), this.pmpPort, gw.gw);
        await udp.wait(look, attempt === 0 ? 250 : 750);
      }
      if (!ip || !map || map.lifetimeS === 0) {
        this.opts.log(`portmap: NAT-PMP did not map: ${err || 'no answer'}`);
        return undefined;
      }
      return { proto: 'pmp', external: `${ip}:${map.externalPort}`, externalIp: ip, externalPort: map.externalPort, internalPort: port, gateway: gw, ...this.lease(map.lifetimeS) };
    } finally {
      udp.close();
    }
  }

  private async mapPcp(gw: Gateway, port: number, prev: Mapping | undefined): Promise<Mapping | undefined> {
    const udp = await Udp.open();
    try {
      const nonce = prev?.proto === 'pcp' && prev.nonce ? prev.nonce : new Uint8Array(randomBytes(12));
      const suggested = prev?.proto === 'pcp' ? prev.externalPort : 0;
      let got: { ip: string; port: number; lifetimeS: number } | undefined, err = '';
      const look = () => {
        for (const g of udp.got) {
          if (g.port !== this.pmpPort || g.address !== gw.gw) continue;
          const r = parsePcp(g.data);
          if (!r || r.op !== 1 || !r.map) continue;
          if (Buffer.compare(r.map.nonce, nonce) !== 0) continue;
          if (r.result !== 0) { err = `PCP MAP result ${PCP_RESULTS[r.result] ?? r.result}`; continue; }
          if (r.map.externalIp) got = { ip: r.map.externalIp, port: r.map.externalPort, lifetimeS: r.lifetimeS };
        }
        return got !== undefined || err !== '';
      };
      for (let attempt = 0; attempt < 2 && !look(); attempt++) {
        udp.send(pcpMapRequest(gw.self, nonce, port, suggested, '0.0.0.0', MAP_LIFETIME_S), this.pmpPort, gw.gw);
        await udp.wait(look, attempt === 0 ? 250 : 750);
      }
      if (!got || got.lifetimeS === 0) {
        this.opts.log(`portmap: PCP did not map: ${err || 'no answer'}`);
        return undefined;
      }
      return { proto: 'pcp', external: `${got.ip}:${got.port}`, externalIp: got.ip, externalPort: got.port, internalPort: port, gateway: gw, nonce, ...this.lease(got.lifetimeS) };
    } finally {
      udp.close();
    }
  }

  private async soap(svc: UpnpService, action: string, args: [string, string | number][]): Promise<ReturnType<typeof parseSoapResponse>> {
    const res = await fetch(svc.controlUrl, {
      method: 'POST',
      headers: { 'Content-Type': 'text/xml; charset="utf-8"', SOAPAction: `"${svc.serviceType}#${action}"` },
      body: soapBody(svc.serviceType, action, args),
      signal: AbortSignal.timeout(HTTP_TIMEOUT_MS),
    });
    return parseSoapResponse(await res.text());
  }

  /** The WAN connection services of the gateway's IGD, the Location host rewritten to the gateway. */
  private async upnpServices(gw: Gateway): Promise<UpnpService[]> {
    for (const dev of this.probed?.upnp ?? []) {
      let url: URL;
      try { url = new URL(dev.location); } catch { continue; }
      if (url.protocol !== 'http:') continue;
      url.hostname = gw.gw;
      try {
        const res = await fetch(url, { signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
        if (!res.ok) continue;
        const svcs = parseRootDescription(await res.text(), url.toString()).map((s) => {
          const u = new URL(s.controlUrl);
          u.hostname = gw.gw;
          return { ...s, controlUrl: u.toString() };
        });
        if (svcs.length > 0) return svcs;
      } catch (e) {
        this.opts.log(`portmap: UPnP description ${url.toString()}: ${(e as Error).message}`);
      }
    }
    return [];
  }

  private async mapUpnp(gw: Gateway, port: number, prev: Mapping | undefined): Promise<Mapping | undefined> {
    const svcs = prev?.proto === 'upnp' && prev.service ? [prev.service] : await this.upnpServices(gw);
    for (const svc of svcs) {
      const tries = [prev?.proto === 'upnp' ? prev.externalPort : port, randomInt(1024, 65535)];
      for (const ext of tries) {
        if (ext < 1024) continue;
        const args = (lease: number): [string, string | number][] => [
          ['NewRemoteHost', ''], ['NewExternalPort', ext], ['NewProtocol', 'UDP'], ['NewInternalPort', port],
          ['NewInternalClient', gw.self], ['NewEnabled', 1], ['NewPortMappingDescription', 'meshd-portmap'], ['NewLeaseDuration', lease],
        ];
        const v2 = svc.serviceType.endsWith(':2');
        let r = await this.soap(svc, v2 ? 'AddAnyPortMapping' : 'AddPortMapping', args(MAP_LIFETIME_S));
        // 725 OnlyPermanentLeasesSupported, 402 invalid args: once more with lease 0 (tailscale).
        if (!r.ok && (r.code === 725 || r.code === 402)) r = await this.soap(svc, v2 ? 'AddAnyPortMapping' : 'AddPortMapping', args(0));
        if (!r.ok) {
          this.opts.log(`portmap: UPnP ${v2 ? 'AddAnyPortMapping' : 'AddPortMapping'} ${ext}: ${r.code} ${r.description}`);
          continue;
        }
        const got = v2 ? Number(r.values.NewReservedPort ?? ext) || ext : ext;
        const ip = await this.soap(svc, 'GetExternalIPAddress', []);
        const extIp = ip.ok ? ip.values.NewExternalIPAddress ?? '' : '';
        if (!extIp || extIp === '0.0.0.0' || extIp.startsWith('127.')) {
          this.opts.log(`portmap: UPnP gave no usable external address (${extIp || 'none'})`);
          await this.soap(svc, 'DeletePortMapping', [['NewRemoteHost', ''], ['NewExternalPort', got], ['NewProtocol', 'UDP']]).catch(() => undefined);
          return undefined;
        }
        return { proto: 'upnp', external: `${extIp}:${got}`, externalIp: extIp, externalPort: got, internalPort: port, gateway: gw, service: svc, ...this.lease(MAP_LIFETIME_S) };
      }
    }
    return undefined;
  }

  /** Deletes a mapping at the gateway (best effort, bounded). */
  private async release(m: Mapping): Promise<void> {
    try {
      if (m.proto === 'upnp' && m.service) {
        const r = await this.soap(m.service, 'DeletePortMapping', [['NewRemoteHost', ''], ['NewExternalPort', m.externalPort], ['NewProtocol', 'UDP']]);
        if (!r.ok) this.opts.log(`portmap: UPnP DeletePortMapping ${m.externalPort}: ${r.code} ${r.description}`);
        return;
      }
      const udp = await Udp.open();
      try {
        const req = m.proto === 'pmp'
          ? pmpMapRequest(m.internalPort, 0, 0)
          : pcpMapRequest(m.gateway.self, m.nonce!, m.internalPort, 0, '0.0.0.0', 0);
        const answered = () => udp.got.some((g) => g.port === this.pmpPort && (m.proto === 'pmp' ? parsePmp(g.data)?.kind === 'map' : parsePcp(g.data)?.op === 1));
        for (let attempt = 0; attempt < 2 && !answered(); attempt++) {
          udp.send(req, this.pmpPort, m.gateway.gw);
          await udp.wait(answered, 250);
        }
      } finally {
        udp.close();
      }
    } catch (e) {
      this.opts.log(`portmap: releasing ${m.external}: ${(e as Error).message}`);
    }
  }

  /** Stops renewing and deletes the mapping at the gateway (waits at most about a second). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.working?.catch(() => undefined);
    const m = this.current;
    this.current = undefined;
    if (m) {
      await Promise.race([this.release(m), new Promise((r) => setTimeout(r, MAP_TIMEOUT_MS).unref())]);
      this.opts.log(`portmap: released ${m.external}`);
    }
  }
}
