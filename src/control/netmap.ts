// The network map: MapResponses from the streaming poll folded into current state, with the
// delta rules of TS:control/controlclient/map.go (control-plane.md 4.3):
//   Peers non-empty     → replaces the peer set; the message's other peer deltas are ignored
//   PeersRemoved        → delete by ID
//   PeersChanged        → upsert whole nodes
//   PeerSeenChange / OnlineChange → per-ID flags
//   PeersChangedPatch   → partial updates; unknown IDs ignored
//   DERPMap             → replaces; Regions null/absent keeps the old regions; a null region deletes it
//   PacketFilter        → legacy: same as PacketFilters {"base": …}
//   PacketFilters       → named chunks; null deletes; "*": null clears all first; effective filter is
//                         the concatenation in sorted key order
//   UserProfiles        → upsert by ID; Node, DNSConfig, SSHPolicy → replace when present;
//   Domain              → replace when non-empty. KeepAlive messages change nothing.
// Pure: no I/O, no clock except ControlTime from the server.
import { parseNodePublic, parseDiscoPublic, type DiscoPublic, type NodePublic } from './keys.ts';
import type { DERPMap, DERPRegion, DNSConfig, FilterRule, MapResponse, PeerChange, PingRequest, UserProfile, WireNode } from './wire.ts';
import { checkMapResponse } from './wirecheck.ts';

/** A node (self or peer) as the data plane wants it. */
export interface NodeInfo {
  /** Control's node ID. */
  readonly id: number;
  /** Stable ID text. */
  readonly stableId: string;
  /** MagicDNS name (FQDN with trailing dot). */
  readonly name: string;
  /** Hostname the node reported. */
  readonly hostname: string;
  /** Owning user ID (2147455555 for tagged nodes on headscale). */
  readonly user: number;
  /** WireGuard public key. */
  readonly nodeKey: NodePublic;
  /** The same key as `nodekey:` text. */
  readonly nodeKeyText: string;
  /** Disco public key; undefined until the node has sent one to control. */
  readonly discoKey: DiscoPublic | undefined;
  /** The same key as `discokey:` text. */
  readonly discoKeyText: string | undefined;
  /** The node's own tailnet addresses as prefixes ("100.64.0.1/32"). */
  readonly addresses: readonly string[];
  /** Prefixes routed to this node (addresses + approved routes); = addresses when absent. */
  readonly allowedIPs: readonly string[];
  /** Reported UDP endpoints "ip:port". */
  readonly endpoints: readonly string[];
  /** Home DERP region, 0 if none. */
  readonly homeDERP: number;
  /** Online per control; undefined when unknown. */
  readonly online: boolean | undefined;
  /** Node key expired. */
  readonly expired: boolean;
  /** Node key expiry (RFC 3339), undefined when it never expires. */
  readonly keyExpiry: string | undefined;
  /** Last seen (RFC 3339), only for offline nodes. */
  readonly lastSeen: string | undefined;
  /** ACL tags. */
  readonly tags: readonly string[];
  /** Subnet routes this node is primary for. */
  readonly primaryRoutes: readonly string[];
  /** The wire object this view was made from (after patches). */
  readonly raw: Readonly<WireNode>;
}

/** What one MapResponse changed. */
export interface MapDelta {
  /** A keep-alive: nothing changed. */
  readonly keepAlive: boolean;
  /** The message replaced the whole peer set. */
  readonly fullPeers: boolean;
  /** Self node replaced. */
  readonly selfChanged: boolean;
  /** Peers that are new. */
  readonly peersAdded: readonly number[];
  /** Peers changed in place (whole node or patch). */
  readonly peersChanged: readonly number[];
  /** Peers removed. */
  readonly peersRemoved: readonly number[];
  /** The patches applied (as received, known IDs only). */
  readonly patches: readonly PeerChange[];
  /** DERP map replaced. */
  readonly derpMapChanged: boolean;
  /** Packet filter changed. */
  readonly packetFilterChanged: boolean;
  /** DNS config replaced. */
  readonly dnsChanged: boolean;
  /** A ping request from control, if any. */
  readonly pingRequest: PingRequest | undefined;
  /** The message itself. */
  readonly raw: Readonly<MapResponse>;
}

const LEGACY_DERP_PREFIX = '127.3.3.40:';

