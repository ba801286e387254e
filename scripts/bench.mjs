#!/usr/bin/env node
// WireGuard data-plane benchmark: `meshd wg` pairs against pairs of the current wireguard-go (TUN
// TSO/GRO, UDP GSO/GRO; built by scripts/install-peers.sh as wireguard-go-current) and of the Debian
// wireguard-go (2022, no offloads), in the same run, same lab, alternated per round so that drift on
// this shared machine hits all alike. Per MTU (1280 and 1420):
//   - TCP both directions (iperf3, receiver side), and the CPU seconds per GB carried, summed over
//     both WireGuard processes, from /proc/PID/stat in the same run;
//   - UDP at a fixed offered rate above what any of them carries: delivered rate and loss;
//   - ping RTT through the tunnel;
// and once (first MTU): handshakes per second one responder completes under open-loop loads at fixed
// offered rates (a sweep: below its capacity it answers all; above, its queue fills, it turns to
// cookie replies and completes few, as WireGuard is meant to), and TCP throughput while 2,000
// initiations/s arrive at the receiver.
// Writes bench-results/bench.json and SVG charts next to it; prints markdown tables and ratios.
//   sudo node scripts/bench.mjs [--rounds 3] [--seconds 8] [--mtus 1280,1420] [--udp-rate 4G]
//        [--hs-rates 1000,2000,4000,8000] [--hs-seconds 5] [--load-rate 2000] [--out bench-results] [--smoke] [--json]
// --smoke: 1 round of 2 s per case (checks the script works; the numbers mean little).
// Needs: npm run build, root, wg, iperf3, wireguard-go; scripts/install-peers.sh wireguard-go-current.
import { WgLab } from '../dist/test/harness/wglab.js';
import { which } from '../dist/test/harness/prereq.js';
import { handshakeLoad } from './bench-handshake.mjs';
import { args, median, round, ratio, pidsIn, cpuOf, iperf, pingRtt, table, barChart, writeResults } from './bench-lib.mjs';

const o = args({ rounds: 3, seconds: 8, mtus: '1280,1420', 'udp-rate': '4G', 'hs-rates': '1000,2000,4000,8000', 'hs-seconds': 5, 'load-rate': 2000, out: 'bench-results', smoke: false, json: false });
if (o.smoke) { o.rounds = 1; o.seconds = 2; o['hs-seconds'] = 2; }
const mtus = String(o.mtus).split(',').map(Number);
const hsRates = String(o['hs-rates']).split(',').map(Number);
const log = (s) => { if (!o.json) console.error(s); };
const IMPLS = ['meshd', 'wireguard-go-current', 'wireguard-go'].filter((i) => i === 'meshd' || which(i));
const PROC = {
  meshd: /meshd\.js wg /,
  'wireguard-go-current': /wireguard-go-current/,
  'wireguard-go': /(^|\/)wireguard-go(\s|$)/,
};
if (!IMPLS.includes('wireguard-go-current')) log('wireguard-go-current not found: run scripts/install-peers.sh wireguard-go-current (comparing with the Debian build only)');

const res = { rounds: o.rounds, seconds: o.seconds, udpRate: o['udp-rate'], impls: IMPLS, byMtu: {}, handshakes: {}, underLoad: {} };
/** One measured transfer: Mbit/s and CPU s/GB of the pair. */
function transfer(lab, impl, x, y, opts) {
  const pids = [...pidsIn(lab.lab, x.ns, PROC[impl]), ...pidsIn(lab.lab, y.ns, PROC[impl])];
  const c0 = cpuOf(pids);
  const r = iperf(lab.lab, x.ns, y.tun4, { seconds: o.seconds, ...opts });
  const c1 = cpuOf(pids);
  if (!r) return null;
  return { mbps: r.mbps, lossPct: r.lossPct, cpuSPerGB: r.bytes > 0 ? round((c1 - c0) / (r.bytes / 1e9), 2) : null };
}

