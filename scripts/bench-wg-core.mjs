#!/usr/bin/env node
// Data-path benchmark for the WireGuard core: 1280-byte IP packets go A -> B through two Devices
// (encrypt in place, then decrypt in place in the same buffer), no sockets. Runs the node:crypto
// backend and the @noble reference in the same process and prints packets/s, Gbit/s of inner
// payload, and the ratio. Checks its own output: every packet must arrive intact.
//
//   npx tsc -p . && node scripts/bench-wg-core.mjs [seconds per backend, default 2]
import { Device } from '../dist/src/wg/device.js';
import { Endpoints } from '../dist/src/net/endpoint.js';
import { nodeCrypto, referenceCrypto } from '../dist/src/crypto/backend.js';
import { PerformanceObserver } from 'node:perf_hooks';
import { Noise, Handshake, createInitiation, consumeInitiation, createResponse, consumeResponse, deriveKeys } from '../dist/src/wg/noise.js';

const SIZE = 1280;
const seconds = Number(process.argv[2] ?? 2);

function ipv4(len) {
  const p = new Uint8Array(len);
  p[0] = 0x45; p[2] = len >> 8; p[3] = len & 0xff; p[8] = 64; p[9] = 17;
  p.set([10, 0, 0, 1], 12); p.set([10, 0, 0, 2], 16);
  for (let i = 20; i < len; i++) p[i] = i & 0xff;
  return p;
}

function pair(crypto) {
  let t = 0;
  const clock = { now: () => t, wall: () => 1.7e12 + t };
  const eps = new Endpoints();
  const aEp = eps.of('198.18.0.1', 51820), bEp = eps.of('198.18.0.2', 51820);
  const a = new Device({ clock, crypto }), b = new Device({ clock, crypto });
  const ka = crypto.x25519.generatePrivate((n) => globalThis.crypto.getRandomValues(new Uint8Array(n)));
  const kb = crypto.x25519.generatePrivate((n) => globalThis.crypto.getRandomValues(new Uint8Array(n)));
  a.setPrivateKey(ka); b.setPrivateKey(kb);
  a.setPeer(b.publicKey(), { endpoint: bEp, allowedIPs: ['10.0.0.2/32'] });
  b.setPeer(a.publicKey(), { endpoint: aEp, allowedIPs: ['10.0.0.1/32'] });
  let delivered = 0, lastLen = 0, lastOff = 0, lastBuf = null;
  const queue = [];
  const sinkB = {
    sendUdp(buf, off, len, to) { queue.push({ side: 'a', bytes: buf.slice(off, off + len), to }); },
    writeTun(buf, off, len) { delivered++; lastLen = len; lastOff = off; lastBuf = buf; },
  };
  // A's sink hands each datagram straight to B, in place, as a batched I/O layer would after recv.
  const sinkA = {
    sendUdp(buf, off, len) { b.receiveDatagramInPlace(buf, off, len, aEp, sinkB); },
    writeTun() {},
  };
  const sinkAq = {
    sendUdp(buf, off, len, to) { queue.push({ side: 'b', bytes: buf.slice(off, off + len), to }); },
    writeTun() {},
  };
  // Handshake through a queue (messages must be copied: the sender's buffers are reused).
  const buf = new Uint8Array(16 + SIZE + 64);
  buf.set(ipv4(SIZE), 16);
  a.sendPacketInPlace(buf, 16, SIZE, buf.length - 16, sinkAq);
  for (let n = 0; queue.length > 0 && n < 10; n++) {
    const d = queue.shift();
    if (d.side === 'b') b.receiveDatagramInPlace(d.bytes, 0, d.bytes.length, aEp, sinkB);
    else a.receiveDatagramInPlace(d.bytes, 0, d.bytes.length, bEp, sinkAq);
  }
  if (delivered !== 1) throw new Error('bench: handshake did not complete');
  return { a, b, sinkA, get delivered() { return delivered; }, check(pkt) {
    if (lastLen !== SIZE) throw new Error(`bench: delivered ${lastLen} bytes, want ${SIZE}`);
    for (let i = 0; i < SIZE; i += 97) if (lastBuf[lastOff + i] !== pkt[i]) throw new Error('bench: corrupted packet');
  } };
}

