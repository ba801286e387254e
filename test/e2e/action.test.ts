// The GitHub Action (action.yml) run the way the runner runs it: `node action/main.mjs` with INPUT_*
// variables and GITHUB_STATE / GITHUB_OUTPUT files, then `node action/post.mjs` with the saved
// state as STATE_* variables. Against an unmodified headscale v0.29.2 with a tagOwners policy and
// a tailscaled v1.102.3 peer, in network namespaces.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { needs, sh } from '../harness/prereq.ts';
import { waitFor } from '../harness/netns.ts';
import { TailnetLab, HS_URL, type LabNode } from '../harness/hslab.ts';
import { packageRoot } from '../../src/util/root.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'tailscaled', 'tailscale', 'ip', 'nft'] });

const POLICY = {
  tagOwners: { 'tag:ci': ['lab@'] },
  acls: [{ action: 'accept', src: ['*'], dst: ['*:*'] }],
};

/** Reads a GITHUB_STATE / GITHUB_OUTPUT file (`name<<DELIM\nvalue\nDELIM` records). */
function readCommandFile(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!existsSync(path)) return out;
  const lines = readFileSync(path, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<=]+)<<(.+)$/.exec(lines[i]!);
    if (!m) continue;
    const value: string[] = [];
    for (i++; i < lines.length && lines[i] !== m[2]; i++) value.push(lines[i]!);
    out[m[1]!] = value.join('\n');
  }
  return out;
}

interface Run { status: number | null; stdout: string; stderr: string }

/** Runs an entry point in a node's namespace with the environment the runner gives it. */
function runStep(lab: TailnetLab, n: LabNode, entry: 'main' | 'post', env: Record<string, string>): Run {
  const argv = ['env', 'MESHD_DERP_HTTP=1', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), process.execPath, join(packageRoot(), 'action', `${entry}.mjs`)];
  return lab.lab.tryExec(n.ns, argv, 150_000);
}

/** The main step, then the post step with the state the main step saved. */
class Job {
  readonly dir: string;
  readonly socket: string;
  readonly state: string;
  readonly output: string;
  readonly lab: TailnetLab;
  readonly node: LabNode;
  constructor(lab: TailnetLab, node: LabNode) {
    this.lab = lab;
    this.node = node;
    this.dir = join(node.dir, 'runner');
    mkdirSync(join(this.dir, 'temp'), { recursive: true });
    this.socket = join(node.dir, 'run', 'meshd.sock');
    this.state = join(this.dir, 'state');
    this.output = join(this.dir, 'output');
    writeFileSync(this.state, '');
    writeFileSync(this.output, '');
  }
  main(inputs: Record<string, string>): Run {
    const env: Record<string, string> = {
      GITHUB_STATE: this.state, GITHUB_OUTPUT: this.output, RUNNER_TEMP: join(this.dir, 'temp'),
      GITHUB_REPOSITORY: 'octo/My_Repo', GITHUB_JOB: 'build', GITHUB_RUN_NUMBER: '42',
      'INPUT_LOGIN-SERVER': HS_URL, INPUT_SOCKET: this.socket, INPUT_TIMEOUT: '40s', INPUT_RETRY: '0', INPUT_USERSPACE: 'false',
    };
    for (const [k, v] of Object.entries(inputs)) env[`INPUT_${k.toUpperCase()}`] = v;
    return runStep(this.lab, this.node, 'main', env);
  }
  post(): Run {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(readCommandFile(this.state))) env[`STATE_${k}`] = v;
    return runStep(this.lab, this.node, 'post', env);
  }
  outputs(): Record<string, string> {
    return readCommandFile(this.output);
  }
}

