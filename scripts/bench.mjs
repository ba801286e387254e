#!/usr/bin/env node
// WireGuard data-plane benchmark: meshd-to-meshd against wireguard-go-to-wireguard-go in the same
// run, same lab, same MTU, alternated so that drift on this shared machine hits both alike.
// Prints Mbit/s (iperf3 TCP, receiver side), ping RTT, handshakes/s of one responder, and ratios.
//   sudo node scripts/bench.mjs [--rounds N] [--seconds S] [--mtu M] [--json]
// Needs: npm run build, root, wireguard-go, wg, iperf3.
import { WgLab } from '../dist/test/harness/wglab.js';
import { handshakeBench } from './bench-handshake.mjs';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const rounds = arg('rounds', 3);
const seconds = arg('seconds', 10);
const mtu = arg('mtu', 1280);
const asJson = process.argv.includes('--json');
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : NaN; };

const lab = new WgLab('bench', mtu);
const results = { meshd: { mbps: [], rtt: [] }, 'wireguard-go': { mbps: [], rtt: [] }, mtu, rounds, seconds };
try {
  const a1 = lab.addHost(1, 'meshd'), a2 = lab.addHost(2, 'meshd');
  const b1 = lab.addHost(3, 'wireguard-go'), b2 = lab.addHost(4, 'wireguard-go');
  for (const h of [a1, a2, b1, b2]) await lab.start(h);
  lab.peer(a1, a2); lab.peer(a2, a1); lab.peer(b1, b2); lab.peer(b2, b1);
  for (const [x, y] of [[a1, a2], [b1, b2]]) {
    if (!lab.ping(x, y.tun4, 3)) throw new Error(`no tunnel between ${x.impl} hosts`);
    const srv = lab.lab.spawn(y.ns, ['iperf3', '-s', '-B', y.tun4]);
    srv.stdout?.resume(); srv.stderr?.resume();
  }
  await new Promise((r) => setTimeout(r, 500));
  for (let r = 0; r < rounds; r++) {
    for (const [impl, x, y] of [['meshd', a1, a2], ['wireguard-go', b1, b2]]) {
      const out = lab.lab.exec(x.ns, ['iperf3', '-c', y.tun4, '-t', String(seconds), '-J', '-O', '1'], { timeoutMs: (seconds + 30) * 1000 });
      const j = JSON.parse(out);
      const mbps = j.end.sum_received.bits_per_second / 1e6;
      results[impl].mbps.push(Math.round(mbps));
      const ping = lab.lab.tryExec(x.ns, ['ping', '-c', '20', '-i', '0.05', '-q', y.tun4], 20000).stdout;
      const m = /= [\d.]+\/([\d.]+)\//.exec(ping);
      if (m) results[impl].rtt.push(Number(m[1]));
      if (!asJson) console.error(`round ${r + 1}: ${impl} ${mbps.toFixed(0)} Mbit/s, rtt ${m ? m[1] : '?'} ms`);
    }
  }
  results.handshakes = await handshakeBench(lab);
} finally {
  await lab.dispose();
}
const mm = median(results.meshd.mbps), gm = median(results['wireguard-go'].mbps);
const mr = median(results.meshd.rtt), gr = median(results['wireguard-go'].rtt);
results.summary = {
  meshdMbps: mm, wireguardGoMbps: gm, throughputRatio: +(mm / gm).toFixed(2),
  meshdRttMs: mr, wireguardGoRttMs: gr,
  meshdHandshakesPerSec: results.handshakes?.meshd, wireguardGoHandshakesPerSec: results.handshakes?.['wireguard-go'],
};
if (asJson) console.log(JSON.stringify(results, null, 2));
else {
  const s = results.summary;
  console.log(`| path (MTU ${mtu}, iperf3 TCP ${seconds} s x ${rounds}, median) | Mbit/s | ping RTT ms | handshakes/s (one responder) |`);
  console.log('|---|---|---|---|');
  console.log(`| meshd -> meshd | ${mm} | ${mr} | ${s.meshdHandshakesPerSec ?? '-'} |`);
  console.log(`| wireguard-go -> wireguard-go | ${gm} | ${gr} | ${s.wireguardGoHandshakesPerSec ?? '-'} |`);
  console.log(`| ratio meshd / wireguard-go | ${s.throughputRatio} | ${(mr / gr).toFixed(2)} | ${s.meshdHandshakesPerSec && s.wireguardGoHandshakesPerSec ? (s.meshdHandshakesPerSec / s.wireguardGoHandshakesPerSec).toFixed(2) : '-'} |`);
}
