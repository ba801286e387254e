#!/usr/bin/env node
// Forwarding while the control plane works: ping RTT through the tunnel between two meshd agents
// (direct path, one switch) while nothing else happens, while large network maps are applied (a
// control server -- scripts/map-server.mjs, the tests' fake control server -- sends each agent a new
// full map with thousands of peers every PERIOD s), while an iperf3 transfer runs between the two,
// and both at once. Reports RTT avg / p99 / max and loss for each, and the agents' CPU seconds.
// Writes bench-results/bench-map.json and an SVG chart; prints a markdown table.
//   sudo node scripts/bench-map.mjs [--peers 5000] [--period 2] [--seconds 10] [--interval 0.02] [--cases idle,maps,transfer,both]
//                                   [--out bench-results] [--smoke] [--json]
// Needs: npm run build, root, iperf3, ping.
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, waitFor } from '../dist/test/harness/netns.js';
import { packageRoot } from '../dist/src/util/root.js';
import { args, pidsIn, cpuOf, table, barChart, writeResults, round } from './bench-lib.mjs';

const o = args({ peers: 5000, period: 2, seconds: 10, interval: 0.02, cases: 'idle,maps,transfer,both', out: 'bench-results', smoke: false, json: false });
const cases = new Set(String(o.cases).split(','));
if (o.smoke) { o.seconds = 3; o.peers = Math.min(o.peers, 2000); }
const log = (s) => { if (!o.json) console.error(s); };
const meshdBin = join(packageRoot(), 'bin', 'meshd.js');
const lab = new Lab('bmap');
const dir = mkdtempSync(join(tmpdir(), 'meshd-bmap-'));
const res = { peers: o.peers, periodS: o.period, seconds: o.seconds, cases: {} };

/** Pings `to` for o.seconds every o.interval s; RTT statistics. */
function pingStats(ns, to) {
  const count = Math.round(o.seconds / o.interval);
  const r = lab.tryExec(ns, ['ping', '-c', String(count), '-i', String(o.interval), '-W', '1', to], (o.seconds + 20) * 1000);
  const rtts = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1])).sort((a, b) => a - b);
  const pct = (p) => (rtts.length ? rtts[Math.min(rtts.length - 1, Math.floor(p * rtts.length))] : null);
  return {
    sent: count, received: rtts.length, lossPct: round(100 * (1 - rtts.length / count), 1),
    avgMs: rtts.length ? round(rtts.reduce((a, b) => a + b, 0) / rtts.length, 3) : null, p50Ms: pct(0.5), p99Ms: pct(0.99), maxMs: rtts.at(-1) ?? null,
  };
}

