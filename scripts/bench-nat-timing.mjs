// The timing part of bench-nat (`--timing-only`): per NAT pairing, from `up` of a fresh subject
// (meshd or tailscaled) to the first ping reply and to a direct path on both sides with a reference
// tailscaled behind an easy NAT. Direct is tailscale's CurAddr for both (a UDP address confirmed by
// a pong within 6.5 s), asked over each daemon's local API socket (hslab directPath), so polling
// costs both the same. Pairings: 'out' the subject pings the reference; 'in' the reference pings the
// subject (meshd as responder); 'portmap' the subject behind a hard NAT whose router runs miniupnpd.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export const PAIRINGS = [
  { key: 'easyOut', label: 'easy NAT -> easy NAT, subject sends', nat: 'easy', from: 'subject' },
  { key: 'easyIn', label: 'easy NAT <- easy NAT, peer sends', nat: 'easy', from: 'ref' },
  { key: 'portmapOut', label: 'hard NAT + NAT-PMP -> easy NAT, subject sends', nat: 'portmap', from: 'subject' },
];

const median = (xs) => { const s = xs.filter((x) => x !== null && Number.isFinite(x)).sort((a, b) => a - b); return s.length ? s[Math.floor((s.length - 1) / 2)] : null; };
/** The worst round; null (never) when some round never got there. */
const worst = (xs) => (xs.some((x) => x === null) || xs.length === 0 ? null : Math.max(...xs));
const ratio = (a, b) => (a !== null && b ? +(a / b).toFixed(2) : null);

/** A small seeded PRNG (mulberry32): the pauses of a run can be replayed with --seed. */
function prng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Runs `rounds` rounds of every pairing against `ref` (a tailscaled node named refName at refIp).
 * opts.phaseSpreadMs (default 4000; 0: none): before each `up`, an untimed pause drawn uniformly
 * from [0, phaseSpreadMs). headscale 0.29.2 applies node writes on a 500 ms ticker and hands
 * changes to peers on an 800 ms ticker, both running since it started; where `up` falls in the
 * 4 s they repeat in decides whether the reference hears of the subject before its first packet.
 * Without a pause, each kind's rounds took about the same time every round, so each kind kept
 * landing on its own phase (one run: every meshd round ~150 ms after the tick, every tailscaled
 * round just before it), and the comparison measured the schedule. The order of the two kinds
 * also alternates per round. opts.seed replays a run's pauses.
 */
