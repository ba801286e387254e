#!/usr/bin/env node
// Data-path benchmark for the WireGuard core: 1280-byte IP packets go A -> B through two Devices
// (encrypt in place, then decrypt in place in the same buffer), no sockets. Runs the node:crypto
// backend, the @noble reference and the native batched backend in the same process and prints
// packets/s, Gbit/s of inner payload, and the ratio. Then batched devices (a batch of N packets in
// one buffer, sealed in one call, then opened in one call, as the data plane does) for several N,
// on one thread and with the native worker taking half of each batch; and the bare native AEAD.
// Checks its own output: every packet must arrive intact.
//
//   npm run build && node scripts/bench-wg-core.mjs [seconds per case, default 2]
import { Device } from '../dist/src/wg/device.js';
import { Endpoints } from '../dist/src/net/endpoint.js';
import { nodeCrypto, referenceCrypto, defaultCrypto, nativeAeadError } from '../dist/src/crypto/backend.js';
import { AeadBatch } from '../dist/src/crypto/transport.js';
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

function pair(crypto, batched = false) {
  let t = 0;
  const clock = { now: () => t, wall: () => 1.7e12 + t };
  const eps = new Endpoints();
  const aEp = eps.of('198.18.0.1', 51820), bEp = eps.of('198.18.0.2', 51820);
  const a = new Device({ clock, crypto, batched }), b = new Device({ clock, crypto, batched });
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
  a.flush(sinkAq);
  for (let n = 0; queue.length > 0 && n < 10; n++) {
    const d = queue.shift();
    if (d.side === 'b') { b.receiveDatagramInPlace(d.bytes, 0, d.bytes.length, aEp, sinkB); b.flush(sinkB); }
    else { a.receiveDatagramInPlace(d.bytes, 0, d.bytes.length, bEp, sinkAq); a.flush(sinkAq); }
  }
  if (delivered !== 1) throw new Error('bench: handshake did not complete');
  return { a, b, sinkA, sinkB, aEp, get delivered() { return delivered; }, check(pkt) {
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

// Batched devices: A seals a batch of `batch` packets laid out in one buffer of slots (one native
// call), its sink records where each datagram is, then B opens them all in place (one call).
async function runBatched(crypto, secs, batch) {
  const p = pair(crypto, true);
  const pkt = ipv4(SIZE);
  const SLOT = 16 + SIZE + 64;
  const buf = new Uint8Array(batch * SLOT);
  const offs = new Int32Array(batch), lens = new Int32Array(batch);
  let n = 0;
  const sinkA = { sendUdp(_b, off, len) { offs[n] = off; lens[n] = len; n++; }, writeTun() {} };
  let gcs = 0;
  const obs = new PerformanceObserver((l) => { gcs += l.getEntries().length; });
  const oneBatch = () => {
    for (let i = 0; i < batch; i++) buf.set(pkt, i * SLOT + 16);
    n = 0;
    for (let i = 0; i < batch; i++) p.a.sendPacketInPlace(buf, i * SLOT + 16, SIZE, SLOT - 16, sinkA);
    p.a.flush(sinkA);
    for (let i = 0; i < n; i++) p.b.receiveDatagramInPlace(buf, offs[i], lens[i], p.aEp, p.sinkB);
    p.b.flush(p.sinkB);
  };
  for (let i = 0; i < 20000 / batch; i++) oneBatch();
  p.check(pkt);
  obs.observe({ entryTypes: ['gc'] });
  const start0 = p.delivered;
  const t0 = performance.now();
  let t1 = t0;
  while (t1 - t0 < secs * 1000) { for (let i = 0; i < 1024 / batch; i++) oneBatch(); t1 = performance.now(); }
  p.check(pkt);
  const got = p.delivered - start0;
  await new Promise((r) => setTimeout(r, 50));
  obs.disconnect();
  const pps = got / ((t1 - t0) / 1000);
  return { pps, gbps: (pps * SIZE * 8) / 1e9, n: got, gcs };
}

// The bare native AEAD: seal then open `batch` packets of SIZE bytes in one buffer, one call each.
function rawAead(t, secs, batch) {
  const SLOT = SIZE + 32;
  const buf = new Uint8Array(batch * SLOT);
  const key = new Uint8Array(32).fill(7);
  const sk = t.prepare(key, true), ok = t.prepare(key, false);
  const sb = new AeadBatch(batch), ob = new AeadBatch(batch);
  let ctr = 0, n = 0;
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  let t1 = t0;
  while (t1 - t0 < secs * 1000) {
    for (let r = 0; r < 64; r++) {
      for (let i = 0; i < batch; i++) { sb.set(i, sk, ctr + i, i * SLOT, SIZE); ob.set(i, ok, ctr + i, i * SLOT, SIZE + 16); }
      ctr += batch;
      t.seal(buf, sb, 0, batch);
      if (t.open(buf, ob, 0, batch) !== batch) throw new Error('bench: open failed');
      n += batch;
    }
    t1 = performance.now();
  }
  const cpu = process.cpuUsage(c0);
  t.release(sk); t.release(ok);
  const pps = n / ((t1 - t0) / 1000);
  return { pps, gbps: (pps * SIZE * 8) / 1e9, cpuUs: (cpu.user + cpu.system) / n };
}

const fast = await run(nodeCrypto, seconds);
const ref = await run(referenceCrypto, seconds);
const nativeCrypto = defaultCrypto();
if (nativeCrypto.name !== 'native') throw new Error(`bench: native AEAD unavailable: ${nativeAeadError()}`);
const nat = await run(nativeCrypto, seconds);
for (const r of [fast, ref, nat]) {
  console.log(`${r.name.padEnd(10)} ${Math.round(r.pps).toString().padStart(8)} packets/s (encrypt + decrypt, ${SIZE} B, one packet per call)  ` +
    `${r.gbps.toFixed(2)} Gbit/s inner  ${r.n} packets  ${r.gcs} GC events`);
}
console.log(`node:crypto / reference = ${(fast.pps / ref.pps).toFixed(2)}x; native / node:crypto = ${(nat.pps / fast.pps).toFixed(2)}x`);

const t = nativeCrypto.transport;
const batches = (process.env.BENCH_BATCHES ?? '1,8,32,64,128,256').split(',').map(Number);
const old = t.setParallelMin(0);
const rows = [];
for (const batch of batches) {
  t.setParallelMin(0);
  const one = await runBatched(nativeCrypto, seconds / 2, batch);
  const rawOne = rawAead(t, seconds / 4, batch);
  t.setParallelMin(2);
  const two = batch >= 2 ? await runBatched(nativeCrypto, seconds / 2, batch) : null;
  const rawTwo = batch >= 2 ? rawAead(t, seconds / 4, batch) : null;
  rows.push({ batch, one, two, rawOne, rawTwo });
  const f = (r) => (r ? `${Math.round(r.pps).toString().padStart(8)} pps ${r.gbps.toFixed(2).padStart(5)} Gbit/s` : '-'.padStart(27));
  const c = (r) => (r ? ` ${r.cpuUs.toFixed(2)} CPU us/pkt` : '');
  console.log(`batched device, batch ${String(batch).padStart(3)}: 1 thread ${f(one)} | 2 threads ${f(two)}   ` +
    `bare AEAD (seal+open): 1 thread ${f(rawOne)}${c(rawOne)} | 2 threads ${f(rawTwo)}${c(rawTwo)}   GC ${one.gcs}/${two?.gcs ?? '-'}`);
}

// Fork-join latency, A/B interleaved call by call so that load from other processes hits both alike:
// median and p90 microseconds of one seal+open of a batch, one thread vs split with the worker.
function forkJoin(t, batch, calls) {
  const SLOT = SIZE + 32;
  const buf = new Uint8Array(batch * SLOT);
  const key = new Uint8Array(32).fill(9);
  const sk = t.prepare(key, true), ok = t.prepare(key, false);
  const sb = new AeadBatch(batch), ob = new AeadBatch(batch);
  for (let i = 0; i < batch; i++) { sb.set(i, sk, i, i * SLOT, SIZE); ob.set(i, ok, i, i * SLOT, SIZE + 16); }
  const times = [[], []];
  for (let c = 0; c < calls; c++) {
    for (const mode of c & 1 ? [1, 0] : [0, 1]) {
      t.setParallelMin(mode ? 2 : 0);
      const t0 = performance.now();
      t.seal(buf, sb, 0, batch);
      if (t.open(buf, ob, 0, batch) !== batch) throw new Error('bench: open failed');
      times[mode].push((performance.now() - t0) * 1000);
    }
  }
  t.release(sk); t.release(ok);
  const q = (xs, f) => { const v = [...xs].sort((x, y) => x - y); return v[Math.floor((v.length - 1) * f)]; };
  return times.map((xs) => ({ p50: q(xs, 0.5), p90: q(xs, 0.9) }));
}
for (const batch of [16, 32, 64, 128, 256]) {
  const [one, two] = forkJoin(t, batch, Math.max(200, Math.round(40000 / batch)));
  console.log(`fork-join, batch ${String(batch).padStart(3)} seal+open: 1 thread p50 ${one.p50.toFixed(0)} us p90 ${one.p90.toFixed(0)} us | ` +
    `2 threads p50 ${two.p50.toFixed(0)} us p90 ${two.p90.toFixed(0)} us | speed-up at p50 ${(one.p50 / two.p50).toFixed(2)}x`);
}
t.setParallelMin(old);

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