for (const mtu of mtus) {
  const lab = new WgLab(`b${mtu}`, mtu);
  const m = Object.fromEntries(IMPLS.map((i) => [i, { tcpUp: [], tcpDown: [], cpuUp: [], cpuDown: [], udp: [], udpLoss: [], udpCpu: [], rtt: [] }]));
  res.byMtu[mtu] = m;
  try {
    const pairs = {};
    IMPLS.forEach((impl, k) => {
      pairs[impl] = [lab.addHost(2 * k + 1, impl), lab.addHost(2 * k + 2, impl)];
    });
    for (const [x, y] of Object.values(pairs)) {
      await lab.start(x); await lab.start(y);
      lab.peer(x, y); lab.peer(y, x);
    }
    for (const [impl, [x, y]] of Object.entries(pairs)) {
      if (!lab.ping(x, y.tun4, 3)) throw new Error(`no tunnel between the ${impl} hosts`);
      const srv = lab.lab.spawn(y.ns, ['iperf3', '-s', '-B', y.tun4]);
      srv.stdout?.resume(); srv.stderr?.resume();
    }
    await new Promise((r) => setTimeout(r, 500));
    for (let r = 0; r < o.rounds; r++) {
      for (const [impl, [x, y]] of Object.entries(pairs)) {
        const s = m[impl];
        const up = transfer(lab, impl, x, y, {});
        const down = transfer(lab, impl, x, y, { reverse: true });
        const udp = transfer(lab, impl, x, y, { udpRate: o['udp-rate'], len: mtu - 28 });
        const rtt = pingRtt(lab.lab, x.ns, y.tun4);
        s.tcpUp.push(up?.mbps ?? null); s.cpuUp.push(up?.cpuSPerGB ?? null);
        s.tcpDown.push(down?.mbps ?? null); s.cpuDown.push(down?.cpuSPerGB ?? null);
        s.udp.push(udp?.mbps ?? null); s.udpLoss.push(udp?.lossPct ?? null); s.udpCpu.push(udp?.cpuSPerGB ?? null);
        s.rtt.push(rtt);
        log(`MTU ${mtu} round ${r + 1} ${impl}: TCP ${up?.mbps} / ${down?.mbps} Mbit/s (${up?.cpuSPerGB} / ${down?.cpuSPerGB} CPU s/GB), UDP ${udp?.mbps} Mbit/s ${udp?.lossPct}% loss, RTT ${rtt} ms`);
      }
    }
    if (mtu === mtus[0]) {
      const responders = Object.values(pairs).map(([, y]) => y);
      const load = handshakeLoad(lab, responders, Math.max(...hsRates, o['load-rate']));
      for (const [impl, [x, y]] of Object.entries(pairs)) {
        res.handshakes[impl] = {};
        for (const rate of hsRates) {
          const f = load.run(y, o['hs-seconds'], rate);
          await f.ready;
          res.handshakes[impl][rate] = await f.done;
          log(`handshakes ${impl} at ${rate}/s: ${JSON.stringify(res.handshakes[impl][rate])}`);
          await new Promise((r) => setTimeout(r, 1500)); // let the responder leave its under-load second
        }
        // Data while initiations arrive at the receiver at a fixed rate.
        const g = load.run(y, o.seconds + 4, o['load-rate']);
        await g.ready;
        await new Promise((r) => setTimeout(r, 500));
        const t = transfer(lab, impl, x, y, {});
        const flood = await g.done;
        res.underLoad[impl] = { mbps: t?.mbps ?? null, floodResponsesPerSecond: flood?.perSecond ?? null, floodCookiesPerSecond: flood?.cookiesPerSecond ?? null };
        log(`TCP while ${o['load-rate']} initiations/s arrive, ${impl}: ${t?.mbps} Mbit/s`);
        await new Promise((r) => setTimeout(r, 1500));
      }
    }
  } finally {
    await lab.dispose();
  }
}

