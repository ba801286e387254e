#!/usr/bin/env node
// A TCP forwarder that holds every chunk for a fixed delay each way: a lab stand-in for a far-away
// server where the kernel's netem qdisc is not available.
//   node scripts/tcp-delay-proxy.mjs LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS
import { createServer, connect } from 'node:net';

const [lh, lp, th, tp, d] = process.argv.slice(2);
const delay = Number(d);
const pipe = (from, to) => {
  from.on('data', (chunk) => setTimeout(() => { if (!to.destroyed) to.write(chunk); }, delay));
  from.on('end', () => setTimeout(() => to.end(), delay));
  from.on('error', () => setTimeout(() => to.destroy(), delay + 20));
};
createServer((c) => {
  const s = connect({ host: th, port: Number(tp) });
  pipe(c, s);
  pipe(s, c);
  // Closing too is delayed, or it would overtake the data still held back.
  c.on('close', () => setTimeout(() => s.destroy(), delay + 20));
  s.on('close', () => setTimeout(() => c.destroy(), delay + 20));
}).listen(Number(lp), lh, () => console.log(`delaying ${lh}:${lp} -> ${th}:${tp} by ${delay} ms`));
