#!/usr/bin/env node
// UDP loopback throughput of the native batch path (sendmmsg + recvmmsg via UdpSocket/TxBatch)
// against node:dgram, both in this one thread, 1300-byte datagrams over 127.0.0.1. As root it
// also measures the two TUN halves of the data plane (no crypto) inside a throwaway meshd-bench-*
// namespace: TUN write -> kernel -> UDP socket, and UDP socket -> kernel -> TUN read, 1280-byte
// IPv4 packets (MTU 1280).
// Usage: npm run build && node scripts/bench-native.mjs [seconds per run=2] [batch=64]
//
// Closed loop: the sender keeps at most WINDOW datagrams in flight (sent, not yet received), so
// the number is what one event loop can move end to end, not how fast a socket buffer overflows.
// "lost" is what never arrived; with a window larger than a queue on the way (node:dgram's
// receive buffer is capped by net.core.rmem_max) the first burst overflows it once.
// Every received datagram is checked (length, endpoint, sequence byte) and counted.
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const dist = new URL('../dist/src/', import.meta.url);
if (!existsSync(new URL('net/udp.js', dist))) {
  console.error('bench-native: dist/ missing: run npm run build first');
  process.exit(1);
}
const { UdpSocket } = await import(new URL('net/udp.js', dist).href);
const { TxBatch, slotSizeFor } = await import(new URL('net/batch.js', dist).href);
const { Endpoints } = await import(new URL('net/endpoint.js', dist).href);
const { Tun } = await import(new URL('tun/tun.js', dist).href);

const tunInner = process.argv[2] === '--tun-inner';
const positional = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const SECONDS = Number(positional[0] ?? 2);
const BATCH = Number(positional[1] ?? 64);
const SIZE = 1300;
const WINDOW = 4096;
const WARMUP_MS = 500;

function report(name, r) {
  const mbit = (r.pps * SIZE * 8) / 1e6;
  console.log(`${name.padEnd(7)} ${(r.pps / 1e3).toFixed(0).padStart(6)} kpps  ${mbit.toFixed(0).padStart(6)} Mbit/s payload  ` +
    `(${r.received} received, ${r.lost} lost, ${r.bad} bad)`);
}

/** meshd: UdpSocket + TxBatch, BATCH datagrams per sendmmsg. */
function benchNative() {
  return new Promise((resolve, reject) => {
    const eps = new Endpoints();
    const rx = UdpSocket.open({ family: 4, bindAddress: '127.0.0.1', endpoints: eps });
    const tx = UdpSocket.open({ family: 4, bindAddress: '127.0.0.1' });
    const to = eps.of('127.0.0.1', rx.port);
    const from = eps.of('127.0.0.1', tx.port);
    const batch = new TxBatch({ slots: BATCH, slotSize: slotSizeFor(SIZE), headroom: 64 });
    let sent = 0, received = 0, bad = 0, seq = 0;
    let t0 = 0, r0 = 0, s0 = 0, measuring = false, done = false;
    rx.startReading((b) => {
      for (let i = 0; i < b.count; i++) {
        if (b.length(i) !== SIZE || b.endpoint(i) !== from) bad++;
        else if (b.buf[b.offset(i) + 100] !== ((b.buf[b.offset(i)] + 100) & 0xff)) bad++;
      }
      received += b.count;
    }, reject);
    const pump = () => {
      if (done) return;
      // Send while the window has room; fill each slot in place (reserve + commit).
      while (sent - received + BATCH <= WINDOW) {
        for (let i = 0; i < BATCH; i++) {
          const at = batch.reserve();
          const s = seq++ & 0xff;
          batch.buf[at] = s;
          batch.buf[at + 100] = (s + 100) & 0xff;
          batch.commit(at, SIZE, to.raw);
        }
        sent += tx.sendBatch(batch);
      }
      setImmediate(pump);
    };
    setImmediate(pump);
    setTimeout(() => { measuring = true; t0 = performance.now(); r0 = received; s0 = sent; }, WARMUP_MS);
    setTimeout(() => {
      done = true;
      const dt = (performance.now() - t0) / 1000;
      const res = { pps: (received - r0) / dt, received: received - r0, lost: sent - s0 - (received - r0), bad, rx: rx.stats().rx };
      // Let in-flight datagrams arrive so "lost" counts only real drops.
      setTimeout(() => {
        res.lost = Math.max(0, sent - received);
        rx.close();
        tx.close();
        resolve(res);
      }, 100);
      void measuring;
    }, WARMUP_MS + SECONDS * 1000);
  });
}

