// Exit nodes, subnet routers and access rules with meshd nodes against a real, unmodified headscale
// v0.29.2, in network namespaces. The "internet" host is a server namespace behind a router on the
// lab switch (198.19.200.2 / 2001:db8:200::2 via 198.18.0.254) that answers with the source
// address it sees; the router also answers on the switch, as a host on everyone's LAN.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { needs, sh } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { TailnetLab, HS_URL, type LabNode } from '../harness/hslab.ts';
import { INTERNET, addInternet, routeToInternet, startEchoServers, tcpProbe, udpProbe } from '../harness/probe.ts';
import type { Status } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'ip', 'ping', 'nft'] });

const SERVER4 = INTERNET.server4, SERVER6 = INTERNET.server6, LANHOST = INTERNET.router4, PORT = 8000;

function status(lab: TailnetLab, n: LabNode): Status {
  const r = lab.meshd(n, ['status', '--json']);
  assert.equal(r.status, 0, `meshd status on ${n.name}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Status;
}

function mustUp(lab: TailnetLab, n: LabNode, key: string, extra: string[] = []): void {
  const r = lab.up(n, key, extra);
  assert.equal(r.status, 0, `meshd up on ${n.name} failed: ${r.stderr}\n${lab.headscaleLog().slice(-1500)}`);
}

/** `meshd up` on a running node with changed flags only. */
function reUp(lab: TailnetLab, n: LabNode, extra: string[]): void {
  const r = lab.meshd(n, ['up', '--login-server', HS_URL, '--state-dir', join(n.dir, 'state'), '--timeout', '20s', ...extra]);
  assert.equal(r.status, 0, `meshd up ${extra.join(' ')} on ${n.name}: ${r.stderr}`);
}

const v4 = (st: Status) => st.self.addresses.find((a) => !a.includes(':'))!;
/** A node's global IPv6 address on the simulated internet (what a server sees after masquerade). */
const underlay6 = (lab: TailnetLab, n: LabNode) => /inet6 ([0-9a-f:]+)\//.exec(lab.lab.exec(n.ns, ['ip', '-6', '-o', 'addr', 'show', 'dev', 'veth0', 'scope', 'global']))![1]!;

function forwarding(lab: TailnetLab, n: LabNode): void {
  lab.lab.exec(n.ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
}

/** Routing state of ours in a namespace: policy rules 52xx, table 52 routes, the nft table. */
function leftovers(lab: TailnetLab, n: LabNode): string[] {
  const out: string[] = [];
  for (const f of ['-4', '-6']) {
    out.push(...lab.lab.exec(n.ns, ['ip', f, 'rule', 'show']).split('\n').filter((l) => /^52\d\d:/.test(l)).map((l) => `rule ${f} ${l}`));
    out.push(...lab.lab.tryExec(n.ns, ['ip', f, 'route', 'show', 'table', '52']).stdout.split('\n').filter(Boolean).map((l) => `route ${f} ${l}`));
  }
  if (/inet meshd/.test(lab.lab.exec(n.ns, ['nft', 'list', 'tables']))) out.push('nft table inet meshd');
  return out;
}

describe('exit nodes and subnet routers (meshd, real headscale)', { skip }, () => {
  let lab: TailnetLab;
  let key: string;
  let exit: LabNode, client: LabNode, router: LabNode, acceptor: LabNode, lan: string;

  before(async () => {
    lab = new TailnetLab('ex');
    await lab.startHeadscale();
    key = lab.authKey({ reusable: true });
    exit = lab.addNode('exit');
    client = lab.addNode('client');
    router = lab.addNode('router');
    acceptor = lab.addNode('acc');
    const inet = addInternet(lab.lab, lab.sw);
    startEchoServers(lab.lab, inet.server, PORT);
    startEchoServers(lab.lab, inet.router, PORT);
    routeToInternet(lab.lab, exit.ns);
    routeToInternet(lab.lab, client.ns);
    // The router's LAN: 198.19.5.0/24 with one host that has no route back to the tailnet.
    lan = lab.lab.ns('lan');
    lab.lab.link(router.ns, lan, { a4: '198.19.5.1', b4: '198.19.5.2' }, { a: 'lan0', b: 'veth0' });
    startEchoServers(lab.lab, lan, PORT);
    forwarding(lab, exit);
    forwarding(lab, router);
    mustUp(lab, exit, key, ['--advertise-exit-node']);
    mustUp(lab, client, key);
    mustUp(lab, router, key, ['--advertise-routes', '198.19.5.0/24']);
    mustUp(lab, acceptor, key, ['--accept-routes']);
  });
  after(async () => { await lab?.dispose(); });

  it('advertises exit routes and shows them unapproved until headscale approves them', async () => {
    const r = status(lab, exit).self.routing!;
    assert.deepEqual(r.advertisedRoutes, ['0.0.0.0/0', '::/0']);
    assert.deepEqual(r.approvedRoutes, []);
    assert.deepEqual(r.health, [], 'forwarding is on: no warning');
    lab.hs(['nodes', 'approve-routes', '-i', lab.nodeId('exit'), '-r', '0.0.0.0/0,::/0']);
    lab.hs(['nodes', 'approve-routes', '-i', lab.nodeId('router'), '-r', '198.19.5.0/24']);
    await waitFor('exit routes approved in status', () => status(lab, exit).self.routing!.approvedRoutes.length === 2, 20_000, 500);
    await waitFor('the router route approved', () => status(lab, router).self.routing!.approvedRoutes.includes('198.19.5.0/24'), 20_000, 500);
    const text = lab.meshd(exit, ['status']).stdout;
    assert.match(text, /advertised routes: 0\.0\.0\.0\/0 \(approved\), ::\/0 \(approved\)/);
    await waitFor('the client to see the exit node offer', () => status(lab, client).peers.some((p) => p.hostname === 'exit' && p.routing?.exitNodeOption), 20_000, 500);
  });

  it('sends the client\'s internet traffic through the exit node (v4 and v6, TCP, UDP, ICMP) and back direct after --exit-node=', async () => {
    assert.equal(tcpProbe(lab.lab, client.ns, SERVER4, PORT), client.ip4, 'direct before');
    const exitIp = v4(status(lab, exit));
    reUp(lab, client, ['--exit-node', exitIp]);
    const st = status(lab, client);
    assert.equal(st.self.routing?.exitNode?.active, true, JSON.stringify(st.self.routing));
    assert.equal(tcpProbe(lab.lab, client.ns, SERVER4, PORT), exit.ip4, 'TCP over IPv4: the server sees the exit node');
    assert.equal(udpProbe(lab.lab, client.ns, SERVER4, PORT), exit.ip4, 'UDP over IPv4');
    assert.equal(tcpProbe(lab.lab, client.ns, SERVER6, PORT), '2001:db8::a', 'TCP over IPv6: the server sees the exit node');
    assert.equal(udpProbe(lab.lab, client.ns, SERVER6, PORT), '2001:db8::a', 'UDP over IPv6');
    assert.equal(tcpProbe(lab.lab, client.ns, LANHOST, PORT), null, 'the exit node\'s own LAN is not served to exit-node users (as tailscale)');
    assert.ok(lab.ping(client, SERVER4), 'ping through the exit node');
    const viaTun = lab.lab.exec(client.ns, ['ip', 'route', 'get', SERVER4]);
    assert.match(viaTun, /dev meshd0/, viaTun);
    // By hostname too, and the switch is live.
    reUp(lab, client, ['--exit-node', 'exit']);
    assert.equal(tcpProbe(lab.lab, client.ns, SERVER4, PORT), exit.ip4);
    reUp(lab, client, ['--exit-node=']);
    assert.equal(tcpProbe(lab.lab, client.ns, SERVER4, PORT), client.ip4, 'direct again after --exit-node=');
    assert.equal(status(lab, client).self.routing?.exitNode, null);
  });

  it('keeps control and peer traffic working while the exit node is in use (no routing loop)', async () => {
    reUp(lab, client, ['--exit-node', 'exit']);
    assert.equal(tcpProbe(lab.lab, client.ns, SERVER4, PORT), exit.ip4);
    // Peer traffic: the WireGuard socket is marked and bypasses table 52.
    assert.ok(lab.ping(client, v4(status(lab, router))), 'client pings another peer');
    // Control: a node joining now reaches the client through the map stream, and is reachable.
    const late = lab.addNode('late');
    mustUp(lab, late, key);
    await waitFor('the client to learn of the late node', () => status(lab, client).peers.some((p) => p.hostname === 'late'), 30_000, 500);
    assert.ok(lab.ping(client, v4(status(lab, late))), 'client pings the late node');
    assert.equal(lab.nodeList().find((x) => x.given_name === 'client')?.online, true, 'headscale sees the client online');
    assert.equal(lab.meshd(late, ['down']).status, 0);
    reUp(lab, client, ['--exit-node=']);
  });

  it('keeps the LAN local with --exit-node-allow-lan-access', () => {
    reUp(lab, client, ['--exit-node', 'exit', '--exit-node-allow-lan-access']);
    assert.equal(tcpProbe(lab.lab, client.ns, LANHOST, PORT), client.ip4, 'a LAN host is reached directly');
    assert.equal(tcpProbe(lab.lab, client.ns, INTERNET.router6, PORT), '2001:db8::b', 'over IPv6 too');
    assert.equal(tcpProbe(lab.lab, client.ns, SERVER4, PORT), exit.ip4, 'the internet still goes through the exit node');
    reUp(lab, client, ['--no-exit-node-allow-lan-access']);
    assert.equal(tcpProbe(lab.lab, client.ns, LANHOST, PORT), null, 'without it the LAN goes into the tunnel');
    assert.equal(tcpProbe(lab.lab, client.ns, SERVER4, PORT), exit.ip4);
    reUp(lab, client, ['--exit-node=']);
  });

  it('reaches a LAN host behind a meshd subnet router only from a peer with --accept-routes', async () => {
    await waitFor('the acceptor to learn the route', () => status(lab, acceptor).peers.some((p) => p.hostname === 'router' && p.routing?.subnetRoutes.includes('198.19.5.0/24')), 20_000, 500);
    assert.equal(tcpProbe(lab.lab, acceptor.ns, '198.19.5.2', PORT), '198.19.5.1', 'the LAN host sees the router (masquerade)');
    assert.equal(udpProbe(lab.lab, acceptor.ns, '198.19.5.2', PORT), '198.19.5.1');
    assert.ok(lab.ping(acceptor, '198.19.5.2'));
    assert.equal(tcpProbe(lab.lab, client.ns, '198.19.5.2', PORT), null, 'a peer without --accept-routes does not reach it');
    reUp(lab, client, ['--accept-routes']);
    assert.equal(tcpProbe(lab.lab, client.ns, '198.19.5.2', PORT), '198.19.5.1', 'after --accept-routes it does');
    reUp(lab, client, ['--no-accept-routes']);
    assert.equal(tcpProbe(lab.lab, client.ns, '198.19.5.2', PORT), null, 'and not after --no-accept-routes');
  });

  it('sends changed --advertise-routes to headscale without a restart', async () => {
    const available = () => (JSON.parse(lab.hs(['nodes', 'list', '-o', 'json'])) as { given_name: string; available_routes?: string[] }[])
      .find((x) => x.given_name === 'router')?.available_routes ?? [];
    reUp(lab, router, ['--advertise-routes', '198.19.5.0/24,198.19.6.0/24']);
    await waitFor('headscale to list the new route', () => available().includes('198.19.6.0/24'), 20_000, 500);
    const st = status(lab, router).self.routing!;
    assert.deepEqual(st.unapprovedRoutes, ['198.19.6.0/24'], 'status says which route waits for approval');
    reUp(lab, router, ['--advertise-routes', '198.19.5.0/24']);
    await waitFor('headscale to drop it again', () => !available().includes('198.19.6.0/24'), 20_000, 500);
  });

  it('says exactly what to run when forwarding is off, and refuses to use and offer an exit node at once', () => {
    const r = lab.meshd(acceptor, ['up', '--login-server', HS_URL, '--state-dir', join(acceptor.dir, 'state'), '--advertise-routes', '198.19.9.0/24']);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^warning: IP forwarding is off.*"sysctl -w net\.ipv4\.ip_forward=1"/m);
    reUp(lab, acceptor, ['--advertise-routes', '']);
    assert.deepEqual(status(lab, acceptor).self.routing?.health, []);
    const both = lab.meshd(exit, ['up', '--login-server', HS_URL, '--state-dir', join(exit.dir, 'state'), '--exit-node', 'client']);
    assert.notEqual(both.status, 0);
    assert.match(both.stderr.trim(), /^meshd: cannot offer an exit node and use one/);
    assert.equal(status(lab, exit).self.routing?.exitNode, null, 'the refused flags changed nothing');
  });

  it('leaves no rule, route or nft table behind after down, and cleans up after kill -9 on restart', () => {
    reUp(lab, client, ['--exit-node', 'exit', '--exit-node-allow-lan-access']);
    assert.ok(leftovers(lab, client).length > 0, 'the client has rules while up');
    assert.equal(lab.meshd(client, ['down']).status, 0);
    assert.deepEqual(leftovers(lab, client), [], 'nothing left on the client after down');
    // The routing flags persist in the state dir: a later up without them uses the exit node again.
    reUp(lab, client, []);
    assert.equal(status(lab, client).self.routing?.exitNode?.hostname, 'exit', 'the exit node choice survives down/up');
    assert.equal(tcpProbe(lab.lab, client.ns, SERVER4, PORT), exit.ip4);
    assert.equal(lab.meshd(client, ['down']).status, 0);
    assert.deepEqual(leftovers(lab, client), [], 'nothing left after the second down');

    assert.ok(leftovers(lab, exit).includes('nft table inet meshd'), 'the exit node masquerades while up');
    for (const pid of sh('ip', ['netns', 'pids', exit.ns]).split(/\s+/).filter(Boolean)) process.kill(Number(pid), 'SIGKILL');
    const after = leftovers(lab, exit);
    assert.ok(after.includes('nft table inet meshd') && after.some((l) => l.startsWith('rule')), `kill -9 leaves state: ${after}`);
    mustUp(lab, exit, key, ['--advertise-exit-node']);
    const rules = leftovers(lab, exit).filter((l) => l.startsWith('rule -4'));
    assert.equal(rules.length, 4, `a restart replaces the stale rules, no duplicates: ${rules}`);
    assert.equal(lab.meshd(exit, ['down']).status, 0);
    assert.deepEqual(leftovers(lab, exit), [], 'nothing left on the exit node after down');
  });
});

describe('access rules from the headscale policy (meshd, real headscale)', { skip }, () => {
  let lab: TailnetLab;
  let a: LabNode, b: LabNode, x: LabNode, aIp: string, bIp: string;
  // B may reach A; A (only) may use the internet through exit node X.
  const onlyBtoA = {
    hosts: { a: '100.64.0.1/32', b: '100.64.0.2/32', x: '100.64.0.3/32' },
    acls: [{ action: 'accept', src: ['b'], dst: ['a:*'] }, { action: 'accept', src: ['a'], dst: ['autogroup:internet:*'] }],
  };

  before(async () => {
    lab = new TailnetLab('acl', { policy: onlyBtoA });
    await lab.startHeadscale();
    const key = lab.authKey({ reusable: true });
    a = lab.addNode('a');
    b = lab.addNode('b');
    x = lab.addNode('x');
    mustUp(lab, a, key);
    mustUp(lab, b, key);
    const inet = addInternet(lab.lab, lab.sw);
    startEchoServers(lab.lab, inet.server, PORT);
    routeToInternet(lab.lab, x.ns);
    forwarding(lab, x);
    mustUp(lab, x, key, ['--advertise-exit-node']);
    lab.hs(['nodes', 'approve-routes', '-i', lab.nodeId('x'), '-r', '0.0.0.0/0,::/0']);
    aIp = v4(status(lab, a));
    bIp = v4(status(lab, b));
    assert.deepEqual([aIp, bIp], ['100.64.0.1', '100.64.0.2'], 'sequential allocation, as the policy assumes');
    startEchoServers(lab.lab, a.ns, PORT);
    startEchoServers(lab.lab, b.ns, PORT);
    await waitFor('a and b to see each other with endpoints', () => status(lab, a).peers.some((p) => p.addresses.length > 0) && status(lab, b).peers.some((p) => p.addresses.length > 0), 20_000, 500);
  });
  after(async () => { await lab?.dispose(); });

  it('lets B reach A over TCP, UDP and ICMP, while A cannot reach B', () => {
    assert.equal(tcpProbe(lab.lab, b.ns, aIp, PORT), bIp, 'B -> A TCP');
    assert.equal(udpProbe(lab.lab, b.ns, aIp, PORT), bIp, 'B -> A UDP (the reply passes B\'s filter as a known flow)');
    assert.ok(lab.ping(b, aIp), 'B -> A ping');
    const dropsBefore = status(lab, b).self.routing!.filter.dropped;
    assert.equal(tcpProbe(lab.lab, a.ns, bIp, PORT), null, 'A -> B TCP blocked');
    assert.equal(udpProbe(lab.lab, a.ns, bIp, PORT), null, 'A -> B UDP blocked');
    assert.equal(lab.ping(a, bIp, 2), false, 'A -> B ping blocked');
    assert.ok(status(lab, b).self.routing!.filter.dropped > dropsBefore, 'B counted the drops');
  });

  it('lets A use exit node X for the internet (autogroup:internet), and not B', async () => {
    await waitFor('A to see X offering an exit node', () => status(lab, a).peers.some((p) => p.hostname === 'x' && p.routing?.exitNodeOption), 20_000, 500);
    reUp(lab, a, ['--exit-node', 'x']);
    assert.equal(tcpProbe(lab.lab, a.ns, SERVER4, PORT), x.ip4, 'A reaches the internet through X');
    assert.equal(status(lab, b).peers.some((p) => p.hostname === 'x' && p.routing?.exitNodeOption), false, 'B is not offered X as an exit node');
    reUp(lab, b, ['--exit-node', '100.64.0.3']);
    assert.equal(tcpProbe(lab.lab, b.ns, SERVER4, PORT), null, 'B gets no internet through X');
    reUp(lab, a, ['--exit-node=']);
    reUp(lab, b, ['--exit-node=']);
  });

  it('applies a policy change at runtime (edit + SIGHUP) without restarting meshd', async () => {
    lab.reloadPolicy({
      hosts: onlyBtoA.hosts,
      acls: [...onlyBtoA.acls, { action: 'accept', src: ['a'], dst: ['b:8000'] }],
    });
    await waitFor('A to reach B on port 8000', () => tcpProbe(lab.lab, a.ns, bIp, PORT) === aIp, 30_000, 1000);
    assert.equal(udpProbe(lab.lab, a.ns, bIp, PORT), aIp, 'A -> B UDP 8000 now allowed');
    assert.ok(lab.ping(a, bIp), 'A -> B ping: a rule for the pair allows echo requests');
    assert.equal(tcpProbe(lab.lab, a.ns, bIp, PORT + 1), null, 'other ports stay closed');
  });
});

describe('exit nodes between meshd and a real tailscaled v1.102.3', { skip: skip || needs({ commands: ['tailscaled', 'tailscale'] }) }, () => {
  let lab: TailnetLab;
  let mx: LabNode, tx: LabNode, mc: LabNode, tc: LabNode;

  before(async () => {
    lab = new TailnetLab('ext');
    await lab.startHeadscale();
    const key = lab.authKey({ reusable: true });
    const inet = addInternet(lab.lab, lab.sw);
    startEchoServers(lab.lab, inet.server, PORT);
    mx = lab.addNode('mx'); tx = lab.addNode('tx'); mc = lab.addNode('mc'); tc = lab.addNode('tc');
    for (const n of [mx, tx]) { routeToInternet(lab.lab, n.ns); forwarding(lab, n); }
    mustUp(lab, mx, key, ['--advertise-exit-node']);
    await lab.startTailscaled(tx, key);
    // The lab runs tailscaled with --netfilter-mode=off: its exit node gets a masquerade rule here.
    lab.lab.exec(tx.ns, ['nft', '-f', '-'], { input: 'table ip labnat {\n chain post {\n  type nat hook postrouting priority srcnat;\n  ip saddr 100.64.0.0/10 oifname "veth0" masquerade\n }\n}\n' });
    lab.lab.exec(tx.ns, ['nft', '-f', '-'], { input: 'table ip6 labnat6 {\n chain post {\n  type nat hook postrouting priority srcnat;\n  ip6 saddr fd7a:115c:a1e0::/48 oifname "veth0" masquerade\n }\n}\n' });
    const set = lab.tailscale(tx, ['set', '--advertise-exit-node']);
    assert.equal(set.status, 0, set.stderr);
    mustUp(lab, mc, key);
    await lab.startTailscaled(tc, key);
    await waitFor('headscale to list both exit routes', () => {
      const nodes = JSON.parse(lab.hs(['nodes', 'list', '-o', 'json'])) as { given_name: string; available_routes?: string[] }[];
      return ['mx', 'tx'].every((n) => nodes.find((x) => x.given_name === n)?.available_routes?.includes('0.0.0.0/0'));
    }, 20_000, 500);
    for (const n of ['mx', 'tx']) lab.hs(['nodes', 'approve-routes', '-i', lab.nodeId(n), '-r', '0.0.0.0/0,::/0']);
  });
  after(async () => { await lab?.dispose(); });

  it('tailscaled uses a meshd exit node: the server sees the meshd exit node', async () => {
    const mxIp = v4(status(lab, mx));
    let r = { status: 1 as number | null, stderr: '' };
    await waitFor('tailscaled to accept meshd as exit node', () => {
      r = lab.tailscale(tc, ['set', `--exit-node=${mxIp}`]);
      return r.status === 0;
    }, 30_000, 1000);
    let seen: string | null = null;
    await waitFor('traffic through the meshd exit node', () => (seen = tcpProbe(lab.lab, tc.ns, SERVER4, PORT)) !== null, 30_000, 1000)
      .catch(() => { throw new Error(`no path: ${lab.tailscale(tc, ['status']).stdout}\n${lab.tailscaledLog(tc).slice(-1500)}`); });
    assert.equal(seen, mx.ip4);
    assert.equal(udpProbe(lab.lab, tc.ns, SERVER4, PORT), mx.ip4, 'UDP too');
    const mx6 = underlay6(lab, mx);
    let seen6: string | null = null;
    await waitFor('IPv6 traffic through the meshd exit node', () => (seen6 = tcpProbe(lab.lab, tc.ns, SERVER6, PORT)) !== null, 30_000, 1000);
    assert.equal(seen6, mx6, 'TCP over IPv6: the server sees the meshd exit node');
    assert.equal(udpProbe(lab.lab, tc.ns, SERVER6, PORT), mx6, 'UDP over IPv6');
    assert.equal(lab.tailscale(tc, ['set', '--exit-node=']).status, 0);
  });

  it('meshd uses a tailscaled exit node: the server sees the tailscaled exit node', async () => {
    await waitFor('meshd to see tx offering an exit node', () => status(lab, mc).peers.some((p) => p.hostname === 'tx' && p.routing?.exitNodeOption), 30_000, 500);
    reUp(lab, mc, ['--exit-node', 'tx']);
    let seen: string | null = null;
    await waitFor('traffic through the tailscaled exit node', () => (seen = tcpProbe(lab.lab, mc.ns, SERVER4, PORT)) !== null, 30_000, 1000);
    assert.equal(seen, tx.ip4);
    assert.equal(udpProbe(lab.lab, mc.ns, SERVER4, PORT), tx.ip4, 'UDP too');
    const tx6 = underlay6(lab, tx);
    let seen6: string | null = null;
    await waitFor('IPv6 traffic through the tailscaled exit node', () => (seen6 = tcpProbe(lab.lab, mc.ns, SERVER6, PORT)) !== null, 30_000, 1000);
    assert.equal(seen6, tx6, 'TCP over IPv6: the server sees the tailscaled exit node');
    assert.equal(udpProbe(lab.lab, mc.ns, SERVER6, PORT), tx6, 'UDP over IPv6');
    reUp(lab, mc, ['--exit-node=']);
  });
});
