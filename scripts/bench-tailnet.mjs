#!/usr/bin/env node
// Tailnet numbers in one lab with an unmodified headscale: time from `up` to the first ping reply
// from a peer (median of N), and the RSS of an idle agent with 3 peers. meshd joins a meshd peer,
// tailscaled (v1.102.3, when built) joins a tailscaled peer, in the same run. Also, as a CI job
// uses them: `meshd up --wait-for PEER` until it returns, against `tailscale up` plus
// `tailscale ping` until the first pong; and the time from SIGTERM to an agent with
// `--state mem:` and an ephemeral key until headscale no longer lists the node.
//   sudo node scripts/bench-tailnet.mjs [--runs N] [--json]
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { TailnetLab, HS_URL } from '../dist/test/harness/hslab.js';
import { which } from '../dist/test/harness/prereq.js';

const ri = process.argv.indexOf('--runs');
const runs = ri > 0 ? Number(process.argv[ri + 1]) : 5;
const asJson = process.argv.includes('--json');
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]; };
const tsd = which('tailscaled'), ts = which('tailscale');
const lab = new TailnetLab('bench');
const out = { runs, meshd: { upToPingMs: [], upWaitForMs: [], sigtermToGoneMs: [] }, tailscaled: { upToPingMs: [], upThenPingMs: [] } };

function pingUntil(ns, addr, deadlineMs) {
  for (let i = 0; Date.now() < deadlineMs && i < 1000; i++) {
    if (lab.lab.tryExec(ns, ['ping', '-c', '1', '-W', '1', addr], 3000).status === 0) return true;
  }
  return false;
}
function agentPid(ns) {
  for (const pid of spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean)) {
    try { if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('daemon')) return Number(pid); } catch { /* gone */ }
  }
  throw new Error(`no agent in ${ns}`);
}
function rssKb(ns, name) {
  for (const pid of spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean)) {
    let cmd = '';
    try { cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { continue; }
    if (!cmd.includes(name)) continue;
    const m = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    if (m) return Number(m[1]);
  }
  return undefined;
}
/** A namespace running tailscaled (not yet up) via the lab harness. */
async function tailscaledNode(name) {
  const n = lab.addNode(name);
  await lab.startTailscaled(n, undefined);
  return n;
}
const tsUp = (n, key) => lab.tailscale(n, ['up', `--login-server=${HS_URL}`, `--auth-key=${key}`, `--hostname=${n.name}`, '--netfilter-mode=off', '--accept-dns=false', '--timeout=60s'], 70_000);