/** node:dgram: one send() per datagram, one 'message' event per datagram. */
function benchDgram() {
  return new Promise((resolve) => {
    const rx = dgram.createSocket({ type: 'udp4', recvBufferSize: 7 << 20 });
    const tx = dgram.createSocket({ type: 'udp4', sendBufferSize: 7 << 20 });
    const payload = Buffer.alloc(SIZE);
    let sent = 0, received = 0, bad = 0, seq = 0, t0 = 0, r0 = 0, done = false;
    rx.on('message', (m) => {
      if (m.length !== SIZE || m[100] !== ((m[0] + 100) & 0xff)) bad++;
      received++;
    });
    rx.bind(0, '127.0.0.1', () => {
      tx.bind(0, '127.0.0.1', () => {
        const port = rx.address().port;
        const pump = () => {
          if (done) return;
          let n = 0;
          while (sent - received < WINDOW && n++ < BATCH) {
            const s = seq++ & 0xff;
            payload[0] = s;
            payload[100] = (s + 100) & 0xff;
            tx.send(payload, port, '127.0.0.1');
            sent++;
          }
          setImmediate(pump);
        };
        setImmediate(pump);
        setTimeout(() => { t0 = performance.now(); r0 = received; }, WARMUP_MS);
        setTimeout(() => {
          done = true;
          const dt = (performance.now() - t0) / 1000;
          const res = { pps: (received - r0) / dt, received: received - r0, lost: 0, bad };
          setTimeout(() => {
            res.lost = Math.max(0, sent - received);
            rx.close();
            tx.close();
            resolve(res);
          }, 200);
        }, WARMUP_MS + SECONDS * 1000);
      });
    });
  });
}

/** Runs a closed loop: send(n) sends up to n packets and returns how many; received() counts. */
function closedLoop(send, received, seconds, window = WINDOW) {
  return new Promise((resolve) => {
    let sent = 0, t0 = 0, r0 = 0, done = false;
    const pump = () => {
      if (done) return;
      while (sent - received() + BATCH <= window) {
        const n = send(BATCH);
        sent += n;
        if (n < BATCH) break;
      }
      setImmediate(pump);
    };
    setImmediate(pump);
    setTimeout(() => { t0 = performance.now(); r0 = received(); }, WARMUP_MS);
    setTimeout(() => {
      done = true;
      const dt = (performance.now() - t0) / 1000;
      const got = received() - r0;
      setTimeout(() => resolve({ pps: got / dt, received: got, lost: Math.max(0, sent - received()), bad: 0 }), 100);
    }, WARMUP_MS + seconds * 1000);
  });
}

