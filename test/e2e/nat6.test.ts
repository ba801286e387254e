// IPv6 behind the NAT routers: each LAN has a routed /64 (no NAT66) behind a stateful firewall that
// drops unsolicited inbound. IPv4 goes through hard NATs, where nobody goes direct; over IPv6 both
// sides' pings open their own firewalls, so the pair goes direct on IPv6 -- for tailscaled v1.102.3
// (the reference, asserted too) and for meshd, from either side, with real headscale v0.29.2.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { needs } from '../harness/prereq.ts';
import { TailnetLab, type LabNode } from '../harness/hslab.ts';
import type { Status } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'tailscaled', 'tailscale', 'ip', 'ping', 'nft'] });

const DIRECT_WITHIN_MS = 10_000;
const V6 = /^\[2001:db8:\d+::2\]:\d+$/;

type Kind = 'meshd' | 'tailscaled';
interface Node { node: LabNode; kind: Kind; ip: string }
interface Result { pair: string; firstReplyMs: number; directMs: number | null; a: string | null; b: string | null }

describe('IPv6 through stateful firewalls (no NAT66), meshd and tailscaled', { skip }, () => {
  let lab: TailnetLab;
  const nodes = new Map<string, Node>();
  const results: Result[] = [];

  function directTo(a: Node, b: Node): Promise<string | null> {
    return lab.directPath(a.node, a.kind, b.node.name);
  }


  async function add(name: string, kind: Kind, key: string): Promise<void> {
    const node = lab.addNatNode(name, 'hard', { ipv6: true });
    nodes.set(name, { node, kind, ip: await lab.join(node, kind, key) });
  }

  async function pair(aName: string, bName: string): Promise<Result> {
    const a = nodes.get(aName)!, b = nodes.get(bName)!;
    const { firstReplyMs, directMs } = await lab.timeToDirect(a, b, DIRECT_WITHIN_MS);
    const r: Result = { pair: `${a.kind}(${aName}) -> ${b.kind}(${bName})`, firstReplyMs, directMs, a: await directTo(a, b), b: await directTo(b, a) };
    results.push(r);
    return r;
  }

  function assertV6(r: Result): void {
    assert.notEqual(r.directMs, null, `direct: ${JSON.stringify(r)}`);
    assert.match(r.a ?? '', V6, `sender's path is IPv6: ${JSON.stringify(r)}`);
    assert.match(r.b ?? '', V6, `receiver's path is IPv6: ${JSON.stringify(r)}`);
  }

  before(async () => {
    lab = new TailnetLab('n6');
    await lab.startHeadscale();
    const key = lab.authKey({ reusable: true });
    await add('m1', 'meshd', key);
    await add('m2', 'meshd', key);
    await add('t1', 'tailscaled', key);
    await add('t2', 'tailscaled', key);
  });
  after(async () => {
    if (results.length > 0) {
      process.stderr.write('# pair | first reply ms | direct after ms | sender path | receiver path\n');
      for (const r of results) process.stderr.write(`# ${r.pair} | ${r.firstReplyMs} | ${r.directMs ?? '-'} | ${r.a ?? '-'} | ${r.b ?? '-'}\n`);
    }
    await lab?.dispose();
  });

  it('tailscaled to tailscaled (reference): direct over IPv6', async () => {
    assertV6(await pair('t1', 't2'));
  });

  it('meshd sending first to tailscaled: direct over IPv6', async () => {
    assertV6(await pair('m1', 't1'));
  });

  it('tailscaled sending first to meshd: direct over IPv6', async () => {
    assertV6(await pair('t2', 'm2'));
  });

  it('meshd and meshd: direct over IPv6', async () => {
    assertV6(await pair('m1', 'm2'));
  });
});
