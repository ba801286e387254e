// The map's DNSConfig turned into what quad-100 serves and what the host is told, after
// TS:ipn/ipnlocal/node_backend.go dnsConfigForNetmap and TS:net/dns/manager.go compileConfig
// (dns-netstack-portmap.md 1.3, 1.4):
//
//   node names     FQDN and short name (FQDN minus the MagicDNS suffix, only with Proxied), lowercase;
//                  addresses: dual-stack peers give no AAAA unless self has `magicdns-aaaa`; an
//                  IPv6-only self gets only IPv6
//   hosts          ExtraRecords of type "", A or AAAA (family from the value)
//   local domains  routes with no resolvers: with Proxied the suffix, 0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.
//                  and 64..127.100.in-addr.arpa.; plus any empty split route from control
//   routes         split routes; "." = the global resolvers when set ("override local DNS"), else,
//                  when the host cannot split DNS (direct mode), the host's own nameservers
//   OS config      nothing (no routes, no resolvers) | the global IPs themselves (only plain IP
//                  resolvers, no routes, no extra records outside routes) | the service IPs, with
//                  match domains on a split-capable host
// --accept-dns=false stops after node names and hosts: quad-100 still answers them, the host is untouched.
import { isIP } from 'node:net';
import type { NetworkMap, NodeInfo } from '../control/netmap.ts';
import type { DNSResolver } from '../control/wire.ts';
import { asciiLower, canonicalIPv6, labelCount, toFQDN, zoneContains } from './names.ts';

/** quad-100's IPv4 address. */
export const SERVICE_IP4 = '100.100.100.100';
/** quad-100's IPv6 address. */
export const SERVICE_IP6 = 'fd7a:115c:a1e0::53';
/** The name quad-100 gives itself (TS dnsSymbolicFQDN). */
export const SERVICE_FQDN = 'magicdns.localhost-tailscale-daemon.';
/** Self node attribute that keeps peers' IPv6 addresses in answers (TS NodeAttrMagicDNSPeerAAAA). */
export const ATTR_MAGICDNS_AAAA = 'magicdns-aaaa';

/** One upstream DNS server. */
export interface Upstream {
  /** IP address (IPv6 canonical). */
  readonly ip: string;
  readonly port: number;
  /** As the map gave it. */
  readonly text: string;
}

/** A forwarding route: queries under `suffix` go to `resolvers`. */
export interface Route {
  /** FQDN suffix ("." = everything). */
  readonly suffix: string;
  readonly resolvers: readonly Upstream[];
}

/** What quad-100 needs, besides the node index. */
export interface ResolverConfig {
  /** Extra records: lowercase FQDN -> addresses in map order. */
  readonly hosts: ReadonlyMap<string, readonly string[]>;
  /** Extra records by address -> FQDN (for PTR). */
  readonly hostByIp: ReadonlyMap<string, string>;
  /** Zones quad-100 answers alone (NXDOMAIN inside). */
  readonly localDomains: readonly string[];
  /** Forwarding routes, most labels first. */
  readonly routes: readonly Route[];
}

/** What the host's resolver configuration should say. */
export interface OSConfig {
  readonly nameservers: readonly string[];
  readonly searchDomains: readonly string[];
  /** Suffixes routed to `nameservers` on a split-capable host; empty = all queries. */
  readonly matchDomains: readonly string[];
}

/** The host's resolvers before meshd changed anything. */
export interface BaseConfig {
  readonly nameservers: readonly string[];
  readonly searchDomains: readonly string[];
}

/** Inputs besides the map. */
export interface CompileOptions {
  /** --accept-dns (tailscale's CorpDNS pref). */
  readonly acceptDns: boolean;
  /** The host routes by domain itself (systemd-resolved). */
  readonly osSupportsSplit: boolean;
  /** The host's pre-meshd resolvers (direct mode), for route "." when the map gives no global ones. */
  readonly base?: BaseConfig | undefined;
}

/** Everything compiled from one map. */
export interface DnsConfig {
  readonly resolver: ResolverConfig;
  readonly os: OSConfig;
  readonly nodes: NodeIndex;
  /** Resolver entries the map gave that meshd cannot use (DoH, bad text). */
  readonly unusable: readonly string[];
}

/** Tailnet node names and addresses for quad-100, rebuilt with every map (TS nodeByName, nodeByAddr). */
export class NodeIndex {
  /** Lowercase name with trailing dot (FQDN, and short name) -> the addresses quad-100 answers with. */
  private readonly byName = new Map<string, readonly string[]>();
  /** Address (canonical text) -> the node's FQDN. */
  private readonly byAddr = new Map<string, string>();
  /** MagicDNS suffix without trailing dot ("" when unknown). */
  readonly suffix: string;

