#!/usr/bin/env node
// Exit-node throughput in one headscale lab: client -> exit node -> "internet" server (iperf3 TCP,
// receiver side), meshd client through a meshd exit node against a tailscaled (v1.102.3) client
// through a tailscaled exit node, alternated in the same run, plus the direct path without a tunnel.
// CPU seconds per GB carried (client + exit node process, /proc/PID/stat) for each path, in the same run.
//   sudo node scripts/bench-exitnode.mjs [--rounds N] [--seconds S] [--smoke] [--out bench-results] [--json]
// Writes bench-results/bench-exitnode.json and an SVG chart; prints a markdown table with ratios.
// Needs: npm run build, root, headscale, iperf3; tailscaled/tailscale for the comparison.
import { join } from 'node:path';
import { TailnetLab, HS_URL } from '../dist/test/harness/hslab.js';
import { which } from '../dist/test/harness/prereq.js';
import { INTERNET, addInternet, routeToInternet } from '../dist/test/harness/probe.js';
import { pidsIn, cpuOf, round, ratio, table, barChart, writeResults } from './bench-lib.mjs';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const smoke = process.argv.includes('--smoke');
const rounds = smoke ? 1 : arg('rounds', 3);
const seconds = smoke ? 2 : arg('seconds', 10);
const outDir = (() => { const i = process.argv.indexOf('--out'); return i > 0 ? process.argv[i + 1] : 'bench-results'; })();
const asJson = process.argv.includes('--json');
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN; };
const tsd = which('tailscaled'), ts = which('tailscale');
// The server sits behind a router, off every node's LAN (a tailscaled exit node refuses its own LAN).
const SERVER = INTERNET.server4;

const lab = new TailnetLab('bx');
const out = { rounds, seconds, meshd: { mbps: [], rtt: [], tunnelMbps: [], cpu: [] }, tailscaled: { mbps: [], rtt: [], tunnelMbps: [], cpu: [] }, direct: { mbps: [] } };
/** Namespaces of each implementation's client and exit node, for CPU accounting. */
const nsOf = { meshd: {}, tailscaled: {} };
const PROC = { meshd: /meshd\.js/, tailscaled: /tailscaled/ };
let lastBytes = 0;
/** Tailnet IPv4 of each client's exit node: iperf3 to it measures the tunnel alone (no forwarding, no NAT). */
const exitTailnetIp = {};
/** A namespace running tailscaled (not yet up) via the lab harness, and its CLI. */
async function tailscaledNode(name) {
  const n = lab.addNode(name);
  await lab.startTailscaled(n, undefined);
  const cli = (args, t = 70_000) => lab.tailscale(n, args, t);
  return { n, cli };
}

function iperf(ns, to = SERVER) {
  const r = lab.lab.tryExec(ns, ['iperf3', '-c', to, '-t', String(seconds), '-J', '-O', '1'], (seconds + 30) * 1000);
  if (r.status !== 0) throw new Error(`iperf3 from ${ns}: ${r.stdout.slice(-400)} ${r.stderr}`);
  const sum = JSON.parse(r.stdout).end.sum_received;
  lastBytes = sum.bytes;
  return Math.round(sum.bits_per_second / 1e6);
}
/** iperf() through an exit node, with the CPU seconds per GB of the client and the exit node processes. */
function iperfCpu(clientKind, exitKind) {
  const pids = [...pidsIn(lab.lab, nsOf[clientKind].client, PROC[clientKind]), ...pidsIn(lab.lab, nsOf[exitKind].exit, PROC[exitKind])];
  const c0 = cpuOf(pids);
  const mbps = iperf(nsOf[clientKind].client);
  return { mbps, cpu: round((cpuOf(pids) - c0) / (lastBytes / 1e9), 2) };
}
function rtt(ns) {
  const m = /= [\d.]+\/([\d.]+)\//.exec(lab.lab.tryExec(ns, ['ping', '-c', '20', '-i', '0.05', '-q', SERVER], 20000).stdout);
  return m ? Number(m[1]) : NaN;
}
/** The client's source address for the connection, as iperf3 reports it (undefined = no connection). */
function clientSource(ns) {
  const r = lab.lab.tryExec(ns, ['iperf3', '-c', SERVER, '-t', '1', '-J'], 20_000);
  return r.status === 0 ? JSON.parse(r.stdout).start.connected[0]?.local_host : undefined;
}

