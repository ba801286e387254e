#!/usr/bin/env node
// NAT-traversal benchmark: meshd against tailscaled v1.102.3 in the same lab, same run. A reference
// tailscaled peer sits behind an easy NAT; each round adds a fresh meshd node and a fresh tailscaled
// node behind their own easy NATs and measures, from the start of `up`:
//   - time to the first ping reply from the reference peer (the first packets go through DERP),
//   - time until the subject reports a direct path to it;
// then iperf3 TCP throughput to and from the reference peer, direct and (UDP blocked on the
// subject) relayed through headscale's embedded DERP. Prints a table and meshd/tailscaled ratios.
//   sudo node scripts/bench-nat.mjs [--rounds N] [--seconds S] [--json] [--timing-only]
// Needs: npm run build, root, headscale, tailscaled, tailscale (scripts/install-peers.sh), iperf3, nft.
// --timing-only skips iperf3 and adds the timing pairings below (timing part: see timingPairings()).
import { spawnSync } from 'node:child_process';
import { TailnetLab } from '../dist/test/harness/hslab.js';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const rounds = arg('rounds', 3);
const seconds = arg('seconds', 5);
const asJson = process.argv.includes('--json');
const median = (xs) => { const s = xs.filter((x) => x !== null && Number.isFinite(x)).sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : null; };
const log = (s) => { if (!asJson) console.error(s); };

const timingOnly = process.argv.includes('--timing-only');
const worst = (xs) => { const s = xs.filter((x) => x !== null && Number.isFinite(x)); return xs.some((x) => x === null) ? null : s.length ? Math.max(...s) : null; };

// ---- timing part: per NAT pairing, from `up` of a fresh subject (meshd or tailscaled) to the first
// ping reply and to a confirmed direct path with a reference tailscaled behind an easy NAT, both
// sides direct. 'out': the subject pings the reference; 'in': the reference pings the subject
// (meshd as responder); 'portmap': the subject behind a hard NAT whose router runs miniupnpd.
const PAIRINGS = [
  { key: 'easyOut', label: 'easy NAT -> easy NAT, subject sends', nat: 'easy', from: 'subject' },
  { key: 'easyIn', label: 'easy NAT <- easy NAT, peer sends', nat: 'easy', from: 'ref' },
  { key: 'portmapOut', label: 'hard NAT + NAT-PMP -> easy NAT, subject sends', nat: 'portmap', from: 'subject' },
];
const timing = {};
async function timingPairings(key, ref, refIp) {
  for (const p of PAIRINGS) timing[p.key] = { meshd: { firstMs: [], directMs: [] }, tailscaled: { firstMs: [], directMs: [] } };
  for (let r = 0; r < rounds; r++) {
    for (const [pi, p] of PAIRINGS.entries()) {
      for (const kind of ['meshd', 'tailscaled']) {
        const name = `${kind[0]}${pi}r${r}`;
        const n = p.nat === 'portmap' ? await lab.addPortmapNode(name, 'hard', { upnp: true, natpmp: true }) : lab.addNatNode(name, 'easy');
        const t0 = Date.now();
        let myIp;
        if (kind === 'meshd') {
          const u = lab.up(n, key);
          if (u.status !== 0) throw new Error(`meshd up: ${u.stderr}`);
          myIp = JSON.parse(lab.meshd(n, ['status', '--json']).stdout).self.addresses[0];
        } else {
          await lab.startTailscaled(n, key, p.nat === 'portmap' ? { TS_DISABLE_PORTMAPPER: '0' } : {});
          myIp = lab.tailscale(n, ['ip', '-4']).stdout.trim();
        }
        const [src, dstIp] = p.from === 'subject' ? [n, refIp] : [ref, myIp];
        let first = null, dir = null;
        for (let i = 0; i < 600 && Date.now() - t0 < 30_000; i++) {
          if (first === null && pingOnce(src, dstIp)) first = Date.now() - t0;
          if (first !== null) {
            pingOnce(src, dstIp);
            if (await direct(kind, n, 'ref') && await direct('tailscaled', ref, name)) { dir = Date.now() - t0; break; }
          }
          await new Promise((res2) => setTimeout(res2, 20));
        }
        timing[p.key][kind].firstMs.push(first);
        timing[p.key][kind].directMs.push(dir);
        log(`round ${r + 1} ${p.label}, ${kind}: first reply ${first} ms, direct ${dir} ms after up`);
        if (kind === 'meshd') lab.meshd(n, ['down']);
        else lab.tailscale(n, ['down']);
        // Stop what runs in the subject's namespace (tailscaled stays up after `down`), by pid.
        for (const pid of (spawnSync('ip', ['netns', 'pids', n.ns], { encoding: 'utf8' }).stdout ?? '').split(/\s+/).filter(Boolean)) {
          try { process.kill(Number(pid), 'SIGTERM'); } catch { /* gone */ }
        }
      }
    }
  }
  for (const p of PAIRINGS) {
    const t = timing[p.key];
    t.summary = Object.fromEntries(['firstMs', 'directMs'].map((k) => {
      const m = { median: median(t.meshd[k]), worst: worst(t.meshd[k]) }, ts = { median: median(t.tailscaled[k]), worst: worst(t.tailscaled[k]) };
      const ratio = (a, b) => (a !== null && b ? +(a / b).toFixed(2) : null);
      return [k, { meshd: m, tailscaled: ts, ratioMedian: ratio(m.median, ts.median), ratioWorst: ratio(m.worst, ts.worst) }];
    }));
  }
}

