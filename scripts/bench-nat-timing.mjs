// The timing part of bench-nat (`--timing-only`): per NAT pairing, from `up` of a fresh subject
// (meshd or tailscaled) to the first ping reply and to a direct path on both sides with a reference
// tailscaled behind an easy NAT. Direct is tailscale's CurAddr for both (a UDP address confirmed by
// a pong within 6.5 s), asked over each daemon's local API socket (hslab directPath), so polling
// costs both the same. Pairings: 'out' the subject pings the reference; 'in' the reference pings the
// subject (meshd as responder); 'portmap' the subject behind a hard NAT whose router runs miniupnpd.
import { spawnSync } from 'node:child_process';

export const PAIRINGS = [
  { key: 'easyOut', label: 'easy NAT -> easy NAT, subject sends', nat: 'easy', from: 'subject' },
  { key: 'easyIn', label: 'easy NAT <- easy NAT, peer sends', nat: 'easy', from: 'ref' },
  { key: 'portmapOut', label: 'hard NAT + NAT-PMP -> easy NAT, subject sends', nat: 'portmap', from: 'subject' },
];

const median = (xs) => { const s = xs.filter((x) => x !== null && Number.isFinite(x)).sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : null; };
/** The worst round; null (never) when some round never got there. */
const worst = (xs) => (xs.some((x) => x === null) || xs.length === 0 ? null : Math.max(...xs));
const ratio = (a, b) => (a !== null && b ? +(a / b).toFixed(2) : null);

/** Runs `rounds` rounds of every pairing against `ref` (a tailscaled node named refName at refIp). */
export async function timingPairings(lab, key, ref, refName, refIp, rounds, log) {
  const ping = (node, ip) => lab.lab.tryExec(node.ns, ['ping', '-c', '1', '-W', '1', ip], 5000).status === 0;
  const timing = {};
  for (const p of PAIRINGS) timing[p.key] = { label: p.label, meshd: { firstMs: [], directMs: [] }, tailscaled: { firstMs: [], directMs: [] } };
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
          // `up` prints our addresses: a `meshd status` process here would cost meshd
          // ~300 ms of Node startup inside the timed window that `tailscale ip` (Go) does not.
          myIp = u.stdout.trim().split('\n').find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a.trim()))?.trim();
        } else {
          await lab.startTailscaled(n, key, p.nat === 'portmap' ? { TS_DISABLE_PORTMAPPER: '0' } : {});
          myIp = lab.tailscale(n, ['ip', '-4']).stdout.trim();
        }
        const [src, dstIp] = p.from === 'subject' ? [n, refIp] : [ref, myIp];
        let first = null, dir = null;
        for (let i = 0; i < 600 && Date.now() - t0 < 30_000; i++) {
          if (first === null && ping(src, dstIp)) first = Date.now() - t0;
          if (first !== null) {
            ping(src, dstIp);
            if (await lab.directPath(n, kind, refName) && await lab.directPath(ref, 'tailscaled', name)) { dir = Date.now() - t0; break; }
          }
          await new Promise((w) => setTimeout(w, 20));
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
  for (const t of Object.values(timing)) {
    t.summary = Object.fromEntries(['firstMs', 'directMs'].map((k) => {
      const m = { median: median(t.meshd[k]), worst: worst(t.meshd[k]) }, ts = { median: median(t.tailscaled[k]), worst: worst(t.tailscaled[k]) };
      return [k, { meshd: m, tailscaled: ts, ratioMedian: ratio(m.median, ts.median), ratioWorst: ratio(m.worst, ts.worst) }];
    }));
  }
  return timing;
}

/** The markdown table of timingPairings' result. */
export function timingTable(timing, rounds) {
  const lines = [
    `| pairing (${rounds} rounds; ms from up) | what | meshd median / worst | tailscaled median / worst | meshd/tailscaled median / worst |`,
    '|---|---|---|---|---|',
  ];
  for (const t of Object.values(timing)) {
    for (const [k, what] of [['firstMs', 'first reply'], ['directMs', 'direct (both sides)']]) {
      const x = t.summary[k];
      lines.push(`| ${t.label} | ${what} | ${x.meshd.median ?? '-'} / ${x.meshd.worst ?? 'never'} | ${x.tailscaled.median ?? '-'} / ${x.tailscaled.worst ?? 'never'} | ${x.ratioMedian ?? '-'} / ${x.ratioWorst ?? '-'} |`);
    }
  }
  return lines.join('\n');
}