/** Converts a wire node into a NodeInfo; throws on a missing or malformed node key. */
export function toNodeInfo(n: WireNode): NodeInfo {
  const nodeKey = parseNodePublic(n.Key);
  let discoKey: DiscoPublic | undefined;
  if (n.DiscoKey) {
    try {
      discoKey = parseDiscoPublic(n.DiscoKey);
    } catch {
      discoKey = undefined; // a malformed disco key only disables disco with this peer
    }
  }
  let homeDERP = n.HomeDERP ?? 0;
  if (!homeDERP && typeof n.DERP === 'string' && n.DERP.startsWith(LEGACY_DERP_PREFIX)) {
    homeDERP = Number.parseInt(n.DERP.slice(LEGACY_DERP_PREFIX.length), 10) || 0;
  }
  const addresses = n.Addresses ?? [];
  return {
    id: n.ID,
    stableId: n.StableID ?? String(n.ID),
    name: n.Name ?? '',
    hostname: n.Hostinfo?.Hostname ?? '',
    user: n.User ?? 0,
    nodeKey,
    nodeKeyText: n.Key,
    discoKey,
    discoKeyText: discoKey ? n.DiscoKey : undefined,
    addresses,
    allowedIPs: n.AllowedIPs ?? addresses,
    endpoints: n.Endpoints ?? [],
    homeDERP,
    online: n.Online ?? undefined,
    expired: n.Expired ?? false,
    keyExpiry: n.KeyExpiry && !n.KeyExpiry.startsWith('0001-01-01') ? n.KeyExpiry : undefined,
    lastSeen: n.LastSeen ?? undefined,
    tags: n.Tags ?? [],
    primaryRoutes: n.PrimaryRoutes ?? [],
    raw: n,
  };
}

/** Applies one PeerChange to a wire node, returning a new object (TS map.go field by field). */
export function applyPeerChange(n: WireNode, pc: PeerChange): WireNode {
  const m: WireNode = { ...n };
  if (pc.DERPRegion) m.HomeDERP = pc.DERPRegion;
  if (pc.Cap) m.Cap = pc.Cap;
  if (pc.Endpoints != null) m.Endpoints = pc.Endpoints;
  if (pc.Key != null) m.Key = pc.Key;
  if (pc.DiscoKey != null) m.DiscoKey = pc.DiscoKey;
  if (pc.Online != null) m.Online = pc.Online;
  if (pc.LastSeen != null) m.LastSeen = pc.LastSeen;
  if (pc.KeyExpiry != null) m.KeyExpiry = pc.KeyExpiry;
  if (pc.KeySignature != null) m.KeySignature = pc.KeySignature;
  if (pc.CapMap != null) m.CapMap = pc.CapMap;
  return m;
}

/** Current state of the tailnet as control describes it to this node. */
export class NetworkMap {
  /** This node, once the first full map arrived. */
  self: NodeInfo | undefined;
  /** Peers by node ID. */
  readonly peers = new Map<number, NodeInfo>();
  /** DERP map (regions by ID as in JSON). */
  derpMap: DERPMap | undefined;
  /** Named packet-filter chunks. */
  readonly packetFilters = new Map<string, FilterRule[]>();
  /** DNS configuration. */
  dns: DNSConfig | undefined;
  /** User profiles by ID. */
  readonly userProfiles = new Map<number, UserProfile>();
  /** Tailnet domain ("" until sent). */
  domain = '';
  /** Server time of the last message that carried it. */
  controlTime: string | undefined;
  /** Tailscale SSH policy, as received. */
  sshPolicy: unknown;
  /** Peers dropped because their node key did not parse. */
  badPeers = 0;

  /** The effective packet filter: named chunks concatenated in sorted key order. */
  get packetFilter(): FilterRule[] {
    const out: FilterRule[] = [];
    for (const k of [...this.packetFilters.keys()].sort()) out.push(...(this.packetFilters.get(k) ?? []));
    return out;
  }

  /** A peer by its `nodekey:` text. */
  peerByKey(nodeKeyText: string): NodeInfo | undefined {
    const want = nodeKeyText.toLowerCase();
    for (const p of this.peers.values()) if (p.nodeKeyText.toLowerCase() === want) return p;
    return undefined;
  }

  /** A copy that later apply() calls do not change (NodeInfo objects are immutable and shared). */
  snapshot(): NetworkMap {
    const m = new NetworkMap();
    m.self = this.self;
    for (const [k, v] of this.peers) m.peers.set(k, v);
    m.derpMap = this.derpMap;
    for (const [k, v] of this.packetFilters) m.packetFilters.set(k, v);
    m.dns = this.dns;
    for (const [k, v] of this.userProfiles) m.userProfiles.set(k, v);
    m.domain = this.domain;
    m.controlTime = this.controlTime;
    m.sshPolicy = this.sshPolicy;
    m.badPeers = this.badPeers;
    return m;
  }

  private putPeer(n: WireNode): boolean {
    try {
      this.peers.set(n.ID, toNodeInfo(n));
      return true;
    } catch {
      this.badPeers++;
      this.peers.delete(n.ID);
      return false;
    }
  }

