#!/usr/bin/env node
// Scale: a control server (test/harness/fakecontrol.ts, the real TS2021 protocol: Noise IK, HTTP/2,
// map frames) sends a map of N peers and then one-peer deltas; the client does what the agent does
// with them: fold into NetworkMap, plan routes, update the packet filter, and sync the WireGuard
// device's peers (a real src/wg Device, no I/O). Reports, per N:
//   full map    from the server writing the frame to the device holding every peer
//   delta       one peer roams (PeersChangedPatch), median and p95 over 50 deltas: frame -> device
//   plan        of that, the routing side (route plan + packet filter; a delta that changes no
//               routing input keeps the last plan)
//   RSS/peer    RSS growth after GC divided by N (tailscale's budget: 64 KiB)
//   loop stall  longest event-loop delay while the full map is applied (forwarding shares the
//               loop, so this bounds the extra forwarding RTT; the packet path is not measured here)
//
//   npm run build && node --expose-gc scripts/bench-scale.mjs [1000 10000]
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { join } from 'node:path';

if (!global.gc) {
  const { spawnSync } = await import('node:child_process');
  process.exit(spawnSync(process.execPath, ['--expose-gc', ...process.argv.slice(1)], { stdio: 'inherit' }).status ?? 1);
}
const dist = join(new URL('..', import.meta.url).pathname, 'dist');
const { FakeControl } = await import(join(dist, 'test/harness/fakecontrol.js'));
const { bigMap, onePeerDelta } = await import(join(dist, 'test/harness/bigmap.js'));
const { ControlClient } = await import(join(dist, 'src/control/client.js'));
const { encodeMapFrame } = await import(join(dist, 'src/control/mapframe.js'));
const { formatNodePublic, generateKeyPair } = await import(join(dist, 'src/control/keys.js'));
const { Routing } = await import(join(dist, 'src/daemon/routing.js'));
const { syncPeers, syncPeersInTurns } = await import(join(dist, 'src/daemon/peersync.js'));
const { Device } = await import(join(dist, 'src/wg/device.js'));

const sizes = process.argv.slice(2).map(Number).filter((n) => n > 0);
const DELTAS = 50;
const rss = () => { global.gc(); global.gc(); return process.memoryUsage().rss; };
const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))];

async function run(n) {
  const fc = await FakeControl.start();
  let stream;
  fc.handler = (path, _body, s) => {
    if (path === '/machine/map') { s.respond({ ':status': 200 }); stream = s; return; }
    s.respond({ ':status': 200 });
    s.end('{}');
  };
  const client = new ControlClient({ serverUrl: fc.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey });
  const device = new Device({ clock: { now: () => performance.now(), wall: () => Date.now() } });
  device.setPrivateKey(generateKeyPair().privateKey); // as in the agent: peers get a static-static DH (computed lazily since d847eb1)
  // The agent's routing side without a router (no ip/nft): route plan and packet filter.
  const routing = new Routing('meshd0', () => {});
  const applied = new Map();
  let planMs = 0;
  let done;
  const apply = async (map, touched) => {
    const p0 = performance.now();
    const allowed = await routing.apply(map, touched);
    planMs = performance.now() - p0;
    const sink = {
      upsert: (p, allowedIPs, replace = true) => device.setPeer(p.nodeKey, { allowedIPs: [...allowedIPs], replaceAllowedIPs: replace }),
      remove: (p) => device.removePeer(p.nodeKey),
    };
    const allowedOf = (p) => allowed.get(p.id) ?? p.addresses;
    // As the agent (src/daemon/agent.ts applyMapNow): a whole map of more than 256 peers in turns.
    if (syncPeersInTurns && touched === 'all' && map.peers.size > 256) await syncPeersInTurns(applied, map.peers, allowedOf, sink, { chunk: 256 });
    else syncPeers(applied, map.peers, allowedOf, sink, touched);
    done?.();
  };
  const s = client.streamMap({
    endpoints: [],
    onMap: (map) => apply(map, 'all'),
    onDelta: (d, map) => apply(map, d.fullPeers || d.selfChanged ? 'all' : new Set([...d.peersAdded, ...d.peersChanged, ...d.peersRemoved])),
  });
  for (let i = 0; i < 500 && !stream; i++) await new Promise((r) => setTimeout(r, 10));
  if (!stream) throw new Error('the client never asked for the map');
  const base = rss();
  let frame = encodeMapFrame(bigMap(n, formatNodePublic(client.nodePublic)));
  const frameMb = frame.length / 2 ** 20;
  const loop = monitorEventLoopDelay({ resolution: 5 });
  loop.enable();
  let t0 = performance.now();
  await new Promise((r) => { done = r; stream.write(frame); });
  const fullMs = performance.now() - t0;
  const fullPlanMs = planMs;
  // Let the delay monitor's timer fire once more, so a block that ended the apply is recorded.
  await new Promise((r) => setTimeout(r, 50));
  loop.disable();
  frame = undefined;
  if (device.peers().length !== n) throw new Error(`device holds ${device.peers().length} peers, want ${n}`);
  const perPeer = (rss() - base) / n;
  const deltas = [], plans = [];
  for (let k = 1; k <= DELTAS; k++) {
    const f = encodeMapFrame(onePeerDelta(k * 7 % n + 1, k));
    t0 = performance.now();
    await new Promise((r) => { done = r; stream.write(f); });
    deltas.push(performance.now() - t0);
    plans.push(planMs);
  }
  await s.close();
  await client.close();
  await fc.stop();
  return {
    peers: n, frameMiB: Number(frameMb.toFixed(1)), fullMapMs: Math.round(fullMs), fullPlanMs: Number(fullPlanMs.toFixed(1)),
    deltaMedianMs: Number(pct(deltas, 0.5).toFixed(2)), deltaP95Ms: Number(pct(deltas, 0.95).toFixed(2)),
    deltaPlanMs: Number(pct(plans, 0.5).toFixed(2)), rssPerPeerKiB: Number((perPeer / 1024).toFixed(1)),
    loopStallMs: Number((loop.max / 1e6).toFixed(0)),
  };
}

const rows = [];
for (const n of sizes.length ? sizes : [1000, 10000]) rows.push(await run(n));
console.table(rows);
console.log('delta = server writes a one-peer PeersChangedPatch -> the WireGuard device has it (TS2021, HTTP/2, NetworkMap, plan, filter, peer sync);');
console.log('deltaPlanMs is the part spent in Routing.apply (route plan and packet filter; kept when no routing input changed).');
