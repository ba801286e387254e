// From the network map and the user's routing prefs to what the data plane and the host should do:
// each peer's WireGuard allowed IPs, the routes of table 52, the packet filter's local nets.
// Pure: no I/O (control-plane.md 7.2/7.3, data-plane.md 7.4).
//   - a peer's exit routes (0.0.0.0/0 and ::/0) are used only for the chosen exit node
//   - peers' other routes (approved subnet routes) only with --accept-routes
//   - with an exit node chosen, both default routes go into the tunnel even when the node is
//     missing or offers no exit routes: traffic is then dropped, never leaked (tailscale does so)
import type { NetworkMap, NodeInfo } from '../control/netmap.ts';
import { formatPrefix, parsePrefix } from '../wg/allowedips.ts';
import type { RouterConfig } from './linux.ts';

/** The user's routing choices (`meshd up` flags). */
export interface RoutePrefs {
  /** Offer this node as an exit node (RoutableIPs 0.0.0.0/0 and ::/0). */
  advertiseExitNode: boolean;
  /** Subnet routes to offer (canonical CIDRs). */
  advertiseRoutes: string[];
  /** Exit node to use: a tailnet IP or a hostname; "" = none. */
  exitNode: string;
  /** Keep the LAN on the main table while using an exit node. */
  exitNodeAllowLanAccess: boolean;
  /** Install peers' approved subnet routes. */
  acceptRoutes: boolean;
}

/** Prefs before any flag: nothing advertised or used. */
export const DEFAULT_PREFS: RoutePrefs = { advertiseExitNode: false, advertiseRoutes: [], exitNode: '', exitNodeAllowLanAccess: false, acceptRoutes: false };

/** The exit routes. */
export const EXIT_ROUTES = ['0.0.0.0/0', '::/0'] as const;

/** True for 0.0.0.0/0 and ::/0. */
export function isExitRoute(p: string): boolean {
  return p === '0.0.0.0/0' || p === '::/0';
}

/** Canonical CIDR text; throws TypeError naming the bad entry. */
export function canonicalPrefix(text: string): string {
  if (!text.includes('/')) throw new TypeError(`bad route ${JSON.stringify(text)}: want a CIDR like 198.19.5.0/24`);
  return formatPrefix(parsePrefix(text.trim()));
}

/**
 * Prefs with the flags of one `up` laid over them (absent flags keep their value). Throws TypeError
 * naming the conflict or a bad route. The agent's Routing and the CLI that registers for a fresh
 * agent (src/cli/earlylogin.ts) merge with this one function, so both send the same RoutableIPs.
 */
export function mergePrefs(prev: RoutePrefs, p: Partial<RoutePrefs>): RoutePrefs {
  const next: RoutePrefs = { ...prev };
  if (p.advertiseExitNode !== undefined) next.advertiseExitNode = p.advertiseExitNode;
  if (p.advertiseRoutes !== undefined) next.advertiseRoutes = p.advertiseRoutes.map(canonicalPrefix);
  if (p.exitNode !== undefined) next.exitNode = p.exitNode.trim();
  if (p.exitNodeAllowLanAccess !== undefined) next.exitNodeAllowLanAccess = p.exitNodeAllowLanAccess;
  if (p.acceptRoutes !== undefined) next.acceptRoutes = p.acceptRoutes;
  if (next.advertiseExitNode && next.exitNode) {
    throw new TypeError('cannot offer an exit node and use one at the same time: drop --advertise-exit-node or pass --exit-node=');
  }
  return next;
}

/** Hostinfo.RoutableIPs for the prefs: the subnet routes, plus both exit routes for an exit node. */
export function routableIPs(p: RoutePrefs): string[] {
  const out = p.advertiseRoutes.filter((r) => !isExitRoute(r));
  if (p.advertiseExitNode) out.push(...EXIT_ROUTES);
  return out;
}

/** True when a peer offers itself as an exit node (both exit routes approved; tailscale's ContainsExitRoutes). */
export function offersExit(n: NodeInfo): boolean {
  return EXIT_ROUTES.every((r) => n.allowedIPs.includes(r));
}

