#!/usr/bin/env node
// Chaos lab: a pair of meshd nodes and a pair of unmodified tailscaled nodes, each behind its own
// NAT router, on headscale v0.29.2 (embedded DERP) in network namespaces. For each impairment a
// hash-checked TCP transfer runs through the tunnel of each pair at the same time; the table says
// whether the bytes arrived intact and how long it took, meshd next to tailscaled.
//
// Impairments (on the NAT routers' forwarding path, UDP only, so control and DERP over TCP live):
//   loss10     nftables `numgen random mod 100 < 10` drops 10% of the underlay datagrams
//   natflush   mid-transfer, the routers' WAN links go down and up: masquerade drops its mappings
//   linkdown   mid-transfer, the senders' LAN links are down for --down-seconds (default 20)
//   hsrestart  mid-transfer, headscale (and its DERP) restarts
// Not yet: delay, duplication and reordering (they need a userspace UDP relay in the lab; tc netem
// is missing here), underlay address change, DERP unreachable for 60 s, and the soak mode.
//
//   npm run build && sudo node scripts/chaos.mjs [--mb 64] [--only loss10,natflush] [--down-seconds 20]
import { parseArgs } from 'node:util';
import { join } from 'node:path';

const { values: opt } = parseArgs({ options: { mb: { type: 'string', default: '64' }, only: { type: 'string' }, 'down-seconds': { type: 'string', default: '20' } } });
const root = new URL('..', import.meta.url).pathname;
const { TailnetLab } = await import(join(root, 'dist/test/harness/hslab.js'));
const { waitFor } = await import(join(root, 'dist/test/harness/netns.js'));
const BYTES = Number(opt.mb) << 20;
const downMs = Number(opt['down-seconds']) * 1000;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

if (process.getuid?.() !== 0) { console.error('chaos: needs root (network namespaces)'); process.exit(2); }
const lab = new TailnetLab('chaos');
const rows = [];
try {
  await lab.startHeadscale();
  const key = lab.authKey({ reusable: true });
  const m1 = lab.addNatNode('m1', 'easy'), m2 = lab.addNatNode('m2', 'easy');
  const t1 = lab.addNatNode('t1', 'easy'), t2 = lab.addNatNode('t2', 'easy');
  for (const n of [m1, m2]) {
    const r = lab.up(n, key);
    if (r.status !== 0) throw new Error(`meshd up on ${n.name}: ${r.stderr}`);
  }
  await lab.startTailscaled(t1, key);
  await lab.startTailscaled(t2, key);
  const meshIp = (n) => JSON.parse(lab.meshd(n, ['status', '--json']).stdout).self.addresses.find((a) => !a.includes(':'));
  const tsIp = (n) => lab.tailscale(n, ['ip', '-4']).stdout.trim();
  const pairs = [
    { peer: 'meshd', from: m1, to: m2, ip: meshIp(m2) },
    { peer: 'tailscaled', from: t1, to: t2, ip: tsIp(t2) },
  ];
  for (const p of pairs) await waitFor(`${p.peer} pair to reach each other`, () => lab.ping(p.from, p.ip, 1), 60_000, 1000);
  const routers = ['r1', 'r2', 'r3', 'r4'].map((r) => `${lab.lab.prefix}-${r}`);

  const scenarios = {
    loss10: {
      during: () => { for (const r of routers) lab.lab.exec(r, ['nft', '-f', '-'], { input: 'table inet chaos {\n  chain impair {\n    type filter hook forward priority -10; policy accept;\n    meta l4proto udp numgen random mod 100 < 10 drop\n  }\n}\n' }); },
      after: () => { for (const r of routers) lab.lab.tryExec(r, ['nft', 'delete', 'table', 'inet', 'chaos']); },
    },
    natflush: {
      mid: () => { for (const r of routers) { lab.lab.exec(r, ['ip', 'link', 'set', 'wan', 'down']); lab.lab.exec(r, ['ip', 'link', 'set', 'wan', 'up']); } },
    },
    linkdown: {
      mid: async () => {
        for (const n of [m1, t1]) lab.lab.exec(n.ns, ['ip', 'link', 'set', 'veth0', 'down']);
        await sleep(downMs);
        for (const n of [m1, t1]) {
          lab.lab.exec(n.ns, ['ip', 'link', 'set', 'veth0', 'up']);
          lab.lab.tryExec(n.ns, ['ip', 'route', 'replace', 'default', 'via', `198.19.${n === m1 ? 1 : 3}.1`]);
        }
      },
    },
    hsrestart: {
      mid: async () => { await lab.stopHeadscale(); await sleep(2000); await lab.startHeadscale(); },
    },
  };
  const wanted = opt.only ? opt.only.split(',') : Object.keys(scenarios);
  let port = 7000;
  for (const name of wanted) {
    const sc = scenarios[name];
    if (!sc) throw new Error(`unknown scenario ${name}`);
    sc.during?.();
    const runs = pairs.map(async (p) => {
      const myPort = ++port;
      const got = lab.xferServe(p.to, p.ip, myPort);
      got.catch(() => {});
      await waitFor(`the ${p.peer} receiver to listen`, () => lab.lab.tryExec(p.to.ns, ['ss', '-tlnH', 'sport', '=', `:${myPort}`]).stdout.trim() !== '', 10_000, 100);
      const t0 = performance.now();
      try {
        const sent = await lab.xferSendAsync(p.from, p.ip, myPort, BYTES);
        const recv = await got;
        return { scenario: name, peer: p.peer, mb: Number(opt.mb), intact: sent.sha256 === recv.sha256 && recv.bytes === BYTES, seconds: Number(((performance.now() - t0) / 1000).toFixed(1)) };
      } catch (e) {
        return { scenario: name, peer: p.peer, mb: Number(opt.mb), intact: false, seconds: Number(((performance.now() - t0) / 1000).toFixed(1)), error: String(e.message).slice(0, 80) };
      }
    });
    if (sc.mid) { await sleep(500); await sc.mid(); }
    rows.push(...await Promise.all(runs));
    sc.after?.();
    console.table(rows.slice(-2));
  }
} finally {
  await lab.dispose();
}
console.table(rows);
if (rows.some((r) => r.intact === false)) process.exitCode = 1;