try {
  const sw = lab.ns('sw');
  lab.switch(sw);
  const ctl = lab.ns('ctl');
  lab.attach(ctl, sw, ['198.18.0.10/24']);
  const server = lab.spawn(ctl, [process.execPath, new URL('./map-server.mjs', import.meta.url).pathname, '198.18.0.10', '8080', String(o.peers), String(o.period)]);
  let serverOut = '';
  server.stdout.setEncoding('utf8');
  server.stdout.on('data', (d) => { serverOut += d; });
  server.stderr.setEncoding('utf8');
  server.stderr.on('data', (d) => { serverOut += d; });
  await waitFor('the map server', () => serverOut.includes('"url"'), 20_000);
  const url = JSON.parse(serverOut.split('\n').find((l) => l.includes('"url"'))).url;
  const nodes = [];
  for (const [i, name] of [[1, 'a'], [2, 'b']]) {
    const ns = lab.ns(name);
    lab.attach(ns, sw, [`198.18.0.${i}/24`]);
    const d = join(dir, name);
    const keyFile = join(dir, `${name}.key`);
    writeFileSync(keyFile, 'bench', { mode: 0o600 });
    const sock = join(dir, `${name}.sock`);
    const up = lab.tryExec(ns, [process.execPath, meshdBin, '--socket', sock, 'up', '--login-server', url, '--authkey', `file:${keyFile}`,
      '--hostname', name, '--state-dir', join(d, 'state'), '--timeout', '90s'], 120_000);
    if (up.status !== 0) throw new Error(`meshd up ${name}: ${up.stderr}${up.stdout}\n${serverOut.slice(-2000)}`);
    nodes.push({ name, ns, sock, ip: `100.64.0.${nodes.length + 1}` });
  }
  const [a, b] = nodes;
  // The node IDs follow registration order: a is 100.64.0.1, b is 100.64.0.2.
  await waitFor('a ping through the tunnel', () => lab.tryExec(a.ns, ['ping', '-c', '1', '-W', '1', b.ip], 5000).status === 0, 60_000);
  const srv = lab.spawn(b.ns, ['iperf3', '-s', '-B', b.ip]);
  srv.stdout?.resume(); srv.stderr?.resume();
  await new Promise((r) => setTimeout(r, 500));
  const agents = () => [...pidsIn(lab, a.ns, /meshd\.js/), ...pidsIn(lab, b.ns, /meshd\.js/)];
  const run = async (name, { map = false, transfer = false }) => {
    if (map) server.kill('SIGUSR1');
    const iperf = transfer ? lab.spawn(a.ns, ['iperf3', '-c', b.ip, '-t', String(o.seconds + 2)]) : undefined;
    iperf?.stdout?.resume(); iperf?.stderr?.resume();
    await new Promise((r) => setTimeout(r, map ? o.period * 1000 : 500));
    const pids = agents();
    const c0 = cpuOf(pids);
    const p = pingStats(a.ns, b.ip);
    const cpu = round(cpuOf(pids) - c0, 2);
    if (map) server.kill('SIGUSR1');
    if (iperf) await new Promise((r) => iperf.on('exit', r));
    res.cases[name] = { ...p, agentCpuS: cpu };
    if (o.debug) {
      for (const n of nodes) {
        const st = lab.tryExec(n.ns, [process.execPath, meshdBin, '--socket', n.sock, 'status', '--json'], 20_000).stdout;
        log(`${n.name} status: ${st.slice(0, 300)}`);
        log(lab.tryExec(n.ns, ['tail', '-n', '15', join(dir, n.name, 'state', 'meshd.log')]).stdout);
      }
    }
    log(`${name}: ${JSON.stringify(res.cases[name])}`);
    await new Promise((r) => setTimeout(r, 1000));
  };
  if (cases.has('idle')) await run('idle', {});
  if (cases.has('maps')) await run(`maps of ${o.peers} peers every ${o.period} s`, { map: true });
  if (cases.has('transfer')) await run('iperf3 transfer', { transfer: true });
  if (cases.has('both')) await run('maps and transfer', { map: true, transfer: true });
  res.pushes = [...serverOut.matchAll(/"pushed":(\d+)/g)].length;
} finally {
  await lab.dispose();
  rmSync(dir, { recursive: true, force: true });
}

const rows = Object.entries(res.cases).map(([k, v]) => [k, v.avgMs, v.p50Ms, v.p99Ms, v.maxMs, v.lossPct, v.agentCpuS]);
const text = `Ping RTT through the tunnel, meshd to meshd (a ping every ${o.interval * 1000} ms for ${o.seconds} s per case; maps from the fake control server)\n\n` +
  table(['while', 'RTT avg ms', 'p50 ms', 'p99 ms', 'max ms', 'loss %', 'agents CPU s'], rows) + '\n';
res.markdown = text;
const path = writeResults(String(o.out), 'bench-map', res, {
  rtt: barChart({ title: 'Ping RTT through the tunnel (p99, ms)', unit: 'ms', groups: rows.map((r) => r[0]), series: ['p99', 'avg'], values: rows.map((r) => [r[3], r[1]]) }),
});
if (o.json) console.log(JSON.stringify(res, null, 2));
else console.log(`${text}\nresults: ${path}`);
