// syncPeers: the data plane follows the map with work proportional to what changed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NetworkMap, type NodeInfo } from '../../src/control/netmap.ts';
import type { MapResponse } from '../../src/control/wire.ts';
import { syncPeers, type AppliedPeer, type Touched } from '../../src/daemon/peersync.ts';
import { bigMap, bigPeer, onePeerDelta } from '../harness/bigmap.ts';

const SELF = `nodekey:${'1'.repeat(64)}`;

/** A sink that records each operation. */
function recorder(): { ops: string[]; sink: { upsert(p: NodeInfo): void; remove(p: NodeInfo): void } } {
  const ops: string[] = [];
  return { ops, sink: { upsert: (p) => ops.push(`upsert ${p.id}`), remove: (p) => ops.push(`remove ${p.id}`) } };
}

function setup(n: number): { m: NetworkMap; applied: Map<number, AppliedPeer>; run: (t: Touched) => string[] } {
  const m = new NetworkMap();
  m.apply(bigMap(n, SELF) as MapResponse);
  const applied = new Map<number, AppliedPeer>();
  const run = (t: Touched): string[] => {
    const r = recorder();
    const count = syncPeers(applied, m.peers, (p) => p.allowedIPs, r.sink, t);
    assert.equal(count, r.ops.length);
    return r.ops;
  };
  return { m, applied, run };
}

const touchedBy = (d: ReturnType<NetworkMap['apply']>): Touched => new Set([...d.peersAdded, ...d.peersChanged, ...d.peersRemoved]);

describe('syncPeers', () => {
  it('applies a 1,000-peer map once, then a one-peer delta with one operation, the same as at 10 peers', () => {
    for (const n of [10, 1000]) {
      const { m, run } = setup(n);
      assert.equal(run('all').length, n, 'the full map: every peer once');
      assert.deepEqual(run('all'), [], 'the same map again: nothing');
      const d = m.apply(onePeerDelta(5, 1) as MapResponse);
      assert.deepEqual(run(touchedBy(d)), ['upsert 6'], `n=${n}: a roaming peer is one operation`);
      const d2 = m.apply({ PeersRemoved: [8], PeersChanged: [bigPeer(n + 1)] } as MapResponse);
      assert.deepEqual(run(touchedBy(d2)).sort(), [`upsert ${n + 2}`, 'remove 8'].sort(), `n=${n}: one join and one leave`);
      assert.deepEqual(run('all'), [], 'a full pass afterwards finds nothing left to do');
    }
  });

  it('replaces a peer whose node key changed under the same ID, and removes expired peers', () => {
    const { m, run } = setup(3);
    run('all');
    const d = m.apply({ PeersChanged: [{ ...bigPeer(1), Key: `nodekey:${'9'.repeat(64)}` }, { ...bigPeer(2), Expired: true }] } as MapResponse);
    assert.deepEqual(run(touchedBy(d)), ['remove 2', 'upsert 2', 'remove 3']);
  });

  it('re-applies a peer whose allowed IPs changed though its node did not (exit node or route prefs)', () => {
    const { m, applied } = setup(3);
    const r = recorder();
    syncPeers(applied, m.peers, (p) => p.allowedIPs, r.sink, 'all');
    const r2 = recorder();
    syncPeers(applied, m.peers, (p) => (p.id === 3 ? [...p.allowedIPs, '0.0.0.0/0'] : p.allowedIPs), r2.sink, 'all');
    assert.deepEqual(r2.ops, ['upsert 3']);
  });
});
