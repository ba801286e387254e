// Port mapping against miniupnpd 2.3.1 (Debian, nftables) on NAT routers with an RFC 1918 LAN, with
// real headscale v0.29.2 and tailscaled v1.102.3. Behind a hard NAT (a fresh port per destination)
// nothing goes direct to a peer behind another NAT -- unless the router forwards a port: then the
// peer reaches the mapped address, and the pair goes direct. tailscaled (its port mapper on) behind
// the same kind of router is the reference; without miniupnpd both stay on DERP.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { needs } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { TailnetLab, type LabNode } from '../harness/hslab.ts';
import type { NetcheckReport, Status } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'tailscaled', 'tailscale', 'ip', 'ping', 'nft', 'miniupnpd'] });

/** How long a pair has to go direct. */
const DIRECT_WITHIN_MS = 10_000;

type Kind = 'meshd' | 'tailscaled';
interface Node { node: LabNode & { router?: string }; kind: Kind; ip: string }
interface Result { pair: string; firstReplyMs: number; directMs: number | null; path: string }

describe('port mapping with miniupnpd, meshd and tailscaled', { skip }, () => {
  let lab: TailnetLab;
  let key = '';
  const nodes = new Map<string, Node>();
  const results: Result[] = [];

  function status(n: Node): Status {
    const r = lab.meshd(n.node, ['status', '--json']);
    assert.equal(r.status, 0, `meshd status on ${n.node.name}: ${r.stderr}`);
    return JSON.parse(r.stdout) as Status;
  }

  function directTo(a: Node, b: Node): Promise<string | null> {
    return lab.directPath(a.node, a.kind, b.node.name);
  }


  async function start(name: string, kind: Kind, node: LabNode, key: string): Promise<void> {
    // The port mapper on for tailscaled, as it runs by default (the lab turns it off elsewhere).
    nodes.set(name, { node, kind, ip: await lab.join(node, kind, key, { TS_DISABLE_PORTMAPPER: '0' }) });
  }

  async function pair(aName: string, bName: string): Promise<Result> {
    const a = nodes.get(aName)!, b = nodes.get(bName)!;
    const { firstReplyMs, directMs } = await lab.timeToDirect(a, b, DIRECT_WITHIN_MS);
    const r: Result = { pair: `${a.kind}(${aName}) -> ${b.kind}(${bName})`, firstReplyMs, directMs, path: directMs !== null ? `direct ${await directTo(b, a)}` : 'DERP' };
    results.push(r);
    return r;
  }

  function netcheck(name: string): NetcheckReport & { text: string } {
    const n = nodes.get(name)!;
    const j = lab.meshd(n.node, ['netcheck', '--json']);
    assert.equal(j.status, 0, j.stderr);
    const t = lab.meshd(n.node, ['netcheck']);
    return { ...(JSON.parse(j.stdout) as NetcheckReport), text: t.stdout };
  }

  before(async () => {
    lab = new TailnetLab('pm');
    await lab.startHeadscale();
    key = lab.authKey({ reusable: true });
    await start('te', 'tailscaled', lab.addNatNode('te', 'easy'), key);
    await start('me', 'meshd', lab.addNatNode('me', 'easy'), key);
    await start('mp', 'meshd', await lab.addPortmapNode('mp', 'hard', { upnp: true, natpmp: true }), key);
    await start('mu', 'meshd', await lab.addPortmapNode('mu', 'hard', { upnp: true, natpmp: false }), key);
    await start('tp', 'tailscaled', await lab.addPortmapNode('tp', 'hard', { upnp: true, natpmp: true }), key);
    await start('mo', 'meshd', await lab.addPortmapNode('mo', 'hard', null), key);
    await start('to', 'tailscaled', await lab.addPortmapNode('to', 'hard', null), key);
  });
  after(async () => {
    if (results.length > 0) {
      process.stderr.write('# pair | first reply ms | direct after ms | path (as the peer sees it)\n');
      for (const r of results) process.stderr.write(`# ${r.pair} | ${r.firstReplyMs} | ${r.directMs ?? '-'} | ${r.path}\n`);
    }
    await lab?.dispose();
  });

  it('netcheck reports the services the router offers (tailscale: "PortMapping: UPnP, NAT-PMP, PCP") and the mapped address', async () => {
    await waitFor('mp to map a port', () => netcheck('mp').portMapped !== null, 15_000, 500);
    const mp = netcheck('mp');
    assert.match(mp.text, /\* PortMapping: UPnP, NAT-PMP, PCP\n/, mp.text);
    assert.match(mp.portMapped ?? '', /^198\.18\.0\.\d+:41641$/, 'NAT-PMP maps the WireGuard port on the router\'s public address');
    const mu = netcheck('mu');
    assert.match(mu.text, /\* PortMapping: UPnP\n/, mu.text);
    const mo = netcheck('mo');
    assert.match(mo.text, /\* PortMapping: \n/, `checked, nothing offered: ${mo.text}`);
    assert.equal(mo.portMapped, null);
    const mpNode = nodes.get('mp')!.node;
    assert.ok(lab.portForwards(mpNode.router!).some((l) => l.includes(`${(mpNode as { lan?: string }).lan}.2:41641`)),
      `miniupnpd forwards the port: ${lab.portForwards(mpNode.router!).join(' | ')}\n${lab.miniupnpdLog(mpNode).slice(-2000)}`);
  });

  it('hard NAT with NAT-PMP: meshd to tailscaled and meshd to meshd go direct through the mapped port, as tailscaled does', async () => {
    const ref = await pair('tp', 'te');
    const mt = await pair('mp', 'te');
    const mm = await pair('mp', 'me');
    assert.notEqual(ref.directMs, null, `tailscaled maps and goes direct: ${JSON.stringify(ref)}`);
    assert.notEqual(mt.directMs, null, `meshd -> tailscaled direct: ${JSON.stringify(mt)}`);
    assert.notEqual(mm.directMs, null, `meshd -> meshd direct: ${JSON.stringify(mm)}`);
    const mapped = netcheck('mp').portMapped;
    assert.equal(await directTo(nodes.get('te')!, nodes.get('mp')!), mapped, 'tailscaled reaches meshd at the mapped address');
  });

  it('hard NAT with UPnP IGD only: meshd maps with AddAnyPortMapping and goes direct to tailscaled', async () => {
    const r = await pair('mu', 'te');
    assert.notEqual(r.directMs, null, JSON.stringify(r));
    const mapped = netcheck('mu').portMapped;
    assert.ok(mapped, 'mapped');
    assert.equal(await directTo(nodes.get('te')!, nodes.get('mu')!), mapped);
  });

  it('hard NAT without a mapping service: DERP, for meshd as for tailscaled', async () => {
    const ref = await pair('to', 'te');
    const got = await pair('mo', 'te');
    assert.ok(ref.firstReplyMs >= 0 && got.firstReplyMs >= 0, 'both work');
    assert.equal(ref.directMs, null, `tailscaled on DERP: ${JSON.stringify(ref)}`);
    assert.equal(got.directMs, null, `meshd on DERP: ${JSON.stringify(got)}`);
  });

  it('a crashed agent\'s mapping is taken over by the restarted one, and down deletes it from miniupnpd (NAT-PMP and UPnP)', async () => {
    for (const name of ['mp', 'mu']) {
      const n = nodes.get(name)!.node as LabNode & { router: string; lan: string };
      const mine = () => lab.portForwards(n.router).filter((l) => l.includes(`${n.lan}.2:`));
      assert.equal(mine().length, 1, `${name} has its forward before down: ${lab.portForwards(n.router).join(' | ')}`);
      const before = mine()[0];
      // kill -9 (nothing but the agent runs in the node's namespace): no release, the forward stays...
      const pids = () => spawnSync('ip', ['netns', 'pids', n.ns], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean).map(Number);
      for (const pid of pids()) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
      await waitFor(`${name}'s agent to be gone`, () => pids().length === 0, 5000, 100);
      assert.deepEqual(mine(), [before]);
      // ...until the restarted agent maps the same port again: one forward, not two.
      assert.equal(lab.up(n, key).status, 0);
      await waitFor(`${name} to map again`, () => { const r = lab.meshd(n, ['netcheck', '--json']); return r.status === 0 && JSON.parse(r.stdout).portMapped !== null; }, 15_000, 500);
      assert.deepEqual(mine(), [before], 'the same forward, taken over');
      const r = lab.meshd(n, ['down']);
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(mine(), [], `${name}: no forward left after down\n${lab.miniupnpdLog(n).slice(-1500)}`);
    }
  });
});
