// The second configuration: headscale's embedded DERP off, an unmodified standalone derper
// v1.102.3 on the simulated internet as the only region. meshd and tailscaled find it by STUN,
// make it home, and relay through it when UDP is blocked on the meshd side.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { needs } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { TailnetLab, type LabNode } from '../harness/hslab.ts';
import type { Status } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'tailscaled', 'tailscale', 'derper', 'ip', 'ping', 'nft'] });

describe('meshd and tailscaled with a standalone derper', { skip }, () => {
  let lab: TailnetLab;
  let m: LabNode, t: LabNode;
  let tIp = '', mIp = '';
  const status = () => JSON.parse(lab.meshd(m, ['status', '--json']).stdout) as Status;

  before(async () => {
    lab = new TailnetLab('dpr', { derper: true });
    await lab.startHeadscale();
    const key = lab.authKey({ reusable: true });
    m = lab.addNode('m1');
    t = lab.addNode('t1');
    assert.equal(lab.up(m, key).status, 0);
    await lab.startTailscaled(t, key);
    tIp = lab.tailscale(t, ['ip', '-4']).stdout.trim();
    mIp = status().self.addresses[0]!;
    await waitFor('meshd to see t1', () => status().peers.some((p) => p.hostname === 't1'), 20_000, 250);
  });
  after(async () => { await lab?.dispose(); });

  it('chooses the derper region as home by STUN', async () => {
    await waitFor('netcheck to pick a home', () => JSON.parse(lab.meshd(m, ['netcheck', '--json']).stdout).preferredDERP === 900, 10_000, 500);
    const rep = JSON.parse(lab.meshd(m, ['netcheck', '--json']).stdout) as { udp: boolean; regions: { id: number; code: string }[] };
    assert.equal(rep.udp, true);
    assert.deepEqual(rep.regions.map((g) => g.code), ['derper']);
  });

  it('goes direct with UDP, and relays through derper with UDP blocked on the meshd side', async () => {
    assert.ok(lab.ping(m, tIp, 3));
    const d = lab.meshd(m, ['ping', '-c', '5', 't1']);
    assert.equal(d.status, 0, d.stdout + d.stderr);
    lab.blockUdp(m);
    try {
      await waitFor('meshd to fall back to DERP', () => { const p = status().peers.find((x) => x.hostname === 't1')?.path; return p?.direct == null && p?.derp === 'derper'; }, 25_000, 500);
      await waitFor('pings through derper', () => lab.ping(m, tIp, 2) && lab.ping(t, mIp, 2), 20_000, 500);
      const mp = lab.meshd(m, ['ping', '-c', '1', 't1']);
      assert.match(mp.stdout, /via DERP\(derper\)/, mp.stdout + mp.stderr);
      const tp = lab.tailscale(t, ['ping', '--c', '3', mIp], 30_000);
      assert.match(tp.stdout, /via DERP\(derper\)/, tp.stdout + tp.stderr);
    } finally {
      lab.unblockUdp(m);
    }
  });
});

describe('two DERP regions (embedded and derper): netcheck tells easy from hard NAT', { skip }, () => {
  let lab: TailnetLab;
  before(async () => {
    lab = new TailnetLab('dp2', { derper: 'extra' });
    await lab.startHeadscale();
  });
  after(async () => { await lab?.dispose(); });

  it('reports MappingVariesByDestIP false behind an easy NAT and true behind a hard one, as tailscale netcheck does', async () => {
    const key = lab.authKey({ reusable: true });
    const got: Record<string, { meshd: boolean | null; tailscaled: string }> = {};
    for (const nat of ['easy', 'hard'] as const) {
      const m = lab.addNatNode(`m${nat[0]}`, nat);
      assert.equal(lab.up(m, key).status, 0);
      const t = lab.addNatNode(`t${nat[0]}`, nat);
      await lab.startTailscaled(t, key);
      let rep: { mappingVariesByDestIP: boolean | null; regions: { latencyMs: number | null }[] } | undefined;
      await waitFor(`meshd netcheck behind the ${nat} NAT to measure both regions`, () => {
        rep = JSON.parse(lab.meshd(m, ['netcheck', '--json']).stdout);
        return rep!.regions.length === 2 && rep!.regions.every((g) => g.latencyMs !== null) && rep!.mappingVariesByDestIP !== null;
      }, 20_000, 500);
      const tn = lab.tailscale(t, ['netcheck'], 30_000).stdout;
      got[nat] = { meshd: rep!.mappingVariesByDestIP, tailscaled: /MappingVariesByDestIP: (\w*)/.exec(tn)?.[1] ?? '?' };
    }
    process.stderr.write(`# MappingVariesByDestIP: ${JSON.stringify(got)}\n`);
    assert.deepEqual(got, { easy: { meshd: false, tailscaled: 'false' }, hard: { meshd: true, tailscaled: 'true' } });
  });
});
