#!/usr/bin/env node
// Userspace networking through the SOCKS5 proxy: meshd --tun=userspace-networking against
// tailscaled --tun=userspace-networking --socks5-server, both to the same tailscaled peer (TUN
// mode) in one headscale lab, alternated per round. TCP throughput down and up (curl through the
// proxy, HTTP from scripts/httpblob.mjs, hash-checked), connections per second (SOCKS5 CONNECT +
// 1 KiB GET, 32 at a time), idle RSS, and CPU seconds per GB of the proxying agent.
//   sudo node scripts/bench-netstack.mjs [--rounds N] [--mb N] [--json] [--phases]
//     [--base BIN]  also measure another meshd build (BIN = its bin/meshd.js) in the same lab, alternated
//     [--down-only]  only the download (upload and connections print 0)
//     [--node-flags 'FLAGS']  extra Node flags for the meshd daemons (e.g. '--cpu-prof --cpu-prof-dir=/tmp/p', '--trace-gc')
//     [--subject-flags 'FLAGS']  Node flags for the meshd under test only (not --base)
//     [--subject-env K=V]  environment for the meshd under test only (repeatable; e.g. MESHD_JIT_FLAGS=0)
//     [--agent-log FILE]  append each meshd daemon's output to FILE.<node>
//     [--strace DIR] count each agent's system calls per phase (strace -c; DIR/<node>-<phase>.txt; numbers skewed)
//     [--warm-conns N]  N SOCKS5 connections through each agent before measuring (JIT warm-up; idle RSS is then after it)
//     [--threads]  CPU per connection of each agent thread in the connection phase (tid - pid; 0 = main)
//     [--mem]  meshd's idle memory by kind (its metrics) and each agent's anonymous/file-backed RSS
//     [--system]  per transfer: machine-wide CPU use (/proc/stat, in CPUs), the peer's tailscaled and HTTP
//                 server's CPU per GB, and the agent's busiest threads (name:CPU s/GB/thousand sleeps per GB/wCPU-wait s per GB)
//     [--ss DIR]  sample the peer's kernel TCP socket (ss -tin: cwnd, rtt, rwnd_limited, ...) every
//                 0.25 s during each transfer into DIR/<node>-<down|up>-<round>.txt
//     [--perf DIR]  record meshd with perf per phase (DIR/down.data, up.data, conns.data; the daemon
//                   runs with --perf-basic-prof so JIT frames have names; numbers are then skewed)
import { createHash } from 'node:crypto';
import { appendFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync, spawn as spawnAsync } from 'node:child_process';
import { TailnetLab, HS_URL } from '../dist/test/harness/hslab.js';
import { which } from '../dist/test/harness/prereq.js';
import { waitFor } from '../dist/test/harness/netns.js';

