// netcheck without I/O (tailscale net/netcheck/netcheck.go; reference data-plane.md 6.3, 6.4): a
// plan of STUN probes to every DERP region, the answers folded into a report (UDP works, latency per
// region, our global address, whether the NAT mapping varies by destination), and the home region
// chosen with tailscale's hysteresis. The caller sends the probes from the WireGuard socket, so the
// mapped address it learns is the WireGuard endpoint.
import type { DERPMap, DERPNode } from '../control/wire.ts';
import type { Endpoint } from '../net/endpoint.ts';

/** Default STUN port (DERPNode.STUNPort 0). */
export const STUN_PORT = 3478;
/** Tries per region, sent this far apart (netcheck's full report: 0, 100, 200 ms). */
export const TRY_DELAYS_MS = [0, 100, 200] as const;
/** The STUN phase ends after this long (stunProbeTimeout). */
export const STUN_TIMEOUT_MS = 3_000;
/** Keep the old home unless the new one is better by this much (ms) ... */
export const HOME_HYSTERESIS_MS = 10;
/** ... and by this fraction of the old latency. */
export const HOME_HYSTERESIS_FRACTION = 2 / 3;

/** One STUN probe to send. */
export interface StunProbe { region: number; host: string; port: number; delayMs: number; node: string }

/** The result of one netcheck. */
export interface NetReport {
  /** Some STUN reply came back. */
  udp: boolean;
  /** Best STUN round-trip per region, ms. */
  regionLatency: Map<number, number>;
  /** Our address as the first STUN server saw it (IPv4). */
  globalV4: Endpoint | undefined;
  /** Our address as the first IPv6 STUN server saw it. */
  globalV6: Endpoint | undefined;
  /** Different servers saw different mappings (hard NAT); undefined when only one server answered. */
  mappingVariesByDestIP: boolean | undefined;
  /** Regions whose latency was measured over HTTPS (/derp/latency-check) because UDP got no answer. */
  httpsLatency?: Set<number>;
}

/** True when text is an IPv4 or IPv6 literal. */
function isIpLiteral(s: string): boolean {
  return /^\d+\.\d+\.\d+\.\d+$/.test(s) || s.includes(':');
}

/** The STUN target of a DERP node: its IPv4 (or a literal HostName) and STUN port; undefined when disabled. */
export function stunTarget(n: DERPNode): { host: string; port: number } | undefined {
  const port = n.STUNPort === undefined || n.STUNPort === 0 ? STUN_PORT : n.STUNPort;
  if (port < 0) return undefined;
  const host = n.IPv4 && n.IPv4 !== 'none' ? n.IPv4 : n.HostName;
  if (!host) return undefined;
  return { host, port };
}

/** The probes of a full report: up to three tries per measurable region, rotating through its nodes. */
export function planProbes(map: DERPMap | undefined): StunProbe[] {
  const out: StunProbe[] = [];
  for (const r of Object.values(map?.Regions ?? {})) {
    if (!r || r.NoMeasureNoHome || !r.Nodes || r.Nodes.length === 0) continue;
    TRY_DELAYS_MS.forEach((delayMs, i) => {
      const n = r.Nodes[i % r.Nodes.length]!;
      const t = stunTarget(n);
      if (t) out.push({ region: r.RegionID, host: t.host, port: t.port, delayMs, node: n.Name });
    });
  }
  return out;
}

/** Answers from this many regions end the wait for the others (netcheck enoughRegions). */
export const ENOUGH_REGIONS = 3;

/** Folds STUN answers into a {@link NetReport}. */
export class ReportBuilder {
  /** When the ENOUGH_REGIONS-th region answered, and the slowest latency then. */
  private enoughAt = Infinity;
  private enoughMaxMs = 0;
  private readonly sent = new Map<string, { region: number; host: string; at: number }>();
  private readonly latency = new Map<number, number>();
  private firstV4: { ep: Endpoint; host: string } | undefined;
  private firstV6: Endpoint | undefined;
  private varies: boolean | undefined;
  private answers = 0;

  /** Records a probe sent at `now` with transaction id txHex. */
  sentProbe(txHex: string, region: number, host: string, now: number): void {
    this.sent.set(txHex, { region, host, at: now });
  }

  /** Whether txHex is one of ours. */
  has(txHex: string): boolean {
    return this.sent.has(txHex);
  }

  /** A binding response for txHex saying we are `mapped`; false when it answers nothing of ours. */
  onResponse(txHex: string, mapped: Endpoint, now: number): boolean {
    const p = this.sent.get(txHex);
    if (!p) return false;
    this.sent.delete(txHex);
    this.answers++;
    const rtt = Math.max(0, now - p.at);
    const old = this.latency.get(p.region);
    if (old === undefined || rtt < old) this.latency.set(p.region, rtt);
    if (old === undefined && this.latency.size === ENOUGH_REGIONS) {
      this.enoughAt = now;
      this.enoughMaxMs = Math.max(...this.latency.values());
    }
    if (mapped.family === 4) {
      if (!this.firstV4) this.firstV4 = { ep: mapped, host: p.host };
      else if (this.firstV4.host !== p.host) {
        // Only a different server IP tells whether the mapping depends on the destination.
        if (this.firstV4.ep.key !== mapped.key) this.varies = true;
        else if (this.varies === undefined) this.varies = false;
      }
    } else if (!this.firstV6) {
      this.firstV6 = mapped;
    }
    return true;
  }