  constructor(nodes: readonly NodeInfo[], self: NodeInfo | undefined, proxied: boolean) {
    const selfAddrs = (self?.addresses ?? []).map(addrOf);
    const selfV6Only = selfAddrs.some((a) => a.includes(':')) && !selfAddrs.some((a) => !a.includes(':'));
    const wantAAAA = self?.raw.CapMap != null && ATTR_MAGICDNS_AAAA in self.raw.CapMap;
    const selfName = asciiLower(trimDot(self?.name ?? ''));
    const dot = selfName.indexOf('.');
    this.suffix = dot >= 0 ? selfName.slice(dot + 1) : '';
    for (const n of nodes) {
      if (!n.name) continue;
      const all = n.addresses.map(addrOf);
      let fqdn: string;
      try { fqdn = toFQDN(n.name); } catch { continue; }
      for (const a of all) this.byAddr.set(a, fqdn);
      if (all.length === 0) continue;
      // TS magicDNSAddrs: an IPv6-only self gets IPv6 only; otherwise dual-stack nodes lose their IPv6 unless magicdns-aaaa.
      const have4 = all.some((a) => !a.includes(':'));
      const answer = all.filter((a) => (selfV6Only ? a.includes(':') : !(a.includes(':') && have4 && !wantAAAA)));
      const canon = asciiLower(trimDot(n.name));
      this.byName.set(`${canon}.`, answer);
      if (this.suffix && canon.endsWith(`.${this.suffix}`)) {
        const short = canon.slice(0, -this.suffix.length - 1);
        // Bare names resolve only with MagicDNS on (TS nodeByFQDNLocked).
        if (proxied || short.includes('.')) this.byName.set(`${short}.`, answer);
      }
    }
  }

  /** The addresses quad-100 gives for a lowercase FQDN (maybe none), or undefined when no node has that name (TS magicDNSHostAddrs). */
  lookup(fqdn: string): readonly string[] | undefined {
    return this.byName.get(fqdn);
  }

  /** The FQDN of the node owning `ip` (canonical text), or undefined. */
  nameOf(ip: string): string | undefined {
    return this.byAddr.get(ip);
  }

  /** How many names are indexed. */
  get size(): number {
    return this.byName.size;
  }
}

/** An empty configuration (no map, or an expired self key). */
export const EMPTY_CONFIG: DnsConfig = {
  resolver: { hosts: new Map(), hostByIp: new Map(), localDomains: [], routes: [] },
  os: { nameservers: [], searchDomains: [], matchDomains: [] },
  nodes: new NodeIndex([], undefined, false),
  unusable: [],
};

/** Parses a map resolver; undefined for DoH and other forms meshd does not speak. */
export function parseUpstream(r: DNSResolver): Upstream | undefined {
  // null (or a missing Addr) is Go's empty string: unusable, like any other text meshd cannot use.
  const t = (r.Addr ?? '').trim();
  if (isIP(t)) return { ip: normIp(t), port: 53, text: t };
  let m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(t);
  if (m && isIP(m[1]!) === 6) return port(normIp(m[1]!), m[2]!, t);
  m = /^([0-9.]+):(\d{1,5})$/.exec(t);
  if (m && isIP(m[1]!) === 4) return port(m[1]!, m[2]!, t);
  return undefined;
}

function port(ip: string, p: string, text: string): Upstream | undefined {
  const n = Number(p);
  return n > 0 && n < 65536 ? { ip, port: n, text } : undefined;
}

/** True for quad-100's own addresses (never an upstream: that would loop). */
export function isServiceIp(ip: string): boolean {
  return ip === SERVICE_IP4 || ip === SERVICE_IP6;
}

/** The quad-100 zones MagicDNS adds for a suffix (TS magicDNSRootDomains). */
export function magicDnsRootDomains(suffix: string): string[] {
  if (!suffix) return [];
  const out = [toFQDN(suffix), '0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa.'];
  for (let i = 64; i <= 127; i++) out.push(`${i}.100.in-addr.arpa.`);
  return out;
}

