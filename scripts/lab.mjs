#!/usr/bin/env node
// The lab: an unmodified headscale in a network namespace on the simulated internet and N meshd
// nodes in namespaces of their own (see test/harness/hslab.ts). Needs root and `npm run build`.
//   sudo node scripts/lab.mjs demo [--nodes N]   start, show status and pings, transfer, tear down
//   sudo node scripts/lab.mjs up [--nodes N]     start and leave running (state in .lab/state.json)
//   sudo node scripts/lab.mjs down               stop everything `up` started
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TailnetLab } from '../dist/test/harness/hslab.js';

const root = new URL('..', import.meta.url).pathname;
const stateDir = join(root, '.lab');
const stateFile = join(stateDir, 'state.json');
const cmd = process.argv[2];
const ni = process.argv.indexOf('--nodes');
const nodes = ni > 0 ? Math.max(1, Math.min(8, Number(process.argv[ni + 1]))) : 3;

if (process.getuid?.() !== 0) {
  console.error('lab: needs root (it creates network namespaces and TUN devices): run with sudo');
  process.exit(1);
}

async function start(tag) {
  spawnSync('bash', [join(root, 'scripts/install-peers.sh'), 'headscale'], { stdio: ['ignore', 'ignore', 'inherit'] });
  const lab = new TailnetLab(tag);
  await lab.startHeadscale();
  const key = lab.authKey({ reusable: true });
  for (let i = 1; i <= nodes; i++) {
    const n = lab.addNode(`n${i}`);
    const r = lab.up(n, key);
    if (r.status !== 0) throw new Error(`meshd up on n${i}: ${r.stderr.trim()}`);
  }
  return lab;
}

function describe(lab) {
  return {
    headscale: { namespace: lab.hsNs, url: 'http://198.18.0.1:8080', config: lab.config },
    nodes: lab.nodes.map((n) => ({ name: n.name, namespace: n.ns, socket: n.socket, meshd: `ip netns exec ${n.ns} ${process.execPath} ${lab.meshdBin} --socket ${n.socket}` })),
  };
}

const show = (lab, n, args) => {
  const r = lab.meshd(n, args);
  process.stdout.write(r.stdout + r.stderr);
};

if (cmd === 'demo') {
  const lab = await start('demo');
  try {
    const [n1, n2] = lab.nodes;
    await new Promise((r) => setTimeout(r, 1500));
    const st = lab.nodes.map((n) => JSON.parse(lab.meshd(n, ['status', '--json']).stdout));
    console.log('\npings between every pair, over IPv4 and IPv6:');
    for (let i = 0; i < lab.nodes.length; i++) {
      for (let j = 0; j < lab.nodes.length; j++) {
        if (i === j) continue;
        for (const a of st[j].self.addresses) console.log(`  ${lab.nodes[i].name} -> ${lab.nodes[j].name} ${a}: ${lab.ping(lab.nodes[i], a, 2) ? 'ok' : 'FAILED'}`);
      }
    }
    console.log(`\n$ meshd status        (on ${n1.name}, after the pings: paths have turned direct)`);
    show(lab, n1, ['status']);
    console.log(`\n20 MB TCP transfer ${n1.name} -> ${n2.name} through the tunnel:`);
    const server = lab.lab.spawn(n2.ns, [process.execPath, join(root, 'scripts/tcpxfer.mjs'), 'serve', st[1].self.addresses[0], '5201']);
    let got = '';
    server.stdout.on('data', (d) => { got += d; });
    await new Promise((r) => setTimeout(r, 300));
    const sent = JSON.parse(lab.lab.exec(n1.ns, [process.execPath, join(root, 'scripts/tcpxfer.mjs'), 'send', st[1].self.addresses[0], '5201', String(20 << 20)], { timeoutMs: 60000 }));
    for (let i = 0; i < 50 && !got.includes('}'); i++) await new Promise((r) => setTimeout(r, 100));
    const recv = JSON.parse(got);
    console.log(`  sent ${sent.bytes} bytes in ${sent.ms} ms, sha256 ${recv.sha256 === sent.sha256 ? 'matches' : 'DIFFERS'}`);
    console.log('\n$ headscale nodes list');
    // Plain text into a pipe: headscale's table colours (gookit/color) honour NO_COLOR.
    console.log(lab.lab.exec(lab.hsNs, ['env', 'NO_COLOR=1', lab.hsBin, '-c', lab.config, 'nodes', 'list']));
  } finally {
    await lab.dispose();
    console.log('lab removed');
  }
} else if (cmd === 'up') {
  if (existsSync(stateFile)) {
    console.error(`lab: already up (${stateFile}); run: node scripts/lab.mjs down`);
    process.exit(1);
  }
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const child = spawn(process.execPath, [process.argv[1], 'serve', '--nodes', String(nodes)], { detached: true, stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
  const ok = await new Promise((resolve) => {
    child.once('message', (m) => resolve(m === 'ready'));
    child.once('exit', () => resolve(false));
  });
  if (!ok) { console.error('lab: failed to start'); process.exit(1); }
  child.disconnect();
  child.unref();
  console.log(readFileSync(stateFile, 'utf8'));
  console.log('lab is up; stop it with: sudo node scripts/lab.mjs down');
} else if (cmd === 'serve') {
  const lab = await start('lab');
  writeFileSync(stateFile, JSON.stringify({ pid: process.pid, ...describe(lab) }, null, 2), { mode: 0o600 });
  process.send?.('ready');
  process.disconnect?.();
  const stop = async () => { await lab.dispose(); rmSync(stateFile, { force: true }); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  setInterval(() => {}, 1 << 30);
} else if (cmd === 'down') {
  if (existsSync(stateFile)) {
    const { pid } = JSON.parse(readFileSync(stateFile, 'utf8'));
    try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
    for (let i = 0; i < 100 && existsSync(stateFile); i++) await new Promise((r) => setTimeout(r, 100));
  }
  // Whatever is left of a lab that crashed: namespaces named meshd-lab-*.
  const left = spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]).filter((n) => n && n.startsWith('meshd-lab-'));
  for (const ns of left) {
    for (const pid of spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean)) {
      try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
    }
    spawnSync('ip', ['netns', 'del', ns]);
  }
  rmSync(stateFile, { force: true });
  console.log(`lab down${left.length ? ` (removed ${left.length} leftover namespaces)` : ''}`);
} else {
  console.error('usage: sudo node scripts/lab.mjs demo|up|down [--nodes N]');
  process.exit(2);
}