/** Nothing of meshd is left in the job's namespace or on its disk. */
function assertNothingLeft(lab: TailnetLab, job: Job): void {
  const ns = job.node.ns;
  assert.notEqual(lab.lab.tryExec(ns, ['ip', 'link', 'show', 'meshd0']).status, 0, 'no meshd0 device left');
  assert.doesNotMatch(lab.lab.exec(ns, ['ip', 'route', 'show', 'table', 'all']), /100\.64\.0\.0\/10|table 52/, 'no tailnet route left');
  assert.doesNotMatch(lab.lab.exec(ns, ['ip', 'rule', 'show']), /lookup 52/, 'no policy rule left');
  assert.doesNotMatch(lab.lab.exec(ns, ['nft', 'list', 'tables']), /meshd/, 'no nft table left');
  assert.equal(sh('ip', ['netns', 'pids', ns]).trim(), '', 'no process left in the namespace');
  assert.equal(existsSync(join(job.node.dir, 'run')), false, 'the socket dir, its log and socket are gone');
  assert.equal(sh('find', [join(job.dir, 'temp'), '-mindepth', '1']).trim(), '', 'the auth key file is gone');
  assert.equal(existsSync(join(job.node.dir, 'state')), false, 'no state dir was written');
}

describe('the GitHub Action, run as the runner runs it', { skip }, () => {
  let lab: TailnetLab;
  let ts: LabNode;
  let tsIp: string;
  let taggedKey: string;

  before(async () => {
    lab = new TailnetLab('act', { policy: POLICY });
    await lab.startHeadscale();
    ts = lab.addNode('ts');
    await lab.startTailscaled(ts, lab.authKey());
    tsIp = lab.tailscale(ts, ['ip', '-4']).stdout.trim();
    taggedKey = lab.hs(['preauthkeys', 'create', '--tags', 'tag:ci', '--ephemeral', '--reusable', '--expiration', '1h']).trim().split('\n').pop()!.trim();
  });
  after(async () => { await lab?.dispose(); });

  it('joins with a tagged ephemeral key, waits for the tailscaled peer, moves data, and the post step leaves nothing', async () => {
    const job = new Job(lab, lab.addNode('job'));
    const m = job.main({ AUTHKEY: taggedKey, TAGS: 'tag:ci', PING: 'ts' });
    assert.equal(m.status, 0, `main step: ${m.stdout}\n${m.stderr}`);
    assert.match(m.stdout, /pong from ts \(100\.64\.\d+\.\d+\) via /, 'the ping input waited for the peer');
    assert.doesNotMatch((m.stdout + m.stderr).replace(`::add-mask::${taggedKey}`, ''), new RegExp(taggedKey), 'the key is printed only to have the runner mask it');
    const out = job.outputs();
    assert.equal(out.hostname, 'my-repo-build-42', 'hostname from repository, job and run number, sanitized');
    assert.match(out.ip4 ?? '', /^100\.64\./);
    const hsNode = lab.nodeList().find((x) => x.given_name === 'my-repo-build-42') as { tags?: string[] } | undefined;
    assert.deepEqual(hsNode?.tags, ['tag:ci'], 'headscale lists the node as tagged');

    const served = lab.xferServe(ts, tsIp, 5201);
    await new Promise((r) => setTimeout(r, 500));
    const sent = lab.xferSend(job.node, tsIp, 5201, 2_000_000);
    const got = await served;
    assert.equal(got.bytes, 2_000_000);
    assert.equal(got.sha256, sent.sha256, 'the bytes arrived intact at tailscaled');

    const p = job.post();
    assert.equal(p.status, 0, `post step: ${p.stdout}\n${p.stderr}`);
    await waitFor('headscale to drop the node', () => !lab.nodeList().some((x) => x.given_name === 'my-repo-build-42'), 5_000, 100);
    assertNothingLeft(lab, job);
  });

  it('with a bad key the main step fails with one line, and the post step still cleans up', () => {
    const job = new Job(lab, lab.addNode('bad'));
    const m = job.main({ AUTHKEY: 'hskey-auth-wrong-000000000000', PING: 'ts' });
    assert.notEqual(m.status, 0);
    const errors = m.stdout.split('\n').filter((l) => l.startsWith('::error::'));
    assert.equal(errors.length, 1, `one error line: ${m.stdout}`);
    assert.match(errors[0]!, /auth key/);
    const p = job.post();
    assert.equal(p.status, 0, `post step: ${p.stdout}\n${p.stderr}`);
    assert.match(p.stdout, /meshd agent log|no agent running/);
    assertNothingLeft(lab, job);
  });
});