  /** Regions that answered so far. */
  get regionsAnswered(): number {
    return this.latency.size;
  }

  /**
   * When probing may stop, as tailscale's netcheck: at once when all `regions` answered (each
   * region's probes end at its first answer); once ENOUGH_REGIONS did, after the slowest of their
   * latencies, twice that for a full report; Infinity before either.
   */
  stopAt(regions: number, full: boolean): number {
    if (this.latency.size >= regions) return -Infinity;
    return this.enoughAt + this.enoughMaxMs * (full ? 2 : 1);
  }

  /** The report so far. */
  report(): NetReport {
    return {
      udp: this.answers > 0,
      regionLatency: new Map(this.latency),
      globalV4: this.firstV4?.ep,
      globalV6: this.firstV6,
      mappingVariesByDestIP: this.varies,
    };
  }
}

/** Reports are kept this long for the home choice (fullReportInterval 5 min + ReportTimeout 5 s). */
export const REPORT_HISTORY_MS = 5 * 60_000 + 5_000;

/** The recent reports' latencies (addReportAndPruneExpired): the best per region over 5 min. */
export class ReportHistory {
  private readonly reports: { at: number; latency: ReadonlyMap<number, number> }[] = [];

  /** Adds a report's latencies taken at `now` and drops those older than REPORT_HISTORY_MS. */
  add(latency: ReadonlyMap<number, number>, now: number): void {
    this.reports.push({ at: now, latency: new Map(latency) });
    while (this.reports.length > 0 && now - this.reports[0]!.at > REPORT_HISTORY_MS) this.reports.shift();
    // Bounded however often netcheck runs: 5 min of reports at most every 100 ms.
    if (this.reports.length > 3000) this.reports.splice(0, this.reports.length - 3000);
  }

  /** Lowest latency per region over the kept reports. */
  bestRecent(): Map<number, number> {
    const best = new Map<number, number>();
    for (const r of this.reports) {
      for (const [region, ms] of r.latency) {
        const b = best.get(region);
        if (b === undefined || ms < b) best.set(region, ms);
      }
    }
    return best;
  }

  /** Reports kept. */
  get size(): number {
    return this.reports.length;
  }
}

/**
 * The home region (addReportHistoryAndSetPreferredDERP): among the regions of this report, the one
 * with the lowest best latency of the last 5 min (`bestRecent`, default this report), scaled by
 * HomeParams.RegionScore; but the old home stays while it is reachable (a latency in this report,
 * or `oldHeardRecently`: a DERP frame from it lately) and the best is not better by 10 ms and by a
 * third. No latency at all: keep the old home; none: the lowest region ID.
 */
export function pickHome(map: DERPMap | undefined, latency: ReadonlyMap<number, number>, oldHome: number,
  opts: { bestRecent?: ReadonlyMap<number, number>; oldHeardRecently?: boolean } = {}): number {
  const score = map?.HomeParams?.RegionScore ?? {};
  const scaled = (region: number, ms: number) => { const s = score[String(region)]; return s && s > 0 ? ms * s : ms; };
  let best = 0, bestLat = Infinity;
  for (const [region, ms] of latency) {
    const recent = Math.min(ms, opts.bestRecent?.get(region) ?? Infinity);
    const v = scaled(region, recent);
    if (v < bestLat || (v === bestLat && region < best)) { best = region; bestLat = v; }
  }
  if (best === 0) {
    if (oldHome) return oldHome;
    const ids = Object.values(map?.Regions ?? {}).filter((r) => r && !r.NoMeasureNoHome).map((r) => r!.RegionID).sort((a, b) => a - b);
    return ids[0] ?? 0;
  }
  const oldMs = latency.get(oldHome);
  const oldAccessible = oldMs !== undefined || opts.oldHeardRecently === true;
  if (oldHome && oldHome !== best && oldAccessible) {
    // Heard from but not measured: tailscale counts its current latency as 0, so it stays.
    const oldLat = oldMs === undefined ? 0 : scaled(oldHome, oldMs);
    if (oldLat - bestLat < HOME_HYSTERESIS_MS || bestLat > HOME_HYSTERESIS_FRACTION * oldLat) return oldHome;
  }
  return best;
}

/** Hostinfo.NetInfo for a report (DERPLatency keys "<region>-v4", seconds). */
export function netInfoOf(r: NetReport, home: number): Record<string, unknown> {
  const lat: Record<string, number> = {};
  for (const [region, ms] of r.regionLatency) lat[`${region}-v4`] = ms / 1000;
  return {
    PreferredDERP: home,
    DERPLatency: lat,
    WorkingUDP: r.udp,
    WorkingIPv6: r.globalV6 !== undefined,
    ...(r.mappingVariesByDestIP !== undefined ? { MappingVariesByDestIP: r.mappingVariesByDestIP } : {}),
  };
}