/** Finds the peer named by --exit-node: one of its tailnet IPs, its hostname, its MagicDNS name. */
export function findExitNode(map: NetworkMap, text: string): NodeInfo | undefined {
  const want = text.trim().toLowerCase().replace(/\.$/, '');
  if (!want) return undefined;
  for (const p of map.peers.values()) {
    if (p.addresses.some((a) => a.split('/')[0]!.toLowerCase() === want)) return p;
  }
  for (const p of map.peers.values()) {
    const name = p.name.toLowerCase().replace(/\.$/, '');
    if (p.hostname.toLowerCase() === want || name === want || name.split('.')[0] === want) return p;
  }
  return undefined;
}

/** The peers' subnet routes in use (approved by control), i.e. allowed IPs beyond addresses and exit routes. */
export function subnetRoutes(n: NodeInfo): string[] {
  return n.allowedIPs.filter((a) => !isExitRoute(a) && !n.addresses.includes(a));
}

/** What to configure for one network map. */
export interface RoutePlan {
  /** WireGuard allowed IPs by peer node ID. */
  peerAllowedIPs: Map<number, string[]>;
  /** Host routing. */
  router: RouterConfig;
  /** Where packets from the tunnel may go: our addresses and the routes we serve... */
  localNets: string[];
  /** ...except these: an exit node's own LANs and host addresses, unless advertised as routes. */
  notLocalNets: string[];
  /** The exit node in use, if any was asked for. */
  exitNode: { wanted: string; id: number | undefined; hostname: string | undefined; offersExit: boolean } | undefined;
}

/** Host facts the plan needs. */
export interface HostFacts {
  /** Prefixes of the host's own LANs (for --exit-node-allow-lan-access). */
  lanPrefixes: readonly string[];
  /** The host's own addresses outside the tailnet. */
  hostAddresses?: readonly string[];
}

/** Plans routes, allowed IPs and local nets for a map. */
export function planRoutes(map: NetworkMap, prefs: RoutePrefs, host: HostFacts): RoutePlan {
  const exit = prefs.exitNode ? findExitNode(map, prefs.exitNode) : undefined;
  const peerAllowedIPs = new Map<number, string[]>();
  const routes = new Set<string>();
  for (const p of map.peers.values()) {
    const allowed: string[] = [];
    for (const a of p.allowedIPs) {
      if (p.addresses.includes(a)) allowed.push(a);
      else if (isExitRoute(a)) { if (exit && p.id === exit.id) allowed.push(a); }
      else if (prefs.acceptRoutes) { allowed.push(a); routes.add(a); }
    }
    peerAllowedIPs.set(p.id, allowed);
  }
  if (prefs.exitNode) for (const r of EXIT_ROUTES) routes.add(r);
  const self = map.self;
  const localNets = new Set<string>([...(self?.addresses ?? []), ...(self?.allowedIPs ?? [])]);
  for (const r of routableIPs(prefs)) localNets.add(r);
  const advertising = prefs.advertiseExitNode || prefs.advertiseRoutes.length > 0;
  // Tailscale's exit node serves "the internet": 0.0.0.0/0 minus its own LANs and addresses,
  // unless those are advertised as subnet routes (data-plane.md 7.6).
  const servesExit = prefs.advertiseExitNode || EXIT_ROUTES.some((r) => self?.allowedIPs.includes(r));
  const notLocalNets = servesExit
    ? [...host.lanPrefixes.filter((p) => !prefs.advertiseRoutes.includes(p)), ...(host.hostAddresses ?? []).map((a) => (a.includes(':') ? `${a}/128` : `${a}/32`))]
    : [];
  return {
    peerAllowedIPs,
    router: {
      routes: [...routes],
      throwRoutes: prefs.exitNode && prefs.exitNodeAllowLanAccess ? [...host.lanPrefixes] : [],
      masquerade: advertising,
    },
    localNets: [...localNets],
    notLocalNets,
    exitNode: prefs.exitNode
      ? { wanted: prefs.exitNode, id: exit?.id, hostname: exit ? (exit.hostname || exit.name.split('.')[0]) : undefined, offersExit: exit ? offersExit(exit) : false }
      : undefined,
  };
}

/** Parses --advertise-routes text (comma-separated CIDRs); throws TypeError naming a bad entry. */
export function parseRouteList(text: string): string[] {
  const out: string[] = [];
  for (const part of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const c = canonicalPrefix(part);
    if (!out.includes(c)) out.push(c);
  }
  return out;
}
