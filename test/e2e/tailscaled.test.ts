// meshd and an unmodified tailscaled v1.102.3 as peers on real headscale v0.29.2 (embedded DERP and
// STUN, plain HTTP): disco finds the direct path from either side, 50 MB cross both ways intact, and
// with UDP blocked on the meshd side the two keep talking through DERP.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { needs } from '../harness/prereq.ts';
import { packageRoot } from '../../src/util/root.ts';
import { waitFor } from '../harness/netns.ts';
import { TailnetLab, type LabNode } from '../harness/hslab.ts';
import type { PeerStatus, Status } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'tailscaled', 'tailscale', 'ip', 'ping', 'nft'] });

const MB50 = 50 * 1024 * 1024;

describe('meshd with a real tailscaled peer', { skip }, () => {
  let lab: TailnetLab;
  let m: LabNode, t: LabNode;
  let mIp = '', tIp = '';

  function status(): Status {
    const r = lab.meshd(m, ['status', '--json']);
    assert.equal(r.status, 0, `meshd status: ${r.stderr}`);
    return JSON.parse(r.stdout) as Status;
  }
  function peerT(): PeerStatus | undefined {
    return status().peers.find((p) => p.hostname === 't1');
  }
  function tsPing(): string {
    const r = lab.tailscale(t, ['ping', '--c', '10', '--timeout', '3s', mIp], 60_000);
    return r.stdout + r.stderr;
  }

  before(async () => {
    lab = new TailnetLab('tsd');
    await lab.startHeadscale();
    const key = lab.authKey({ reusable: true });
    m = lab.addNode('m1');
    t = lab.addNode('t1');
    const r = lab.up(m, key);
    assert.equal(r.status, 0, `meshd up: ${r.stderr}`);
    await lab.startTailscaled(t, key);
    mIp = status().self.addresses[0]!;
    tIp = lab.tailscale(t, ['ip', '-4']).stdout.trim();
    await waitFor('meshd to see t1', () => peerT() !== undefined, 20_000, 250);
    await waitFor('tailscaled to see m1', () => lab.tailscale(t, ['status']).stdout.includes(mIp), 20_000, 250);
  });
  after(async () => { await lab?.dispose(); });

  it('pings from meshd to tailscaled and the path turns direct within 10 s', async () => {
    assert.ok(lab.ping(m, tIp, 3), `meshd -> tailscaled ${tIp}`);
    await waitFor('a direct path to t1 in meshd status', () => peerT()?.path.direct != null, 10_000, 200);
    assert.match(peerT()!.path.direct!, /^(198\.18\.0\.11:41641|\[2001:db8::b\]:41641)$/);
  });

  it('`meshd ping` says the path is direct, and `meshd netcheck` finds UDP and the home DERP', () => {
    const r = lab.meshd(m, ['ping', '-c', '5', 't1']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /pong from t1 \(100\.64\.0\.\d+\) via (198\.18\.0\.11:41641|\[2001:db8::b\]:41641) in \d+ms/, r.stdout);
    const nc = lab.meshd(m, ['netcheck', '--json']);
    assert.equal(nc.status, 0, nc.stderr);
    const rep = JSON.parse(nc.stdout) as { udp: boolean; preferredDERP: number; globalV4: string; regions: { id: number; latencyMs: number | null }[] };
    assert.equal(rep.udp, true);
    assert.equal(rep.preferredDERP, 999);
    assert.equal(rep.globalV4, '198.18.0.10:41641');
    assert.ok((rep.regions.find((g) => g.id === 999)?.latencyMs ?? -1) >= 0);
  });

  it('pings from tailscaled to meshd and `tailscale ping` reports a direct path', () => {
    assert.ok(lab.ping(t, mIp, 3), `tailscaled -> meshd ${mIp}`);
    const out = tsPing();
    assert.match(out, /pong from m1 \(100\.64\.0\.\d+\) via (198\.18\.0\.10:41641|\[2001:db8::a\]:41641) in/, out);
  });

  it('moves 50 MB each way, hash-checked', async () => {
    const got = lab.xferServe(t, tIp, 5201);
    await new Promise((r) => setTimeout(r, 500));
    const sent = lab.xferSend(m, tIp, 5201, MB50);
    assert.deepEqual(await got, { bytes: sent.bytes, sha256: sent.sha256 }, 'meshd -> tailscaled');
    const got2 = lab.xferServe(m, mIp, 5202);
    await new Promise((r) => setTimeout(r, 500));
    const sent2 = lab.xferSend(t, mIp, 5202, MB50);
    assert.deepEqual(await got2, { bytes: sent2.bytes, sha256: sent2.sha256 }, 'tailscaled -> meshd');
    assert.equal(sent.bytes, MB50);
    process.stderr.write(`# 50 MB meshd->tailscaled ${(MB50 * 8 / sent.ms / 1000).toFixed(0)} Mbit/s, tailscaled->meshd ${(MB50 * 8 / sent2.ms / 1000).toFixed(0)} Mbit/s (direct)\n`);
  });

  it('shrugs off hostile datagrams at its port: counted, and the direct path to tailscaled stays', () => {
    const before = status().self.counters ?? {};
    const junk = lab.lab.tryExec(t.ns, [process.execPath, join(packageRoot(), 'scripts', 'udpjunk.mjs'), m.ip4, '41641', '5000'], 40_000);
    assert.equal(junk.status, 0, junk.stderr);
    const after = status().self.counters ?? {};
    assert.ok((after.dropJunk ?? 0) > (before.dropJunk ?? 0), `junk counted: ${after.dropJunk}`);
    assert.ok(lab.ping(m, tIp, 3), 'still pings');
    const r = lab.meshd(m, ['ping', '-c', '3', 't1']);
    assert.equal(r.status, 0, `still direct: ${r.stdout}${r.stderr}`);
  });

  it('a direct transfer is unaffected when headscale and its DERP restart during it', async () => {
    const got = lab.xferServe(t, tIp, 5204);
    await new Promise((r) => setTimeout(r, 500));
    const sending = lab.xferSendAsync(m, tIp, 5204, MB50);
    await new Promise((r) => setTimeout(r, 300));
    await lab.stopHeadscale();
    await lab.startHeadscale();
    const sent = await sending;
    assert.deepEqual(await got, { bytes: sent.bytes, sha256: sent.sha256 });
    assert.notEqual(peerT()?.path.direct, null, 'still direct');
  });

  it('keeps working through DERP when UDP is blocked on the meshd side', async () => {
    lab.blockUdp(m);
    try {
      // Trust in the direct path lapses (6.5 s), then pings to it time out (5 s): DERP alone remains.
      await waitFor('meshd to fall back to DERP', () => { const p = peerT()?.path; return p?.direct == null && p?.derp != null; }, 25_000, 500);
      await waitFor('pings through DERP', () => lab.ping(m, tIp, 2) && lab.ping(t, mIp, 2), 20_000, 500);
      const out = tsPing();
      assert.match(out, /pong from m1 \(100\.64\.0\.\d+\) via DERP\(headscale\) in/, out);
      const mp = lab.meshd(m, ['ping', '-c', '2', 't1']);
      assert.notEqual(mp.status, 0, 'no direct connection: exit status 1 as tailscale ping');
      assert.match(mp.stdout, /pong from t1 \(100\.64\.0\.\d+\) via DERP\(headscale\) in \d+ms/, mp.stdout + mp.stderr);
      assert.match(mp.stderr, /direct connection not established/);
      const got = lab.xferServe(t, tIp, 5203);
      await new Promise((r) => setTimeout(r, 500));
      const sent = lab.xferSend(m, tIp, 5203, 5 * 1024 * 1024);
      assert.deepEqual(await got, { bytes: sent.bytes, sha256: sent.sha256 }, '5 MB over DERP');
      process.stderr.write(`# 5 MB meshd->tailscaled over DERP ${(sent.bytes * 8 / sent.ms / 1000).toFixed(1)} Mbit/s\n`);
      // DERP (inside headscale) goes away during a transfer and comes back: both clients reconnect
      // and the DERP-only path recovers; TCP retransmits what was lost meanwhile.
      const got2 = lab.xferServe(t, tIp, 5205);
      await new Promise((r) => setTimeout(r, 500));
      const sending = lab.xferSendAsync(m, tIp, 5205, 5 * 1024 * 1024);
      await new Promise((r) => setTimeout(r, 300));
      await lab.stopHeadscale();
      await lab.startHeadscale();
      const sent2 = await sending;
      assert.deepEqual(await got2, { bytes: sent2.bytes, sha256: sent2.sha256 }, '5 MB over DERP across a DERP restart');
      process.stderr.write(`# 5 MB over DERP across a DERP restart took ${sent2.ms} ms\n`);
    } finally {
      lab.unblockUdp(m);
    }
    await waitFor('the direct path to come back', () => peerT()?.path.direct != null, 20_000, 500);
  });
});
