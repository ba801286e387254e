// Prometheus metrics and health warnings of the agent: the one place that reads the data plane's
// counters (through its public accessors: Device.peers() and .counters, DataPlane.counters(),
// MagicSock.counters, pathOf(), derpStatus(), homeRegion, lastReport).
//
// Names follow tailscale's client metrics where one exists (TS:wgengine/magicsock registerMetrics,
// util/usermetric, health/usermetrics), with the meshd_ prefix instead of tailscaled_:
//   meshd_{inbound,outbound}_{bytes,packets}_total{path="direct_ipv4"|"direct_ipv6"|"derp"}
//   meshd_{inbound,outbound}_dropped_packets_total{reason}, meshd_home_derp_region_id,
//   meshd_health_messages{type="warning"}, meshd_advertised_routes, meshd_approved_routes
// and meshd's own: handshakes, DERP connections, control reconnects, map updates, peers by path.
//
// Bytes are WireGuard message bytes (the UDP payload or DERP packet), as tailscale counts them. The
// WireGuard device counts bytes per peer, not per path: every second (and at each scrape) the bytes
// a peer moved since the last look are booked to the path the peer uses now, so a path change is
// booked late by at most that second. DERP packets are counted where they pass magicsock, the rest
// went direct (split between IPv4 and IPv6 as the direct bytes are). Counters survive down/up (each source is read as
// deltas, a source that restarts from zero is taken as new).
//
// The text format is written by hand (it is a few lines; prom-client would bring a registry and
// default process metrics for what is here a snapshot of counters that live elsewhere).
import type { DataPlane } from './dataplane.ts';
import type { MagicSock } from '../magicsock/magicsock.ts';
import type { NetworkMap } from '../control/netmap.ts';
import { memoryBreakdown, type KeeperStats } from './memory.ts';

/** Paths traffic takes, labelled as tailscale labels them. */
export type PathLabel = 'direct_ipv4' | 'direct_ipv6' | 'derp';
const PATHS: readonly PathLabel[] = ['direct_ipv4', 'direct_ipv6', 'derp'];

/** A key expiring within this long is worth a warning (tailscale warns a day ahead too). */
export const KEY_EXPIRY_WARN_MS = 24 * 3600_000;

/** What the agent knows besides the data plane. */
export interface AgentFacts {
  map: NetworkMap | undefined;
  controlReconnects: number;
  mapUpdates: number;
  /** Unix ms since when control is unreachable (the map stream is retrying), or undefined. */
  controlDownSince: number | undefined;
  advertisedRoutes: number;
  approvedRoutes: number;
  /** Health lines from elsewhere (routing). */
  otherHealth: readonly string[];
  /** What the memory keeper did (src/daemon/memory.ts), when it runs. */
  keeper?: KeeperStats | undefined;
  now: number;
}

type Dir = 'inbound' | 'outbound';

/** Cumulative counters over the agent's life, fed by deltas of the data plane's counters. */
export class AgentMetrics {
  private readonly bytes = { inbound: zeroPaths(), outbound: zeroPaths() };
  private readonly packets = { inbound: zeroPaths(), outbound: zeroPaths() };
  private readonly totals = new Map<string, number>();
  private readonly last = new Map<string, number>();
  /** Per peer (by id): its byte counters at the last look, and the sample that last saw it. */
  private readonly peerLast = new Map<string, { rx: number; tx: number; seen: number }>();
  private samples = 0;

  /** Adds what a monotonic source counted since the last look (a smaller value: it restarted). */
  private delta(key: string, value: number): number {
    const prev = this.last.get(key) ?? 0;
    this.last.set(key, value);
    return value >= prev ? value - prev : value;
  }

  private add(name: string, n: number): void {
    if (n) this.totals.set(name, (this.totals.get(name) ?? 0) + n);
  }

