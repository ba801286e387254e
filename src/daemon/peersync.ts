// Keeps the data plane's peers (WireGuard device + magicsock) equal to the network map's, doing
// work only for peers that changed. NetworkMap.apply replaces a peer's NodeInfo object when the
// peer changes and never mutates one, so "same object, same allowed IPs" means nothing to do.
// With the IDs a delta touched, only those are looked at: a one-peer delta costs O(1) peer
// operations however large the tailnet (tailscale's largetailnet work aims at the same).
import type { NodeInfo } from '../control/netmap.ts';

/** What was last applied for one peer. */
export interface AppliedPeer {
  readonly info: NodeInfo;
  /** Its WireGuard allowed IPs, joined (for a cheap comparison). */
  readonly allowed: string;
}

/** Where peer changes go (the agent: magicsock + the WireGuard device). */
export interface PeerSink {
  /** Creates or updates the peer; with replace false its allowed IPs are only added to (none removed). */
  upsert(p: NodeInfo, allowedIPs: readonly string[], replace?: boolean): void;
  remove(p: NodeInfo): void;
}

/** Which peers to look at: all of them, or the IDs a delta added, changed or removed. */
export type Touched = 'all' | ReadonlySet<number>;

/**
 * Brings `applied` (updated in place) and the sink from their last state to `peers`. Expired peers
 * are removed. Returns the number of sink operations made.
 */
export function syncPeers(
  applied: Map<number, AppliedPeer>,
  peers: ReadonlyMap<number, NodeInfo>,
  allowedOf: (p: NodeInfo) => readonly string[],
  sink: PeerSink,
  touched: Touched,
): number {
  let ops = 0;
  const visit = (id: number): void => {
    const p = peers.get(id);
    const had = applied.get(id);
    if (!p || p.expired) {
      if (had) { sink.remove(had.info); applied.delete(id); ops++; }
      return;
    }
    const allowed = allowedOf(p);
    const key = allowed.join(',');
    if (had && had.info === p && had.allowed === key) return;
    // A new node key under the same ID is a different WireGuard peer: drop the old one first.
    if (had && had.info.nodeKeyText !== p.nodeKeyText) { sink.remove(had.info); ops++; }
    sink.upsert(p, allowed);
    applied.set(id, { info: p, allowed: key });
    ops++;
  };
  if (touched === 'all') {
    for (const id of [...applied.keys()]) if (!peers.has(id)) visit(id);
    for (const id of peers.keys()) visit(id);
  } else {
    for (const id of touched) visit(id);
  }
  return ops;
}

/** Options of {@link syncPeersInTurns}. */
export interface TurnOptions {
  /** Peers handled per event-loop turn (default 500). */
  chunk?: number;
  /** Yields the event loop (default: setImmediate). */
  yieldTurn?: () => Promise<void>;
  /** Checked after each turn: true stops the sync (teardown began). */
  cancelled?: () => boolean;
}

const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

/**
 * syncPeers for a whole map, spread over event-loop turns so the data plane (which shares the
 * loop) keeps forwarding while thousands of peers are applied. The result equals syncPeers'.
 * Make before break, so that between turns every allowed IP routes to the peer that held it in
 * the old map or the one holding it in the new, never to nothing while it is in both: first every
 * new or changed peer is created and given its new allowed IPs without losing its old ones
 * (an IP moving between peers is taken over by its new holder), then stale allowed IPs, peers
 * gone from the map and peers replaced under a new node key are removed. Returns the number of
 * sink operations, or -1 when cancelled (the caller is tearing down).
 */
export async function syncPeersInTurns(
  applied: Map<number, AppliedPeer>,
  peers: ReadonlyMap<number, NodeInfo>,
  allowedOf: (p: NodeInfo) => readonly string[],
  sink: PeerSink,
  opts: TurnOptions = {},
): Promise<number> {
  const chunk = Math.max(1, opts.chunk ?? 500);
  const turn = opts.yieldTurn ?? nextTurn;
  let ops = 0, n = 0;
  const tick = async (): Promise<boolean> => {
    if (++n % chunk !== 0) return false;
    await turn();
    return opts.cancelled?.() ?? false;
  };
  // Make: new and changed peers get their new allowed IPs on top of the old ones.
  const breaks: { id: number; p: NodeInfo; allowed: readonly string[]; key: string; old: AppliedPeer | undefined }[] = [];
  for (const [id, p] of peers) {
    if (p.expired) continue;
    const had = applied.get(id);
    const allowed = allowedOf(p);
    const key = allowed.join(',');
    if (had && had.info === p && had.allowed === key) continue;
    const sameKey = had !== undefined && had.info.nodeKeyText === p.nodeKeyText;
    // Unchanged allowed IPs: replacing is a no-op the device skips (adding would re-insert each).
    sink.upsert(p, allowed, !sameKey || had.allowed === key);
    ops++;
    breaks.push({ id, p, allowed, key, old: had });
    if (await tick()) return -1;
  }
  // Break: drop what the new map no longer has.
  for (const b of breaks) {
    if (b.old && b.old.info.nodeKeyText !== b.p.nodeKeyText) { sink.remove(b.old.info); ops++; }
    else if (b.old && b.old.allowed !== b.key) { sink.upsert(b.p, b.allowed, true); ops++; }
    applied.set(b.id, { info: b.p, allowed: b.key });
    if (await tick()) return -1;
  }
  for (const [id, had] of [...applied]) {
    const p = peers.get(id);
    if (p && !p.expired) continue;
    sink.remove(had.info);
    applied.delete(id);
    ops++;
    if (await tick()) return -1;
  }
  return ops;
}