// ---- summary ----------------------------------------------------------------------------------
const med = (mtu, impl, k) => median(res.byMtu[mtu][impl][k]);
res.summary = {};
for (const mtu of mtus) {
  res.summary[mtu] = Object.fromEntries(IMPLS.map((i) => [i, {
    tcpUpMbps: med(mtu, i, 'tcpUp'), tcpDownMbps: med(mtu, i, 'tcpDown'), cpuUpSPerGB: med(mtu, i, 'cpuUp'), cpuDownSPerGB: med(mtu, i, 'cpuDown'),
    udpMbps: med(mtu, i, 'udp'), udpLossPct: med(mtu, i, 'udpLoss'), udpCpuSPerGB: med(mtu, i, 'udpCpu'), rttMs: med(mtu, i, 'rtt'),
  }]));
}
const ref = IMPLS.includes('wireguard-go-current') ? 'wireguard-go-current' : 'wireguard-go';
const lines = [];
for (const mtu of mtus) {
  const s = res.summary[mtu];
  const rows = IMPLS.map((i) => [i, s[i].tcpUpMbps, s[i].tcpDownMbps, s[i].cpuUpSPerGB, s[i].cpuDownSPerGB, s[i].udpMbps, s[i].udpLossPct, s[i].rttMs]);
  for (const other of IMPLS.filter((i) => i !== 'meshd')) {
    rows.push([`meshd / ${other}`, ratio(s.meshd.tcpUpMbps, s[other].tcpUpMbps), ratio(s.meshd.tcpDownMbps, s[other].tcpDownMbps),
      ratio(s.meshd.cpuUpSPerGB, s[other].cpuUpSPerGB), ratio(s.meshd.cpuDownSPerGB, s[other].cpuDownSPerGB),
      ratio(s.meshd.udpMbps, s[other].udpMbps), '-', ratio(s.meshd.rttMs, s[other].rttMs)]);
  }
  lines.push(`MTU ${mtu}, iperf3 ${o.seconds} s x ${o.rounds}, median; UDP offered at ${o['udp-rate']}bit/s; CPU of both ends per GB carried`, '',
    table(['pair', 'TCP -> Mbit/s', 'TCP <- Mbit/s', 'CPU s/GB ->', 'CPU s/GB <-', 'UDP delivered Mbit/s', 'UDP loss %', 'ping RTT ms'], rows), '');
}
const hs = (i, rate) => res.handshakes[i]?.[rate]?.perSecond ?? null;
const hsRows = IMPLS.map((i) => [i, ...hsRates.map((r) => `${hs(i, r) ?? '-'} (${res.handshakes[i]?.[r]?.cookiesPerSecond ?? '-'})`)]);
hsRows.push([`meshd / ${ref}`, ...hsRates.map((r) => ratio(hs('meshd', r), hs(ref, r)))]);
lines.push(`Handshakes per second one responder completes (cookie replies/s in brackets), open loop for ${o['hs-seconds']} s at each offered rate`, '',
  table(['responder', ...hsRates.map((r) => `offered ${r}/s`)], hsRows), '');
const loadRows = IMPLS.map((i) => [i, res.summary[mtus[0]][i].tcpUpMbps, res.underLoad[i]?.mbps ?? null, ratio(res.underLoad[i]?.mbps ?? null, res.summary[mtus[0]][i].tcpUpMbps)]);
lines.push(`TCP (MTU ${mtus[0]}) while ${o['load-rate']} valid initiations/s arrive at the receiver (goal: loaded / unloaded >= 0.5)`, '',
  table(['pair', 'TCP unloaded Mbit/s', `TCP under ${o['load-rate']} init/s`, 'loaded / unloaded'], loadRows), '');
const text = lines.join('\n');
res.markdown = text;
const groups = [], tput = [], cpu = [];
for (const mtu of mtus) {
  const s = res.summary[mtu];
  groups.push(`TCP MTU ${mtu} ->`, `TCP MTU ${mtu} <-`, `UDP MTU ${mtu} delivered`);
  tput.push(IMPLS.map((i) => s[i].tcpUpMbps), IMPLS.map((i) => s[i].tcpDownMbps), IMPLS.map((i) => s[i].udpMbps));
  cpu.push(IMPLS.map((i) => s[i].cpuUpSPerGB), IMPLS.map((i) => s[i].cpuDownSPerGB), IMPLS.map((i) => s[i].udpCpuSPerGB));
}
const path = writeResults(String(o.out), 'bench', res, {
  throughput: barChart({ title: `WireGuard pairs: throughput (median of ${o.rounds} x ${o.seconds} s)`, unit: 'Mbit/s', groups, series: IMPLS, values: tput }),
  cpu: barChart({ title: 'CPU seconds per GB carried (both ends; lower is better)', unit: 's/GB', groups, series: IMPLS, values: cpu }),
});
if (o.json) console.log(JSON.stringify(res, null, 2));
else console.log(`${text}\nresults: ${path} (charts: bench-throughput.svg, bench-cpu.svg)`);
