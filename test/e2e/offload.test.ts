// Offloads end to end through `meshd wg`: a pair with every offload on must carry TCP intact and
// show in `meshd counters` that each stage worked (TSO reads split, UDP GSO sends, UDP GRO
// receives, coalesced TUN writes); a pair where one side runs with every kill switch set must
// interoperate with the offloading side in both directions and show no offload at all.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { needs } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { WgLab, type WgHost } from '../harness/wglab.ts';
import { packageRoot } from '../../src/util/root.ts';

const skip = needs({ root: true, tun: true, commands: ['wg', 'ip', 'ping'] });
const scripts = join(packageRoot(), 'scripts');
const KILL = ['MESHD_DISABLE_TUN_OFFLOAD', 'MESHD_DISABLE_UDP_GSO', 'MESHD_DISABLE_UDP_GRO'];

describe('meshd wg with and without offloads', { skip }, () => {
  const lab = new WgLab('off', 1280);
  after(() => lab.dispose());
  let on: WgHost, on2: WgHost, off: WgHost;

  function counters(h: WgHost): Record<string, number> {
    return JSON.parse(lab.lab.exec(h.ns, [process.execPath, lab.meshdBin, 'counters', h.ifname, '--json'])) as Record<string, number>;
  }

  async function transfer(from: WgHost, to: WgHost, bytes: number): Promise<void> {
    const server = lab.lab.spawn(to.ns, [process.execPath, join(scripts, 'tcpxfer.mjs'), 'serve', to.tun4, '5201']);
    let got = '';
    server.stdout?.setEncoding('utf8');
    server.stdout?.on('data', (d: string) => { got += d; });
    await new Promise((r) => setTimeout(r, 300));
    const sent = JSON.parse(lab.lab.exec(from.ns, [process.execPath, join(scripts, 'tcpxfer.mjs'), 'send', to.tun4, '5201', String(bytes)], { timeoutMs: 120_000 })) as { sha256: string };
    await waitFor('the receiver to report', () => got.includes('}'), 10_000);
    const recv = JSON.parse(got) as { bytes: number; sha256: string };
    assert.equal(recv.bytes, bytes);
    assert.equal(recv.sha256, sent.sha256, `${from.ifname} -> ${to.ifname}: bytes intact`);
  }

  it('starts two offloading agents and one with every kill switch set', async () => {
    on = lab.addHost(1, 'meshd');
    on2 = lab.addHost(2, 'meshd');
    off = lab.addHost(3, 'meshd');
    await lab.start(on);
    await lab.start(on2);
    // WgLab spawns agents with this process's environment: set the switches for the third only.
    for (const k of KILL) process.env[k] = '1';
    try {
      await lab.start(off);
    } finally {
      for (const k of KILL) delete process.env[k];
    }
    for (const [a, b] of [[on, on2], [on, off], [on2, on], [off, on]] as const) lab.peer(a, b);
    assert.ok(lab.ping(on, on2.tun4) && lab.ping(on, off.tun4), 'tunnels up');
    const c = counters(off);
    for (const k of ['offloadTunVnetHdr', 'offloadTunTso', 'offloadUdpGso', 'offloadUdpGro']) {
      assert.equal(c[k] ?? 0, 0, `${k} off with the kill switches`);
      assert.equal(counters(on)[k], 1, `${k} on by default`);
    }
  });

  it('carries TCP intact between offloading agents, every offload stage at work', async () => {
    await transfer(on, on2, 40 << 20);
    const tx = counters(on), rx = counters(on2);
    const detail = JSON.stringify({ tx, rx });
    assert.ok(tx.rxTunGsoReads! > 0 && tx.rxTunGsoSegments! > tx.rxTunGsoReads!, `TSO reads split: ${detail}`);
    assert.ok(tx.txUdpGsoMessages! > 0, `UDP GSO sends: ${detail}`);
    assert.ok(rx.rxUdpGroMessages! > 0, `UDP GRO receives: ${detail}`);
    assert.ok(rx.txTunCoalescedFrames! > 0, `coalesced TUN writes: ${detail}`);
    assert.equal(rx.dropTunBadGso ?? 0, 0);
    assert.equal(rx.txTunGroFallbacks ?? 0, 0);
  });

  it('interoperates both ways with an agent that has every offload switched off', async () => {
    await transfer(on, off, 20 << 20);
    await transfer(off, on, 20 << 20);
    const c = counters(off);
    for (const k of ['rxTunGsoReads', 'txUdpGsoMessages', 'rxUdpGroMessages', 'txTunCoalescedFrames']) assert.equal(c[k] ?? 0, 0, `${k}: ${JSON.stringify(c)}`);
  });
});
