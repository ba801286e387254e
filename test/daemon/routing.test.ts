// The agent's routing hooks without I/O: prefs merging and the map refresh for route approval.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Routing, parseRouteList } from '../../src/daemon/routing.ts';
import { NetworkMap, type MapDelta } from '../../src/control/netmap.ts';

const selfNode = (allowed: string[]) => ({ ID: 1, Key: `nodekey:${'1'.repeat(64)}`, Addresses: ['100.64.0.1/32'], AllowedIPs: ['100.64.0.1/32', ...allowed] });
const policyChange = { packetFilterChanged: true, selfChanged: false } as MapDelta;

describe('Routing', () => {
  it('merges only the flags given, and refuses to offer and use an exit node at once', () => {
    const r = new Routing('meshd0', () => {});
    assert.equal(r.setPrefs({ advertiseRoutes: parseRouteList('198.19.5.7/24, 198.19.6.0/24') }), true);
    assert.equal(r.setPrefs({ acceptRoutes: true }), false, 'RoutableIPs unchanged');
    assert.deepEqual(r.prefs.advertiseRoutes, ['198.19.5.0/24', '198.19.6.0/24']);
    assert.equal(r.prefs.acceptRoutes, true);
    r.setPrefs({ exitNode: 'n2' });
    assert.throws(() => r.setPrefs({ advertiseExitNode: true }), /cannot offer an exit node and use one/);
    assert.equal(r.prefs.advertiseExitNode, false, 'a refused change changes nothing');
    assert.deepEqual(r.hostinfo(), { RoutableIPs: ['198.19.5.0/24', '198.19.6.0/24'] });
    assert.throws(() => parseRouteList('198.19.5.1'), /CIDR/);
  });

  it('refreshes the map after a policy change only while an advertised route is unapproved, at most every 3 s', async () => {
    const r = new Routing('meshd0', () => {});
    r.setPrefs({ advertiseRoutes: ['198.19.5.0/24'] });
    const m = new NetworkMap();
    m.apply({ Node: selfNode([]) } as never);
    let refreshes = 0;
    const refresh = () => { refreshes++; };
    r.onDelta({ ...policyChange, packetFilterChanged: false }, m, refresh);
    assert.equal(refreshes, 0, 'no policy change: nothing');
    r.onDelta(policyChange, m, refresh);
    assert.equal(refreshes, 1);
    r.onDelta(policyChange, m, refresh, Date.now() + 2_950);
    assert.equal(refreshes, 1, 'inside the window: deferred');
    await new Promise((res) => setTimeout(res, 150));
    assert.equal(refreshes, 2, 'the deferred refresh ran when the window ended');
    m.apply({ Node: selfNode(['198.19.5.0/24']) } as never);
    r.onDelta(policyChange, m, refresh, Date.now() + 10_000);
    assert.equal(refreshes, 2, 'approved: no more refreshes');
    await r.stop(undefined);
  });
});
