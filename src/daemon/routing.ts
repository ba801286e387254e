// The agent's routing side: routing prefs from `up`, the packet filter, and the Linux router,
// driven by each network map. The agent calls in at up (start), per map (apply), at down (stop);
// everything else lives in src/router and src/filter.
import { networkInterfaces } from 'node:os';
import type { MapDelta, NetworkMap } from '../control/netmap.ts';
import type { Hostinfo } from '../control/wire.ts';
import { PacketFilter } from '../filter/filter.ts';
import { LinuxRouter, cleanupStale, forwardingWarning, type Exec } from '../router/linux.ts';
import { DEFAULT_PREFS, canonicalPrefix, mergePrefs, isExitRoute, offersExit, planRoutes, routableIPs, subnetRoutes, type RoutePlan, type RoutePrefs } from '../router/plan.ts';
import type { DataPlane } from './dataplane.ts';
import type { Touched } from './peersync.ts';
import type { NodeInfo } from '../control/netmap.ts';
import type { Logf } from '../util/log.ts';

/** Least time between two map refreshes for route approval (ms). */
const REFRESH_MIN_MS = 3_000;

/** Routing fields of `meshd status` for this node. */
export interface SelfRouting {
  /** Routes this node offers (Hostinfo.RoutableIPs). */
  advertisedRoutes: string[];
  /** Of those, the ones control approved (they appear in our own AllowedIPs). */
  approvedRoutes: string[];
  /** Advertised but not (yet) approved. */
  unapprovedRoutes: string[];
  /** The exit node in use. */
  exitNode: { wanted: string; hostname: string | null; active: boolean } | null;
  acceptRoutes: boolean;
  exitNodeAllowLanAccess: boolean;
  /** Packet filter: rules in force and packets it dropped. */
  filter: { rules: number; dropped: number };
  /** Problems the user can fix (forwarding off, exit node missing). */
  health: string[];
}

/** Routing fields of `meshd status` for a peer. */
export interface PeerRouting {
  /** The peer offers itself as an exit node. */
  exitNodeOption: boolean;
  /** This peer is our exit node. */
  exitNode: boolean;
  /** Its approved subnet routes. */
  subnetRoutes: string[];
}

export { parseRouteList } from '../router/plan.ts';

/** Prefs, filter and router for one agent. */
export class Routing {
  /** Current prefs (kept while the agent runs; `up` changes only the flags it was given). */
  prefs: RoutePrefs = { ...DEFAULT_PREFS };
  /** The packet filter the data plane runs. */
  readonly filter = new PacketFilter();
  /** Program the host's routes, rules and nft (false in userspace-networking mode: the filter only). */
  hostRouting = true;
  private readonly tun: string;
  private readonly log: Logf;
  private readonly exec: Exec | undefined;
  private router: LinuxRouter | undefined;
  private plan: RoutePlan | undefined;
  private routerError: string | undefined;
  private lastRefresh = 0;
  private refreshTimer: NodeJS.Timeout | undefined;
  /** apply() runs one at a time (map deltas and `up` may both call it). */
  private applying: Promise<unknown> = Promise.resolve();

  constructor(tun: string, log: Logf, exec?: Exec) {
    this.tun = tun;
    this.log = log;
    this.exec = exec;
  }

  /** Removes rules, routes and nft tables a crashed agent left behind. */
  async cleanupStale(): Promise<void> {
    await cleanupStale(this.log, this.exec);
  }

  /** Merges the flags `up` was given; true when the advertised routes changed. */
  setPrefs(p: Partial<RoutePrefs>): boolean {
    const before = routableIPs(this.prefs).join(',');
    const next = mergePrefs(this.prefs, p);
    this.prefs = next;
    return routableIPs(next).join(',') !== before;
  }

  /** The Hostinfo fields routing owns. */
  hostinfo(): Hostinfo {
    return { RoutableIPs: routableIPs(this.prefs) };
  }