const lab = new TailnetLab('bnat');
const res = { rounds, seconds, meshd: { firstMs: [], directMs: [], upMbps: [], downMbps: [], derpUpMbps: [] }, tailscaled: { firstMs: [], directMs: [], upMbps: [], downMbps: [], derpUpMbps: [] } };

function pingOnce(node, ip) {
  return lab.lab.tryExec(node.ns, ['ping', '-c', '1', '-W', '1', ip], 5000).status === 0;
}
// "Direct" is tailscale's CurAddr for both, asked over each daemon's local API socket (hslab directPath).
async function direct(kind, node, peerName) {
  return (await lab.directPath(node, kind, peerName)) !== null;
}
function iperf(from, toIp) {
  const out = lab.lab.tryExec(from.ns, ['iperf3', '-c', toIp, '-t', String(seconds), '-J', '-O', '1'], (seconds + 30) * 1000);
  if (out.status !== 0) return null;
  return Math.round(JSON.parse(out.stdout).end.sum_received.bits_per_second / 1e6);
}

try {
  await lab.startHeadscale();
  const key = lab.authKey({ reusable: true });
  const ref = lab.addNatNode('ref', 'easy');
  await lab.startTailscaled(ref, key);
  const refIp = lab.tailscale(ref, ['ip', '-4']).stdout.trim();
  if (timingOnly) await timingPairings(key, ref, refIp);
  const srv = timingOnly ? undefined : lab.lab.spawn(ref.ns, ['iperf3', '-s', '-B', refIp]);
  srv?.stdout?.resume(); srv?.stderr?.resume();
  for (let r = 0; r < (timingOnly ? 0 : rounds); r++) {
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
      let first = null, dir = null;
      for (let i = 0; i < 300 && Date.now() - t0 < 30_000; i++) {
        if (first === null && pingOnce(n, refIp)) first = Date.now() - t0;
        if (first !== null) {
          pingOnce(n, refIp);
          if (await direct(kind, n, 'ref')) { dir = Date.now() - t0; break; }
        }
        await new Promise((res2) => setTimeout(res2, 50));
      }
      const sub = lab.lab.spawn(n.ns, ['iperf3', '-s', '-B', myIp]);
      sub.stdout?.resume(); sub.stderr?.resume();
      await new Promise((res2) => setTimeout(res2, 300));
      const up = iperf(n, refIp);
      const down = iperf(ref, myIp);
      lab.blockUdp(n);
      // Until the direct path is given up (trust 6.5 s + ping timeout 5 s) both paths carry packets.
      for (let i = 0; i < 100 && await direct(kind, n, 'ref'); i++) { pingOnce(n, refIp); await new Promise((res2) => setTimeout(res2, 300)); }
      const derpUp = iperf(n, refIp);
      lab.unblockUdp(n);
      sub.kill();
      const x = res[kind];
      x.firstMs.push(first); x.directMs.push(dir); x.upMbps.push(up); x.downMbps.push(down); x.derpUpMbps.push(derpUp);
      log(`round ${r + 1} ${kind}: first reply ${first} ms, direct ${dir} ms after up; ${up} Mbit/s up, ${down} Mbit/s down direct; ${derpUp} Mbit/s up via DERP`);
      if (kind === 'meshd') lab.meshd(n, ['down']);
      else lab.tailscale(n, ['down']);
    }
  }
} finally {
  await lab.dispose();
}
const rows = [
  ['time from up to first ping reply (ms)', 'firstMs'],
  ['time from up to direct path (ms)', 'directMs'],
  ['TCP to the peer, direct (Mbit/s)', 'upMbps'],
  ['TCP from the peer, direct (Mbit/s)', 'downMbps'],
  ['TCP to the peer via DERP (Mbit/s)', 'derpUpMbps'],
];
res.summary = Object.fromEntries(rows.map(([, k]) => {
  const m = median(res.meshd[k]), t = median(res.tailscaled[k]);
  return [k, { meshd: m, tailscaled: t, ratio: m !== null && t ? +(m / t).toFixed(2) : null }];
}));
if (timingOnly) {
  if (asJson) console.log(JSON.stringify({ rounds, timing }, null, 2));
  else {
    console.log(`| pairing (${rounds} rounds; ms from up) | what | meshd median / worst | tailscaled median / worst | meshd/tailscaled median / worst |`);
    console.log('|---|---|---|---|---|');
    for (const p of PAIRINGS) {
      for (const [k, what] of [['firstMs', 'first reply'], ['directMs', 'direct (both sides)']]) {
        const x = timing[p.key].summary[k];
        console.log(`| ${p.label} | ${what} | ${x.meshd.median ?? '-'} / ${x.meshd.worst ?? 'never'} | ${x.tailscaled.median ?? '-'} / ${x.tailscaled.worst ?? 'never'} | ${x.ratioMedian ?? '-'} / ${x.ratioWorst ?? '-'} |`);
      }
    }
  }
} else if (asJson) console.log(JSON.stringify(res, null, 2));
else {
  console.log(`| easy NAT <-> easy NAT, peer: tailscaled; median of ${rounds} | meshd | tailscaled | meshd/tailscaled |`);
  console.log('|---|---|---|---|');
  for (const [label, k] of rows) {
    const s = res.summary[k];
    console.log(`| ${label} | ${s.meshd ?? '-'} | ${s.tailscaled ?? '-'} | ${s.ratio ?? '-'} |`);
  }
}