export async function timingPairings(lab, key, ref, refName, refIp, rounds, log, opts = {}) {
  const ping = (node, ip) => lab.lab.tryExec(node.ns, ['ping', '-c', '1', '-W', '1', ip], 5000).status === 0;
  const spread = opts.phaseSpreadMs ?? 4000;
  const seed = opts.seed ?? (Date.now() % 2 ** 31);
  const rand = prng(seed);
  if (spread > 0) log(`phase spread: a pause of 0-${spread} ms before each up (seed ${seed})`);
  const timing = {};
  for (const p of PAIRINGS) timing[p.key] = { label: p.label, meshd: { firstMs: [], directMs: [] }, tailscaled: { firstMs: [], directMs: [] } };
  for (let r = 0; r < rounds; r++) {
    for (const [pi, p] of PAIRINGS.entries()) {
      if (opts.only && !opts.only.includes(p.key)) continue;
      for (const kind of r % 2 === 0 ? ['meshd', 'tailscaled'] : ['tailscaled', 'meshd']) {
        const name = `${kind[0]}${pi}r${r}`;
        const n = p.nat === 'portmap' ? await lab.addPortmapNode(name, 'hard', { upnp: true, natpmp: true }) : lab.addNatNode(name, 'easy');
        if (spread > 0) await new Promise((w) => setTimeout(w, Math.floor(rand() * spread)));
        const t0 = Date.now();
        let myIp, u;
        const marks = []; // [ms after up, what]: the bench's own steps, for the timeline
        if (kind === 'meshd') {
          u = lab.up(n, key);
          if (u.status !== 0) throw new Error(`meshd up: ${u.stderr}`);
          // `up` prints our addresses: a `meshd status` process here would cost meshd
          // ~300 ms of Node startup inside the timed window that `tailscale ip` (Go) does not.
          myIp = u.stdout.trim().split('\n').find((a) => /^\d+\.\d+\.\d+\.\d+$/.test(a.trim()))?.trim();
        } else {
          await lab.startTailscaled(n, key, p.nat === 'portmap' ? { TS_DISABLE_PORTMAPPER: '0' } : {});
          marks.push([Date.now() - t0, 'bench: tailscaled up returned']);
          myIp = lab.tailscale(n, ['ip', '-4']).stdout.trim();
        }
        marks.push([Date.now() - t0, `bench: ${kind} ready, pinging`]);
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
        if (opts.timeline) {
          const until = t0 + (dir ?? first ?? 10_000) + 200;
          const lines = kind === 'meshd'
            ? meshdTimeline(`${u.stderr}\n${readIf(join(n.dir, 'state', 'meshd.log'))}`, t0, until)
            : tsTimeline(lab.tailscaledLog(n), t0, until, 'subject', true);
          // When the register request left (meshd: the CLI's or the agent's; tailscaled: RegisterReq).
          const reg = lines.find(([, what]) => (kind === 'meshd' ? /register request sent/ : /RegisterReq/).test(what));
          (timing[p.key][kind].registerMs ??= []).push(reg ? reg[0] : null);
          if (kind !== 'meshd' && opts.timeline !== 'all') lines.splice(0, lines.length, ...lines.filter(([, what]) => TS_STEPS.test(what.slice(11)) || /RegisterReq/.test(what)));
          lines.push(...tsTimeline(lab.tailscaledLog(ref), t0, until, 'ref', opts.timeline === 'all'), ...marks);
          log(lines.sort((a, b) => a[0] - b[0]).map(([ms, what]) => `  ${String(ms).padStart(6)} ${what}`).join('\n'));
        }
        if (kind === 'meshd') lab.meshd(n, ['down']);
        else lab.tailscale(n, ['down']);
        // Stop what runs in the subject's namespace (tailscaled stays up after `down`), by pid.
        for (const pid of (spawnSync('ip', ['netns', 'pids', n.ns], { encoding: 'utf8' }).stdout ?? '').split(/\s+/).filter(Boolean)) {
          try { process.kill(Number(pid), 'SIGTERM'); } catch { /* gone */ }
        }
      }
    }
  }
  for (const [k, t] of Object.entries(timing)) {
    if (t.meshd.firstMs.length === 0) { delete timing[k]; continue; }
    if (t.meshd.registerMs) {
      t.registerSent = { meshd: median(t.meshd.registerMs), tailscaled: median(t.tailscaled.registerMs ?? []) };
      log(`${t.label}: register request sent, median ms after up: meshd ${t.registerSent.meshd} (${t.meshd.registerMs.join(', ')}), tailscaled ${t.registerSent.tailscaled} (${(t.tailscaled.registerMs ?? []).join(', ')})`);
    }
    t.summary = Object.fromEntries(['firstMs', 'directMs'].map((k) => {
      const m = { median: median(t.meshd[k]), worst: worst(t.meshd[k]) }, ts = { median: median(t.tailscaled[k]), worst: worst(t.tailscaled[k]) };
      return [k, { meshd: m, tailscaled: ts, ratioMedian: ratio(m.median, ts.median), ratioWorst: ratio(m.worst, ts.worst) }];
    }));
  }
  return timing;
}

const readIf = (path) => (existsSync(path) ? readFileSync(path, 'utf8') : '');
/** MESHD_TIMELINE lines (`timeline EPOCH PID +MS STEP`) as [ms after t0, 'pid step'], within [t0, until]. */
function meshdTimeline(text, t0, until) {
  const out = [];
  for (const m of text.matchAll(/^timeline (\d+\.\d) (\d+) \+[\d.]+ (.*)$/gm)) {
    const at = Number(m[1]);
    if (at >= t0 - 50 && at <= until) out.push([Math.round(at - t0), `meshd[${m[2]}] ${m[3]}`]);
  }
  return out;
}
/** Interesting lines of a tailscaled log with TS_DEBUG_LOG_TIME timestamps, as [ms after t0, line]. */
const TS_STEPS = /logged in|Switching ipn state|magicsock: (endpoints changed|home is now|derp-\d+ connected|disco: node .* (now using|sent|got))|control: (NetInfo|netmap|mapRoutine|HTTP|sendMapRequest)|wgengine: Reconfig|netcheck: report|peer.*(handshake|Sending|Received)|Handshake|no UDP or DERP/;
function tsTimeline(text, t0, until, who, all = false) {
  const out = [];
  for (const line of text.split('\n')) {
    const m = /^(\d{4})\/(\d\d)\/(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6}) (.*)$/.exec(line);
    if (!m || !(all || TS_STEPS.test(m[8]))) continue;
    const at = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) + Number(m[7]) / 1000;
    if (at >= t0 - 50 && at <= until) out.push([Math.round(at - t0), `ts-${who} ${m[8].slice(0, 160)}`]);
  }
  return out;
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