/** Compiles the map's DNS settings for quad-100 and for the host. */
export function compileDnsConfig(map: NetworkMap | undefined, opts: CompileOptions): DnsConfig {
  const self = map?.self;
  if (!map || !self || self.expired) return EMPTY_CONFIG;
  const dns = map.dns ?? {};
  const nodes = new NodeIndex([self, ...map.peers.values()], self, dns.Proxied === true);
  const unusable: string[] = [];
  const upstreams = (list: readonly DNSResolver[] | null | undefined): Upstream[] => {
    const out: Upstream[] = [];
    for (const r of list ?? []) {
      const u = parseUpstream(r);
      if (!u) { unusable.push(r.Addr ?? ''); continue; }
      if (isServiceIp(u.ip)) continue;
      out.push(u);
    }
    return out;
  };

  const hosts = new Map<string, string[]>();
  for (const rec of dns.ExtraRecords ?? []) {
    if (rec.Type && rec.Type !== 'A' && rec.Type !== 'AAAA') continue;
    if (typeof rec.Value !== 'string' || typeof rec.Name !== 'string' || !isIP(rec.Value)) continue;
    let fqdn: string;
    try { fqdn = asciiLower(toFQDN(rec.Name)); } catch { continue; }
    const list = hosts.get(fqdn) ?? [];
    list.push(normIp(rec.Value));
    hosts.set(fqdn, list);
  }
  const hostByIp = new Map<string, string>();
  for (const [name, ips] of hosts) for (const ip of ips) hostByIp.set(ip, name);

  const emptyOs: OSConfig = { nameservers: [], searchDomains: [], matchDomains: [] };
  if (!opts.acceptDns) {
    return { resolver: { hosts, hostByIp, localDomains: [], routes: [] }, os: emptyOs, nodes, unusable };
  }

  const searchDomains: string[] = [];
  for (const d of dns.Domains ?? []) { try { searchDomains.push(asciiLower(toFQDN(d))); } catch { /* dropped */ } }
  // Routes as TS dns.Config.Routes: suffix -> resolvers, empty = answered locally.
  const cfgRoutes = new Map<string, Upstream[]>();
  if (dns.Proxied) for (const z of magicDnsRootDomains(nodes.suffix)) cfgRoutes.set(z, []);
  const defaults = upstreams(dns.Resolvers);
  for (const [suffix, list] of Object.entries(dns.Routes ?? {})) {
    let fqdn: string;
    try { fqdn = asciiLower(toFQDN(suffix)); } catch { continue; }
    cfgRoutes.set(fqdn, upstreams(list));
  }
  // No global resolvers and no exit node: FallbackResolvers stay unused (TS: only with an exit node).

  const localDomains: string[] = [];
  const routes = new Map<string, Upstream[]>();
  for (const [suffix, list] of cfgRoutes) {
    if (list.length === 0) localDomains.push(suffix);
    else routes.set(suffix, list);
  }
  const serviceIps = selfAddrsV6Only(self) ? [SERVICE_IP6] : [SERVICE_IP4, SERVICE_IP6];
  const done = (os: OSConfig, rs: Map<string, Upstream[]>): DnsConfig => ({
    resolver: { hosts, hostByIp, localDomains, routes: sortRoutes(rs) }, os, nodes, unusable,
  });

  if (defaults.length === 0 && cfgRoutes.size === 0) return done({ ...emptyOs, searchDomains }, new Map());
  const hostsOutsideRoutes = !dns.Proxied || [...hosts.keys()].some((h) => ![...cfgRoutes.keys()].some((r) => zoneContains(r, h)));
  if (defaults.length > 0 && cfgRoutes.size === 0 && !hostsOutsideRoutes && defaults.every((u) => u.port === 53)) {
    // Plain resolvers only: the host uses them directly, quad-100 is bypassed.
    return done({ nameservers: defaults.map((u) => u.ip), searchDomains, matchDomains: [] }, new Map());
  }
  if (defaults.length > 0) {
    routes.set('.', defaults);
    return done({ nameservers: serviceIps, searchDomains, matchDomains: [] }, routes);
  }
  const matchDomains = [...cfgRoutes.keys()].sort();
  if (opts.osSupportsSplit) {
    const sets = [...cfgRoutes.values()];
    const first = sets[0]!;
    const same = sets.every((s) => s.length === first.length && s.every((u, i) => u.text === first[i]!.text));
    if (same && first.length > 0 && first.every((u) => u.port === 53)) {
      return done({ nameservers: first.map((u) => u.ip), searchDomains, matchDomains }, new Map());
    }
    return done({ nameservers: serviceIps, searchDomains, matchDomains }, routes);
  }
  // A host that cannot split DNS: everything goes to quad-100, which sends the rest to the host's old resolvers.
  const base = opts.base;
  routes.set('.', (base?.nameservers ?? []).filter((ip) => !isServiceIp(normIp(ip))).map((ip) => ({ ip: normIp(ip), port: 53, text: ip })));
  const search = [...searchDomains];
  for (const d of base?.searchDomains ?? []) {
    let f: string;
    try { f = asciiLower(toFQDN(d)); } catch { continue; }
    if (!search.includes(f)) search.push(f);
  }
  return done({ nameservers: serviceIps, searchDomains: search, matchDomains: [] }, routes);
}

/** Routes sorted as TS forwarder.setRoutes: most labels first ("." last). */
function sortRoutes(m: Map<string, Upstream[]>): Route[] {
  return [...m].map(([suffix, resolvers]) => ({ suffix, resolvers }))
    .sort((a, b) => labelCount(b.suffix) - labelCount(a.suffix) || (a.suffix < b.suffix ? -1 : 1));
}

/** The route for a lowercase FQDN, or undefined (then quad-100 answers SERVFAIL). */
export function routeFor(routes: readonly Route[], fqdn: string): Route | undefined {
  for (const r of routes) if (zoneContains(r.suffix, fqdn)) return r;
  return undefined;
}

function selfAddrsV6Only(self: NodeInfo): boolean {
  const a = self.addresses.map(addrOf);
  return a.some((x) => x.includes(':')) && !a.some((x) => !x.includes(':'));
}

function addrOf(prefix: string): string {
  const i = prefix.indexOf('/');
  return normIp(i >= 0 ? prefix.slice(0, i) : prefix);
}

function trimDot(s: string): string {
  return s.endsWith('.') ? s.slice(0, -1) : s;
}

/** Canonical text of an address (IPv6 per RFC 5952, IPv4 as is). */
export function normIp(ip: string): string {
  return ip.includes(':') ? canonicalIPv6(ip) ?? ip : ip;
}