  /**
   * Folds one MapResponse into the map and says what changed. A message with a wrong-typed field
   * (MapShapeError) or an unparsable self node key (RangeError) throws before changing anything.
   */
  apply(r: MapResponse): MapDelta {
    checkMapResponse(r);
    const self = r.Node ? toNodeInfo(r.Node) : undefined;
    const added: number[] = [];
    const changed: number[] = [];
    const removed: number[] = [];
    const patches: PeerChange[] = [];
    let fullPeers = false, selfChanged = false, derpMapChanged = false, packetFilterChanged = false, dnsChanged = false;
    const pingRequest = r.PingRequest ?? undefined;
    if (r.ControlTime && !r.ControlTime.startsWith('0001-01-01')) this.controlTime = r.ControlTime;
    if (r.KeepAlive) {
      return { keepAlive: true, fullPeers, selfChanged, peersAdded: added, peersChanged: changed, peersRemoved: removed, patches, derpMapChanged, packetFilterChanged, dnsChanged, pingRequest, raw: r };
    }

    if (self) {
      this.self = self;
      selfChanged = true;
    }

    if (r.DERPMap) {
      const dm: DERPMap = { ...r.DERPMap };
      const old = this.derpMap;
      if (dm.Regions == null) {
        if (old) {
          dm.Regions = old.Regions ?? null;
          if (old.omitDefaultRegions !== undefined) dm.omitDefaultRegions = old.omitDefaultRegions;
        }
      } else {
        const regions: Record<string, DERPRegion | null> = {};
        for (const [id, reg] of Object.entries(dm.Regions)) if (reg) regions[id] = reg;
        dm.Regions = regions;
      }
      if (dm.HomeParams == null && old?.HomeParams) dm.HomeParams = old.HomeParams;
      this.derpMap = dm;
      derpMapChanged = true;
    }

    if (r.PacketFilter != null) {
      this.packetFilters.set('base', r.PacketFilter);
      packetFilterChanged = true;
    }
    if (r.PacketFilters != null) {
      packetFilterChanged = true;
      if ('*' in r.PacketFilters && r.PacketFilters['*'] == null) this.packetFilters.clear();
      for (const [k, v] of Object.entries(r.PacketFilters)) {
        if (k === '*') continue;
        if (v != null) this.packetFilters.set(k, v);
        else this.packetFilters.delete(k);
      }
    }

    if (r.DNSConfig != null) {
      this.dns = r.DNSConfig;
      dnsChanged = true;
    }
    if (r.Domain) this.domain = r.Domain;
    if (r.SSHPolicy != null) this.sshPolicy = r.SSHPolicy;
    for (const up of r.UserProfiles ?? []) this.userProfiles.set(up.ID, up);

    if (r.Peers && r.Peers.length > 0) {
      fullPeers = true;
      const keep = new Set<number>();
      for (const n of r.Peers) {
        keep.add(n.ID);
        const had = this.peers.has(n.ID);
        if (this.putPeer(n)) (had ? changed : added).push(n.ID);
      }
      for (const id of [...this.peers.keys()]) {
        if (!keep.has(id)) {
          this.peers.delete(id);
          removed.push(id);
        }
      }
    } else {
      for (const id of r.PeersRemoved ?? []) if (this.peers.delete(id)) removed.push(id);
      for (const n of r.PeersChanged ?? []) {
        const had = this.peers.has(n.ID);
        if (this.putPeer(n)) (had ? changed : added).push(n.ID);
      }
      const flag = (m: Record<string, boolean> | null | undefined, f: (n: WireNode, v: boolean) => WireNode): void => {
        for (const [idText, v] of Object.entries(m ?? {})) {
          const id = Number(idText);
          const p = this.peers.get(id);
          if (!p) continue;
          if (this.putPeer(f(p.raw, v))) changed.push(id);
        }
      };
      flag(r.PeerSeenChange, (n, seen) => ({ ...n, LastSeen: seen ? (this.controlTime ?? new Date().toISOString()) : null }));
      flag(r.OnlineChange, (n, online) => ({ ...n, Online: online }));
      for (const pc of r.PeersChangedPatch ?? []) {
        const p = this.peers.get(pc.NodeID);
        if (!p) continue;
        patches.push(pc);
        if (this.putPeer(applyPeerChange(p.raw, pc))) changed.push(pc.NodeID);
      }
    }
    return {
      keepAlive: false,
      fullPeers,
      selfChanged,
      peersAdded: added,
      peersChanged: [...new Set(changed)],
      peersRemoved: removed,
      patches,
      derpMapChanged,
      packetFilterChanged,
      dnsChanged,
      pingRequest,
      raw: r,
    };
  }
}