  /** Books what the data plane counted since the last sample. */
  sample(dp: DataPlane | undefined, magic: MagicSock | undefined): void {
    if (!dp) return;
    // Only peers that ever moved bytes: a 10,000-peer tailnet is mostly idle peers, and this runs every second.
    const gen = ++this.samples;
    let seen = 0;
    dp.device.forEachPeerTraffic((k, publicKey, rxBytes, txBytes) => {
      seen++;
      let prev = this.peerLast.get(k);
      if (!prev) this.peerLast.set(k, (prev = { rx: 0, tx: 0, seen: gen }));
      const rx = rxBytes >= prev.rx ? rxBytes - prev.rx : rxBytes, tx = txBytes >= prev.tx ? txBytes - prev.tx : txBytes;
      prev.rx = rxBytes;
      prev.tx = txBytes;
      prev.seen = gen;
      if (rx === 0 && tx === 0) return;
      const path = pathLabel(magic?.pathOf(publicKey));
      if (path) {
        this.bytes.inbound[path] += rx;
        this.bytes.outbound[path] += tx;
      }
    });
    // Peers that left the device (or were re-created, counting from zero): forget them, so the book
    // holds the peers of now, not every peer that ever moved a byte.
    if (seen < this.peerLast.size) for (const [k, v] of this.peerLast) if (v.seen !== gen) this.peerLast.delete(k);
    const c = dp.device.counters as unknown as Record<string, number>;
    const txAll = this.delta('txPackets', (c.txData ?? 0) + (c.txKeepalives ?? 0) + (c.txInitiations ?? 0) + (c.txResponses ?? 0) + (c.txCookieReplies ?? 0));
    const rxAll = this.delta('rxPackets', (c.rxData ?? 0) + (c.rxKeepalives ?? 0) + (c.rxInitiations ?? 0) + (c.rxResponses ?? 0) + (c.rxCookieReplies ?? 0));
    const txDerp = this.delta('txDerp', magic?.counters.txWgDerp ?? 0), rxDerp = this.delta('rxDerp', magic?.counters.rxWgDerp ?? 0);
    this.packets.outbound.derp += txDerp;
    this.packets.inbound.derp += rxDerp;
    // Direct packets by family follow the byte split of this sample's direct traffic (IPv4 unless only IPv6 moved).
    const v6 = this.v6Share();
    this.packets.outbound.direct_ipv6 += Math.round(Math.max(0, txAll - txDerp) * v6.out);
    this.packets.outbound.direct_ipv4 += Math.max(0, txAll - txDerp) - Math.round(Math.max(0, txAll - txDerp) * v6.out);
    this.packets.inbound.direct_ipv6 += Math.round(Math.max(0, rxAll - rxDerp) * v6.in);
    this.packets.inbound.direct_ipv4 += Math.max(0, rxAll - rxDerp) - Math.round(Math.max(0, rxAll - rxDerp) * v6.in);
    this.add('handshakes', this.delta('hs', c.handshakesCompleted ?? 0));
    this.add('handshakeInitiations', this.delta('hsInit', c.txInitiations ?? 0));
    for (const [name, v] of Object.entries(dp.counters())) {
      if (name.startsWith('drop') || name.startsWith('filter.drop')) this.add(`drop.${name}`, this.delta(`d.${name}`, v));
    }
    for (const [name, v] of Object.entries(magic?.counters ?? {})) {
      if (name.startsWith('drop')) this.add(`drop.magicsock.${name}`, this.delta(`m.${name}`, v as number));
    }
  }

  private v6Share(): { in: number; out: number } {
    const share = (d: Dir): number => {
      const b = this.bytes[d];
      const direct = b.direct_ipv4 + b.direct_ipv6;
      return direct > 0 ? b.direct_ipv6 / direct : 0;
    };
    return { in: share('inbound'), out: share('outbound') };
  }

  /** Peers whose byte counters the book tracks (those in the device that moved traffic). */
  get trackedPeers(): number {
    return this.peerLast.size;
  }

