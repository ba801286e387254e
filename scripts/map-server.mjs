#!/usr/bin/env node
// A control server for scripts/bench-map.mjs (runs inside a lab namespace): the in-process fake
// control server of the tests (test/harness/fakecontrol.ts) answering register and map requests
// for the real nodes that log in, with N synthetic peers added to every map; every PERIOD seconds
// it sends each node a new full map (every synthetic peer's endpoint changed), so the agents parse
// and apply N peers again and again. Prints {"url": ...} when listening and a line per push.
//   map-server.mjs HOST PORT PEERS PERIOD_S
import { FakeControl } from '../dist/test/harness/fakecontrol.js';
import { encodeMapFrame } from '../dist/src/control/mapframe.js';

const [host, portText, peersText, periodText] = process.argv.slice(2);
const N = Number(peersText), period = Number(periodText);
const fc = await FakeControl.start(host, Number(portText));
const nodes = new Map();
const streams = new Set();
let gen = 0;
const synthetic = Array.from({ length: N }, (_, i) => ({
  ID: 10_000 + i, StableID: `s${i}`, Name: `s${i}.bench.example.`, User: 1,
  // Distinct made-up keys (any 32 bytes do for configuration; 20,000 X25519 key generations took
  // longer than the bench waits for the server at 10,000 peers).
  Key: `nodekey:aa${i.toString(16).padStart(62, '0')}`, DiscoKey: `discokey:cc${i.toString(16).padStart(62, '0')}`,
  Addresses: [`100.${80 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`],
  AllowedIPs: [`100.${80 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`],
  Endpoints: [], HomeDERP: 0, Hostinfo: { Hostname: `s${i}`, OS: 'linux' }, Online: false, MachineAuthorized: true,
}));
const ALLOW_ALL = [{ SrcIPs: ['*'], DstPorts: [{ IP: '*', Ports: { First: 0, Last: 65535 } }] }];

function wireNode(n) {
  return {
    ID: n.id, StableID: `n${n.id}`, Name: `${n.hostname}.bench.example.`, User: 1, Key: n.key, DiscoKey: n.disco,
    Addresses: [`100.64.0.${n.id}/32`], AllowedIPs: [`100.64.0.${n.id}/32`], Endpoints: n.endpoints, HomeDERP: 0,
    Hostinfo: { Hostname: n.hostname, OS: 'linux' }, Online: true, MachineAuthorized: true,
  };
}
function fullMap(n) {
  for (const s of synthetic) s.Endpoints = [`198.18.1.${(s.ID + gen) % 250 + 1}:41641`];
  return {
    Node: wireNode(n),
    Peers: [...[...nodes.values()].filter((o) => o !== n && o.disco).map(wireNode), ...synthetic],
    DERPMap: { Regions: {} }, PacketFilter: ALLOW_ALL, Domain: 'bench.example', ControlTime: new Date().toISOString(),
  };
}
function pushAll() {
  gen++;
  for (const s of streams) s.stream.write(encodeMapFrame(fullMap(s.node)));
}

fc.handler = (path, body, stream) => {
  if (path === '/machine/register') {
    let n = nodes.get(body.NodeKey);
    if (!n) { n = { id: nodes.size + 1, key: body.NodeKey, disco: '', endpoints: [], hostname: body.Hostinfo?.Hostname || `n${nodes.size + 1}` }; nodes.set(body.NodeKey, n); }
    stream.respond({ ':status': 200, 'content-type': 'application/json' });
    stream.end(JSON.stringify({ MachineAuthorized: true, User: { ID: 1, LoginName: 'bench', DisplayName: 'bench' }, Login: { ID: 1, LoginName: 'bench', DisplayName: 'bench' } }));
    return;
  }
  if (path === '/machine/map') {
    const n = nodes.get(body.NodeKey);
    if (!n) { stream.respond({ ':status': 404 }); stream.end(); return; }
    if (body.DiscoKey) n.disco = body.DiscoKey;
    if (body.Endpoints) n.endpoints = body.Endpoints;
    if (body.Hostinfo?.Hostname) n.hostname = body.Hostinfo.Hostname;
    stream.respond({ ':status': 200 });
    if (!body.Stream) { stream.end(); pushAll(); return; }
    const s = { node: n, stream };
    streams.add(s);
    stream.on('close', () => streams.delete(s));
    stream.write(encodeMapFrame(fullMap(n)));
    pushAll(); // the others learn this node
    return;
  }
  stream.respond({ ':status': 404 });
  stream.end();
};
console.log(JSON.stringify({ url: fc.url }));
let pushing = false;
process.on('SIGUSR1', () => { pushing = !pushing; console.log(JSON.stringify({ pushing })); });
setInterval(() => { if (pushing) { const t = performance.now(); pushAll(); console.log(JSON.stringify({ pushed: gen, peers: N, ms: +(performance.now() - t).toFixed(1) })); } }, period * 1000);