  /**
   * Attaches to a new data plane. Control and DERP need no per-address rules: their sockets carry
   * the bypass mark (src/net/tcp.ts). `controlUrl` is kept for callers; it is not resolved.
   */
  async start(dp: DataPlane, _controlUrl: string): Promise<void> {
    dp.filter = this.filter;
    if (this.hostRouting) {
      this.router = new LinuxRouter(this.tun, this.log, this.exec);
      // A failure shows when the first map's set() tries again and reports it.
      this.router.prepare().catch(() => {});
    }
  }

  /** Node ID of the exit node in use (undefined: none, or not in the map). */
  get exitNodeId(): number | undefined {
    return this.plan?.exitNode?.id;
  }

  /**
   * Applies a network map: host routes and filter now; returns each peer's WireGuard allowed IPs.
   * With the peer IDs a delta touched, when none of them changed what routing reads (name,
   * addresses, allowed IPs) and neither did the self node or the packet filter, the last plan
   * stands: a peer roaming costs O(1), not a new plan over every peer.
   */
  apply(m: NetworkMap, touched: Touched = 'all'): Promise<Map<number, string[]>> {
    const p = this.applying.then(() => this.applyNow(m, touched));
    this.applying = p.catch(() => {});
    return p;
  }

  /** Full plans computed so far (tests count them). */
  plans = 0;
  private planKeys = new Map<number, string>();
  private planSelf: NetworkMap['self'];
  private planFilters: unknown[] = [];

  private planStands(m: NetworkMap, touched: Touched): boolean {
    if (touched === 'all' || !this.plan || this.routerError !== undefined || m.self !== this.planSelf) return false;
    const f = [...m.packetFilters.values()];
    if (f.length !== this.planFilters.length || f.some((x, i) => x !== this.planFilters[i])) return false;
    for (const id of touched) {
      const p = m.peers.get(id), had = this.planKeys.get(id);
      if (!p || had === undefined || routingKey(p) !== had) return false;
    }
    return true;
  }

  private async applyNow(m: NetworkMap, touched: Touched): Promise<Map<number, string[]>> {
    if (this.planStands(m, touched)) return this.plan!.peerAllowedIPs;
    this.plans++;
    this.planSelf = m.self;
    this.planFilters = [...m.packetFilters.values()];
    this.planKeys = new Map([...m.peers].map(([id, p]) => [id, routingKey(p)]));
    const router = this.router;
    const host = hostNets(this.tun);
    const plan = planRoutes(m, this.prefs, { lanPrefixes: host.prefixes, hostAddresses: host.addresses });
    const prev = this.plan?.exitNode;
    this.plan = plan;
    this.filter.update(m.packetFilter, plan.localNets, plan.notLocalNets);
    for (const p of this.filter.problems) this.log(`packet filter: skipped ${p.text}: ${p.reason}`);
    const ex = plan.exitNode;
    if (ex && (ex.id !== prev?.id || ex.offersExit !== prev?.offersExit)) {
      this.log(ex.id === undefined ? `exit node ${ex.wanted} is not in the tailnet: internet traffic is dropped until it appears`
        : ex.offersExit ? `using exit node ${ex.hostname}` : `exit node ${ex.hostname} offers no approved exit routes: internet traffic is dropped`);
    }
    if (router) {
      try {
        await router.set(plan.router);
        this.routerError = undefined;
      } catch (e) {
        this.routerError = (e as Error).message;
        this.log(`routing: ${this.routerError}`);
      }
    }
    return plan.peerAllowedIPs;
  }

  /**
   * Calls `refresh` (a fresh full map) when one is needed to learn whether control approved our
   * routes. Headscale v0.29.2 answers `nodes approve-routes` with a policy change that carries the
   * packet filter but not our own node (hscontrol/state SetApprovedRoutes -> change.PolicyChange),
   * so our AllowedIPs stay stale until the next full map. Only while some advertised route is not
   * approved yet; at most once per 3 s, a change inside that window refreshes when it ends.
   */
  onDelta(d: MapDelta, m: NetworkMap, refresh: () => void, now = Date.now()): void {
    if (!d.packetFilterChanged || d.selfChanged) return;
    const self = m.self;
    if (!self || !routableIPs(this.prefs).some((r) => !self.allowedIPs.includes(r))) return;
    if (this.refreshTimer) return;
    const wait = this.lastRefresh + REFRESH_MIN_MS - now;
    const go = (): void => { this.refreshTimer = undefined; this.lastRefresh = Date.now(); refresh(); };
    if (wait <= 0) go();
    else this.refreshTimer = setTimeout(go, wait);
  }