const arg = (name, dflt) => { const i = process.argv.indexOf(name); return i > 0 ? Number(process.argv[i + 1]) : dflt; };
const rounds = arg('--rounds', 2);
const mb = arg('--mb', 50);
const asJson = process.argv.includes('--json');
const conc = arg('--conc', 32);
const bi = process.argv.indexOf('--base');
const baseBin = bi > 0 ? process.argv[bi + 1] : undefined;
const connsOnly = process.argv.includes('--conns-only');
// --down-only: only the download (a quick look at one direction; upload and connections print 0).
const downOnly = process.argv.includes('--down-only');
const si = process.argv.indexOf('--strace');
const straceDir = si > 0 ? process.argv[si + 1] : undefined;
const pi = process.argv.indexOf('--perf');
const perfDir = pi > 0 ? process.argv[pi + 1] : undefined;
const ali = process.argv.indexOf('--agent-log');
const agentLog = ali > 0 ? process.argv[ali + 1] : undefined;
const nfi = process.argv.indexOf('--node-flags');
const nodeFlags = nfi > 0 ? process.argv[nfi + 1].split(/\s+/).filter(Boolean) : [];
// --subject-flags: only for the meshd under test (not --base), to compare Node/V8 settings in one run.
const sfi = process.argv.indexOf('--subject-flags');
const subjectFlags = sfi > 0 ? process.argv[sfi + 1].split(/\s+/).filter(Boolean) : [];
// --subject-env K=V (repeatable): environment for the meshd under test only (e.g. MESHD_JIT_FLAGS=0 with --base the same build).
const subjectEnv = process.argv.flatMap((a, i) => (a === '--subject-env' ? [process.argv[i + 1]] : []));
if (perfDir) process.env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --perf-basic-prof`.trim();
const root = new URL('..', import.meta.url).pathname;
const blob = join(root, 'scripts', 'httpblob.mjs');
const load = join(root, 'scripts', 'socks-load.mjs');
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]; };
const tsd = which('tailscaled'), ts = which('tailscale');
if (!tsd || !ts) { console.error('bench-netstack: tailscaled is not built: run scripts/install-peers.sh'); process.exit(1); }

const lab = new TailnetLab('bnst');

function agentPid(ns, needle) {
  for (const pid of spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean)) {
    let cmd = '';
    try { cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8'); } catch { continue; }
    if (cmd.includes(needle)) return Number(pid);
  }
  throw new Error(`no ${needle} process in ${ns}`);
}
/** Seconds on CPU and waiting for a CPU (run queue) summed over the process's threads (/proc schedstat). */
function sched(pid) {
  let run = 0, wait = 0;
  for (const t of readdirSync(`/proc/${pid}/task`)) {
    try { const [a, b] = readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ').map(Number); run += a / 1e9; wait += b / 1e9; } catch { /* thread gone */ }
  }
  return { run, wait };
}
/** CPU seconds per thread of pid (Map tid -> s). */
const threadCpuS = (pid) => {
  const m = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try { const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').split(') ')[1].split(' '); m.set(tid, (Number(f[11]) + Number(f[12])) / 100); } catch { /* thread gone */ }
  }
  return m;
};
/** CPU seconds of the busiest thread between two threadCpuS snapshots: alone on a machine, the bound on one agent's rate. */
const busiest = (a, b) => { let x = 0; for (const [tid, s] of b) x = Math.max(x, s - (a.get(tid) ?? 0)); return x; };
const cpuS = (pid) => { const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' '); return (Number(f[11]) + Number(f[12])) / 100; };
const statusMem = (pid) => ['VmRSS', 'RssAnon', 'RssFile', 'Threads'].map((k) => `${k}=${new RegExp(`${k}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]}`).join(' ');
/** Busy and total jiffies of the whole machine (/proc/stat cpu line). */
const machine = () => { const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number); const tot = f.reduce((a, b) => a + b, 0); return { busy: tot - f[3] - f[4], tot }; };
/** CPU seconds per thread of pid with names (Map tid -> {name, s}). */
const threadsNamed = (pid) => {
  const m = new Map();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try { const st = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8'); const name = tid === String(pid) ? 'main' : st.slice(st.indexOf('(') + 1, st.lastIndexOf(')')); const f = st.slice(st.lastIndexOf(') ') + 2).split(' '); const sw = /voluntary_ctxt_switches:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'))?.[1]; const wait = Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[1]) / 1e9; m.set(tid, { name, s: (Number(f[11]) + Number(f[12])) / 100, sw: Number(sw ?? 0), wait }); } catch { /* thread gone */ }
  }
  return m;
};
const systemOn = process.argv.includes('--system');
let sysPids = {};
/** --system: snapshot before a transfer; the returned function gives the summary after it. */
function systemAround(pid) {
  if (!systemOn) return () => undefined;
  const m0 = machine(), th0 = threadsNamed(pid), o0 = Object.fromEntries(Object.entries(sysPids).map(([k, p]) => [k, cpuS(p)]));
  return (gb) => {
    const m1 = machine(), th1 = threadsNamed(pid);
    // name:CPU s/GB/thousands of voluntary context switches (sleeps) per GB/seconds per GB runnable but waiting for a CPU
    const threads = [...th1].map(([tid, { name, s, sw, wait }]) => [name, (s - (th0.get(tid)?.s ?? 0)) / gb, (sw - (th0.get(tid)?.sw ?? 0)) / gb / 1000, (wait - (th0.get(tid)?.wait ?? 0)) / gb]).filter(([, v]) => v > 0.05).sort((a, b) => b[1] - a[1]).slice(0, 5).map(([n, v, w, q]) => `${n}:${v.toFixed(2)}/${w.toFixed(0)}k/w${q.toFixed(2)}`).join(' ');
    const others = Object.fromEntries(Object.entries(sysPids).map(([k, p]) => [k, +((cpuS(p) - o0[k]) / gb).toFixed(2)]));
    return { machineBusy: +(2 * (m1.busy - m0.busy) / (m1.tot - m0.tot)).toFixed(2), ...others, threads };
  };
}
const rssMiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) / 1024;

