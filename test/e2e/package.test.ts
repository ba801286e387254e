// Installing meshd as users install Node tools: `npm pack`, then `npm install -g` of the tarball
// into an empty prefix (the install script compiles the addon from source; nothing prebuilt is
// downloaded), `meshd version`, and a two-node tailnet against headscale v0.29.2 run entirely by
// the installed copy.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { spawnSync } from 'node:child_process';
import { needs, sh } from '../harness/prereq.ts';
import { TailnetLab, type LabNode } from '../harness/hslab.ts';
import { packageRoot } from '../../src/util/root.ts';
import { MESHD_VERSION } from '../../src/version.ts';
import type { Status } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'ip', 'ping', 'npm', 'cc'] });

function run(cmd: string, args: string[], cwd: string): string {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: 300_000, killSignal: 'SIGKILL' });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')}: ${r.error?.message ?? ''}${r.stderr}${r.stdout}`);
  return r.stdout;
}

describe('the npm package, installed into an empty prefix', { skip }, () => {
  let dir: string;
  let bin: string;
  let lab: TailnetLab | undefined;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-pack-'));
    // The checkout is built (npm test builds first), so prepack's build is skipped here.
    run('npm', ['pack', '--ignore-scripts', '--pack-destination', dir], packageRoot());
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'));
    assert.ok(tgz, 'npm pack wrote a tarball');
    run('npm', ['install', '-g', '--prefix', join(dir, 'prefix'), '--no-audit', '--no-fund', '--prefer-offline', join(dir, tgz)], dir);
    bin = join(dir, 'prefix', 'bin', 'meshd');
  });
  after(async () => {
    await lab?.dispose();
    delete process.env.MESHD_TEST_BIN;
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('installs the CLI with an addon compiled from source, and nothing of the tests', () => {
    const root = join(dir, 'prefix', 'lib', 'node_modules', 'meshd');
    assert.ok(existsSync(join(root, 'native', 'build', 'meshd_native.node')), 'the install script built the addon');
    assert.ok(!existsSync(join(root, 'dist', 'test')) && !existsSync(join(root, 'src')), 'only the compiled CLI is shipped');
    assert.equal(sh(bin, ['version']).trim(), MESHD_VERSION);
    // The userspace stack's worker thread is loaded by URL next to the module that starts it.
    for (const f of ['dist/bundle/cli/netstack-worker.js', 'dist/src/daemon/netstack-worker.js']) assert.ok(existsSync(join(root, f)), `${f} is shipped`);
    // The agent's bundle and `up`'s early login ship with the V8 code caches made at build time,
    // and the installed copy uses them.
    for (const name of ['agent.cjs', 'early.cjs']) {
      const file = join(root, 'dist', 'bundle', 'cli', name);
      const cc = sh(process.execPath, ['--input-type=module', '-e',
        `const m = await import(${JSON.stringify(pathToFileURL(join(root, 'bin', 'codecache.js')).href)}); m.loadCached(${JSON.stringify(file)}); console.log(JSON.stringify(m.cacheStats));`]);
      assert.equal((JSON.parse(cc) as { used: boolean }).used, true, `the installed ${name} loads with its code cache: ${cc}`);
    }
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    assert.equal(pkg.dependencies.undici, undefined, 'no unused dependency');
  });

  it('runs a two-node tailnet with the installed copy', async () => {
    process.env.MESHD_TEST_BIN = bin;
    lab = new TailnetLab('pkg');
    assert.equal(lab.meshdBin, bin);
    await lab.startHeadscale();
    const key = lab.authKey();
    const nodes: LabNode[] = [lab.addNode('p1'), lab.addNode('p2')];
    for (const n of nodes) {
      const r = lab.up(n, key);
      assert.equal(r.status, 0, `up with the installed meshd: ${r.stderr}`);
    }
    const st = JSON.parse(lab.meshd(nodes[1]!, ['status', '--json']).stdout) as Status;
    const w = lab.meshd(nodes[0]!, ['wait', st.self.addresses[0]!, '--timeout', '20s']);
    assert.equal(w.status, 0, w.stderr);
    assert.ok(lab.ping(nodes[0]!, st.self.addresses[0]!), 'p1 reaches p2');
    // The agents are the installed copy.
    const pids = sh('ip', ['netns', 'pids', nodes[0]!.ns]).split(/\s+/).filter(Boolean);
    assert.ok(pids.some((pid) => { try { return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(join(dir, 'prefix')); } catch { return false; } }), 'the agent runs from the prefix');
  });
});
