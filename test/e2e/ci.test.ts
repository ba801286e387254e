// meshd as a CI job uses it, against a real, unmodified headscale v0.29.2 in network namespaces:
// in-memory state with a tagged ephemeral key (tag ownership from a real policy), a sanitized
// hostname, `up --wait-for` a peer, SIGTERM removing the node from headscale, `meshd wait` naming
// a host that never answers, a key without the asked-for tag refused, and --retry.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { needs, sh } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { TailnetLab, HS_URL, type LabNode } from '../harness/hslab.ts';
import type { Status } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'ip', 'ping'] });

const POLICY = {
  tagOwners: { 'tag:ci': ['lab@'] },
  acls: [{ action: 'accept', src: ['*'], dst: ['*:*'] }],
};

function status(lab: TailnetLab, n: LabNode): Status {
  const r = lab.meshd(n, ['status', '--json']);
  assert.equal(r.status, 0, `meshd status on ${n.name}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Status;
}

/** The pid of the background agent in a node's namespace. */
function agentPid(n: LabNode): number | undefined {
  for (const pid of sh('ip', ['netns', 'pids', n.ns]).split(/\s+/).filter(Boolean)) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('daemon')) return Number(pid);
    } catch { /* gone */ }
  }
  return undefined;
}

/** Nothing of meshd is left in the node's namespace. */
function assertNothingLeft(lab: TailnetLab, n: LabNode): void {
  assert.notEqual(lab.lab.tryExec(n.ns, ['ip', 'link', 'show', 'meshd0']).status, 0, 'no meshd0 device left');
  assert.doesNotMatch(lab.lab.exec(n.ns, ['ip', 'rule', 'show']), /lookup 52/, 'no policy rule left');
  assert.doesNotMatch(lab.lab.exec(n.ns, ['nft', 'list', 'tables']), /meshd/, 'no nft table left');
  assert.equal(sh('ip', ['netns', 'pids', n.ns]).trim(), '', 'no process left in the namespace');
  assert.equal(existsSync(n.socket), false, 'no agent socket left');
}

describe('meshd in CI: ephemeral in-memory runs, tags, waiting for peers', { skip }, () => {
  let lab: TailnetLab;
  let peer: LabNode;
  let peerIp: string;

  before(async () => {
    lab = new TailnetLab('ci', { policy: POLICY });
    await lab.startHeadscale();
    peer = lab.addNode('peer');
    const r = lab.up(peer, lab.authKey());
    assert.equal(r.status, 0, `peer up: ${r.stderr}`);
    peerIp = status(lab, peer).self.addresses[0]!;
  });
  after(async () => { await lab?.dispose(); });

  it('joins with a tagged ephemeral key and mem: state, waits for the peer, and SIGTERM removes the node', async () => {
    const n = lab.addNode('job');
    const key = lab.hs(['preauthkeys', 'create', '--tags', 'tag:ci', '--ephemeral', '--expiration', '1h']).trim().split('\n').pop()!.trim();
    const keyFile = join(lab.dir, 'job.key');
    writeFileSync(keyFile, key, { mode: 0o600 });
    const stateDir = join(n.dir, 'state');
    const t0 = Date.now();
    const r = lab.meshd(n, ['up', '--login-server', HS_URL, '--authkey', `file:${keyFile}`, '--hostname', 'CI Job_7.local',
      '--state', 'mem:', '--state-dir', stateDir, '--advertise-tags', 'tag:ci', '--wait-for', `${peerIp},peer`, '--timeout', '40s'], 60_000);
    const took = Date.now() - t0;
    assert.equal(r.status, 0, `up: ${r.stderr}\n${lab.headscaleLog().slice(-1500)}`);
    assert.match(r.stderr, /^note: hostname "CI Job_7\.local" is not a valid DNS label: using "ci-job-7"$/m, 'the sanitized name is printed');
    assert.match(r.stderr, /pong from peer \(100\.64\.\d+\.\d+\) via /, 'both ways of naming the peer answered');
    assert.equal(r.stderr.match(/pong from peer/g)?.length, 2);
    assert.ok(took < 40_000, `returned at the first answers (${took} ms), well inside --timeout`);
    const st = status(lab, n);
    assert.equal(st.self.hostname, 'ci-job-7');
    assert.deepEqual(st.self.tags, ['tag:ci']);
    const hsNode = lab.nodeList().find((x) => x.given_name === 'ci-job-7') as { tags?: string[] } | undefined;
    assert.ok(hsNode, 'headscale lists the node');
    assert.deepEqual(hsNode.tags, ['tag:ci'], 'headscale has it as tagged');
    assert.ok(lab.ping(n, peerIp), 'traffic flows to the peer');
    assert.equal(existsSync(stateDir) && readdirSync(stateDir).length > 0, false, 'nothing written under the state dir');

    const pid = agentPid(n);
    assert.ok(pid, 'the background agent runs');
    const tKill = Date.now();
    process.kill(pid, 'SIGTERM');
    await waitFor('headscale to drop the ephemeral node', () => !lab.nodeList().some((x) => x.given_name === 'ci-job-7'), 10_000, 100);
    const gone = Date.now() - tKill;
    assert.ok(gone < 10_000, `gone ${gone} ms after SIGTERM (headscale's inactivity GC would take 70 s)`);
    await waitFor('the agent to exit', () => agentPid(n) === undefined, 10_000, 100);
    assertNothingLeft(lab, n);
    assert.equal(existsSync(stateDir) && readdirSync(stateDir).length > 0, false, 'still nothing under the state dir');
  });

  it('meshd wait names a host that never answers, within --timeout', () => {
    const t0 = Date.now();
    const r = lab.meshd(peer, ['wait', 'ghost', '--timeout', '3s'], 20_000);
    const took = Date.now() - t0;
    assert.notEqual(r.status, 0);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /^meshd: ghost did not answer within 3\.\ds \(not in the tailnet\)/);
    assert.ok(took < 10_000, `bounded: ${took} ms`);
  });

  it('refuses a key that does not carry the asked-for tag, with one line, leaving nothing behind', async () => {
    const n = lab.addNode('untag');
    const r = lab.up(n, lab.authKey({ ephemeral: true }), ['--state', 'mem:', '--advertise-tags', 'tag:ci']);
    assert.notEqual(r.status, 0);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /does not carry tag:ci.*--tags tag:ci/);
    await waitFor('the agent to exit', () => agentPid(n) === undefined, 10_000, 100);
    assertNothingLeft(lab, n);
    await waitFor('headscale to drop the refused node', () => !lab.nodeList().some((x) => x.given_name === 'untag'), 10_000, 200);
  });

  it('--retry tries again on an unreachable server, and not on a bad key', () => {
    const n = lab.addNode('retry');
    const r = lab.meshd(n, ['up', '--login-server', 'http://198.18.0.250:8080', '--authkey', 'hskey-auth-x', '--state', 'mem:',
      '--timeout', '2s', '--retry', '1'], 40_000);
    assert.notEqual(r.status, 0);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 2, `a retry line and the error: ${r.stderr}`);
    assert.match(lines[0]!, /^retry: attempt 1 of 2 failed: .*retrying in 1s$/);
    assert.match(lines[1]!, /^meshd: .*(reach|timed out)/);
    const bad = lab.meshd(n, ['up', '--login-server', HS_URL, '--authkey', 'hskey-auth-wrong-000000000000', '--state', 'mem:', '--timeout', '10s', '--retry', '3'], 40_000);
    assert.notEqual(bad.status, 0);
    assert.equal(bad.stderr.trim().split('\n').length, 1, `no retry for a bad key: ${bad.stderr}`);
    assert.match(bad.stderr, /auth key/);
    assertNothingLeft(lab, n);
  });
});
