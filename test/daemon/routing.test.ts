// The agent's routing hooks without I/O: prefs merging and the map refresh for route approval.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Routing, parseRouteList } from '../../src/daemon/routing.ts';
import { NetworkMap, type MapDelta } from '../../src/control/netmap.ts';
import type { Exec } from '../../src/router/linux.ts';

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

/** A fake `ip`/`nft` that keeps the host state they would change, and answers after a random delay. */
function fakeHost(seed: number): { exec: Exec; state: () => string[] } {
  const rules = new Set<string>(), routes = new Set<string>();
  let nft = false;
  let x = seed;
  const delay = () => new Promise((r) => setTimeout(r, (x = (x * 1103515245 + 12345) % 2 ** 31) % 3));
  const exec: Exec = async (cmd, args) => {
    await delay();
    const line = args.join(' ');
    if (cmd === 'nft') {
      if (args[0] === '-f') { nft = true; return ''; }
      if (!nft) throw new Error('no such table');
      nft = false;
      return '';
    }
    const [fam, what, verb, ...rest] = args;
    const key = `${fam} ${rest.join(' ')}`;
    if (what === 'rule' && verb === 'add') { rules.add(key); return ''; }
    if (what === 'rule' && verb === 'del') {
      const hit = [...rules].find((r) => r === key || r.startsWith(`${key} `));
      if (!hit) throw new Error(`${line}: no such rule`);
      rules.delete(hit);
      return '';
    }
    if (what === 'route' && verb === 'replace') { routes.add(key); return ''; }
    if (what === 'route' && verb === 'del') { routes.delete(key.replace(/^(\S+) /, '$1 ')); return ''; }
    if (what === 'route' && verb === 'show') return [...routes].filter((r) => r.startsWith(fam!)).join('\n');
    if (what === 'route' && verb === 'flush') { for (const r of [...routes]) if (r.startsWith(fam!)) routes.delete(r); return ''; }
    throw new Error(`fake host: unexpected ${cmd} ${line}`);
  };
  return { exec, state: () => [...rules, ...routes, ...(nft ? ['nft table'] : [])] };
}

const exitPeer = (i: number) => ({
  ID: 2, Key: `nodekey:${'2'.repeat(64)}`, Addresses: ['100.64.0.2/32'],
  AllowedIPs: ['100.64.0.2/32', '0.0.0.0/0', '::/0', `198.19.${i % 200}.0/24`],
});
const derpMap = (i: number) => ({ Regions: { 1: { RegionID: 1, Nodes: [{ Name: '1', RegionID: 1, HostName: 'derp', IPv4: `198.18.0.${10 + (i % 50)}` }] } } });

describe('Routing teardown', () => {
  it('stop() in the middle of a burst of map updates leaves no rule, route or nft table behind', async () => {
    for (let round = 0; round < 20; round++) {
      const host = fakeHost(round + 1);
      const r = new Routing('meshd0', () => {}, host.exec);
      r.setPrefs({ exitNode: '100.64.0.2', acceptRoutes: true });
      await r.start({} as never, 'http://127.0.0.1:8080');
      const m = new NetworkMap();
      m.apply({ Node: selfNode([]), Peers: [exitPeer(0)], DERPMap: derpMap(0) } as never);
      const applies: Promise<unknown>[] = [];
      let stopped: Promise<void> | undefined;
      for (let i = 1; i <= 30; i++) {
        m.apply({ Peers: [exitPeer(i)], DERPMap: derpMap(i) } as never);
        applies.push(r.apply(m).catch(() => {}));
        if (i === 5 + round) stopped = r.stop(undefined);
        if (i % 3 === 0) await new Promise((res) => setTimeout(res, round % 4));
      }
      await stopped;
      await Promise.all(applies);
      await new Promise((res) => setTimeout(res, 10));
      assert.deepEqual(host.state(), [], `round ${round}: host state left after stop`);
    }
  });
});

describe('Routing plan reuse', () => {
  it('keeps the last plan for a delta that changes no routing input, and plans again when one changes', async () => {
    const { bigMap, bigPeer, onePeerDelta } = await import('../harness/bigmap.ts');
    const r = new Routing('meshd0', () => {});
    const m = new NetworkMap();
    m.apply(bigMap(1000, `nodekey:${'1'.repeat(64)}`) as never);
    const touched = (d: MapDelta) => new Set([...d.peersAdded, ...d.peersChanged, ...d.peersRemoved]);
    const full = await r.apply(m);
    assert.equal(r.plans, 1);
    assert.equal(full.size, 1000);
    const roam = await r.apply(m, touched(m.apply(onePeerDelta(5, 1) as never)));
    assert.equal(r.plans, 1, 'a peer roaming (new endpoints) reuses the plan');
    assert.equal(roam.get(6)?.join(','), full.get(6)?.join(','));
    await r.apply(m, touched(m.apply({ OnlineChange: { 7: false } } as never)));
    assert.equal(r.plans, 1, 'online changes too');
    const routed = await r.apply(m, touched(m.apply({ PeersChanged: [{ ...bigPeer(5), AllowedIPs: [...bigPeer(5).AllowedIPs!, '198.19.5.0/24'] }] } as never)));
    assert.equal(r.plans, 2, 'new allowed IPs: a new plan');
    assert.equal(routed.get(6)?.includes('198.19.5.0/24'), false, 'not accepted without --accept-routes');
    await r.apply(m, touched(m.apply({ PeersChanged: [bigPeer(1001)] } as never)));
    assert.equal(r.plans, 3, 'a new peer: a new plan');
    await r.apply(m, touched(m.apply({ PacketFilter: [{ SrcIPs: ['100.64.0.0/10'], DstPorts: [] }] } as never)));
    assert.equal(r.plans, 4, 'a new packet filter: a new plan');
    await r.stop(undefined);
  });
});
