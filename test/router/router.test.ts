// The Linux router's commands (recorded, not run) and the route plan for network maps.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LinuxRouter, cleanupStale, forwardingWarning, type Exec } from '../../src/router/linux.ts';
import { DEFAULT_PREFS, canonicalPrefix, planRoutes, routableIPs, type RoutePrefs } from '../../src/router/plan.ts';
import { NetworkMap } from '../../src/control/netmap.ts';
import type { WireNode } from '../../src/control/wire.ts';

function recorder(fail: (cmd: string) => boolean = () => false): { exec: Exec; cmds: string[] } {
  const cmds: string[] = [];
  const exec: Exec = async (cmd, args, input) => {
    const line = `${cmd} ${args.join(' ')}`;
    cmds.push(line + (input ? ` <<${input.split('\n')[0]}` : ''));
    if (fail(line)) throw new Error(`${line}: fails`);
    // A rule listing shows every priority of ours (as after LinuxRouter.set).
    if (line.endsWith(' rule show')) return ['5210', '5230', '5250', '5265', '5270'].map((p) => `${p}:\tfrom all lookup main`).join('\n');
    return '';
  };
  return { exec, cmds };
}

describe('LinuxRouter', () => {
  it('installs the base rules once and table-52 routes, adds no per-address rules, and diffs later configs', async () => {
    const { exec, cmds } = recorder();
    const r = new LinuxRouter('meshd0', () => {}, exec);
    await r.set({ routes: ['0.0.0.0/0', '::/0'], throwRoutes: ['198.18.0.0/24'], masquerade: false });
    assert.deepEqual(cmds.filter((c) => c.includes(' rule add ') && c.includes('5270')), ['ip -4 rule add pref 5270 lookup 52', 'ip -6 rule add pref 5270 lookup 52']);
    assert.ok(cmds.includes('ip -4 rule add pref 5210 fwmark 0x80000/0xff0000 lookup main'));
    assert.ok(cmds.includes('ip -6 rule add pref 5250 fwmark 0x80000/0xff0000 unreachable'));
    assert.equal(cmds.filter((c) => c.includes(' 5265 ')).length, 0, 'control and DERP bypass by socket mark, not by address');
    assert.ok(cmds.includes('ip -4 route replace 0.0.0.0/0 dev meshd0 table 52'));
    assert.ok(cmds.includes('ip -6 route replace ::/0 dev meshd0 table 52'));
    assert.ok(cmds.includes('ip -4 route replace throw 198.18.0.0/24 table 52'));

    cmds.length = 0;
    await r.set({ routes: [], throwRoutes: [], masquerade: false });
    assert.deepEqual(cmds.sort(), [
      'ip -4 route del 0.0.0.0/0 dev meshd0 table 52',
      'ip -4 route del throw 198.18.0.0/24 table 52',
      'ip -6 route del ::/0 dev meshd0 table 52',
    ]);
    cmds.length = 0;
    await r.set({ routes: [], throwRoutes: [], masquerade: false });
    assert.deepEqual(cmds, [], 'nothing to do for the same config');
  });

  it('creates and deletes the nft table with masquerading, and close() removes everything', async () => {
    const { exec, cmds } = recorder();
    const r = new LinuxRouter('meshd0', () => {}, exec);
    await r.set({ routes: [], throwRoutes: [], masquerade: true });
    assert.ok(cmds.some((c) => c.startsWith('nft -f - <<table inet meshd {')));
    cmds.length = 0;
    await r.close();
    assert.ok(cmds.includes('nft delete table inet meshd'));
    assert.ok(cmds.includes('ip -4 rule del pref 5270 lookup 52'));
    assert.ok(cmds.includes('ip -6 rule del pref 5265'));
    cmds.length = 0;
    await r.close();
    assert.deepEqual(cmds, [], 'a second close does nothing');
  });

  it('adds the unreachable rule for marked packets only once their lookup main is in (a live control connection never meets it alone)', async () => {
    const log: string[] = [];
    const exec: Exec = async (cmd, args) => {
      const line = `${cmd} ${args.join(' ')}`;
      log.push(line);
      await new Promise((r) => setTimeout(r, 5)); // each ip process takes a while
      log.push(`done: ${line}`);
      return '';
    };
    await new LinuxRouter('meshd0', () => {}, exec).prepare();
    for (const f of ['-4', '-6']) {
      const added = log.indexOf(`done: ip ${f} rule add pref 5210 fwmark 0x80000/0xff0000 lookup main`);
      const unreachable = log.indexOf(`ip ${f} rule add pref 5250 fwmark 0x80000/0xff0000 unreachable`);
      assert.ok(added >= 0 && unreachable > added, `${f}: ${log.join('; ')}`);
    }
  });

  it('cleanupStale deletes only the rules the listing shows, until none is left, in bounded loops, and never throws', async () => {
    let left = 3;
    const { exec: rec, cmds } = recorder((c) => !(c === 'ip -4 rule del pref 5270 lookup 52' && left-- > 0) && !c.endsWith('rule show'));
    const exec: Exec = async (cmd, args, input) => {
      const out = await rec(cmd, args, input);
      return args.join(' ') === '-4 rule show' ? '0:\tfrom all lookup local\n5270:\tfrom all lookup 52\n32766:\tfrom all lookup main\n' : out;
    };
    const n = await cleanupStale(() => {}, exec);
    assert.equal(n, 3);
    assert.equal(cmds.filter((c) => c === 'ip -4 rule del pref 5270 lookup 52').length, 4);
    assert.deepEqual(cmds.filter((c) => c.startsWith('ip -4 rule del') && !c.includes('5270')), [], 'priorities the listing lacks are not tried');
    const { exec: bad } = recorder(() => true);
    assert.equal(await cleanupStale(() => {}, bad), 0);
  });

  it('cleanupStale deletes the unreachable rule for marked packets before their lookup main (a restarted agent dials control meanwhile)', async () => {
    const { exec, cmds } = recorder((c) => c.includes(' rule del ') && cmds.filter((x) => x === c).length > 1);
    await cleanupStale(() => {}, exec);
    for (const f of ['-4', '-6']) {
      const unreachable = cmds.indexOf(`ip ${f} rule del pref 5250 fwmark 0x80000/0xff0000 unreachable`);
      assert.ok(unreachable >= 0 && unreachable < cmds.indexOf(`ip ${f} rule del pref 5210 fwmark 0x80000/0xff0000 lookup main`), `${f}: ${cmds.join('; ')}`);
    }
  });
});