  /** The Prometheus text exposition (format 0.0.4). */
  render(dp: DataPlane | undefined, magic: MagicSock | undefined, f: AgentFacts): string {
    this.sample(dp, magic);
    const out: string[] = [];
    const family = (name: string, type: 'counter' | 'gauge', help: string, rows: [Record<string, string | number> | undefined, number][]): void => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, v] of rows) out.push(`${name}${labelText(labels)} ${Number.isFinite(v) ? v : 0}`);
    };
    for (const d of ['inbound', 'outbound'] as const) {
      const verb = d === 'inbound' ? 'received from' : 'sent to';
      family(`meshd_${d}_bytes_total`, 'counter', `WireGuard bytes ${verb} other peers, by path`, PATHS.map((p) => [{ path: p }, this.bytes[d][p]]));
      family(`meshd_${d}_packets_total`, 'counter', `WireGuard packets ${verb} other peers, by path`, PATHS.map((p) => [{ path: p }, this.packets[d][p]]));
    }
    const drops = [...this.totals].filter(([k]) => k.startsWith('drop.'));
    // Inbound: from a peer towards this host (bad packets, the filter, writing to the TUN device).
    const inbound = drops.filter(([k]) => /^drop\.(dropRx|dropUdpTruncated$|dropTunWrite$|dropTunBatchFull$|magicsock\.|filter\.)/.test(k));
    const outbound = drops.filter(([k]) => !inbound.some(([j]) => j === k));
    family('meshd_inbound_dropped_packets_total', 'counter', 'Packets from peers dropped, by reason',
      inbound.map(([k, v]) => [{ reason: reasonOf(k) }, v]));
    family('meshd_outbound_dropped_packets_total', 'counter', 'Packets to peers dropped, by reason',
      outbound.map(([k, v]) => [{ reason: reasonOf(k) }, v]));
    family('meshd_handshakes_total', 'counter', 'WireGuard handshakes completed', [[undefined, this.totals.get('handshakes') ?? 0]]);
    family('meshd_handshake_initiations_sent_total', 'counter', 'WireGuard handshake initiations sent', [[undefined, this.totals.get('handshakeInitiations') ?? 0]]);
    const derps = magic?.derpStatus() ?? [];
    family('meshd_derp_connections', 'gauge', 'Connected DERP servers, by region', derps.map((d) => [{ region: d.region, home: d.home ? 'true' : 'false' }, d.connected ? 1 : 0]));
    family('meshd_home_derp_region_id', 'gauge', "DERP region ID of this node's home relay server", [[undefined, magic?.homeRegion ?? 0]]);
    family('meshd_control_reconnects_total', 'counter', 'Times the map stream to control was dialled again', [[undefined, f.controlReconnects]]);
    family('meshd_control_map_updates_total', 'counter', 'Network map messages received from control (full maps and deltas)', [[undefined, f.mapUpdates]]);
    family('meshd_control_connected', 'gauge', '1 while the map stream to control is up', [[undefined, f.controlDownSince === undefined && f.map ? 1 : 0]]);
    const byPath: Record<string, number> = { direct_ipv4: 0, direct_ipv6: 0, derp: 0, none: 0 };
    for (const p of f.map?.peers.values() ?? []) byPath[pathLabel(magic?.pathOf(p.nodeKey)) ?? 'none']!++;
    family('meshd_peers', 'gauge', 'Peers in the network map, by current path', Object.entries(byPath).map(([p, n]) => [{ path: p }, n]));
    family('meshd_advertised_routes', 'gauge', 'Number of advertised network routes', [[undefined, f.advertisedRoutes]]);
    family('meshd_approved_routes', 'gauge', 'Number of approved network routes', [[undefined, f.approvedRoutes]]);
    family('meshd_health_messages', 'gauge', 'Number of health messages broken down by type', [[{ type: 'warning' }, healthWarnings(magic, f).length]]);
    const mem = memoryBreakdown();
    family('meshd_process_memory_bytes', 'gauge', 'Memory of the agent process by kind (process.memoryUsage, glibc mallinfo2)',
      Object.entries(mem.bytes).map(([k, v]) => [{ kind: k }, v]));
    family('meshd_native_aead_keys', 'gauge', "Live ChaCha20-Poly1305 keys in the native addon's table", [[undefined, mem.aeadKeys]]);
    if (f.keeper) {
      family('meshd_forced_gcs_total', 'counter', 'Full GCs the agent forced (every 2 minutes)', [[undefined, f.keeper.gcs]]);
      family('meshd_forced_gc_seconds_total', 'counter', 'Time spent in forced full GCs', [[undefined, f.keeper.gcSeconds]]);
      family('meshd_malloc_trims_total', 'counter', 'Calls of malloc_trim(0) that gave free malloc pages back to the kernel', [[undefined, f.keeper.trims]]);
      family('meshd_malloc_trim_seconds_total', 'counter', 'Time spent in malloc_trim(0)', [[undefined, f.keeper.trimSeconds]]);
    }
    return `${out.join('\n')}\n`;
  }
}

function zeroPaths(): Record<PathLabel, number> {
  return { direct_ipv4: 0, direct_ipv6: 0, derp: 0 };
}

/** The path label of a peer's current path (undefined: no path yet). */
export function pathLabel(p: { direct: string | null; derp: string | null } | undefined): PathLabel | undefined {
  if (!p) return undefined;
  if (p.derp) return 'derp';
  if (p.direct) return p.direct.startsWith('[') ? 'direct_ipv6' : 'direct_ipv4';
  return undefined;
}

function reasonOf(key: string): string {
  return key.replace(/^drop\./, '').replace(/^magicsock\./, 'magicsock_').replace(/^filter\./, 'filter_')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2').toLowerCase();
}

function labelText(labels: Record<string, string | number> | undefined): string {
  if (!labels) return '';
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${String(v).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`);
  return `{${parts.join(',')}}`;
}

/**
 * Health warnings for `status`: no UDP, no home DERP, control unreachable, the node key expiring
 * or expired, plus the routing ones (forwarding off on an exit node or subnet router, ...).
 */
export function healthWarnings(magic: MagicSock | undefined, f: AgentFacts): string[] {
  const out: string[] = [];
  if (f.map && magic) {
    const r = magic.lastReport;
    if (r && !r.udp) out.push('no UDP: direct connections are not possible, all traffic goes through DERP');
    const home = magic.derpStatus().find((d) => d.home);
    if (magic.homeRegion === 0 || !home?.connected) out.push('no home DERP: peers that cannot reach us directly cannot reach us at all');
  }
  if (f.controlDownSince !== undefined) {
    out.push(`control unreachable for ${Math.round((f.now - f.controlDownSince) / 1000)}s: tunnels keep working, but changes to the tailnet are not seen`);
  }
  const exp = f.map?.self?.keyExpiry;
  if (exp) {
    const left = Date.parse(exp) - f.now;
    if (left <= 0) out.push(`the node key expired at ${exp}: run meshd up with --authkey to log in again`);
    else if (left < KEY_EXPIRY_WARN_MS) out.push(`the node key expires in ${formatLeft(left)} (${exp}): run meshd up with --authkey before then`);
  }
  out.push(...f.otherHealth);
  return out;
}

function formatLeft(ms: number): string {
  const m = Math.round(ms / 60_000);
  return m >= 60 ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m` : `${m}m`;
}
