#!/usr/bin/env node
// A userspace impairment relay for the chaos lab (tc netem is missing here). It opens a TUN device
// in its namespace; the lab routes the packets it wants impaired into that device (policy routing:
// `ip rule ... lookup <table>` with `default dev <tun>` in that table) and the relay writes each one
// back into the same device, where the kernel (rule `iif <tun> lookup main`) forwards it on. In
// between it can drop a packet (--loss), send it twice (--dup), hold it --delay ms, and hold some
// packets --reorder-ms longer than the rest (--reorder percent) so later ones overtake them.
//
// Bounded: at most --queue packets wait (more are dropped and counted), every packet leaves within
// delay + reorder-ms, and the relay exits on SIGTERM/SIGINT printing one JSON line of counters.
//
//   node scripts/impair-relay.mjs --dev imp0 [--delay 50] [--dup 5] [--reorder 20 --reorder-ms 10] [--loss 10]
import { parseArgs } from 'node:util';
import { join } from 'node:path';

const { values: o } = parseArgs({
  options: {
    dev: { type: 'string', default: 'imp0' }, delay: { type: 'string', default: '0' }, dup: { type: 'string', default: '0' },
    reorder: { type: 'string', default: '0' }, 'reorder-ms': { type: 'string', default: '10' }, loss: { type: 'string', default: '0' },
    queue: { type: 'string', default: '16384' },
  },
});
const num = (name, lo, hi) => {
  const v = Number(o[name]);
  if (!Number.isFinite(v) || v < lo || v > hi) { console.error(`impair-relay: --${name} must be a number in ${lo}..${hi}, got ${o[name]}`); process.exit(2); }
  return v;
};
const delay = num('delay', 0, 10_000), dup = num('dup', 0, 100) / 100, reorder = num('reorder', 0, 100) / 100;
const reorderMs = num('reorder-ms', 0, 10_000), loss = num('loss', 0, 100) / 100, queueMax = num('queue', 1, 1 << 20);

const root = new URL('..', import.meta.url).pathname;
const { Tun } = await import(join(root, 'dist/src/tun/tun.js'));
const { TxBatch } = await import(join(root, 'dist/src/net/batch.js'));

const MTU = 1500;
const tun = Tun.open(o.dev, { mtu: MTU, up: true, offload: false });
tun.setUp(true);
const tx = new TxBatch({ slots: 64, slotSize: 2048, headroom: 0 });
const c = { in: 0, out: 0, lost: 0, duplicated: 0, reordered: 0, overflow: 0 };

// Two FIFOs, each in due-time order (a constant hold per FIFO): on time, and held back to reorder.
// Packet copies come from a free list, so the relay allocates only while the queue grows.
const free = [];
const onTime = [], late = [];
let queued = 0;
function enqueue(q, pkt, off, len, due) {
  if (queued >= queueMax) { c.overflow++; return; }
  const buf = free.pop() ?? new Uint8Array(2048);
  buf.set(pkt.subarray(off, off + len));
  q.push({ buf, len, due });
  queued++;
}
function emit(buf, len) {
  if (tx.full) flush();
  tx.push(buf, 0, len);
}
function flush() {
  if (tx.count === 0) return;
  c.out += tun.writeBatch(tx);
}

let timer, timerAt = Infinity;
function drain() {
  timer = undefined; timerAt = Infinity;
  const now = performance.now();
  for (const q of [onTime, late]) {
    let i = 0;
    while (i < q.length && q[i].due <= now) { const e = q[i++]; emit(e.buf, e.len); free.push(e.buf); queued--; }
    if (i > 0) q.splice(0, i);
  }
  flush();
  schedule();
}
function schedule() {
  const next = Math.min(onTime[0]?.due ?? Infinity, late[0]?.due ?? Infinity);
  if (next === Infinity || next >= timerAt) return;
  if (timer) clearTimeout(timer);
  timerAt = next;
  timer = setTimeout(drain, Math.max(0, next - performance.now()));
}

tun.startReading((batch) => {
  const now = performance.now();
  for (let i = 0; i < batch.count; i++) {
    const off = batch.offset(i), len = batch.length(i);
    c.in++;
    if (loss > 0 && Math.random() < loss) { c.lost++; continue; }
    const copies = dup > 0 && Math.random() < dup ? 2 : 1;
    if (copies === 2) c.duplicated++;
    for (let k = 0; k < copies; k++) {
      if (reorder > 0 && Math.random() < reorder) { c.reordered++; enqueue(late, batch.buf, off, len, now + delay + reorderMs); }
      else if (delay > 0 || onTime.length > 0) enqueue(onTime, batch.buf, off, len, now + delay);
      else emit(batch.buf.subarray(off, off + len), len);
    }
  }
  flush();
  schedule();
}, (err) => { console.error(`impair-relay: ${err.message}`); process.exit(1); });

function stop() {
  tun.stopReading();
  if (timer) clearTimeout(timer);
  console.log(JSON.stringify({ dev: o.dev, delay, dup, reorder, reorderMs, loss, ...c, queuedAtExit: queued }));
  tun.close();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
console.log(JSON.stringify({ ready: o.dev }));
