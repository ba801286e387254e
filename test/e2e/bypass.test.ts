// The tailnet's own TCP (control, DERP) never enters an exit node's tunnel, whatever address its
// name resolves to: meshd marks those sockets (SO_MARK 0x80000, src/net/tcp.ts) instead of adding
// rules per destination address. Against a real headscale v0.29.2 and derper, in namespaces:
//   - the DERP region is given by hostname only (derp.lab, no IPv4 field in the DERP map);
//   - control is reached as control.lab through a TCP relay on the lab switch, and the name moves
//     from 198.18.0.3 to 198.18.0.4 while the client uses an exit node.
// Names come from a hosts file bind-mounted over /etc/hosts inside the node's own mount namespace
// (ip netns exec makes one per command; the daemon `up` starts inherits it); the host's /etc is
// untouched. Every node is on the switch, so without the mark the exit node's default route in
// table 52 would capture these connections (the switch is not excluded).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { needs } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { TailnetLab, HS_IP, HS_PORT, HS_URL, DERPER_IP, type LabNode } from '../harness/hslab.ts';
import type { Status } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'derper', 'ip', 'nft', 'ss', 'mount'] });

const RELAY_A = '198.18.0.3', RELAY_B = '198.18.0.4';
const CONTROL_URL = `http://control.lab:${HS_PORT}`;

/** A TCP relay to headscale that prints "<source> <local address>" for every connection it accepts. */
const RELAY = `const net = require('net');
net.createServer((c) => {
  console.log(c.remoteAddress.replace(/^::ffff:/, '') + ' ' + c.localAddress.replace(/^::ffff:/, ''));
  const u = net.connect(${HS_PORT}, '${HS_IP}');
  c.pipe(u).pipe(c);
  c.on('error', () => u.destroy()); u.on('error', () => c.destroy());
}).listen(${HS_PORT}, '0.0.0.0');`;

/** Output packets of TCP to control or DERP ports that left through the TUN. */
const PROBE = `table inet meshd_probe {
  chain out {
    type filter hook output priority 0; policy accept;
    oifname "meshd0" tcp dport { ${HS_PORT}, 3340 } counter
  }
}
`;