function curl(ns, args, timeoutMs = 180_000) {
  const r = lab.lab.tryExec(ns, ['bash', '-c', `curl -sS --max-time ${Math.floor(timeoutMs / 1000) - 5} ${args}`], timeoutMs);
  if (r.status !== 0) throw new Error(`curl ${args}: ${r.stderr}`);
  return r.stdout;
}

/**
 * Starts `meshd daemon` from this script, as tailscaled is, so both agents run in this script's
 * session: an agent that `up` starts detaches into a session of its own, which the kernel's
 * autogroup scheduler treats as a separate group (see scripts/bench-dns.mjs), and on a shared
 * machine that alone changes its CPU share. Then `up` logs it in.
 */
async function startMeshd(node, bin, key) {
  const ns = ['--tun=userspace-networking', '--socks5-server', '127.0.0.1:1080'];
  const state = join(node.dir, 'state');
  // MALLOC_ARENA_MAX=2: the environment `up` starts the agent with (src/cli/agentspawn.ts agentEnv).
  const proc = lab.lab.spawn(node.ns, ['env', 'MESHD_DERP_HTTP=1', 'MALLOC_ARENA_MAX=2', ...(node.name === 'mu' ? subjectEnv : []), process.execPath, ...nodeFlags, ...(node.name === 'mu' ? subjectFlags : []), bin, '--socket', node.socket, 'daemon', '--state-dir', state, ...ns]);
  if (agentLog) for (const st of [proc.stdout, proc.stderr]) st?.on('data', (d) => appendFileSync(`${agentLog}.${node.name}`, d));
  await waitFor(`${node.name}'s agent`, () => lab.agentRunning(node), 15_000, 100);
  const keyFile = join(node.dir, 'authkey');
  writeFileSync(keyFile, key, { mode: 0o600 });
  const r = lab.lab.tryExec(node.ns, ['env', 'MESHD_DERP_HTTP=1', process.execPath, bin, '--socket', node.socket, 'up', '--login-server', HS_URL,
    '--authkey', `file:${keyFile}`, '--hostname', node.name, '--state-dir', state, '--timeout', '45s', ...ns], 60_000);
  if (r.status !== 0) throw new Error(`meshd up (${node.name}): ${r.stderr}`);
}

/** Runs fn while perf records pid into DIR/name.data (when --perf is given and who is meshd). */
const ssi = process.argv.indexOf('--ss');
const ssDir = ssi > 0 ? process.argv[ssi + 1] : undefined;
if (ssDir) mkdirSync(ssDir, { recursive: true });
const ssRound = {};
let peerNs;
function perfAround(who, pid, name, fn) {
  if (ssDir && name !== 'conns') {
    const k = `${who}-${name}`; ssRound[k] = (ssRound[k] ?? 0) + 1;
    const p = spawnAsync('ip', ['netns', 'exec', peerNs, 'bash', '-c', `for i in $(seq 80); do ss -tinH 'sport = :8000'; sleep 0.25; done > ${join(ssDir, `${k}-${ssRound[k]}.txt`)}`], { stdio: 'ignore' });
    try { return fn(); } finally { p.kill('SIGTERM'); }
  }
  if (straceDir) {
    const p = spawnAsync('strace', ['-c', '-f', '-p', String(pid), '-o', join(straceDir, `${who}-${name}.txt`)], { stdio: 'ignore' });
    spawnSync('sleep', ['0.5']);
    try { return fn(); } finally { p.kill('SIGINT'); spawnSync('sleep', ['0.5']); }
  }
  if (!perfDir || who !== 'mu') return fn();
  const p = spawnAsync('perf', ['record', '-q', '-F', process.env.PERF_FREQ ?? '999', '-g', '-p', String(pid), '-o', join(perfDir, `${name}.data`)], { stdio: 'ignore' });
  spawnSync('sleep', ['0.3']);
  try { return fn(); } finally { p.kill('SIGINT'); spawnSync('sleep', ['1']); }
}

