// netcheck without UDP, against real headscale v0.29.2 (embedded DERP, region 999) and an
// unmodified derper v1.102.3 (region 900) reached through a proxy that adds 40 ms each way. With
// every UDP datagram dropped on the node, no STUN answers: meshd measures each region over HTTP(S)
// (GET /derp/latency-check, as tailscale does) and picks the lowest -- 999, which the no-data
// fallback (the lowest region ID, 900) would not pick.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { needs } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { TailnetLab, type LabNode } from '../harness/hslab.ts';
import type { NetcheckReport } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'derper', 'ip', 'nft'] });

describe('netcheck with UDP blocked', { skip }, () => {
  let lab: TailnetLab;
  let m: LabNode;
  const netcheck = () => {
    const r = lab.meshd(m, ['netcheck', '--json']);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as NetcheckReport;
  };

  before(async () => {
    lab = new TailnetLab('ncu', { derper: 'extra', derperDelayMs: 40 });
    await lab.startHeadscale();
    m = lab.addNode('m1');
    lab.blockUdp(m);
    const r = lab.up(m, lab.authKey({ reusable: true }));
    assert.equal(r.status, 0, r.stderr);
  });
  after(async () => { await lab?.dispose(); });

  it('reports DERP latencies measured over HTTPS and picks the lowest region', async () => {
    await waitFor('a home region', () => netcheck().preferredDERP !== 0, 15_000, 500);
    const rep = netcheck();
    assert.equal(rep.udp, false, 'no STUN answer');
    const byId = new Map(rep.regions.map((g) => [g.id, g]));
    assert.equal(byId.get(999)?.via, 'https', JSON.stringify(rep.regions));
    assert.equal(byId.get(900)?.via, 'https', JSON.stringify(rep.regions));
    const near = byId.get(999)!.latencyMs!, far = byId.get(900)!.latencyMs!;
    assert.ok(far >= 40 && near < far, `the delayed region is slower: 999 ${near} ms, 900 ${far} ms`);
    assert.equal(rep.preferredDERP, 999, 'home is the lowest-latency region');
    const text = lab.meshd(m, ['netcheck']).stdout;
    assert.match(text, /\* UDP: false/);
    assert.match(text, /Nearest DERP: Headscale Embedded DERP/);
  });
});