async function run(crypto, secs) {
  const p = pair(crypto);
  const pkt = ipv4(SIZE);
  const buf = new Uint8Array(16 + SIZE + 64);
  let gcs = 0;
  const obs = new PerformanceObserver((l) => { gcs += l.getEntries().length; });
  obs.observe({ entryTypes: ['gc'] });
  const oneBatch = (n) => {
    for (let i = 0; i < n; i++) {
      buf.set(pkt, 16);
      p.a.sendPacketInPlace(buf, 16, SIZE, buf.length - 16, p.sinkA);
    }
  };
  oneBatch(2000); // warm-up
  p.check(pkt);
  const start0 = p.delivered;
  const t0 = performance.now();
  let t1 = t0;
  while (t1 - t0 < secs * 1000) { oneBatch(1000); t1 = performance.now(); }
  p.check(pkt);
  const n = p.delivered - start0;
  await new Promise((r) => setTimeout(r, 50)); // gc entries are delivered asynchronously
  obs.disconnect();
  const pps = n / ((t1 - t0) / 1000);
  return { name: crypto.name, n, pps, gbps: (pps * SIZE * 8) / 1e9, gcs };
}

const fast = await run(nodeCrypto, seconds);
const ref = await run(referenceCrypto, seconds);
for (const r of [fast, ref]) {
  console.log(`${r.name.padEnd(10)} ${Math.round(r.pps).toString().padStart(8)} packets/s (encrypt + decrypt, ${SIZE} B)  ` +
    `${r.gbps.toFixed(2)} Gbit/s inner  ${r.n} packets  ${r.gcs} GC events`);
}
console.log(`node:crypto / reference = ${(fast.pps / ref.pps).toFixed(2)}x`);

// Handshakes: a full IKpsk2 exchange (both sides), and the responder's share alone (what a flood costs).
function handshakes(crypto, secs) {
  const rnd = (n) => globalThis.crypto.getRandomValues(new Uint8Array(n));
  const noise = new Noise(crypto);
  const id = () => { const privateKey = crypto.x25519.generatePrivate(rnd); return { privateKey, publicKey: crypto.x25519.publicFromPrivate(privateKey) }; };
  const I = id(), R = id();
  const peerOnR = { handshake: new Handshake(I.publicKey) };
  peerOnR.handshake.precomputedStaticStatic = crypto.x25519.shared(R.privateKey, I.publicKey);
  let n = 0, responderMs = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < secs * 1000) {
    const hs = new Handshake(R.publicKey);
    hs.precomputedStaticStatic = crypto.x25519.shared(I.privateKey, R.publicKey);
    const init = createInitiation(noise, I, hs, 1, rnd, 1.7e12 + n * 1000);
    const r0 = performance.now();
    const peer = consumeInitiation(noise, R, init, () => peerOnR, n * 100);
    const resp = createResponse(noise, peer.handshake, 2, rnd);
    const kr = deriveKeys(noise, peer.handshake);
    responderMs += performance.now() - r0;
    if (!consumeResponse(noise, I, hs, resp)) throw new Error('bench: handshake failed');
    const ki = deriveKeys(noise, hs);
    if (Buffer.compare(Buffer.from(ki.send), Buffer.from(kr.recv)) !== 0) throw new Error('bench: keys differ');
    n++;
  }
  return { name: crypto.name, perSec: n / ((performance.now() - t0) / 1000), responderUs: (1000 * responderMs) / n };
}
for (const h of [handshakes(nodeCrypto, seconds / 2), handshakes(referenceCrypto, seconds / 2)]) {
  console.log(`${h.name.padEnd(10)} ${Math.round(h.perSec).toString().padStart(8)} handshakes/s (both sides)  responder ${h.responderUs.toFixed(0)} us each`);
}
