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
  upsert(p: NodeInfo, allowedIPs: readonly string[]): void;
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
