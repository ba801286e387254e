// The second configuration: headscale's embedded DERP off, an unmodified standalone derper
// v1.102.3 on the simulated internet as the only region. meshd and tailscaled find it by STUN,
// make it home, and relay through it when UDP is blocked on the meshd side; when meshd's TCP
// connection to the derper goes into a black hole, meshd notices by a DERP ping and relays again
// soon after the path is back (not when TCP's retransmission backoff happens to fire).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { needs } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { DERPER_IP, TailnetLab, type LabNode } from '../harness/hslab.ts';
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

  it('notices its DERP connection went into a black hole (liveness ping), reconnects, and relays again soon after the path is back', async (t0) => {
    const counters = () => status().self.counters ?? {};
    lab.blockUdp(m);
    try {
      await waitFor('meshd to relay through derper', () => { const p = status().peers.find((x) => x.hostname === 't1')?.path; return p?.direct == null && p?.derp === 'derper'; }, 25_000, 500);
      await waitFor('pings through derper', () => lab.ping(m, tIp, 1), 20_000, 500);
      const before = counters();
      // meshd's TCP to the derper dropped both ways: the connection hangs, nothing resets it.
      lab.lab.exec(m.ns, ['nft', '-f', '-'], { input: `table inet derp_hole {
  chain in { type filter hook input priority -5; ip saddr ${DERPER_IP} tcp sport 3340 drop; }
  chain out { type filter hook output priority -5; ip daddr ${DERPER_IP} tcp dport 3340 drop; }
}
` });
      // 30 s with pings queued into the dead connection: TCP backs off to ~25 s between retransmissions.
      const holeEnd = Date.now() + 30_000;
      for (let i = 0; i < 60 && Date.now() < holeEnd; i++) { lab.ping(m, tIp, 1); await new Promise((r) => setTimeout(r, 500)); }
      lab.lab.tryExec(m.ns, ['nft', 'delete', 'table', 'inet', 'derp_hole']);
      const upAt = Date.now();
      await waitFor('pings through derper after the black hole', () => lab.ping(m, tIp, 1), 40_000, 200);
      const resumeMs = Date.now() - upAt;
      t0.diagnostic(`first ping through derper ${resumeMs} ms after the black hole ended`);
      const after = counters();
      const d = (k: string) => (after[`derp900.${k}`] ?? 0) - (before[`derp900.${k}`] ?? 0);
      assert.ok(d('livenessTimeouts') >= 1, `meshd gave the dead connection up after an unanswered ping (${JSON.stringify({ livenessTimeouts: d('livenessTimeouts'), writeTimeouts: d('writeTimeouts'), connects: d('connects') })})`);
      assert.ok(d('connects') >= 1, 'and connected again');
      // Liveness (<= 3 s + 5 s) gives it up during the hole; after it, one backoff (<= 5 s) and a dial.
      assert.ok(resumeMs < 15_000, `relayed again ${resumeMs} ms after the black hole ended`);
      assert.ok(lab.ping(t, mIp, 2), 'and the tailscaled reaches meshd through derper too');
    } finally {
      lab.lab.tryExec(m.ns, ['nft', 'delete', 'table', 'inet', 'derp_hole']);
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