/** One measurement set for an agent in namespace ns with its SOCKS5 proxy at 127.0.0.1:1080. */
function measure(node, pid, target) {
  const proxy = '--socks5-hostname 127.0.0.1:1080';
  const bytes = mb * 1024 * 1024;
  if (connsOnly) return { ...connections(node, pid, target), downMbit: 0, upMbit: 0, cpuSPerGbDown: 0, cpuSPerGbUp: 0, busySPerGbDown: 0, busySPerGbUp: 0 };
  const file = join(lab.dir, `${node.name}.dl`);
  let c0 = cpuS(pid), t0 = threadCpuS(pid);
  const s0 = sched(pid), w0 = performance.now();
  const sysDown = systemAround(pid);
  const dl = perfAround(node.name, pid, 'down', () => curl(node.ns, `${proxy} -D ${file}.h -o ${file} -w '%{speed_download}' http://${target}:8000/blob/${bytes}`));
  const cpuDown = cpuS(pid) - c0, busyDown = busiest(t0, threadCpuS(pid));
  const systemDown = sysDown(bytes / 1e9);
  const s1 = sched(pid), wall = (performance.now() - w0) / 1000;
  // Share of the download's wall time the agent's threads ran and waited for a CPU (a loaded machine shows as wait).
  const schedDown = { run: (s1.run - s0.run) / wall, wait: (s1.wait - s0.wait) / wall };
  const want = /x-sha256: *([0-9a-f]+)/i.exec(readFileSync(`${file}.h`, 'utf8'))?.[1];
  if (createHash('sha256').update(readFileSync(file)).digest('hex') !== want) throw new Error(`${node.name}: download hash mismatch`);
  rmSync(file); rmSync(`${file}.h`);
  if (downOnly) return { downMbit: Number(dl) * 8 / 1e6, upMbit: 0, cpuSPerGbDown: cpuDown / (bytes / 1e9), cpuSPerGbUp: 0, busySPerGbDown: busyDown / (bytes / 1e9), busySPerGbUp: 0, schedDown, systemDown, connsPerSec: 0, cpuMsPerConn: 0 };
  const up = join(lab.dir, `${node.name}.up`);
  lab.lab.exec(node.ns, ['bash', '-c', `head -c ${bytes} /dev/urandom > ${up}`]);
  const sent = createHash('sha256').update(readFileSync(up)).digest('hex');
  c0 = cpuS(pid); t0 = threadCpuS(pid);
  const sysUp = systemAround(pid);
  const ur = perfAround(node.name, pid, 'up', () => curl(node.ns, `${proxy} -T ${up} -w '\\n%{speed_upload}' http://${target}:8000/upload`));
  const cpuUp = cpuS(pid) - c0, busyUp = busiest(t0, threadCpuS(pid));
  const systemUp = sysUp(bytes / 1e9);
  rmSync(up);
  const [replyLine, speedUp] = ur.trim().split('\n');
  if (JSON.parse(replyLine).sha256 !== sent) throw new Error(`${node.name}: upload hash mismatch`);
  const gb = bytes / 1e9;
  return {
    downMbit: Number(dl) * 8 / 1e6, upMbit: Number(speedUp) * 8 / 1e6,
    cpuSPerGbDown: cpuDown / gb, cpuSPerGbUp: cpuUp / gb, busySPerGbDown: busyDown / gb, busySPerGbUp: busyUp / gb, schedDown, systemDown, systemUp, ...connections(node, pid, target),
  };
}

/** 500 SOCKS5 CONNECT + 1 KiB GETs, `conc` at a time: rate, CPU ms per connection, mean phase times. */
function connections(node, pid, target) {
  const c0 = cpuS(pid), t0 = threadCpuS(pid);
  const lr = perfAround(node.name, pid, 'conns', () => lab.lab.tryExec(node.ns, [process.execPath, load, '127.0.0.1', '1080', target, '8000', String(conc), '1024', '500'], 130_000));
  const cpu = cpuS(pid) - c0, t1 = threadCpuS(pid);
  // --threads: CPU ms per connection of each thread (tid - pid: 0 is the main thread), busiest first.
  const threads = [...t1].map(([tid, s]) => [Number(tid) - pid, (s - (t0.get(tid) ?? 0)) * 1000 / 500]).filter(([, ms]) => ms > 0).sort((a, b) => b[1] - a[1]);
  const lj = JSON.parse(lr.stdout.trim().split('\n').pop() || '{}');
  if (lj.ok !== 500) throw new Error(`${node.name}: connections failed: ${lr.stdout} ${lr.stderr}`);
  return { connsPerSec: 500 / (lj.ms / 1000), cpuMsPerConn: cpu * 1000 / 500, connPhasesMs: lj.phasesMs, threads };
}