describe('forwardingWarning', () => {
  it('names the exact sysctl to run for each family that is off', () => {
    const sysctl = (v4: string, v6: string) => (p: string) => (p.includes('ipv4') ? v4 : v6);
    assert.equal(forwardingWarning(true, true, sysctl('1', '1')), undefined);
    assert.match(forwardingWarning(true, true, sysctl('0', '1'))!, /sysctl -w net\.ipv4\.ip_forward=1"/);
    assert.match(forwardingWarning(true, true, sysctl('0', '0'))!, /net\.ipv4\.ip_forward=1 net\.ipv6\.conf\.all\.forwarding=1/);
    assert.equal(forwardingWarning(true, false, sysctl('1', '0')), undefined);
  });
});

function node(id: number, allowed: string[], extra: Partial<WireNode> = {}): WireNode {
  const key = `nodekey:${id.toString(16).padStart(64, '0')}`;
  const addrs = [`100.64.0.${id}/32`, `fd7a:115c:a1e0::${id}/128`];
  return { ID: id, Key: key, Addresses: addrs, AllowedIPs: [...addrs, ...allowed], Name: `n${id}.meshd.test.`, Hostinfo: { Hostname: `n${id}` }, ...extra } as WireNode;
}

function map(): NetworkMap {
  const m = new NetworkMap();
  m.apply({ Node: node(1, []), Peers: [node(2, ['0.0.0.0/0', '::/0']), node(3, ['198.19.5.0/24']), node(4, ['0.0.0.0/0', '::/0'])] } as never);
  return m;
}

const host = { lanPrefixes: ['198.18.0.0/24'] };
const prefs = (p: Partial<RoutePrefs>): RoutePrefs => ({ ...DEFAULT_PREFS, ...p });

describe('planRoutes', () => {
  it('gives peers only their addresses by default: no exit routes, no subnet routes', () => {
    const plan = planRoutes(map(), DEFAULT_PREFS, host);
    for (const id of [2, 3, 4]) assert.deepEqual(plan.peerAllowedIPs.get(id), [`100.64.0.${id}/32`, `fd7a:115c:a1e0::${id}/128`]);
    assert.deepEqual(plan.router.routes, []);
    assert.equal(plan.router.masquerade, false);
  });

  it('routes 0.0.0.0/0 and ::/0 only to the chosen exit node, by IP or hostname', () => {
    for (const sel of ['100.64.0.4', 'n4', 'n4.meshd.test']) {
      const plan = planRoutes(map(), prefs({ exitNode: sel }), host);
      assert.ok(plan.peerAllowedIPs.get(4)!.includes('0.0.0.0/0'), sel);
      assert.ok(!plan.peerAllowedIPs.get(2)!.includes('0.0.0.0/0'), sel);
      assert.deepEqual([...plan.router.routes].sort(), ['0.0.0.0/0', '::/0']);
      assert.deepEqual(plan.exitNode, { wanted: sel, id: 4, hostname: 'n4', offersExit: true });
      assert.deepEqual(plan.router.throwRoutes, []);
    }
  });

  it('still routes the internet into the tunnel for an unknown exit node (drop, never leak)', () => {
    const plan = planRoutes(map(), prefs({ exitNode: '100.64.0.99' }), host);
    assert.deepEqual([...plan.router.routes].sort(), ['0.0.0.0/0', '::/0']);
    assert.equal(plan.exitNode?.id, undefined);
  });

  it('keeps the LAN local with allow-lan-access', () => {
    const plan = planRoutes(map(), prefs({ exitNode: 'n2', exitNodeAllowLanAccess: true }), host);
    assert.deepEqual(plan.router.throwRoutes, ['198.18.0.0/24']);
  });

  it('installs subnet routes only with accept-routes', () => {
    assert.ok(!planRoutes(map(), DEFAULT_PREFS, host).peerAllowedIPs.get(3)!.includes('198.19.5.0/24'));
    const plan = planRoutes(map(), prefs({ acceptRoutes: true }), host);
    assert.ok(plan.peerAllowedIPs.get(3)!.includes('198.19.5.0/24'));
    assert.deepEqual(plan.router.routes, ['198.19.5.0/24']);
  });

  it('advertises exit routes and subnets, masquerades, and counts them as local for the filter', () => {
    const p = prefs({ advertiseExitNode: true, advertiseRoutes: [canonicalPrefix('198.19.7.9/24')] });
    assert.deepEqual(routableIPs(p), ['198.19.7.0/24', '0.0.0.0/0', '::/0']);
    const plan = planRoutes(map(), p, host);
    assert.equal(plan.router.masquerade, true);
    assert.ok(plan.localNets.includes('0.0.0.0/0') && plan.localNets.includes('198.19.7.0/24') && plan.localNets.includes('100.64.0.1/32'));
  });

  it('keeps an exit node\'s own LANs and addresses out of what it serves, unless advertised', () => {
    const facts = { ...host, lanPrefixes: ['198.18.0.0/24', '198.19.7.0/24'], hostAddresses: ['198.18.0.10', '2001:db8::a'] };
    const plan = planRoutes(map(), prefs({ advertiseExitNode: true, advertiseRoutes: ['198.19.7.0/24'] }), facts);
    assert.deepEqual(plan.notLocalNets, ['198.18.0.0/24', '198.18.0.10/32', '2001:db8::a/128']);
    assert.deepEqual(planRoutes(map(), prefs({ advertiseRoutes: ['198.19.7.0/24'] }), facts).notLocalNets, [], 'a plain subnet router excludes nothing');
  });
});
