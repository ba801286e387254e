// `meshd up` registering from the CLI process for the agent it starts (src/cli/earlylogin.ts),
// against the in-process fake control server on loopback, with userspace networking: the node
// registers with the keys left on disk (0600) and the agent streams the map on a connection of its
// own with the same keys; the request is the one the agent sends when it registers itself
// (MESHD_CLI_REGISTER=0); a refused auth key gives one line, exit status 1 and no agent left.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeControl } from '../harness/fakecontrol.ts';
import { encodeMapFrame } from '../../src/control/mapframe.ts';
import { formatMachinePublic, formatNodePublic, parsePrivate, publicKeyOf, type MachinePublic, type NodePublic } from '../../src/control/keys.ts';
import { socketAnswers } from '../../src/util/unixsocket.ts';
import { packageRoot } from '../../src/util/root.ts';

const bin = join(packageRoot(), 'bin', 'meshd.js');

interface Seen { path: string; body: Record<string, unknown>; machineKey: string; session: number; mapSent?: boolean }

/**
 * A fake control that registers anyone whose auth key is `good-key` and serves a one-node map,
 * `mapDelayMs` after the streaming request (headscale takes about a second). `mapSent` on each
 * request says whether a first map had been written by then.
 */
function serve(fc: FakeControl, seen: Seen[], mapDelayMs = 0): void {
  const sessions = new Map<unknown, number>();
  let mapSent = false;
  fc.handler = (path, raw, stream, machineKey) => {
    const body = (raw ?? {}) as Record<string, unknown>;
    if (!sessions.has(stream.session)) sessions.set(stream.session, sessions.size + 1);
    seen.push({ path, body, machineKey, session: sessions.get(stream.session)!, mapSent });
    if (path === '/machine/register') {
      const auth = (body.Auth as { AuthKey?: string } | undefined)?.AuthKey;
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(JSON.stringify(auth === 'good-key'
        ? { MachineAuthorized: true, User: { ID: 1, LoginName: 'ci', DisplayName: 'ci' }, Login: { ID: 1, LoginName: 'ci', DisplayName: 'ci' } }
        : { Error: 'invalid authkey' }));
      return;
    }
    if (path === '/machine/map') {
      stream.respond({ ':status': 200 });
      if (!body.Stream) { stream.end(); return; }
      const node = {
        ID: 1, StableID: 'n1', Name: 'n1.test.example.', User: 1, Key: body.NodeKey, DiscoKey: body.DiscoKey, Addresses: ['100.64.0.1/32'],
        AllowedIPs: ['100.64.0.1/32'], Endpoints: [], HomeDERP: 0, Hostinfo: { Hostname: 'n1', OS: 'linux' }, Online: true, MachineAuthorized: true,
      };
      const write = (): void => {
        if (stream.destroyed) return;
        mapSent = true;
        stream.write(encodeMapFrame({ Node: node, Peers: [], DERPMap: { Regions: {} }, PacketFilter: [], Domain: 'test.example', ControlTime: new Date().toISOString() }));
      };
      if (mapDelayMs > 0) setTimeout(write, mapDelayMs).unref();
      else write();
      return;
    }
    stream.respond({ ':status': 404 });
    stream.end();
  };
}

/** Runs the CLI to its end: exit status and output. */
function meshd(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (c: Buffer) => (stdout += c));
    p.stderr.on('data', (c: Buffer) => (stderr += c));
    const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.on('exit', (status) => { clearTimeout(t); resolve({ status, stdout, stderr }); });
  });
}

/** Processes whose command line names `needle` (the test's own socket path). */
function processesNaming(needle: string): number[] {
  const out: number[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(needle)) out.push(Number(pid));
    } catch { /* gone */ }
  }
  return out;
}

/** Waits (bounded) until no process names `needle`. */
async function noneLeft(needle: string): Promise<number[]> {
  for (let i = 0; i < 50 && processesNaming(needle).length; i++) await new Promise((r) => setTimeout(r, 100));
  return processesNaming(needle);
}