const out = { rounds, mb, meshd: [], tailscaled: [], base: [], rss: {} };
try {
  await lab.startHeadscale();
  const key = lab.authKey({ reusable: true });
  const peer = lab.addNode('peer');
  await lab.startTailscaled(peer, key);
  const target = lab.tailscale(peer, ['ip', '-4']).stdout.trim();
  lab.lab.spawn(peer.ns, [process.execPath, blob, '0.0.0.0', '8000']);
  peerNs = peer.ns;
  if (systemOn) sysPids = { peerTailscaled: agentPid(peer.ns, 'tailscaled'), httpServer: agentPid(peer.ns, 'httpblob') };

  const mu = lab.addNode('mu');
  await startMeshd(mu, lab.meshdBin, key);

  let mb, bPid;
  if (baseBin) {
    mb = lab.addNode('mb');
    await startMeshd(mb, baseBin, key);
  }

  const tu = lab.addNode('tu');
  tu.socket = join(tu.dir, 'tailscaled.sock');
  const env = ['TS_DEBUG_USE_DERP_HTTP=1', 'TS_DISABLE_PORTMAPPER=1', 'TS_ASSUME_NETWORK_UP_FOR_TEST=1', 'TS_NO_LOGS_NO_SUPPORT=true'];
  lab.lab.spawn(tu.ns, ['env', ...env, tsd, `--statedir=${join(tu.dir, 'ts-state')}`, `--socket=${tu.socket}`, '--port=41641',
    '--tun=userspace-networking', '--socks5-server=127.0.0.1:1080', '--no-logs-no-support']);
  await waitFor('userspace tailscaled socket', () => { try { readFileSync(tu.socket); return true; } catch (e) { return e.code !== 'ENOENT'; } }, 15_000, 100);
  const tr = lab.tailscale(tu, ['up', `--login-server=${HS_URL}`, `--auth-key=${key}`, '--hostname=tu', '--accept-dns=false', '--timeout=45s'], 60_000);
  if (tr.status !== 0) throw new Error(`tailscale up (userspace): ${tr.stderr}`);

  const mPid = agentPid(mu.ns, 'meshd.js'), tPid = agentPid(tu.ns, 'tailscaled');
  if (mb) bPid = agentPid(mb.ns, 'meshd.js');
  // Warm-up: both reach the peer through their proxy (paths settle, direct).
  for (const n of [mu, tu, ...(mb ? [mb] : [])]) await waitFor(`${n.name} to reach the peer`, () => lab.lab.tryExec(n.ns, ['curl', '-sS', '--max-time', '3', '--socks5-hostname', '127.0.0.1:1080', `http://${target}:8000/`], 5000).status === 0, 30_000, 500);
  // --warm-conns N: N connections through each agent before measuring (V8 has compiled the per-connection
  // code: a fresh meshd spends ~40% of its CPU in its third round of 500 compiling it; see README).
  const warm = arg('--warm-conns', 0);
  if (warm > 0) {
    for (const n of [mu, tu, ...(mb ? [mb] : [])]) {
      const r = lab.lab.tryExec(n.ns, [process.execPath, load, '127.0.0.1', '1080', target, '8000', String(conc), '1024', String(warm)], 130_000);
      if (JSON.parse(r.stdout || '{}').ok !== warm) throw new Error(`${n.name}: warm-up connections failed: ${r.stdout} ${r.stderr}`);
    }
  }
  await new Promise((res) => setTimeout(res, 3000));
  out.rss = { meshd: rssMiB(mPid), tailscaled: rssMiB(tPid), ...(mb ? { base: rssMiB(bPid) } : {}) };
  // --mem: where meshd's idle memory is (its metrics: V8 spaces, malloc arenas) and the file-backed/anonymous split of each agent.
  if (process.argv.includes('--mem')) {
    for (const [who, n, pid] of [['meshd', mu, mPid], ...(mb ? [['base', mb, bPid]] : [])]) {
      const lines = lab.meshd(n, ['metrics']).stdout.split('\n').filter((l) => l.startsWith('meshd_process_memory_bytes'));
      console.log(who, lines.map((l) => { const m = /kind="([^"]+)"\} (\S+)/.exec(l); return m ? `${m[1]}=${(Number(m[2]) / 1048576).toFixed(1)}` : l; }).join(' '));
      console.log(who, statusMem(pid));
    }
    console.log('tailscaled', statusMem(tPid));
  }
  for (let i = 0; i < rounds; i++) {
    if (mb) out.base.push(measure(mb, bPid, target));
    out.meshd.push(measure(mu, mPid, target));
    out.tailscaled.push(measure(tu, tPid, target));
  }
  const st = JSON.parse(lab.meshd(mu, ['status', '--json']).stdout || '{}');
  const all = process.argv.includes('--all-counters');
  out.meshdCounters = Object.fromEntries(Object.entries(st.self?.counters ?? {}).filter(([k, v]) => v !== 0 && (all || /^(netstack|socks5)\.|drop|Drop/.test(k))));
} finally {
  await lab.dispose();
}

const keys = ['downMbit', 'upMbit', 'connsPerSec', 'cpuSPerGbDown', 'cpuSPerGbUp', 'busySPerGbDown', 'busySPerGbUp', 'cpuMsPerConn'];
const med = (who) => Object.fromEntries(keys.map((k) => [k, median(out[who].map((x) => x[k]))]));
const m = med('meshd'), t = med('tailscaled'), b = baseBin ? med('base') : undefined;
const summary = { ...out, median: { meshd: m, tailscaled: t, ratio: Object.fromEntries(keys.map((k) => [k, m[k] / t[k]])), rssRatio: out.rss.meshd / out.rss.tailscaled } };
if (asJson) console.log(JSON.stringify(summary, null, 2));
else {
  const f = (x) => x.toFixed(x >= 100 ? 0 : 2);
  console.log(`SOCKS5 through --tun=userspace-networking to a tailscaled peer, ${mb} MB, median of ${rounds}`);
  console.log(b ? '| | meshd (base) | meshd | tailscaled 1.102.3 | ratio base | ratio |\n|---|---|---|---|---|---|' : '| | meshd | tailscaled 1.102.3 | ratio |\n|---|---|---|---|');
  for (const [k, label] of [['downMbit', 'TCP down Mbit/s'], ['upMbit', 'TCP up Mbit/s'], ['connsPerSec', 'connections/s'], ['cpuSPerGbDown', 'CPU s/GB down'], ['cpuSPerGbUp', 'CPU s/GB up'], ['busySPerGbDown', 'busiest thread CPU s/GB down'], ['busySPerGbUp', 'busiest thread CPU s/GB up'], ['cpuMsPerConn', 'CPU ms/connection']]) {
    if (b) console.log(`| ${label} | ${f(b[k])} | ${f(m[k])} | ${f(t[k])} | ${(b[k] / t[k]).toFixed(2)} | ${(m[k] / t[k]).toFixed(2)} |`);
    else console.log(`| ${label} | ${f(m[k])} | ${f(t[k])} | ${(m[k] / t[k]).toFixed(2)} |`);
  }
  if (process.argv.includes('--counters') || process.argv.includes('--all-counters')) console.log(JSON.stringify(out.meshdCounters));
  if (process.argv.includes('--sched')) for (const who of ['meshd', 'tailscaled', ...(b ? ['base'] : [])]) console.log(who, 'download: threads running / waiting for a CPU, in CPUs:', out[who].map((x) => `${x.schedDown?.run.toFixed(2)} / ${x.schedDown?.wait.toFixed(2)}`).join(', '));
  if (systemOn) for (const who of ['meshd', 'tailscaled', ...(b ? ['base'] : [])]) for (const x of out[who]) console.log(who, 'down', JSON.stringify(x.systemDown), 'up', JSON.stringify(x.systemUp));
  if (process.argv.includes('--threads')) for (const who of ['meshd', 'tailscaled', ...(b ? ['base'] : [])]) console.log(who, 'connections, CPU ms per connection by thread (tid - pid +ms):', out[who].map((x) => x.threads.map(([t, ms]) => `${t}:${ms.toFixed(2)}`).join(' ')).join(' | '));
  if (process.argv.includes('--phases')) for (const who of ['meshd', 'tailscaled', ...(b ? ['base'] : [])]) console.log(who, 'connection phases (mean ms):', out[who].map((x) => JSON.stringify(x.connPhasesMs)).join(' '));
  if (b) console.log(`| idle RSS MiB | ${f(out.rss.base)} | ${f(out.rss.meshd)} | ${f(out.rss.tailscaled)} | ${(out.rss.base / out.rss.tailscaled).toFixed(2)} | ${(out.rss.meshd / out.rss.tailscaled).toFixed(2)} |`);
  else console.log(`| idle RSS MiB | ${f(out.rss.meshd)} | ${f(out.rss.tailscaled)} | ${(out.rss.meshd / out.rss.tailscaled).toFixed(2)} |`);
}

