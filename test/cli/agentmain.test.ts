// The agent's own entry (src/cli/agentmain.ts) and its code-cached loader (bin/codecache.js): the
// command line `up` starts the agent with parses to the same flags commander would give; anything
// else is left to commander; a cache is used only for the build it was made from, and a missing,
// foreign or corrupt cache still loads the same code.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseAgentArgv } from '../../src/cli/agentmain.ts';
import { agentArgs, type AgentFlags } from '../../src/cli/agentspawn.ts';
import { packageRoot } from '../../src/util/root.ts';

const bin = join(packageRoot(), 'bin', 'meshd.js');
const codecache = join(packageRoot(), 'bin', 'codecache.js');

describe('the agent entry', () => {
  it('parses every command line up starts its agent with to the flags it was made from', () => {
    const cases: AgentFlags[] = [
      { stateDir: '/var/lib/meshd', tun: 'meshd0', port: '41641' },
      { state: 'mem:', tun: 'userspace-networking', port: '0', verbose: true, socks5Server: 'localhost:1080', outboundHttpProxyListen: '127.0.0.1:8080' },
      { stateDir: '/s', tun: 'mt1', port: '5000', debug: '127.0.0.1:9090' },
    ];
    for (const f of cases) {
      const got = parseAgentArgv(agentArgs('/run/x.sock', f).slice(1));
      assert.ok(got, JSON.stringify(f));
      assert.equal(got.socket, '/run/x.sock');
      const want = { ...f, exitWhenDown: true, ...(f.state ? { state: f.state } : {}) };
      assert.deepEqual(got.flags, want);
    }
    assert.deepEqual(parseAgentArgv(['daemon', '--tun=t0', '--port=7']), { socket: parseAgentArgv(['daemon'])!.socket, flags: { tun: 't0', port: '7' } });
  });

  it('leaves help, other commands, unknown or repeated flags and missing values to commander', () => {
    for (const argv of [
      ['daemon', '--help'], ['daemon', '-h'], ['up', '--tun', 'x'], ['--socket', '/x', 'status'], ['daemon', '--tun'],
      ['daemon', '--tun', '--port', '1'], ['daemon', '--port', '1', '--port', '2'], ['daemon', '--bogus'],
      ['--socket', '/a', '--socket', '/b', 'daemon'], ['--verbose', 'daemon'], ['daemon', '--verbose=yes'], ['daemon', 'extra'],
    ]) assert.equal(parseAgentArgv(argv), undefined, argv.join(' '));
  });

  it('runs from the bundle with the one-line errors of the CLI, and gives commander the rest', () => {
    const bad = spawnSync(process.execPath, [bin, '--socket', '/tmp/meshd-test-none.sock', 'daemon', '--tun', 'bad/name', '--exit-when-down'], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /^meshd: bad --tun "bad\/name": use 1-15 letters/);
    const help = spawnSync(process.execPath, [bin, 'daemon', '--help'], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(help.status, 0);
    assert.match(help.stdout, /Usage: meshd daemon \[options\]/);
  });
});

describe('the code-cached loader', () => {
  /** A small bundle like scripts/bundle.mjs makes: a build line, a warm() and a function to call. */
  function tinyBundle(dir: string, id: string): string {
    const file = join(dir, 'b.cjs');
    writeFileSync(file, `// meshd-build ${id}\nlet n = 0;\nexports.add = (a, b) => { n++; return a + b + n * 0; };\nexports.file = __filename;\nexports.warm = async () => { exports.add(1, 2); };\n`);
    return file;
  }
  /** Loads `file` in a new process (V8 keeps what it compiled within one): the stats and add(2, 3). */
  function load(file: string): { used: boolean; rejected: boolean; sum: number; file: string } {
    const code = `const m = await import(${JSON.stringify(pathToFileURL(codecache).href)}); const e = m.loadCached(${JSON.stringify(file)});
      console.log(JSON.stringify({ used: m.cacheStats.used, rejected: m.cacheStats.rejected, sum: e.add(2, 3), file: e.file }));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 20_000 });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { used: boolean; rejected: boolean; sum: number; file: string };
  }

  it('uses the cache made for this build, and loads the same code without one, with another build\'s or a corrupt one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshd-cc-'));
    try {
      const file = tinyBundle(dir, 'a1b2c3d4e5f6');
      assert.deepEqual(load(file), { used: false, rejected: false, sum: 5, file });
      const w = spawnSync(process.execPath, [codecache, '--write', file], { encoding: 'utf8', timeout: 20_000 });
      assert.equal(w.status, 0, w.stderr);
      assert.equal(readFileSync(`${file}.v8cache`).subarray(0, 12).toString('latin1'), 'a1b2c3d4e5f6');
      assert.deepEqual(load(file), { used: true, rejected: false, sum: 5, file });
      // Another build of the same length: its cache is not even offered to V8.
      tinyBundle(dir, 'ffffffffffff');
      assert.deepEqual(load(file), { used: false, rejected: false, sum: 5, file });
      // This build's id over data that is not V8's: rejected, and the script compiles anyway.
      writeFileSync(`${file}.v8cache`, Buffer.concat([Buffer.from('ffffffffffff', 'latin1'), Buffer.alloc(500, 7)]));
      assert.deepEqual(load(file), { used: false, rejected: true, sum: 5, file });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
