#!/usr/bin/env node
// NAT-traversal and tailnet benchmark: meshd against tailscaled v1.102.3 in the same headscale lab,
// same run. Two reference peers sit behind easy NATs, one tailscaled and one meshd; each round adds a
// fresh meshd node and a fresh tailscaled node behind their own easy NATs and measures, from `up`:
//   - time to the first ping reply from the tailscaled reference (the first packets go through DERP),
//   - time until the subject reports a direct path to it;
// then iperf3 TCP, direct, to and from both references -- meshd<->meshd, tailscaled<->tailscaled,
// meshd<->tailscaled -- with the CPU seconds per GB of both ends (/proc/PID/stat), and TCP via DERP
// (UDP blocked on the subject). Before the rounds: idle RSS of the meshd and the tailscaled
// reference, each with 3 peers.
// Prints markdown tables and ratios; writes bench-results/bench-nat.json and an SVG chart.
//   sudo node scripts/bench-nat.mjs [--rounds 3] [--seconds 5] [--out bench-results] [--smoke] [--json] [--derp-only]
// --timing-only: only the time-to-direct pairings of scripts/bench-nat-timing.mjs (no iperf3).
// --derp-only: skip the direct transfers (only the TCP-via-DERP case; a quick check of the DERP path).
// Needs: npm run build, root, headscale, tailscaled, tailscale (scripts/install-peers.sh), iperf3, nft.
import { TailnetLab } from '../dist/test/harness/hslab.js';
import { args, median, ratio, pidsIn, cpuOf, rssMiB, iperf, table, barChart, writeResults, round } from './bench-lib.mjs';
import { timingPairings, timingTable } from './bench-nat-timing.mjs';

const o = args({ rounds: 3, seconds: 5, out: 'bench-results', smoke: false, json: false, 'derp-only': false });
if (o.smoke) { o.rounds = 1; o.seconds = 2; }
const log = (s) => { if (!o.json) console.error(s); };
const PROC = { meshd: /meshd\.js/, tailscaled: /tailscaled/ };

const lab = new TailnetLab('bnat');
const K = ['firstMs', 'directMs', 'upTs', 'downTs', 'upM', 'downM', 'cpuUpTs', 'cpuDownTs', 'cpuUpM', 'cpuDownM', 'derpUpMbps'];
const res = { rounds: o.rounds, seconds: o.seconds, meshd: Object.fromEntries(K.map((k) => [k, []])), tailscaled: Object.fromEntries(K.map((k) => [k, []])), rssMiB: {} };