  /**
   * Removes routes, rules and the nft table; detaches the filter. Waits for a map being applied to
   * finish first (it would re-add rules after close() otherwise); maps applied later touch no host state.
   */
  async stop(dp: DataPlane | undefined): Promise<void> {
    if (dp) dp.filter = undefined;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = undefined;
    const r = this.router;
    this.router = undefined;
    await this.applying;
    this.plan = undefined;
    this.planKeys = new Map();
    this.planSelf = undefined;
    if (r) await r.close();
  }

  /** Status of this node's routing. */
  selfStatus(m: NetworkMap | undefined): SelfRouting {
    const advertised = routableIPs(this.prefs);
    const self = m?.self;
    const approved = advertised.filter((r) => self?.allowedIPs.includes(r) ?? false);
    const health: string[] = [];
    if (advertised.length > 0 && this.hostRouting) {
      const w = forwardingWarning(advertised.some((r) => !r.includes(':')), advertised.some((r) => r.includes(':')));
      if (w) health.push(w);
    }
    const ex = this.plan?.exitNode;
    if (ex && (ex.id === undefined || !ex.offersExit)) {
      health.push(ex.id === undefined ? `exit node ${ex.wanted} is not a peer: internet traffic is dropped (clear it with --exit-node=)`
        : `exit node ${ex.wanted} has no approved exit routes: internet traffic is dropped`);
    }
    if (this.routerError) health.push(`routing: ${this.routerError}`);
    const c = this.filter.counters;
    return {
      advertisedRoutes: advertised,
      approvedRoutes: approved,
      unapprovedRoutes: advertised.filter((r) => !approved.includes(r)),
      exitNode: ex ? { wanted: ex.wanted, hostname: ex.hostname ?? null, active: ex.id !== undefined && ex.offersExit } : null,
      acceptRoutes: this.prefs.acceptRoutes,
      exitNodeAllowLanAccess: this.prefs.exitNodeAllowLanAccess,
      filter: { rules: this.filter.ruleCount, dropped: c.dropNoRule + c.dropNotLocal + c.dropShort + c.dropMulticast + c.dropLinkLocal + c.dropUnknown },
      health,
    };
  }

  /** Status of a peer's routing. */
  peerStatus(m: NetworkMap, id: number): PeerRouting {
    const p = m.peers.get(id);
    return {
      exitNodeOption: p ? offersExit(p) : false,
      exitNode: this.plan?.exitNode?.id === id,
      subnetRoutes: p ? subnetRoutes(p) : [],
    };
  }
}

/** The host's own LAN prefixes and addresses (not the TUN, loopback, link-local or tailnet ranges). */
function hostNets(tun: string): { prefixes: string[]; addresses: string[] } {
  const out = new Set<string>();
  const addresses: string[] = [];
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    if (name === tun) continue;
    for (const a of addrs ?? []) {
      if (a.internal || !a.cidr) continue;
      if (a.family === 'IPv6' && (a.address.startsWith('fe80') || a.address.startsWith('fd7a:115c:a1e0'))) continue;
      if (a.family === 'IPv4' && inTailnetV4(a.address)) continue;
      addresses.push(a.address);
      try {
        const c = canonicalPrefix(a.cidr);
        if (!isExitRoute(c)) out.add(c);
      } catch { /* skip */ }
    }
  }
  return { prefixes: [...out], addresses };
}

function inTailnetV4(ip: string): boolean {
  const [a, b] = ip.split('.').map(Number);
  return a === 100 && b !== undefined && b >= 64 && b < 128;
}

/** What the route plan reads from a peer. */
function routingKey(p: NodeInfo): string {
  return `${p.name}|${p.hostname}|${p.expired}|${p.addresses.join(',')}|${p.allowedIPs.join(',')}`;
}