try {
  await lab.startHeadscale();
  const key = lab.authKey({ reusable: true });
  const { server } = addInternet(lab.lab, lab.sw);
  const srv = lab.lab.spawn(server, ['iperf3', '-s', '-B', SERVER]);
  srv.stdout.resume(); srv.stderr.resume();

  const mx = lab.addNode('mx'), mc = lab.addNode('mc');
  nsOf.meshd = { client: mc.ns, exit: mx.ns };
  routeToInternet(lab.lab, mx.ns);
  routeToInternet(lab.lab, mc.ns);
  lab.lab.exec(mx.ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
  if (lab.up(mx, key, ['--advertise-exit-node']).status !== 0) throw new Error('meshd exit node did not come up');
  if (lab.up(mc, key).status !== 0) throw new Error('meshd client did not come up');
  lab.hs(['nodes', 'approve-routes', '-i', lab.nodeId('mx'), '-r', '0.0.0.0/0,::/0']);
  await new Promise((r) => setTimeout(r, 2000));
  out.direct.mbps.push(iperf(mc.ns));
  const mxIp = JSON.parse(lab.meshd(mx, ['status', '--json']).stdout).self.addresses[0];
  exitTailnetIp.meshd = mxIp;
  lab.lab.spawn(mx.ns, ['iperf3', '-s', '-B', mxIp]).stdout.resume();
  const r = lab.meshd(mc, ['up', '--login-server', HS_URL, '--state-dir', join(mc.dir, 'state'), '--exit-node', mxIp]);
  if (r.status !== 0) throw new Error(`meshd --exit-node: ${r.stderr}`);
  out.meshd.clientSource = clientSource(mc.ns);
  if (out.meshd.clientSource === undefined) throw new Error('meshd client does not reach the server through the exit node');

  let tc;
  if (tsd && ts) {
    const tx = await tailscaledNode('tx');
    tc = await tailscaledNode('tc');
    nsOf.tailscaled = { client: tc.n.ns, exit: tx.n.ns };
    routeToInternet(lab.lab, tx.n.ns);
    lab.lab.exec(tx.n.ns, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    const upTx = tx.cli(['up', `--login-server=${HS_URL}`, `--auth-key=${key}`, '--hostname=tx', '--accept-dns=false', '--advertise-exit-node', '--timeout=60s']);
    if (upTx.status !== 0) throw new Error(`tailscale up (exit): ${upTx.stderr}`);
    lab.hs(['nodes', 'approve-routes', '-i', lab.nodeId('tx'), '-r', '0.0.0.0/0,::/0']);
    const upTc = tc.cli(['up', `--login-server=${HS_URL}`, `--auth-key=${key}`, '--hostname=tc', '--accept-dns=false', '--timeout=60s']);
    if (upTc.status !== 0) throw new Error(`tailscale up (client): ${upTc.stderr}`);
    const txIp = tx.cli(['ip', '-4']).stdout.trim();
    exitTailnetIp.tailscaled = txIp;
    lab.lab.spawn(tx.n.ns, ['iperf3', '-s', '-B', txIp]).stdout.resume();
    let set;
    for (let i = 0; i < 40; i++) {
      set = tc.cli(['set', `--exit-node=${txIp}`], 20_000);
      if (set.status === 0) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    if (set?.status !== 0) throw new Error(`tailscale set --exit-node: ${set?.stderr}`);
    await new Promise((r) => setTimeout(r, 2000));
    for (let i = 0; i < 15 && out.tailscaled.clientSource === undefined; i++) {
      out.tailscaled.clientSource = clientSource(tc.n.ns);
      if (out.tailscaled.clientSource === undefined) await new Promise((r) => setTimeout(r, 1000));
    }
    if (out.tailscaled.clientSource === undefined) {
      const diag = [tc.cli(['status']).stdout, tx.cli(['status']).stdout, lab.lab.tryExec(tc.n.ns, ['ip', 'route', 'get', SERVER]).stdout, lab.lab.tryExec(tc.n.ns, ['ip', 'rule']).stdout, lab.lab.tryExec(tc.n.ns, ['ip', 'route', 'show', 'table', '52']).stdout];
      throw new Error(`tailscaled client does not reach the server through its exit node:\n${diag.join('\n')}`);
    }
  }
  for (let i = 0; i < rounds; i++) {
    for (const [impl, ns] of [['meshd', mc.ns], ['tailscaled', tc?.n.ns]]) {
      if (!ns) continue;
      const { mbps, cpu } = iperfCpu(impl, impl);
      out[impl].mbps.push(mbps);
      out[impl].cpu.push(cpu);
      out[impl].rtt.push(rtt(ns));
      out[impl].tunnelMbps.push(iperf(ns, exitTailnetIp[impl]));
      if (!asJson) console.error(`round ${i + 1}: ${impl} client -> ${impl} exit -> server: ${mbps} Mbit/s`);
    }
  }
  // Mixed pairs, one round each: each client through the other implementation's exit node.
  if (tc) {
    const txIp = exitTailnetIp.tailscaled;
    const sw = lab.meshd(mc, ['up', '--login-server', HS_URL, '--state-dir', join(mc.dir, 'state'), '--exit-node', txIp]);
    if (sw.status !== 0) throw new Error(`meshd --exit-node tx: ${sw.stderr}`);
    for (let i = 0; i < 30 && clientSource(mc.ns) === undefined; i++) await new Promise((r) => setTimeout(r, 1000));
    out.meshdViaTailscaled = iperfCpu('meshd', 'tailscaled').mbps;
    if (!asJson) console.error(`meshd client -> tailscaled exit -> server: ${out.meshdViaTailscaled} Mbit/s`);
    const set = tc.cli(['set', `--exit-node=${exitTailnetIp.meshd}`]);
    if (set.status !== 0) throw new Error(`tailscale set --exit-node=mx: ${set.stderr}`);
    for (let i = 0; i < 30 && clientSource(tc.n.ns) === undefined; i++) await new Promise((r) => setTimeout(r, 1000));
    out.tailscaledViaMeshd = iperfCpu('tailscaled', 'meshd').mbps;
    if (!asJson) console.error(`tailscaled client -> meshd exit -> server: ${out.tailscaledViaMeshd} Mbit/s`);
  }
} finally {
  await lab.dispose();
}
out.summary = {
  directMbps: out.direct.mbps[0],
  meshdMbps: median(out.meshd.mbps),
  tailscaledMbps: out.tailscaled.mbps.length ? median(out.tailscaled.mbps) : undefined,
  meshdRttMs: median(out.meshd.rtt),
  meshdTunnelMbps: median(out.meshd.tunnelMbps),
  tailscaledTunnelMbps: out.tailscaled.tunnelMbps.length ? median(out.tailscaled.tunnelMbps) : undefined,
  tailscaledRttMs: out.tailscaled.rtt.length ? median(out.tailscaled.rtt) : undefined,
  meshdCpuSPerGB: median(out.meshd.cpu),
  tailscaledCpuSPerGB: out.tailscaled.cpu.length ? median(out.tailscaled.cpu) : undefined,
};
if (out.summary.tailscaledMbps) out.summary.ratio = +(out.summary.meshdMbps / out.summary.tailscaledMbps).toFixed(2);
const S = out.summary;
const rows = [
  ['direct, no tunnel', S.directMbps, '-', '-', '-', '-'],
  ['meshd client -> meshd exit node', S.meshdMbps, ratio(S.meshdMbps, S.tailscaledMbps ?? null), S.meshdCpuSPerGB, S.meshdRttMs, S.meshdTunnelMbps],
  ['tailscaled client -> tailscaled exit node', S.tailscaledMbps ?? null, 1, S.tailscaledCpuSPerGB ?? null, S.tailscaledRttMs ?? null, S.tailscaledTunnelMbps ?? null],
  ['tailscaled client -> meshd exit node (1 round)', out.tailscaledViaMeshd ?? null, ratio(out.tailscaledViaMeshd ?? null, S.tailscaledMbps ?? null), '-', '-', '-'],
  ['meshd client -> tailscaled exit node (1 round)', out.meshdViaTailscaled ?? null, ratio(out.meshdViaTailscaled ?? null, S.tailscaledMbps ?? null), '-', '-', '-'],
];
const text = `Through an exit node to a server on the simulated internet (iperf3 TCP ${seconds} s x ${rounds}, median; goals: meshd->meshd >= 1.0, tailscaled->meshd exit >= 0.8)\n\n` +
  table(['path', 'Mbit/s', 'x tailscaled->tailscaled', 'CPU s/GB (client + exit)', 'ping RTT ms', 'Mbit/s to the exit node itself'], rows) + '\n';
out.markdown = text;
const path = writeResults(outDir, 'bench-exitnode', out, {
  throughput: barChart({ title: `Through an exit node (median of ${rounds} x ${seconds} s)`, unit: 'Mbit/s', groups: rows.map((r) => r[0]), series: ['Mbit/s'], values: rows.map((r) => [r[1]]) }),
});
if (asJson) console.log(JSON.stringify(out, null, 2));
else console.log(`${text}\nresults: ${path}`);
