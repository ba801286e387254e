// syncPeers: the data plane follows the map with work proportional to what changed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NetworkMap, type NodeInfo } from '../../src/control/netmap.ts';
import type { MapResponse } from '../../src/control/wire.ts';
import { syncPeers, syncPeersInTurns, type AppliedPeer, type Touched } from '../../src/daemon/peersync.ts';
import { Device } from '../../src/wg/device.ts';
import { FakeClock } from '../harness/wgpipe.ts';
import fc from 'fast-check';
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

describe('syncPeersInTurns', () => {
  const POOL = ['100.64.1.1/32', '100.64.1.2/32', '100.64.1.3/32', '10.1.0.0/16', '10.1.2.0/24', '0.0.0.0/0', 'fd7a:115c:a1e0::9/128', '::/0'];
  const keyText = (id: number, gen: number) => `nodekey:${(id * 16 + gen).toString(16).padStart(64, '0')}`;
  /** A map of up to 8 peers; each pool prefix belongs to at most one peer. */
  const arbMap = fc.record({
    peers: fc.uniqueArray(fc.integer({ min: 2, max: 9 }), { maxLength: 8 }),
    gens: fc.array(fc.integer({ min: 0, max: 1 }), { minLength: 10, maxLength: 10 }),
    expired: fc.array(fc.boolean(), { minLength: 10, maxLength: 10 }),
    owners: fc.array(fc.integer({ min: 0, max: 9 }), { minLength: POOL.length, maxLength: POOL.length }),
  }).map(({ peers, gens, expired, owners }) => ({
    Node: { ID: 1, Key: SELF, Addresses: ['100.64.0.1/32'] },
    Peers: peers.map((id) => ({
      ID: id, Key: keyText(id, gens[id]!), Expired: expired[id]! && id % 3 === 0,
      Addresses: [], AllowedIPs: POOL.filter((_, i) => owners[i] === id),
    })),
  }));
  const snapshot = (d: Device) => d.peers().map((p) => `${Buffer.from(p.publicKey).toString('hex')} ${[...p.allowedIPs].sort().join(',')}`).sort();
  const owners = (d: Device) => {
    const o = new Map<string, string>();
    for (const p of d.peers()) for (const a of p.allowedIPs) o.set(a, Buffer.from(p.publicKey).toString('hex'));
    return o;
  };
  const sinkFor = (d: Device) => ({
    upsert: (p: NodeInfo, allowed: readonly string[], replace = true) => d.setPeer(p.nodeKey, { allowedIPs: [...allowed], replaceAllowedIPs: replace }),
    remove: (p: NodeInfo) => d.removePeer(p.nodeKey),
  });

  it('leaves the device as one-shot syncPeers does, and between turns every allowed IP routes to its old or new holder', async () => {
    await fc.assert(fc.asyncProperty(arbMap, arbMap, fc.integer({ min: 1, max: 4 }), async (before, after, chunk) => {
      const one = new Device({ clock: new FakeClock() }), turns = new Device({ clock: new FakeClock() });
      const m = new NetworkMap();
      m.apply(before as MapResponse);
      const a1 = new Map<number, AppliedPeer>(), a2 = new Map<number, AppliedPeer>();
      syncPeers(a1, m.peers, (p) => p.allowedIPs, sinkFor(one), 'all');
      syncPeers(a2, m.peers, (p) => p.allowedIPs, sinkFor(turns), 'all');
      const old = owners(turns);
      m.apply(after as MapResponse);
      syncPeers(a1, m.peers, (p) => p.allowedIPs, sinkFor(one), 'all');
      const want = owners(one);
      let yields = 0;
      await syncPeersInTurns(a2, m.peers, (p) => p.allowedIPs, sinkFor(turns), {
        chunk,
        yieldTurn: async () => {
          yields++;
          for (const [prefix, holder] of owners(turns)) {
            assert.ok(holder === old.get(prefix) || holder === want.get(prefix), `${prefix} routes to ${holder.slice(0, 8)}, neither its old nor new holder`);
          }
          for (const prefix of POOL) {
            if (old.has(prefix) && want.has(prefix)) assert.ok(owners(turns).has(prefix), `${prefix} routes nowhere between turns`);
          }
        },
      });
      assert.deepEqual(snapshot(turns), snapshot(one));
      assert.deepEqual([...a2].map(([id, x]) => [id, x.allowed]).sort(), [...a1].map(([id, x]) => [id, x.allowed]).sort());
      return yields >= 0;
    }), { seed: 20261130, numRuns: 300 });
  });

  it('applies a 10,000-peer map in turns of 256 peers, and stops when cancelled', async () => {
    const m = new NetworkMap();
    m.apply(bigMap(10_000, SELF) as MapResponse);
    const d = new Device({ clock: new FakeClock() });
    let turns = 0;
    const ops = await syncPeersInTurns(new Map(), m.peers, (p) => p.allowedIPs, sinkFor(d), { chunk: 256, yieldTurn: async () => { turns++; } });
    assert.equal(ops, 10_000);
    assert.equal(d.peers().length, 10_000);
    assert.equal(turns, Math.floor(20_000 / 256), 'one turn per 256 operations of the make and break passes');
    const d2 = new Device({ clock: new FakeClock() });
    let t2 = 0;
    assert.equal(await syncPeersInTurns(new Map(), m.peers, (p) => p.allowedIPs, sinkFor(d2), { chunk: 256, yieldTurn: async () => { t2++; }, cancelled: () => t2 >= 3 }), -1);
    assert.equal(d2.peers().length, 3 * 256, 'nothing applied after the cancel');
  });
});
