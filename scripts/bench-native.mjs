#!/usr/bin/env node
// UDP loopback throughput of the native batch path (sendmmsg + recvmmsg via UdpSocket/TxBatch)
// against node:dgram, both in this one thread, 1300-byte datagrams over 127.0.0.1.
// Usage: npm run build && node scripts/bench-native.mjs [seconds=3] [batch=64]
//
// Closed loop: the sender keeps at most WINDOW datagrams in flight (sent, not yet received), so
// the number is what one event loop can move end to end, not how fast a socket buffer overflows.
// Every received datagram is checked (length, endpoint, sequence byte) and counted.
import dgram from 'node:dgram';
import { existsSync } from 'node:fs';

const dist = new URL('../dist/src/', import.meta.url);
if (!existsSync(new URL('net/udp.js', dist))) {
  console.error('bench-native: dist/ missing: run npm run build first');
  process.exit(1);
}
const { UdpSocket } = await import(new URL('net/udp.js', dist).href);
const { TxBatch, slotSizeFor } = await import(new URL('net/batch.js', dist).href);
const { Endpoints } = await import(new URL('net/endpoint.js', dist).href);

const SECONDS = Number(process.argv[2] ?? 3);
const BATCH = Number(process.argv[3] ?? 64);
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

console.log(`bench-native: ${SIZE}-byte UDP datagrams over 127.0.0.1, ${SECONDS} s each, batch ${BATCH}, window ${WINDOW}, node ${process.version}`);
const a = await benchNative();
report('meshd', a);
const b = await benchDgram();
report('dgram', b);
if (a.bad || b.bad || a.received === 0) {
  console.error('bench-native: FAILED: bad or no datagrams received');
  process.exit(1);
}
console.log(`meshd/dgram: ${(a.pps / b.pps).toFixed(2)}x; meshd reader: ${(a.rx.packets / a.rx.batches).toFixed(1)} datagrams per batch, ${(a.rx.batches / a.rx.wakeups).toFixed(2)} batches per wakeup`);
