// meshd's WireGuard against an unmodified wireguard-go (Debian package), both configured with the
// standard wg tool, in network namespaces on the simulated internet.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { needs } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { WgLab, type WgHost } from '../harness/wglab.ts';
import { packageRoot } from '../../src/util/root.ts';

const skip = needs({ root: true, tun: true, commands: ['wireguard-go', 'wg', 'ip', 'ping', 'tcpdump'] });
const scripts = join(packageRoot(), 'scripts');

/** Extracts UDP payloads from a pcap file (Ethernet link type), as (u16 BE length ‖ bytes) records. */
function udpPayloadsFromPcap(file: string, keep: (p: Buffer) => boolean): Buffer {
  const b = readFileSync(file);
  const out: Buffer[] = [];
  let off = 24;
  for (let i = 0; i < 100000 && off + 16 <= b.length; i++) {
    const caplen = b.readUInt32LE(off + 8);
    const frame = b.subarray(off + 16, off + 16 + caplen);
    off += 16 + caplen;
    const ethType = frame.readUInt16BE(12);
    let l4: Buffer | undefined;
    if (ethType === 0x0800 && frame[23] === 17) l4 = frame.subarray(14 + (frame[14]! & 0x0f) * 4);
    else if (ethType === 0x86dd && frame[20] === 17) l4 = frame.subarray(14 + 40);
    if (!l4) continue;
    const payload = l4.subarray(8, l4.readUInt16BE(4));
    if (!keep(payload)) continue;
    const len = Buffer.alloc(2);
    len.writeUInt16BE(payload.length);
    out.push(len, payload);
  }
  return Buffer.concat(out);
}

