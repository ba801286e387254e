// meshd joining a real, unmodified headscale v0.29.2 tailnet in network namespaces.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { needs, sh } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { TailnetLab, HS_URL, type LabNode } from '../harness/hslab.ts';
import type { Status } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'ip', 'ping', 'setpriv'] });

function status(lab: TailnetLab, n: LabNode): Status {
  const r = lab.meshd(n, ['status', '--json']);
  assert.equal(r.status, 0, `meshd status on ${n.name}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Status;
}

function mustUp(lab: TailnetLab, n: LabNode, key: string): string[] {
  const r = lab.up(n, key);
  assert.equal(r.status, 0, `meshd up on ${n.name} failed: ${r.stderr}\n${lab.headscaleLog().slice(-1500)}`);
  return r.stdout.trim().split('\n');
}

/** Nothing of meshd is left in the node's namespace: no process, TUN, route or socket. */
function assertNothingLeft(lab: TailnetLab, n: LabNode): void {
  assert.equal(lab.lab.tryExec(n.ns, ['ip', 'link', 'show', 'meshd0']).status !== 0, true, 'no meshd0 device left');
  assert.doesNotMatch(lab.lab.exec(n.ns, ['ip', 'route', 'show']), /100\.64\.0\.0\/10/, 'no tailnet route left');
  // (Asked from outside: run inside, `ip netns pids` would list itself.)
  assert.equal(sh('ip', ['netns', 'pids', n.ns]).trim(), '', 'no process left in the namespace');
  assert.equal(lab.agentRunning(n), false, 'no agent socket left');
}

describe('meshd against real headscale', { skip }, () => {
  let lab: TailnetLab;
  let key: string;
  const nodes: LabNode[] = [];

  before(async () => {
    lab = new TailnetLab('ts');
    await lab.startHeadscale();
    key = lab.authKey({ reusable: true });
    for (const name of ['n1', 'n2', 'n3']) nodes.push(lab.addNode(name));
  });
  after(async () => { await lab?.dispose(); });

  it('joins three nodes with one reusable key, and every pair pings over IPv4 and IPv6', async () => {
    for (const n of nodes) {
      const addrs = mustUp(lab, n, key);
      assert.ok(addrs.some((a) => a.startsWith('100.')) && addrs.some((a) => a.startsWith('fd7a:115c:a1e0:')), `addresses printed: ${addrs}`);
    }
    const st = nodes.map((n) => status(lab, n));
    await waitFor('every node to see two peers', () => nodes.every((n) => status(lab, n).peers.length === 2), 20_000, 500);
    for (let i = 0; i < 3; i++) {
      for (let j = 0; j < 3; j++) {
        if (i === j) continue;
        for (const addr of st[j]!.self.addresses) {
          assert.ok(lab.ping(nodes[i]!, addr), `${nodes[i]!.name} -> ${nodes[j]!.name} at ${addr}`);
        }
      }
    }
    const list = lab.nodeList();
    for (const n of nodes) {
      const hn = list.find((x) => x.given_name === n.name || x.name === n.name);
      assert.ok(hn, `headscale lists ${n.name}: ${JSON.stringify(list.map((x) => x.given_name))}`);
      assert.equal(hn.online, true, `${n.name} is online in headscale`);
    }
    // Disco finds the direct path (tailscale's betterAddr prefers IPv6 when latencies tie). It is
    // there already as a rule; keep traffic flowing and allow tailscale's "direct within 10 s" for a
    // first disco round that raced a map update (the retry comes after discoPingInterval, 5 s).
    const direct = /^(198\.18\.0\.|\[2001:db8::)/;
    const toN2 = () => status(lab, nodes[0]!).peers.find((p) => p.hostname === 'n2');
    const late = !direct.test(toN2()?.path.direct ?? '');
    const t0 = Date.now();
    await waitFor("n1's path to n2 to be direct", () => {
      if (direct.test(toN2()?.path.direct ?? '')) return true;
      lab.ping(nodes[0]!, st[1]!.self.addresses[0]!, 1);
      return false;
    }, 10_000, 200).catch(() => { /* the assertion below names the path */ });
    const peer = toN2();
    if (late) {
      const log = readFileSync(join(nodes[0]!.dir, 'state', 'meshd.log'), 'utf8').split('\n').filter((l) => /n2|direct|derp/.test(l));
      console.log(`# n1 -> n2 direct ${Date.now() - t0} ms after the pings; n1's log:\n# ${log.slice(-20).join('\n# ')}`);
    }
    assert.match(peer?.path.direct ?? '', direct, `the path to n2 is direct: ${JSON.stringify(peer?.path)}`);
    assert.ok((peer?.rxBytes ?? 0) > 0, 'rx bytes counted');
  });

  it('keeps the same node and addresses across down and up with the same state', () => {
    const n = nodes[0]!;
    const before = status(lab, n).self.addresses;
    const countBefore = lab.nodeList().length;
    assert.equal(lab.meshd(n, ['down']).status, 0);
    assert.equal(lab.lab.tryExec(n.ns, ['ip', 'link', 'show', 'meshd0']).status !== 0, true, 'down removed the TUN');
    const r = lab.meshd(n, ['up', '--login-server', HS_URL, '--state-dir', join(n.dir, 'state'), '--timeout', '30s']);
    assert.equal(r.status, 0, `re-up without a key: ${r.stderr}`);
    assert.deepEqual(status(lab, n).self.addresses, before);
    assert.equal(lab.nodeList().length, countBefore, 'no new node in headscale');
    assert.ok(lab.ping(n, status(lab, nodes[1]!).self.addresses[0]!));
  });

  it('registers again after logout with a new key', async () => {
    const n = nodes[2]!;
    const oldKey = status(lab, n).self.publicKey;
    assert.equal(lab.meshd(n, ['logout']).status, 0);
    // Without a key, up turns to an interactive login (the URL is printed) that nobody approves here.
    const r = lab.meshd(n, ['up', '--login-server', HS_URL, '--state-dir', join(n.dir, 'state'), '--timeout', '5s']);
    assert.notEqual(r.status, 0, 'up without a key after logout must fail');
    const errors = r.stderr.trim().split('\n').filter((l) => l.startsWith('meshd: '));
    assert.equal(errors.length, 1, `one error line: ${r.stderr}`);
    assert.match(errors[0]!, /^meshd: .*(auth|key|login)/i);
    mustUp(lab, n, lab.authKey());
    const newKey = status(lab, n).self.publicKey;
    assert.notEqual(newKey, oldKey, 'a fresh node key');
    // n2 accepts n3's handshake once control has told it n3's new key.
    await waitFor('n2 to learn the new key', () => status(lab, nodes[1]!).peers.some((p) => p.publicKey === newKey), 20_000, 500);
    // A first initiation can race n2's map update and be dropped; WireGuard retries after 5 s.
    assert.ok(lab.ping(n, status(lab, nodes[1]!).self.addresses[0]!, 8));
  });

  it('a node joining later is reachable without restarting the others, and a deleted node disappears', async () => {
    const n4 = lab.addNode('n4');
    nodes.push(n4);
    mustUp(lab, n4, key);
    const a4 = status(lab, n4).self.addresses[0]!;
    // Reachable through DERP at once, directly once disco has found a path.
    await waitFor('n1 to see n4', () => status(lab, nodes[0]!).peers.some((p) => p.hostname === 'n4'), 20_000, 500);
    assert.ok(lab.ping(nodes[0]!, a4), 'n1 reaches the new node');
    const id = lab.nodeList().find((x) => x.given_name === 'n4')?.id;
    assert.ok(id !== undefined);
    lab.hs(['nodes', 'delete', '-i', String(id), '--force']);
    await waitFor('n1 to drop n4', () => !status(lab, nodes[0]!).peers.some((p) => p.hostname === 'n4'), 20_000, 500);
    lab.meshd(n4, ['down']);
  });

  it('keeps tunnels passing traffic while headscale is down, and resumes the map stream after', async () => {
    const [n1, n2] = [nodes[0]!, nodes[1]!];
    const a2 = status(lab, n2).self.addresses[0]!;
    await lab.stopHeadscale();
    try {
      assert.ok(lab.ping(n1, a2), 'traffic flows during the outage');
    } finally {
      await lab.startHeadscale();
    }
    // A change made after the restart reaches the nodes: a new node appears in n1's map.
    const n5 = lab.addNode('n5');
    nodes.push(n5);
    mustUp(lab, n5, key);
    await waitFor('n1 to see n5 after the restart', () => status(lab, n1).peers.some((p) => p.hostname === 'n5'), 60_000, 1000);
    assert.ok(lab.ping(n1, status(lab, n5).self.addresses[0]!));
  });

  it('deletes an ephemeral node from headscale after logout', async () => {
    const e = lab.addNode('eph');
    mustUp(lab, e, lab.authKey({ ephemeral: true, reusable: false }));
    assert.ok(lab.nodeList().some((x) => x.given_name === 'eph'));
    assert.equal(lab.meshd(e, ['logout']).status, 0);
    await waitFor('headscale to delete the ephemeral node', () => !lab.nodeList().some((x) => x.given_name === 'eph'), 20_000, 500);
    assertNothingLeft(lab, e);
  });

  it('fails with one clear line and leaves nothing behind on bad input', async () => {
    const b = lab.addNode('bad');
    const stateDir = join(b.dir, 'state');
    const cases: { name: string; args: string[]; want: RegExp; user?: boolean }[] = [
      { name: 'wrong key', args: ['--login-server', HS_URL, '--authkey', 'hskey-auth-wrong-000000000000'], want: /auth key/i },
      { name: 'expired key', args: ['--login-server', HS_URL, '--authkey', `file:${join(b.dir, 'expired')}`], want: /expired|auth key/i },
      { name: 'unreachable server', args: ['--login-server', 'http://198.18.0.250:8080', '--authkey', key, '--timeout', '8s'], want: /reach|timed out|connect/i },
      { name: 'malformed URL', args: ['--login-server', 'hs.example.com', '--authkey', key], want: /login-server/ },
      { name: 'not root', args: ['--login-server', HS_URL, '--authkey', key], want: /root/, user: true },
    ];
    const expired = lab.authKey({ expiration: '1s' });
    await new Promise((r) => setTimeout(r, 2000));
    (await import('node:fs')).writeFileSync(join(b.dir, 'expired'), expired, { mode: 0o600 });
    for (const c of cases) {
      const argv = [process.execPath, lab.meshdBin, '--socket', b.socket, 'up', '--state-dir', stateDir, '--timeout', '15s', ...c.args];
      const r = lab.lab.tryExec(b.ns, c.user ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...argv] : argv, 40_000);
      assert.notEqual(r.status, 0, `${c.name}: exits non-zero`);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1, `${c.name}: one line, got ${JSON.stringify(r.stderr)}`);
      assert.match(lines[0]!, c.want, `${c.name}: names the cause`);
      assertNothingLeft(lab, b);
    }
  });

  it('after kill -9 leaves no TUN or route behind, and a restarted agent reconnects on its own', async () => {
    const n = lab.addNode('svc');
    // (MESHD_DERP_HTTP: the lab's headscale serves DERP over plain HTTP, as hslab.meshd() says too.)
    const daemonArgv = ['env', 'MESHD_DERP_HTTP=1', process.execPath, lab.meshdBin, '--socket', n.socket, 'daemon', '--state-dir', join(n.dir, 'state')];
    const d1 = lab.lab.spawn(n.ns, daemonArgv);
    await waitFor('the agent socket', () => lab.agentRunning(n), 10_000);
    mustUp(lab, n, key);
    const peer = status(lab, nodes[0]!).self.addresses[0]!;
    const svcKey = status(lab, n).self.publicKey;
    await waitFor('n1 to know the new node', () => status(lab, nodes[0]!).peers.some((p) => p.publicKey === svcKey), 20_000, 500);
    assert.ok(lab.ping(n, peer), 'traffic flows before the crash');
    d1.kill('SIGKILL');
    await waitFor('the agent to die', () => d1.exitCode !== null || d1.signalCode !== null, 5000);
    assert.notEqual(lab.lab.tryExec(n.ns, ['ip', 'link', 'show', 'meshd0']).status, 0, 'the TUN went with the process');
    assert.doesNotMatch(lab.lab.exec(n.ns, ['ip', 'route', 'show']), /100\.64\.0\.0\/10/, 'and its route');
    lab.lab.spawn(n.ns, daemonArgv);
    await waitFor('the restarted agent to be running again', () => {
      const r = lab.meshd(n, ['status', '--json']);
      return r.status === 0 && (JSON.parse(r.stdout) as Status).self.state === 'Running';
    }, 30_000, 500);
    assert.ok(lab.ping(n, peer), 'traffic flows after the restart');
    assert.equal(lab.meshd(n, ['down']).status, 0);
    assert.notEqual(lab.lab.tryExec(n.ns, ['ip', 'link', 'show', 'meshd0']).status, 0, 'down removed the TUN');
    assert.ok(lab.agentRunning(n), 'an agent run by a service manager stays up after down');
  });

  it('detects a server presenting a different Noise key than the one it pinned', async () => {
    const n = nodes[1]!;
    assert.equal(lab.meshd(n, ['down']).status, 0);
    await lab.stopHeadscale();
    const hsDir = join(lab.dir, 'hs');
    (await import('node:fs')).rmSync(join(hsDir, 'noise_private.key'));
    await lab.startHeadscale();
    const r = lab.meshd(n, ['up', '--login-server', HS_URL, '--state-dir', join(n.dir, 'state'), '--timeout', '15s']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr.trim(), /key/i);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assertNothingLeft(lab, n);
  });

  it('never writes the auth key to a state file or log, and keeps it out of the process list', () => {
    for (const n of nodes) {
      const dir = join(n.dir, 'state');
      let files: string[] = [];
      try { files = readdirSync(dir); } catch { continue; }
      for (const f of files) {
        const p = join(dir, f);
        if (!statSync(p).isFile()) continue;
        const text = readFileSync(p, 'utf8');
        assert.ok(!text.includes(key), `${p} does not contain the auth key`);
        if (f === 'state.json') assert.equal(statSync(p).mode & 0o777, 0o600, 'state.json is 0600');
      }
    }
    // A literal --authkey is scrubbed from /proc/PID/cmdline while meshd runs.
    const n = nodes[0]!;
    const probe = lab.lab.tryExec(n.ns, ['bash', '-c',
      `${process.execPath} ${lab.meshdBin} --socket ${n.socket} up --login-server ${HS_URL} --authkey ${key} --state-dir ${join(n.dir, 'state')} --timeout 20s & ` +
      'pid=$!; sleep 0.5; tr "\\0" " " < /proc/$pid/cmdline; echo; wait $pid'], 30_000);
    assert.ok(!probe.stdout.includes(key), `the key is not in the process list: ${probe.stdout}`);
  });
});