function pingOnce(node, ip) {
  return lab.lab.tryExec(node.ns, ['ping', '-c', '1', '-W', '1', ip], 5000).status === 0;
}
// Direct is tailscale's CurAddr for both, asked over each daemon's local API socket (hslab
// directPath): a `meshd status` process per poll would cost meshd ~300 ms that tailscale's does not.
async function direct(kind, node, peerName) {
  return (await lab.directPath(node, kind, peerName)) !== null;
}
const procs = (node, kind) => pidsIn(lab.lab, node.ns, PROC[kind]);
/** iperf3 from `from` to `toIp` (reverse: the other way) with the CPU s/GB of both ends. */
function measured(from, fromKind, to, toKind, toIp, reverse = false) {
  const pids = [...procs(from, fromKind), ...procs(to, toKind)];
  const c0 = cpuOf(pids);
  const r = iperf(lab.lab, from.ns, toIp, { seconds: o.seconds, reverse });
  const c1 = cpuOf(pids);
  return r ? { mbps: r.mbps, cpu: round((c1 - c0) / (r.bytes / 1e9), 2) } : { mbps: null, cpu: null };
}
async function waitDirect(kind, n, peerIp, peerName, t0) {
  let first = null, dir = null;
  for (let i = 0; i < 300 && Date.now() - t0 < 30_000; i++) {
    if (first === null && pingOnce(n, peerIp)) first = Date.now() - t0;
    if (first !== null) {
      pingOnce(n, peerIp);
      if (await direct(kind, n, peerName)) { dir = Date.now() - t0; break; }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { first, dir };
}

// --pairings easyOut,easyIn,portmapOut (with --timing-only): only these.
// --phase-spread MS (with --timing-only; default 4000, 0: none): an untimed random pause before each
// `up` (see bench-nat-timing.mjs); --seed N replays a run's pauses.
// --timeline (with --timing-only): per round, the start-up steps of meshd (MESHD_TIMELINE) or the
// subject tailscaled and of the reference tailscaled (TS_DEBUG_LOG_TIME), in ms after `up`.
if (o.timeline) { process.env.MESHD_TIMELINE = '1'; process.env.TS_DEBUG_LOG_TIME = '1'; }
if (o['timing-only']) {
  let timing;
  try {
    await lab.startHeadscale();
    const key = lab.authKey({ reusable: true });
    const tref = lab.addNatNode('tref', 'easy');
    await lab.startTailscaled(tref, key);
    timing = await timingPairings(lab, key, tref, 'tref', lab.tailscale(tref, ['ip', '-4']).stdout.trim(), o.rounds, log, { timeline: o.timeline, ...(o['phase-spread'] !== undefined ? { phaseSpreadMs: Number(o['phase-spread']) } : {}), ...(o.seed !== undefined ? { seed: Number(o.seed) } : {}), ...(o.pairings ? { only: String(o.pairings).split(',') } : {}) });
  } finally {
    await lab.dispose();
  }
  console.log(o.json ? JSON.stringify(timing, null, 2) : timingTable(timing, o.rounds));
  process.exit(0);
}

try {
  await lab.startHeadscale();
  const key = lab.authKey({ reusable: true });
  const tref = lab.addNatNode('tref', 'easy');
  await lab.startTailscaled(tref, key);
  const trefIp = lab.tailscale(tref, ['ip', '-4']).stdout.trim();
  const mref = lab.addNatNode('mref', 'easy');
  if (lab.up(mref, key).status !== 0) throw new Error('meshd reference did not come up');
  const mrefIp = JSON.parse(lab.meshd(mref, ['status', '--json']).stdout).self.addresses[0];
  // Idle RSS with 3 peers, before any transfer: two more (idle) nodes join, then each reference
  // knows the other reference and those two.
  for (const name of ['i1', 'i2']) {
    const n = lab.addNatNode(name, 'easy');
    if (lab.up(n, key).status !== 0) throw new Error(`meshd ${name} did not come up`);
  }
  await new Promise((w) => setTimeout(w, 5000));
  res.rssMiB.meshd = procs(mref, 'meshd').map(rssMiB).reduce((a, b) => Math.max(a, b ?? 0), 0);
  res.rssMiB.tailscaled = procs(tref, 'tailscaled').map(rssMiB).reduce((a, b) => Math.max(a, b ?? 0), 0);
  res.rssPeers = { meshd: JSON.parse(lab.meshd(mref, ['status', '--json']).stdout).peers.length, tailscaled: Object.keys(JSON.parse(lab.tailscale(tref, ['status', '--json']).stdout).Peer ?? {}).length };
  log(`idle RSS: meshd ${res.rssMiB.meshd} MiB with ${res.rssPeers.meshd} peers, tailscaled ${res.rssMiB.tailscaled} MiB with ${res.rssPeers.tailscaled} peers`);
  for (const [n, ip] of [[tref, trefIp], [mref, mrefIp]]) {
    const srv = lab.lab.spawn(n.ns, ['iperf3', '-s', '-B', ip]);
    srv.stdout?.resume(); srv.stderr?.resume();
  }
  for (let r = 0; r < o.rounds; r++) {
    for (const kind of ['meshd', 'tailscaled']) {
      const n = lab.addNatNode(`${kind[0]}${r}`, 'easy');
      const t0 = Date.now();
      let myIp;
      if (kind === 'meshd') {
        const u = lab.up(n, key);
        if (u.status !== 0) throw new Error(`meshd up: ${u.stderr}`);
        myIp = JSON.parse(lab.meshd(n, ['status', '--json']).stdout).self.addresses[0];
      } else {
        await lab.startTailscaled(n, key);
        myIp = lab.tailscale(n, ['ip', '-4']).stdout.trim();
      }
      const { first, dir } = await waitDirect(kind, n, trefIp, 'tref', t0);
      await waitDirect(kind, n, mrefIp, 'mref', Date.now());
      const sub = lab.lab.spawn(n.ns, ['iperf3', '-s', '-B', myIp]);
      sub.stdout?.resume(); sub.stderr?.resume();
      await new Promise((res2) => setTimeout(res2, 300));
      const skip = { mbps: null, cpu: null };
      const upTs = o['derp-only'] ? skip : measured(n, kind, tref, 'tailscaled', trefIp);
      const downTs = o['derp-only'] ? skip : measured(n, kind, tref, 'tailscaled', trefIp, true);
      const upM = o['derp-only'] ? skip : measured(n, kind, mref, 'meshd', mrefIp);
      const downM = o['derp-only'] ? skip : measured(n, kind, mref, 'meshd', mrefIp, true);
      lab.blockUdp(n);
      // Until the direct path is given up (trust 6.5 s + ping timeout 5 s) both paths carry packets.
      for (let i = 0; i < 100 && await direct(kind, n, 'tref'); i++) { pingOnce(n, trefIp); await new Promise((res2) => setTimeout(res2, 300)); }
      const derpUp = iperf(lab.lab, n.ns, trefIp, { seconds: o.seconds })?.mbps ?? null;
      if (kind === 'meshd') {
        const c = JSON.parse(lab.meshd(n, ['status', '--json']).stdout).self?.counters ?? {};
        log(`meshd DERP counters: ${JSON.stringify(Object.fromEntries(Object.entries(c).filter(([k, v]) => /derp/i.test(k) && v)))}`);
      }
      lab.unblockUdp(n);
      sub.kill();
      const x = res[kind];
      x.firstMs.push(first); x.directMs.push(dir);
      x.upTs.push(upTs.mbps); x.downTs.push(downTs.mbps); x.upM.push(upM.mbps); x.downM.push(downM.mbps);
      x.cpuUpTs.push(upTs.cpu); x.cpuDownTs.push(downTs.cpu); x.cpuUpM.push(upM.cpu); x.cpuDownM.push(downM.cpu);
      x.derpUpMbps.push(derpUp);
      log(`round ${r + 1} ${kind}: first reply ${first} ms, direct ${dir} ms; to/from tailscaled ${upTs.mbps}/${downTs.mbps} Mbit/s (${upTs.cpu}/${downTs.cpu} s/GB), to/from meshd ${upM.mbps}/${downM.mbps} Mbit/s (${upM.cpu}/${downM.cpu} s/GB); ${derpUp} Mbit/s via DERP`);
      if (kind === 'meshd') lab.meshd(n, ['down']);
      else lab.tailscale(n, ['down']);
    }
  }
} finally {
  await lab.dispose();
}

const M = (kind, k) => median(res[kind][k]);
/** The worst round; null when some round never got there. */
const W = (kind, k) => (res[kind][k].some((x) => x === null) ? null : Math.max(...res[kind][k]));
res.summary = {
  // direct TCP pairs, named sender -> receiver
  meshdToMeshd: M('meshd', 'upM'), tailscaledToTailscaled: M('tailscaled', 'upTs'),
  meshdToTailscaled: M('meshd', 'upTs'), tailscaledToMeshd: M('meshd', 'downTs'),
  cpu: {
    meshdToMeshd: M('meshd', 'cpuUpM'), tailscaledToTailscaled: M('tailscaled', 'cpuUpTs'),
    meshdToTailscaled: M('meshd', 'cpuUpTs'), tailscaledToMeshd: M('meshd', 'cpuDownTs'),
  },
};
const s = res.summary, base = s.tailscaledToTailscaled;
const rows = [
  ['meshd -> meshd', s.meshdToMeshd, ratio(s.meshdToMeshd, base), s.cpu.meshdToMeshd, ratio(s.cpu.meshdToMeshd, s.cpu.tailscaledToTailscaled), '1.0'],
  ['tailscaled -> tailscaled', base, 1, s.cpu.tailscaledToTailscaled, 1, '-'],
  ['meshd -> tailscaled', s.meshdToTailscaled, ratio(s.meshdToTailscaled, base), s.cpu.meshdToTailscaled, ratio(s.cpu.meshdToTailscaled, s.cpu.tailscaledToTailscaled), '0.8'],
  ['tailscaled -> meshd', s.tailscaledToMeshd, ratio(s.tailscaledToMeshd, base), s.cpu.tailscaledToMeshd, ratio(s.cpu.tailscaledToMeshd, s.cpu.tailscaledToTailscaled), '0.8'],
];
const other = [
  ['time from up to first ping reply (ms)', M('meshd', 'firstMs'), M('tailscaled', 'firstMs')],
  ['time from up to direct path (ms)', M('meshd', 'directMs'), M('tailscaled', 'directMs')],
  ['worst round: up to first ping reply (ms)', W('meshd', 'firstMs'), W('tailscaled', 'firstMs')],
  ['worst round: up to direct path (ms)', W('meshd', 'directMs'), W('tailscaled', 'directMs')],
  ['TCP to a tailscaled via DERP (Mbit/s)', M('meshd', 'derpUpMbps'), M('tailscaled', 'derpUpMbps')],
  [`idle RSS with ${res.rssPeers?.meshd ?? '?'} peers (MiB)`, res.rssMiB.meshd ?? null, res.rssMiB.tailscaled ?? null],
].map(([l, a, b]) => [l, a, b, ratio(a, b)]);
const text = [
  `Direct TCP between nodes behind easy NATs (iperf3 ${o.seconds} s, median of ${o.rounds}); CPU of both ends per GB carried`, '',
  table(['sender -> receiver', 'Mbit/s', 'x tailscaled->tailscaled', 'CPU s/GB', 'CPU x ts->ts', 'goal'], rows), '',
  table(['', 'meshd', 'tailscaled', 'meshd/tailscaled'], other), '',
].join('\n');
res.markdown = text;
const path = writeResults(String(o.out), 'bench-nat', res, {
  throughput: barChart({
    title: `Direct TCP through the tailnet (median of ${o.rounds} x ${o.seconds} s)`, unit: 'Mbit/s',
    groups: rows.map((r) => r[0]), series: ['Mbit/s'], values: rows.map((r) => [r[1]]),
  }),
});
if (o.json) console.log(JSON.stringify(res, null, 2));
else console.log(`${text}\nresults: ${path}`);