describe('meshd wg against wireguard-go', { skip }, () => {
  let lab: WgLab;
  let m: WgHost; // meshd
  let g: WgHost; // wireguard-go
  let junkHost: WgHost;

  before(async () => {
    lab = new WgLab('wg');
    m = lab.addHost(1, 'meshd');
    g = lab.addHost(2, 'wireguard-go');
    junkHost = lab.addHost(9, 'wireguard-go');
    await lab.start(m);
    await lab.start(g);
    lab.peer(m, g);
    lab.peer(g, m);
  });
  after(async () => { await lab?.dispose(); });

  it('pings over IPv4 and IPv6 with meshd as the initiator, then from the other side', () => {
    assert.ok(lab.ping(m, g.tun4), 'meshd -> wireguard-go over IPv4');
    assert.ok(lab.ping(m, g.tun6), 'meshd -> wireguard-go over IPv6');
    assert.ok(lab.ping(g, m.tun4), 'wireguard-go -> meshd over IPv4');
    assert.ok(lab.ping(g, m.tun6), 'wireguard-go -> meshd over IPv6');
    const peer = lab.dump(m)[0]!;
    assert.equal(peer.pub, g.pub);
    assert.ok(peer.latestHandshake > 0, 'wg show reports a handshake');
    assert.ok(peer.rx > 0 && peer.tx > 0, 'wg show reports transfer both ways');
  });

  it('round-trips its configuration through wg showconf and wg setconf', () => {
    const conf = lab.lab.exec(m.ns, ['wg', 'showconf', m.ifname]);
    assert.match(conf, /\[Interface\][\s\S]*ListenPort = 51820[\s\S]*\[Peer\][\s\S]*AllowedIPs = /);
    const file = join(lab.dir, 'm.conf');
    writeFileSync(file, conf, { mode: 0o600 });
    lab.lab.exec(m.ns, ['wg', 'setconf', m.ifname, file]);
    assert.equal(lab.lab.exec(m.ns, ['wg', 'showconf', m.ifname]), conf, 'setconf of showconf changes nothing');
    assert.ok(lab.ping(m, g.tun4), 'and the tunnel still works');
  });

  it('carries a 100 MB TCP transfer intact, meshd sending and then receiving', async () => {
    for (const [from, to] of [[m, g], [g, m]] as const) {
      const server = lab.lab.spawn(to.ns, [process.execPath, join(scripts, 'tcpxfer.mjs'), 'serve', to.tun4, '5201']);
      let got = '';
      server.stdout?.setEncoding('utf8');
      server.stdout?.on('data', (d: string) => { got += d; });
      await new Promise((r) => setTimeout(r, 300));
      const sent = JSON.parse(lab.lab.exec(from.ns, [process.execPath, join(scripts, 'tcpxfer.mjs'), 'send', to.tun4, '5201', String(100 * 1024 * 1024)], { timeoutMs: 120_000 })) as { bytes: number; sha256: string };
      await waitFor('the receiver to report', () => got.includes('}'), 10_000);
      const recv = JSON.parse(got) as { bytes: number; sha256: string };
      assert.equal(recv.bytes, 100 * 1024 * 1024);
      assert.equal(recv.sha256, sent.sha256, `${from.impl} -> ${to.impl}: hash matches`);
    }
  });

  it('answers as the responder when wireguard-go initiates', async () => {
    // A fresh meshd has no session: wireguard-go's ping makes it the responder.
    await lab.stop(m);
    await lab.start(m);
    lab.peer(m, g);
    lab.lab.exec(g.ns, ['wg', 'set', g.ifname, 'peer', m.pub, 'remove']);
    lab.peer(g, m);
    assert.ok(lab.ping(g, m.tun4), 'wireguard-go -> fresh meshd');
    assert.ok(lab.ping(m, g.tun4), 'and back');
  });

  it('resumes after wireguard-go restarts with a fresh handshake', async () => {
    const before = lab.dump(m)[0]!.latestHandshake;
    await lab.stop(g);
    await lab.start(g);
    lab.peer(g, m);
    await new Promise((r) => setTimeout(r, 1100)); // handshake times have 1 s resolution
    assert.ok(lab.ping(g, m.tun4), 'restarted wireguard-go reaches meshd');
    assert.ok(lab.ping(m, g.tun4), 'meshd reaches restarted wireguard-go');
    assert.ok(lab.dump(m)[0]!.latestHandshake > before, 'a new handshake happened');
  });

  it('follows the peer to a new endpoint (roaming)', async () => {
    // The peer moves to a new address and port. (wireguard-go keeps a sticky source address until
    // it rebinds, so the port change is also what makes it send from the new address.)
    // (Delete first: deleting a primary IPv4 address also deletes the secondaries of its subnet.)
    lab.lab.exec(g.ns, ['ip', 'addr', 'del', `${g.ip4}/24`, 'dev', 'veth0']);
    lab.lab.exec(g.ns, ['ip', 'addr', 'add', '198.18.0.3/24', 'dev', 'veth0']);
    g.port = 51821;
    lab.lab.exec(g.ns, ['wg', 'set', g.ifname, 'listen-port', String(g.port)]);
    assert.ok(lab.ping(g, m.tun4), 'the moved peer reaches meshd');
    assert.equal(lab.dump(m)[0]!.endpoint, `198.18.0.3:${g.port}`, 'meshd now sends to the new address');
    assert.ok(lab.ping(m, g.tun4), 'meshd reaches the moved peer');
  });

  it('drops garbage, truncated, replayed and wrong-key packets, counts them, and keeps working', async () => {
    // Capture real data packets from the peer, to replay them later from another host.
    const pcap = join(lab.dir, 'cap.pcap');
    const cap = lab.lab.spawn(m.ns, ['tcpdump', '-i', 'veth0', '-U', '-w', pcap, 'udp', 'port', String(m.port)]);
    cap.stderr?.resume();
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(lab.ping(g, m.tun4, 5));
    cap.kill('SIGINT');
    await waitFor('tcpdump to exit', () => cap.exitCode !== null || cap.signalCode !== null, 5000);
    const replays = udpPayloadsFromPcap(pcap, (p) => p[0] === 4 && p.length > 32);
    assert.ok(replays.length > 0, 'captured data packets to replay');
    const replayFile = join(lab.dir, 'replays.bin');
    writeFileSync(replayFile, replays);

    // A wireguard-go host with a key meshd does not know: its initiations are wrong-key packets.
    await lab.start(junkHost);
    lab.peer(junkHost, m);
    const c0 = lab.counters(m);
    const rx0 = lab.dump(m)[0]!.rx;
    const junk = lab.lab.spawn(junkHost.ns, [process.execPath, join(scripts, 'udpjunk.mjs'), m.ip4, String(m.port), '3000', replayFile]);
    junk.stdout?.resume();
    assert.equal(lab.ping(junkHost, m.tun4, 2, 1), false, 'an unknown key gets no tunnel');
    assert.ok(lab.ping(g, m.tun4, 5), 'the real tunnel works during the flood');
    await waitFor('the junk sender to finish', () => junk.exitCode !== null, 30_000);
    assert.ok(lab.ping(m, g.tun4, 3), 'and after it');

    const c1 = lab.counters(m);
    const delta = (k: string) => (c1[k] ?? 0) - (c0[k] ?? 0);
    const dropped = Object.keys(c1).filter((k) => k.startsWith('drop')).reduce((s, k) => s + delta(k), 0);
    assert.ok(dropped >= 3000, `meshd counted the hostile packets as dropped (${dropped}): ${JSON.stringify(c1)}`);
    assert.equal(lab.dump(m)[0]!.endpoint, `198.18.0.3:${g.port}`, 'replays from another address did not move the endpoint');
    assert.ok(lab.dump(m)[0]!.rx >= rx0, 'rx bytes stay consistent');
  });
});
