#!/usr/bin/env node
// Hash-checked TCP transfer for labs and tests.
//   tcpxfer.mjs serve HOST PORT          accepts one connection, prints {"bytes":N,"sha256":"..."} on EOF
//   tcpxfer.mjs send HOST PORT BYTES     sends BYTES random bytes, prints {"bytes":N,"sha256":"...","ms":T}
// Bounded: gives up after TCPXFER_TIMEOUT_MS (default 120000).
import { createHash, randomFillSync } from 'node:crypto';
import { createServer, connect } from 'node:net';

const [mode, host, portText, bytesText] = process.argv.slice(2);
const port = Number(portText);
const timeout = Number(process.env.TCPXFER_TIMEOUT_MS ?? 120000);
setTimeout(() => { console.error('tcpxfer: timed out'); process.exit(2); }, timeout).unref();

if (mode === 'serve') {
  const server = createServer((sock) => {
    const h = createHash('sha256');
    let n = 0;
    sock.on('data', (d) => { h.update(d); n += d.length; });
    sock.on('end', () => {
      console.log(JSON.stringify({ bytes: n, sha256: h.digest('hex') }));
      sock.end();
      server.close();
    });
    sock.on('error', (e) => { console.error(`tcpxfer: ${e.message}`); process.exit(1); });
  });
  server.listen(port, host, () => console.error('tcpxfer: listening'));
} else if (mode === 'send') {
  const total = Number(bytesText);
  const h = createHash('sha256');
  const chunk = Buffer.alloc(64 * 1024);
  let sent = 0;
  const t0 = performance.now();
  const sock = connect(port, host, () => {
    const pump = () => {
      while (sent < total) {
        const n = Math.min(chunk.length, total - sent);
        randomFillSync(chunk, 0, n);
        const piece = Buffer.from(chunk.subarray(0, n));
        h.update(piece);
        sent += n;
        if (!sock.write(piece)) { sock.once('drain', pump); return; }
      }
      sock.end();
    };
    pump();
  });
  sock.on('close', () => {
    console.log(JSON.stringify({ bytes: sent, sha256: h.digest('hex'), ms: Math.round(performance.now() - t0) }));
  });
  sock.on('data', () => {});
  sock.on('error', (e) => { console.error(`tcpxfer: ${e.message}`); process.exit(1); });
} else {
  console.error('usage: tcpxfer.mjs serve HOST PORT | send HOST PORT BYTES');
  process.exit(2);
}