describe('meshd up registering from the CLI for the agent it starts', () => {
  let fc: FakeControl;
  let dir: string;
  before(async () => {
    fc = await FakeControl.start();
    dir = mkdtempSync(join(tmpdir(), 'meshd-earlylogin-'));
  });
  after(async () => {
    await fc.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  /** `up` with a fresh state dir; returns what control saw, the state file and the result. */
  async function up(name: string, authKey: string, env: NodeJS.ProcessEnv = {}) {
    const seen: Seen[] = [];
    serve(fc, seen);
    const stateDir = join(dir, name), socket = join(dir, `${name}.sock`);
    const r = await meshd(['--socket', socket, 'up', '--tun=userspace-networking', '--port', '0', '--state-dir', stateDir,
      '--login-server', fc.url, '--authkey', authKey, '--hostname', 'ci-runner', '--advertise-routes', '10.1.0.0/24',
      '--timeout', '5s', '--json'], env);
    return { seen, stateDir, socket, r };
  }

  it('registers with the keys it leaves on disk (0600), and the agent streams the map with them on its own connection', async () => {
    const { seen, stateDir, socket, r } = await up('cli', 'good-key');
    try {
      assert.equal(r.status, 0, r.stderr);
      assert.deepEqual(JSON.parse(r.stdout).self.addresses, ['100.64.0.1']);
      const file = join(stateDir, 'state.json');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      const state = JSON.parse(readFileSync(file, 'utf8')) as { machineKey: string; nodeKey: string; serverKey?: string };
      const nodeKey = formatNodePublic(publicKeyOf<NodePublic>(parsePrivate(state.nodeKey)));
      const machineKey = formatMachinePublic(publicKeyOf<MachinePublic>(parsePrivate(state.machineKey)));
      const regs = seen.filter((s) => s.path === '/machine/register');
      const maps = seen.filter((s) => s.path === '/machine/map' && s.body.Stream);
      assert.equal(regs.length, 1, 'one register request: the agent does not register again');
      assert.ok(maps.length >= 1, 'the agent streamed the map');
      for (const s of [...regs, ...maps]) {
        assert.equal(s.body.NodeKey, nodeKey, `${s.path} carries the node key on disk`);
        assert.equal(s.machineKey, machineKey, `${s.path} comes from the machine key on disk`);
      }
      assert.notEqual(maps[0]!.session, regs[0]!.session, 'the map stream is the agent\'s own connection');
      assert.ok(state.serverKey?.startsWith('mkey:'), 'the agent pinned the server key');
    } finally {
      await meshd(['--socket', socket, 'down']);
    }
    assert.deepEqual(await noneLeft(socket), [], 'the agent exits after down');
  });

  it('reports its disco key and endpoints with a lite map request beside the stream, before the first map (as tailscaled once logged in)', async () => {
    // headscale queues the peers' change for a lite request as soon as its NodeStore batch applies
    // it, and for the stream only after our first map: peers can learn us one change tick sooner.
    const seen: Seen[] = [];
    serve(fc, seen, 400);
    const socket = join(dir, 'lite.sock');
    const r = await meshd(['--socket', socket, 'up', '--tun=userspace-networking', '--port', '0', '--state', 'mem:',
      '--login-server', fc.url, '--authkey', 'good-key', '--timeout', '5s']);
    try {
      assert.equal(r.status, 0, r.stderr);
    } finally {
      await meshd(['--socket', socket, 'down']);
    }
    const stream = seen.find((s) => s.path === '/machine/map' && s.body.Stream);
    const lite = seen.find((s) => s.path === '/machine/map' && !s.body.Stream);
    assert.ok(stream, 'the agent streamed the map');
    assert.ok(lite, 'a lite map request');
    assert.equal(lite.mapSent, false, 'the lite request came before the first map');
    assert.equal(lite.body.OmitPeers, true);
    assert.equal(lite.body.NodeKey, stream.body.NodeKey);
    assert.equal(lite.body.DiscoKey, stream.body.DiscoKey);
    assert.match(String(lite.body.DiscoKey), /^discokey:[0-9a-f]{64}$/);
    assert.equal(lite.session, stream.session, 'on the agent\'s connection');
  });

  it('persists wantRunning while control prepares the first map, and writes it back when up fails', async () => {
    // Held map: up times out waiting for it. The state must not say the tailnet was up.
    const seen: Seen[] = [];
    serve(fc, seen, 60_000);
    const stateDir = join(dir, 'want'), socket = join(dir, 'want.sock');
    const base = ['--socket', socket, 'up', '--tun=userspace-networking', '--port', '0', '--state-dir', stateDir, '--login-server', fc.url, '--authkey', 'good-key'];
    const failed = await meshd([...base, '--timeout', '2s']);
    await noneLeft(socket);
    assert.notEqual(failed.status, 0, 'up without a map fails');
    const s1 = JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')) as { wantRunning?: boolean; serverKey?: string };
    assert.ok(s1.serverKey, 'the write with wantRunning happened (the server key came with it)');
    assert.notEqual(s1.wantRunning, true, 'a failed up does not leave wantRunning behind');
    serve(fc, seen);
    const ok = await meshd([...base, '--timeout', '5s']);
    try {
      assert.equal(ok.status, 0, ok.stderr);
      const s2 = JSON.parse(readFileSync(join(stateDir, 'state.json'), 'utf8')) as { wantRunning?: boolean };
      assert.equal(s2.wantRunning, true);
    } finally {
      await meshd(['--socket', socket, 'down']);
    }
  });

  it('keeps in-memory keys (--state mem:) in the agent: it streams the map and logs out with the key the CLI registered', async () => {
    const seen: Seen[] = [];
    serve(fc, seen);
    const socket = join(dir, 'mem.sock');
    const r = await meshd(['--socket', socket, 'up', '--tun=userspace-networking', '--port', '0', '--state', 'mem:',
      '--login-server', fc.url, '--authkey', 'good-key', '--timeout', '5s', '--json']);
    try {
      assert.equal(r.status, 0, r.stderr);
    } finally {
      await meshd(['--socket', socket, 'down']);
    }
    assert.deepEqual(await noneLeft(socket), [], 'the agent exits after down');
    const regs = seen.filter((s) => s.path === '/machine/register');
    const map = seen.find((s) => s.path === '/machine/map' && s.body.Stream);
    assert.ok(map, 'the agent streamed the map');
    assert.equal(regs.length, 2, 'the CLI\'s register and the agent\'s logout');
    assert.ok(regs[1]!.body.Expiry, 'the second one logs out');
    for (const s of [regs[1]!, map]) {
      assert.equal(s.body.NodeKey, regs[0]!.body.NodeKey);
      assert.equal(s.machineKey, regs[0]!.machineKey);
    }
  });

  it('sends the register request the agent itself sends', async () => {
    const cli = await up('same-cli', 'good-key');
    const agent = await up('same-agent', 'good-key', { MESHD_CLI_REGISTER: '0' });
    await meshd(['--socket', cli.socket, 'down']);
    await meshd(['--socket', agent.socket, 'down']);
    assert.equal(cli.r.status, 0, cli.r.stderr);
    assert.equal(agent.r.status, 0, agent.r.stderr);
    const body = (x: typeof cli): Record<string, unknown> => {
      const b = x.seen.find((s) => s.path === '/machine/register')!.body;
      return { ...b, NodeKey: 'X' };
    };
    assert.deepEqual(body(cli), body(agent));
    const hi = body(cli).Hostinfo as { Hostname?: string; RoutableIPs?: string[] };
    assert.equal(hi.Hostname, 'ci-runner');
    assert.deepEqual(hi.RoutableIPs, ['10.1.0.0/24']);
  });

  it('fails a refused auth key with one line and status 1, and leaves no agent and a consistent state dir', async () => {
    const { seen, stateDir, socket, r } = await up('bad', 'bad-key');
    assert.equal(r.status, 1);
    assert.equal(r.stdout, '', '--json prints nothing on stdout for an error');
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0]!, /^meshd: control server rejected the auth key \("invalid authkey"\): check it/);
    assert.equal(seen.filter((s) => s.path === '/machine/map').length, 0, 'no map request');
    assert.deepEqual(await noneLeft(socket), [], 'no agent left running');
    assert.equal(await socketAnswers(socket), false);
    // The identity was written whole (no temp file), 0600; a retry with a good key registers it.
    const files = readdirSync(stateDir).filter((f) => f !== 'meshd.log');
    assert.deepEqual(files, ['state.json']);
    assert.equal(statSync(join(stateDir, 'state.json')).mode & 0o777, 0o600);
    assert.ok(!existsSync(socket), 'the agent removed its socket');
    assert.match(readFileSync(join(stateDir, 'meshd.log'), 'utf8'), /went away before up/, 'the agent was never told to go on');
  });
});
