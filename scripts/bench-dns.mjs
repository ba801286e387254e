#!/usr/bin/env node
// MagicDNS throughput and latency: dnsperf (Debian) against meshd's 100.100.100.100 and tailscaled's
// in the same headscale lab, for tailnet names (answered locally) and forwarded names (a dnsmasq
// upstream in its own namespace). Queries/s and p50/p99 latency per run; the ratio meshd/tailscaled.
// Each node has a private /etc (both take over resolv.conf with --accept-dns); the host's stays.
//   sudo node scripts/bench-dns.mjs [--seconds N] [--rounds N] [--json]     (MESHD_PROF_DIR=dir: CPU profile of meshd)
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TailnetLab, HS_URL } from '../dist/test/harness/hslab.js';
import { waitFor } from '../dist/test/harness/netns.js';

const arg = (name, def) => { const i = process.argv.indexOf(name); return i > 0 ? Number(process.argv[i + 1]) : def; };
const seconds = arg('--seconds', 5);
const rounds = arg('--rounds', 1);
const asJson = process.argv.includes('--json');
const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor((s.length - 1) / 2)]; };
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(s.length * p))]; };

const GLOBAL_DNS = '198.18.0.53';
const lab = new TailnetLab('bdns', { dns: `dns:
  magic_dns: true
  base_domain: meshd.test
  override_local_dns: true
  nameservers:
    global: [${GLOBAL_DNS}]
  search_domains: []
  extra_records:
    - name: grafana.meshd.test
      type: A
      value: 100.64.0.99` });