try {
  await lab.startHeadscale();
  const key = lab.authKey({ reusable: true });
  // meshd: a target peer, then fresh nodes that each time `up` and ping it.
  const target = lab.addNode('mt');
  if (lab.up(target, key).status !== 0) throw new Error('meshd target did not come up');
  const targetAddr = JSON.parse(lab.meshd(target, ['status', '--json']).stdout).self.addresses[0];
  for (let i = 0; i < runs; i++) {
    const n = lab.addNode(`m${i}`);
    const t0 = Date.now();
    const r = lab.up(n, key);
    if (r.status !== 0) throw new Error(`meshd up: ${r.stderr}`);
    if (!pingUntil(n.ns, targetAddr, t0 + 30_000)) throw new Error('meshd: no ping reply within 30 s');
    out.meshd.upToPingMs.push(Date.now() - t0);
    if (i === 2) {
      // The third node has exactly 3 peers (mt, m0, m1): its idle RSS after 2 s.
      await new Promise((r) => setTimeout(r, 2000));
      out.meshd.peersOfMeasured = JSON.parse(lab.meshd(n, ['status', '--json']).stdout).peers.length;
      out.meshd.rssKb = rssKb(n.ns, 'daemon');
    }
  }
  // As a CI job: up --wait-for the target (ephemeral key, in-memory state), then SIGTERM.
  const ephKey = lab.authKey({ reusable: true, ephemeral: true });
  for (let i = 0; i < runs; i++) {
    const n = lab.addNode(`w${i}`);
    const t0 = Date.now();
    const r = lab.up(n, ephKey, ['--state', 'mem:', '--wait-for', targetAddr, '--timeout', '30s']);
    if (r.status !== 0) throw new Error(`meshd up --wait-for: ${r.stderr}`);
    out.meshd.upWaitForMs.push(Date.now() - t0);
    const pid = agentPid(n.ns);
    const t1 = Date.now();
    process.kill(pid, 'SIGTERM');
    for (let j = 0; j < 300 && lab.nodeList().some((x) => x.given_name === n.name); j++) await new Promise((res) => setTimeout(res, 50));
    out.meshd.sigtermToGoneMs.push(Date.now() - t1);
  }
  // The tailscaled half starts from an empty tailnet.
  for (const n of lab.nodes) lab.meshd(n, ['down']);
  for (const x of lab.nodeList()) lab.hs(['nodes', 'delete', '-i', String(x.id), '--force']);
  if (tsd && ts) {
    const tt = await tailscaledNode('tt');
    if (tsUp(tt, key).status !== 0) throw new Error('tailscaled target did not come up');
    const ttAddr = lab.tailscale(tt, ['ip', '-4']).stdout.trim();
    for (let i = 0; i < runs; i++) {
      const node = await tailscaledNode(`t${i}`);
      const t0 = Date.now();
      const r = tsUp(node, key);
      if (r.status !== 0) throw new Error(`tailscale up: ${r.stderr}`);
      if (!pingUntil(node.ns, ttAddr, t0 + 30_000)) throw new Error('tailscaled: no ping reply within 30 s');
      out.tailscaled.upToPingMs.push(Date.now() - t0);
      if (i === 2) {
        await new Promise((r) => setTimeout(r, 2000));
        out.tailscaled.peersOfMeasured = Object.keys(JSON.parse(lab.tailscale(node, ['status', '--json']).stdout).Peer ?? {}).length;
        out.tailscaled.rssKb = rssKb(node.ns, 'tailscaled');
      }
    }
    // As a CI job would: tailscale up, then tailscale ping until the first pong.
    for (let i = 0; i < runs; i++) {
      const node = await tailscaledNode(`u${i}`);
      const t0 = Date.now();
      const r = tsUp(node, key);
      if (r.status !== 0) throw new Error(`tailscale up: ${r.stderr}`);
      let ok = false;
      for (let j = 0; j < 60 && !ok && Date.now() - t0 < 30_000; j++) {
        ok = lab.tailscale(node, ['ping', '--until-direct=false', '-c', '1', '--timeout', '2s', ttAddr], 10_000).status === 0;
      }
      if (!ok) throw new Error('tailscale ping: no pong within 30 s');
      out.tailscaled.upThenPingMs.push(Date.now() - t0);
    }
  }
} finally {
  await lab.dispose();
}
out.meshd.medianUpToPingMs = median(out.meshd.upToPingMs);
out.tailscaled.medianUpToPingMs = out.tailscaled.upToPingMs.length ? median(out.tailscaled.upToPingMs) : undefined;
out.meshd.medianUpWaitForMs = median(out.meshd.upWaitForMs);
out.meshd.medianSigtermToGoneMs = median(out.meshd.sigtermToGoneMs);
out.tailscaled.medianUpThenPingMs = out.tailscaled.upThenPingMs.length ? median(out.tailscaled.upThenPingMs) : undefined;
if (asJson) console.log(JSON.stringify(out, null, 2));
else {
  console.log(`| agent (headscale lab, ${runs} runs) | up -> first ping reply, median ms | idle RSS MiB, 3 peers |`);
  console.log('|---|---|---|');
  console.log(`| meshd (meshd peer) | ${out.meshd.medianUpToPingMs} | ${out.meshd.rssKb ? (out.meshd.rssKb / 1024).toFixed(1) : '- (needs 3 runs)'} |`);
  if (out.tailscaled.medianUpToPingMs !== undefined) console.log(`| tailscaled 1.102.3 (tailscaled peer) | ${out.tailscaled.medianUpToPingMs} | ${out.tailscaled.rssKb ? (out.tailscaled.rssKb / 1024).toFixed(1) : '- (needs 3 runs)'} |`);
  console.log('');
  console.log(`| as a CI job (${runs} runs) | up until a peer answers, median ms | SIGTERM -> node gone from headscale, median ms |`);
  console.log('|---|---|---|');
  console.log(`| meshd up --wait-for (mem:, ephemeral key) | ${out.meshd.medianUpWaitForMs} | ${out.meshd.medianSigtermToGoneMs} |`);
  if (out.tailscaled.medianUpThenPingMs !== undefined) {
    console.log(`| tailscale up + tailscale ping | ${out.tailscaled.medianUpThenPingMs} | - |`);
    console.log(`ratio meshd / tailscaled (up until a peer answers): ${(out.meshd.medianUpWaitForMs / out.tailscaled.medianUpThenPingMs).toFixed(2)}`);
  }
  console.log(`raw: ${JSON.stringify(out)}`);
}