function ipChecksum(b, off, len) {
  let sum = 0;
  for (let i = 0; i < len; i += 2) sum += (b[off + i] << 8) | b[off + i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Inside the bench namespace: both TUN directions with 1280-byte IPv4/UDP packets. */
async function benchTunInner() {
  const PKT = 1280;
  const tun = Tun.open('meshdb0', { mtu: PKT });
  const ip = spawnSync('ip', ['addr', 'add', '100.64.0.1/24', 'dev', 'meshdb0'], { encoding: 'utf8' });
  if (ip.status !== 0) throw new Error(`ip addr add: ${ip.stderr}`);
  tun.setUp(true);
  const eps = new Endpoints();
  const sock = UdpSocket.open({ family: 4, bindAddress: '100.64.0.1', endpoints: eps });

  // 1. TUN write -> kernel -> UDP socket: crafted packets 100.64.0.2:5555 -> 100.64.0.1:port.
  const tx = new TxBatch({ slots: BATCH, slotSize: slotSizeFor(PKT), headroom: 64 });
  const tmpl = new Uint8Array(PKT);
  tmpl.set([0x45, 0, PKT >> 8, PKT & 0xff, 0, 0, 0x40, 0, 64, 17, 0, 0, 100, 64, 0, 2, 100, 64, 0, 1]);
  const c = ipChecksum(tmpl, 0, 20);
  tmpl[10] = c >> 8; tmpl[11] = c & 0xff;
  tmpl.set([5555 >> 8, 5555 & 0xff, sock.port >> 8, sock.port & 0xff, (PKT - 20) >> 8, (PKT - 20) & 0xff, 0, 0], 20);
  let udpGot = 0, bad = 0;
  const from = eps.of('100.64.0.2', 5555);
  sock.startReading((b) => {
    for (let i = 0; i < b.count; i++) if (b.length(i) !== PKT - 28 || b.endpoint(i) !== from) bad++;
    udpGot += b.count;
  });
  const w = await closedLoop((n) => {
    for (let i = 0; i < n; i++) tx.push(tmpl, 0, PKT);
    return tun.writeBatch(tx);
  }, () => udpGot, SECONDS);
  w.bad = bad;
  sock.stopReading();

  // 2. UDP socket -> kernel -> TUN read: datagrams to 100.64.0.2:7777 leave through meshdb0.
  const to = eps.of('100.64.0.2', 7777);
  const utx = new TxBatch({ slots: BATCH, slotSize: slotSizeFor(PKT), headroom: 64 });
  let tunGot = 0, tbad = 0;
  tun.startReading((b) => {
    for (let i = 0; i < b.count; i++) {
      const o = b.offset(i);
      if (b.buf[o] >> 4 !== 4) continue; // IPv6 router solicitations and the like when the link comes up
      if (b.length(i) !== PKT || b.buf[o + 9] !== 17 || b.buf[o + 19] !== 2) tbad++;
      tunGot++;
    }
  });
  const r = await closedLoop((n) => {
    for (let i = 0; i < n; i++) utx.commit(utx.reserve(), PKT - 28, to.raw);
    return sock.sendBatch(utx);
    // The TUN queue holds txqueuelen (500) packets; a larger window only loses the excess once.
  }, () => tunGot, SECONDS, 448);
  r.bad = tbad;
  sock.close();
  tun.close();
  process.stdout.write(JSON.stringify({ write: w, read: r }) + '\n');
}

/** As root: runs benchTunInner in a fresh meshd-bench-* namespace, removed afterwards. */
function benchTun() {
  if (process.getuid?.() !== 0) {
    console.log('tun     skipped: needs root (a namespace and a TUN device)');
    return undefined;
  }
  const ns = `meshd-bench-${process.pid % 100000}`;
  const cleanup = () => spawnSync('ip', ['netns', 'del', ns]);
  process.once('SIGINT', () => { cleanup(); process.exit(130); });
  try {
    const add = spawnSync('ip', ['netns', 'add', ns], { encoding: 'utf8' });
    if (add.status !== 0) throw new Error(`ip netns add ${ns}: ${add.stderr}`);
    spawnSync('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, fileURLToPath(import.meta.url), '--tun-inner', String(SECONDS), String(BATCH)],
      { encoding: 'utf8', timeout: (SECONDS * 2 + 20) * 1000 });
    if (r.status !== 0) throw new Error(`tun bench failed: ${r.stderr}${r.stdout}`);
    return JSON.parse(r.stdout.trim().split('\n').pop());
  } finally {
    cleanup();
  }
}

if (tunInner) {
  await benchTunInner();
  process.exit(0);
}

console.log(`bench-native: ${SIZE}-byte UDP datagrams over 127.0.0.1, ${SECONDS} s each, batch ${BATCH}, window ${WINDOW}, node ${process.version}`);
// Alternate the two, ROUNDS times, and compare medians: on a shared machine one run alone is noise.
const ROUNDS = 3;
const runsA = [], runsB = [];
for (let i = 0; i < ROUNDS; i++) {
  runsA.push(await benchNative());
  runsB.push(await benchDgram());
}
const median = (runs) => [...runs].sort((x, y) => x.pps - y.pps)[runs.length >> 1];
const a = median(runsA), b = median(runsB);
console.log(`median of ${ROUNDS} alternating runs (all: meshd ${runsA.map((r) => (r.pps / 1e3).toFixed(0)).join('/')} kpps, dgram ${runsB.map((r) => (r.pps / 1e3).toFixed(0)).join('/')} kpps)`);
report('meshd', a);
report('dgram', b);
if (runsA.some((r) => r.bad || r.received === 0) || runsB.some((r) => r.bad)) {
  console.error('bench-native: FAILED: bad or no datagrams received');
  process.exit(1);
}
console.log(`meshd/dgram: ${(a.pps / b.pps).toFixed(2)}x; meshd reader: ${(a.rx.packets / a.rx.batches).toFixed(1)} datagrams per batch, ${(a.rx.batches / a.rx.wakeups).toFixed(2)} batches per wakeup`);
const t = benchTun();
if (t) {
  const line = (name, r) => console.log(`${name.padEnd(24)} ${(r.pps / 1e3).toFixed(0).padStart(6)} kpps  ${((r.pps * 1280 * 8) / 1e6).toFixed(0).padStart(6)} Mbit/s of 1280-byte IP packets  (${r.received} received, ${r.lost} lost, ${r.bad} bad)`);
  line('tun write -> udp recv', t.write);
  line('udp send -> tun read', t.read);
  if (t.write.bad || t.read.bad || t.write.received === 0 || t.read.received === 0) {
    console.error('bench-native: FAILED: bad or no packets on the TUN paths');
    process.exit(1);
  }
}