const privateEtc = (n) => { const d = join(n.dir, 'etc'); cpSync('/etc', d, { recursive: true, verbatimSymlinks: true }); return ['unshare', '-m', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc && exec "$@"', d]; };

/** dnsperf for `seconds` against quad-100 in namespace ns; queries/s and latency percentiles (ms). */
function dnsperf(ns, dataFile) {
  // -v prints every query with its latency: too much for a pipe buffer, so it goes to a file.
  const log = join(lab.dir, 'dnsperf.out');
  const r = lab.lab.tryExec(ns, ['sh', '-c', `dnsperf -s 100.100.100.100 -d ${dataFile} -l ${seconds} -c 4 -q 64 -t 2 -v > ${log} 2>&1`], (seconds + 30) * 1000);
  const text = readFileSync(log, 'utf8');
  if (r.status !== 0) throw new Error(`dnsperf failed: ${text.slice(-500)}`);
  r.stdout = text;
  const lat = [];
  let bad = 0;
  for (const line of text.split('\n')) {
    const m = /^> (\w+) .* ([\d.]+)$/.exec(line);
    if (!m) continue;
    if (m[1] !== 'NOERROR') bad++;
    lat.push(Number(m[2]) * 1000);
  }
  const qps = Number(/Queries per second:\s+([\d.]+)/.exec(r.stdout)?.[1] ?? 0);
  const lost = Number(/Queries lost:\s+(\d+)/.exec(r.stdout)?.[1] ?? 0);
  if (lat.length === 0) throw new Error(`dnsperf: no answers\n${r.stdout.slice(-1000)}`);
  return { qps, p50: pct(lat, 0.5), p99: pct(lat, 0.99), answered: lat.length, notNoerror: bad, lost };
}

let agent;
const out = { seconds, rounds, meshd: { tailnet: [], forwarded: [] }, tailscaled: { tailnet: [], forwarded: [] } };
try {
  const up = lab.lab.ns('g53');
  lab.lab.attach(up, lab.sw, [`${GLOBAL_DNS}/24`]);
  lab.lab.spawn(up, ['dnsmasq', '-k', '--conf-file=/dev/null', '--no-resolv', '--no-hosts', '--user=root', '--pid-file=',
    `--listen-address=${GLOBAL_DNS}`, '--bind-interfaces', '--local-ttl=60', '--dns-forward-max=1000',
    ...Array.from({ length: 20 }, (_, i) => `--host-record=www${i}.example.net,198.18.1.${i + 1}`)]);
  await lab.startHeadscale();
  const key = lab.authKey({ reusable: true });
  const m = lab.addNode('m1');
  const t = lab.addNode('t1');
  const mPrefix = privateEtc(m);
  {
    // The agent runs as `meshd daemon` spawned by this script, as tailscaled is: both in this
    // script's session. An agent that `up` starts detaches into a session of its own, which the
    // kernel's autogroup scheduler treats as a separate group: on a shared machine that alone
    // moved meshd's numbers by 2-4x. MESHD_PROF_DIR=dir adds --cpu-prof.
    const prof = process.env.MESHD_PROF_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.MESHD_PROF_DIR}`] : [];
    agent = lab.lab.spawn(m.ns, [...mPrefix, 'env', 'MESHD_DERP_HTTP=1', process.execPath, ...prof,
      lab.meshdBin, '--socket', m.socket, 'daemon', '--state-dir', join(m.dir, 'state')]);
    await waitFor('the agent', () => lab.agentRunning(m), 10_000, 100);
  }
  const keyFile = join(m.dir, 'authkey');
  writeFileSync(keyFile, key, { mode: 0o600 });
  const r = lab.lab.tryExec(m.ns, [...mPrefix, 'env', 'MESHD_DERP_HTTP=1', process.execPath, lab.meshdBin, '--socket', m.socket, 'up',
    '--login-server', HS_URL, '--authkey', `file:${keyFile}`, '--hostname', 'm1', '--state-dir', join(m.dir, 'state'), '--timeout', '45s'], 60_000);
  if (r.status !== 0) throw new Error(`meshd up: ${r.stderr}`);
  await lab.startTailscaled(t, key, {}, privateEtc(t));
  if (lab.tailscale(t, ['set', '--accept-dns=true']).status !== 0) throw new Error('tailscale set --accept-dns=true failed');
  await waitFor('both to see each other', () => lab.tailscale(t, ['status']).stdout.includes('m1')
    && JSON.parse(lab.meshd(m, ['status', '--json']).stdout).peers.length === 1, 20_000, 250);
  const tailnetData = join(lab.dir, 'tailnet.txt');
  writeFileSync(tailnetData, ['t1.meshd.test A', 'm1.meshd.test A', 'grafana.meshd.test A', 't1.meshd.test AAAA', 'nope.meshd.test A', '2.0.64.100.in-addr.arpa PTR'].join('\n') + '\n');
  const fwdData = join(lab.dir, 'forwarded.txt');
  writeFileSync(fwdData, Array.from({ length: 20 }, (_, i) => `www${i}.example.net A`).join('\n') + '\n');
  // Warm up both (first forwards open sockets, JIT).
  dnsperfQuick(m.ns, fwdData); dnsperfQuick(t.ns, fwdData);
  for (let i = 0; i < rounds; i++) {
    for (const [who, node] of [['meshd', m], ['tailscaled', t]]) {
      out[who].tailnet.push(dnsperf(node.ns, tailnetData));
      out[who].forwarded.push(dnsperf(node.ns, fwdData));
    }
  }
} finally {
  if (agent) { agent.kill('SIGTERM'); await new Promise((r) => agent.once('exit', r)); }
  await lab.dispose();
}

function dnsperfQuick(ns, data) {
  lab.lab.tryExec(ns, ['dnsperf', '-s', '100.100.100.100', '-d', data, '-l', '1', '-c', '1', '-q', '8'], 20_000);
}

const summary = {};
for (const kind of ['tailnet', 'forwarded']) {
  const s = (who) => ({ qps: median(out[who][kind].map((x) => x.qps)), p50: median(out[who][kind].map((x) => x.p50)), p99: median(out[who][kind].map((x) => x.p99)) });
  const a = s('meshd'), b = s('tailscaled');
  summary[kind] = { meshd: a, tailscaled: b, qpsRatio: a.qps / b.qps, p99Ratio: a.p99 / b.p99 };
}
if (asJson) console.log(JSON.stringify({ ...out, summary }, null, 2));
else {
  console.log(`dnsperf -c 4 -q 64 for ${seconds} s per run, ${rounds} round(s), median; latency in ms`);
  console.log('| names | meshd q/s | p50 | p99 | tailscaled q/s | p50 | p99 | q/s ratio | p99 ratio |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const [k, v] of Object.entries(summary)) {
    const f = (x) => x.toFixed(2);
    console.log(`| ${k} | ${v.meshd.qps.toFixed(0)} | ${f(v.meshd.p50)} | ${f(v.meshd.p99)} | ${v.tailscaled.qps.toFixed(0)} | ${f(v.tailscaled.p50)} | ${f(v.tailscaled.p99)} | ${f(v.qpsRatio)} | ${f(v.p99Ratio)} |`);
  }
  for (const who of ['meshd', 'tailscaled']) for (const k of ['tailnet', 'forwarded']) {
    const x = out[who][k][0];
    console.log(`# ${who} ${k}: answered ${x.answered}, not NOERROR ${x.notNoerror}, lost ${x.lost}`);
  }
}
