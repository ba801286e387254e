#!/usr/bin/env node
// A tiny HTTP server for labs and tests of proxies and forwarding:
//   GET  /blob/N     N random bytes; header X-Sha256 carries their hash
//   PUT|POST /upload  answers {"bytes":N,"sha256":"..."} for the body
//   GET  /ip         the client's address as the server sees it
//   GET  /           "ok <hostname>"
// Usage: httpblob.mjs HOST PORT. Runs until killed.
import { createHash, randomFillSync } from 'node:crypto';
import { createServer } from 'node:http';
import { hostname } from 'node:os';

const [host, portText] = process.argv.slice(2);
const MAX = 256 * 1024 * 1024;
const server = createServer((req, res) => {
  const url = req.url ?? '/';
  const m = /^\/blob\/(\d+)$/.exec(url);
  if (req.method === 'GET' && m) {
    const n = Math.min(Number(m[1]), MAX);
    const body = Buffer.allocUnsafe(n);
    randomFillSync(body);
    res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': n, 'X-Sha256': createHash('sha256').update(body).digest('hex') });
    res.end(body);
    return;
  }
  if ((req.method === 'PUT' || req.method === 'POST') && url === '/upload') {
    const h = createHash('sha256');
    let bytes = 0;
    req.on('data', (d) => { h.update(d); bytes += d.length; });
    req.on('end', () => {
      const out = JSON.stringify({ bytes, sha256: h.digest('hex') });
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out) });
      res.end(out);
    });
    return;
  }
  if (url === '/ip') {
    const ip = (req.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(ip) });
    res.end(ip);
    return;
  }
  const text = `ok ${hostname()}\n`;
  res.writeHead(url === '/' ? 200 : 404, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
});
server.keepAliveTimeout = 5000;
server.listen(Number(portText), host, () => console.error(`httpblob: listening on ${host}:${portText}`));