describe('control and DERP bypass an exit node by socket mark, not by address', { skip }, () => {
  let lab: TailnetLab;
  let key: string;
  let exit: LabNode, client: LabNode;
  let relayNs = '';
  let relay: ChildProcess | undefined;
  const seen: string[] = [];

  function hostsFile(n: LabNode, control: string): string {
    const f = join(n.dir, 'hosts');
    // In place (same inode): the bind mount keeps showing this file.
    writeFileSync(f, `127.0.0.1 localhost\n${control} control.lab\n${DERPER_IP} derp.lab\n`);
    return f;
  }

  /** meshd CLI with the node's hosts file over /etc/hosts (the daemon `up` starts keeps it). */
  function meshd(n: LabNode, args: string[]): { status: number | null; stdout: string; stderr: string } {
    return lab.lab.tryExec(n.ns, ['sh', '-c', 'mount --bind "$0" /etc/hosts && exec "$@"', join(n.dir, 'hosts'),
      'env', 'MESHD_DERP_HTTP=1', process.execPath, lab.meshdBin, '--socket', n.socket, ...args], 60_000);
  }

  function up(n: LabNode, extra: string[], url = CONTROL_URL): void {
    const keyFile = join(n.dir, 'authkey');
    writeFileSync(keyFile, key, { mode: 0o600 });
    const r = meshd(n, ['up', '--login-server', url, '--authkey', `file:${keyFile}`, '--hostname', n.name,
      '--state-dir', join(n.dir, 'state'), '--timeout', '45s', ...extra]);
    assert.equal(r.status, 0, `meshd up on ${n.name}: ${r.stderr}\n${lab.headscaleLog().slice(-1500)}`);
  }

  function status(n: LabNode): Status {
    const r = meshd(n, ['status', '--json']);
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as Status;
  }

  function startRelay(): void {
    relay = lab.lab.spawn(relayNs, [process.execPath, '-e', RELAY]);
    relay.stdout?.on('data', (d: Buffer) => seen.push(...d.toString().split('\n').filter(Boolean)));
  }

  /** Packets of control/DERP TCP that went into the tunnel on the client. */
  function leaked(): number {
    const out = lab.lab.exec(client.ns, ['nft', 'list', 'table', 'inet', 'meshd_probe']);
    return Number(/counter packets (\d+)/.exec(out)?.[1] ?? NaN);
  }

  /** fwmark of the client's established connections to a port, as ss shows them. */
  function marks(port: number): string[] {
    const out = lab.lab.exec(client.ns, ['ss', '-tneH', 'state', 'established', 'dport', '=', `:${port}`]);
    return out.split('\n').filter(Boolean).map((l) => /fwmark:(0x[0-9a-f]+)/.exec(l)?.[1] ?? 'none');
  }

  before(async () => {
    lab = new TailnetLab('byp', { derper: true, derperHostName: 'derp.lab' });
    await lab.startHeadscale();
    key = lab.authKey({ reusable: true });
    relayNs = lab.lab.ns('cp');
    lab.lab.attach(relayNs, lab.sw, [`${RELAY_A}/24`]);
    startRelay();
    exit = lab.addNode('exit');
    client = lab.addNode('client');
    lab.lab.exec(exit.ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    lab.lab.exec(client.ns, ['nft', '-f', '-'], { input: PROBE });
    hostsFile(exit, RELAY_A);
    hostsFile(client, RELAY_A);
    await waitFor('the relay to listen', () => lab.lab.tryExec(relayNs, ['ss', '-tlnH', 'sport', '=', `:${HS_PORT}`]).stdout.trim() !== '', 10_000);
    // The exit node talks to headscale directly: every connection the relay sees is the client's.
    up(exit, ['--advertise-exit-node'], HS_URL);
    lab.hs(['nodes', 'approve-routes', '-i', lab.nodeId('exit'), '-r', '0.0.0.0/0,::/0']);
    up(client, []);
    await waitFor('the client to see the exit node offer', () => status(client).peers.some((p) => p.hostname === 'exit' && p.routing?.exitNodeOption), 30_000, 500);
  });
  after(async () => { await lab?.dispose(); });

  it('keeps DERP (by hostname) and control (by a name that moves) out of the exit tunnel', async () => {
    const r = meshd(client, ['up', '--login-server', CONTROL_URL, '--state-dir', join(client.dir, 'state'), '--exit-node', 'exit', '--timeout', '20s']);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(status(client).self.routing?.exitNode?.active, true);
    const viaTun = lab.lab.exec(client.ns, ['ip', 'route', 'get', RELAY_B]);
    assert.match(viaTun, /dev meshd0/, `unmarked traffic to the switch goes into the tunnel: ${viaTun}`);

    // DERP: connected to derp.lab, marked, from the client's own address.
    await waitFor('a DERP connection', () => marks(3340).length > 0, 20_000, 250);
    assert.deepEqual([...new Set(marks(3340))], ['0x80000']);

    // Control moves: the name now points at RELAY_B and the relay restarts (connections drop).
    hostsFile(client, RELAY_B);
    const before = seen.length;
    relay?.kill('SIGKILL');
    lab.lab.exec(relayNs, ['sysctl', '-qw', 'net.ipv4.conf.veth0.promote_secondaries=1']);
    lab.lab.exec(relayNs, ['ip', 'addr', 'add', `${RELAY_B}/24`, 'dev', 'veth0']);
    lab.lab.exec(relayNs, ['ip', 'addr', 'del', `${RELAY_A}/24`, 'dev', 'veth0']);
    startRelay();
    await waitFor('the client to reconnect to control at the new address', () => seen.slice(before).some((l) => l.endsWith(` ${RELAY_B}`)), 45_000, 250);
    const fresh = seen.slice(before).filter((l) => l.endsWith(` ${RELAY_B}`)).map((l) => l.split(' ')[0]);
    assert.ok(fresh.length > 0 && fresh.every((src) => src === client.ip4),
      `control saw the client's own address, not the exit node's masquerade: ${fresh.join(',')}`);
    assert.deepEqual([...new Set(marks(HS_PORT))], ['0x80000']);

    // The map stream works over the new connection: a node joining now reaches the client.
    const late = lab.addNode('late');
    hostsFile(late, RELAY_B);
    up(late, []);
    await waitFor('the client to learn of the late node', () => status(client).peers.some((p) => p.hostname === 'late'), 30_000, 500);
    assert.equal(leaked(), 0, 'no control or DERP packet left through the TUN');
  });
});
