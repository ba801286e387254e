import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { NetworkMap, applyPeerChange } from '../../src/control/netmap.ts';
import type { MapResponse } from '../../src/control/wire.ts';

// dist/test/control → test/control/fixtures (fixtures stay in the source tree).
const fixtures = new URL('../../../test/control/fixtures/', import.meta.url);
const load = (name: string): MapResponse[] => JSON.parse(readFileSync(new URL(name, fixtures), 'utf8')) as MapResponse[];

// headscale-stream.json was recorded by capture-fixture.ts (node-a's view; see its header).
describe('NetworkMap folding a real headscale v0.29.2 stream', () => {
  const msgs = load('headscale-stream.json');

  it('builds self, one peer, the DERP map, filter, DNS and profiles from the first message', () => {
    const m = new NetworkMap();
    const d = m.apply(msgs[0]!);
    assert.equal(d.fullPeers, true);
    assert.equal(d.selfChanged, true);
    assert.deepEqual([...m.self!.addresses], ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128']);
    assert.deepEqual([...m.peers.keys()], [2]);
    const p = m.peers.get(2)!;
    assert.match(p.nodeKeyText, /^nodekey:[0-9a-f]{64}$/);
    assert.equal(p.nodeKey.length, 32);
    assert.equal(p.discoKey?.length, 32);
    assert.deepEqual([...p.addresses], ['100.64.0.2/32', 'fd7a:115c:a1e0::2/128']);
    assert.equal(p.online, true);
    assert.ok(m.derpMap?.Regions?.['999']);
    assert.equal(m.packetFilter.length, 1);
    assert.ok(m.dns?.Domains?.includes('meshd.test'));
    assert.equal(m.userProfiles.get(1)?.LoginName, 'alice');
    assert.equal(m.domain, '127.0.0.1');
  });

  it('follows endpoints, a new peer, online patches, an expiry and a removal to the end', () => {
    const m = new NetworkMap();
    const deltas = msgs.map((r) => m.apply(r));
    assert.deepEqual(deltas[5]!.peersAdded, []);
    assert.deepEqual(deltas[4]!.peersAdded, [3]);
    assert.deepEqual(deltas[6]!.patches.map((p) => p.NodeID), [3]);
    assert.deepEqual(deltas[10]!.peersRemoved, [3]);
    assert.deepEqual([...m.peers.keys()], [2]);
    const b = m.peers.get(2)!;
    assert.deepEqual([...b.endpoints], ['127.0.0.1:41641', '[::1]:41641']);
    assert.equal(b.homeDERP, 999);
    assert.equal(b.expired, true);
    assert.ok(b.keyExpiry);
    assert.equal(m.controlTime, msgs[10]!.ControlTime);
  });
});

describe('NetworkMap delta rules (TS map.go)', () => {
  const msgs = load('synthetic-deltas.json');
  const m = new NetworkMap();

  it('takes a legacy DERP string as the home region and AllowedIPs = Addresses when absent', () => {
    m.apply(msgs[0]!);
    assert.equal(m.peers.get(3)!.homeDERP, 900);
    assert.deepEqual([...m.peers.get(2)!.allowedIPs], ['100.64.0.2/32']);
    assert.deepEqual([...m.peers.get(3)!.allowedIPs], ['0.0.0.0/0', '100.64.0.3/32', '::/0']);
    assert.equal(m.peers.get(3)!.discoKey, undefined);
  });

  it('changes nothing on a keep-alive', () => {
    const before = m.snapshot();
    const d = m.apply(msgs[1]!);
    assert.equal(d.keepAlive, true);
    assert.deepEqual([...m.peers.entries()], [...before.peers.entries()]);
  });

  it('applies patches field by field, ignores unknown IDs, and applies OnlineChange', () => {
    const d = m.apply(msgs[2]!);
    assert.deepEqual(d.patches.map((p) => p.NodeID), [2, 3]);
    const p2 = m.peers.get(2)!;
    assert.deepEqual([...p2.endpoints], ['198.18.0.2:41641', '10.0.0.2:41641']);
    assert.equal(p2.homeDERP, 900);
    assert.equal(p2.online, true, 'fields not in the patch are kept');
    const p3 = m.peers.get(3)!;
    assert.equal(p3.nodeKeyText.endsWith('34'), true);
    assert.equal(p3.discoKeyText, 'discokey:' + 'b'.repeat(64));
    assert.equal(p3.keyExpiry, '2030-01-01T00:00:00Z');
    assert.equal(p3.online, false, 'patches are applied after OnlineChange, as in TS');
    assert.equal(m.peers.has(99), false);
  });

  it('removes, upserts, clears filters with "*": null and deletes a DERP region with null', () => {
    const d = m.apply(msgs[3]!);
    assert.deepEqual(d.peersRemoved, [2]);
    assert.deepEqual(d.peersAdded, [4]);
    assert.deepEqual([...m.packetFilters.keys()], ['extra']);
    assert.deepEqual(Object.keys(m.derpMap!.Regions!), []);
  });

  it('keeps the regions when a DERP map comes without Regions, and sorts named filters', () => {
    const prior = m.derpMap!.Regions;
    m.apply(msgs[4]!);
    assert.equal(m.derpMap!.Regions, prior);
    assert.deepEqual(m.packetFilter.map((r) => r.SrcIPs[0]), ['*', '100.64.0.4/32']);
  });

  it('replaces the peer set on a non-empty Peers and ignores the other deltas of that message', () => {
    const d = m.apply(msgs[5]!);
    assert.equal(d.fullPeers, true);
    assert.deepEqual([...m.peers.keys()], [4]);
    assert.deepEqual(d.peersRemoved, [3]);
  });

  it('drops and counts a peer whose node key does not parse', () => {
    const x = new NetworkMap();
    x.apply({ Node: { ID: 1, Key: 'nodekey:' + '1'.repeat(64) }, Peers: [{ ID: 2, Key: '' }, { ID: 3, Key: 'nodekey:' + '3'.repeat(64) }] });
    assert.deepEqual([...x.peers.keys()], [3]);
    assert.equal(x.badPeers, 1);
  });

  it('does not mutate the node a patch is applied to', () => {
    const n = { ID: 5, Key: 'nodekey:' + '5'.repeat(64), Endpoints: ['a:1'] };
    const out = applyPeerChange(n, { NodeID: 5, Endpoints: ['b:2'] });
    assert.deepEqual(n.Endpoints, ['a:1']);
    assert.deepEqual(out.Endpoints, ['b:2']);
  });
});
