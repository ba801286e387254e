#!/usr/bin/env node
// Handshake load generator for scripts/bench: sends valid WireGuard initiations from many peer
// identities to one responder and counts the responses. Runs inside a lab namespace.
//   hs-flood.mjs KEYFILE RESPONDER_PUB_B64 HOST PORT SECONDS
// KEYFILE: JSON array of base64 private keys, one per initiating peer (the responder knows them all).
// Initiations are built before the clock starts (timestamps 25 ms apart per peer, so replay and
// flood checks pass), then sent in a closed loop with a bounded window, so the responder never
// builds a queue (no cookie mode): what is measured is how fast it answers.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Noise, Handshake, createInitiation } from '../dist/src/wg/noise.js';
import { CookieGenerator } from '../dist/src/wg/cookie.js';
import { nodeCrypto } from '../dist/src/crypto/backend.js';

const [keyFile, respB64, host, portText, secondsText] = process.argv.slice(2);
const seconds = Number(secondsText);
const privs = JSON.parse(readFileSync(keyFile, 'utf8')).map((b) => new Uint8Array(Buffer.from(b, 'base64')));
const respPub = new Uint8Array(Buffer.from(respB64, 'base64'));
const noise = new Noise(nodeCrypto);
const x = nodeCrypto.x25519;
const perPeer = Math.ceil((seconds * 8000) / privs.length);
const K = privs.length;
const msgs = new Array(K * perPeer);
const base = Date.now();
for (let i = 0; i < K; i++) {
  const id = { privateKey: privs[i], publicKey: x.publicFromPrivate(privs[i]) };
  const macs = new CookieGenerator(nodeCrypto, respPub);
  for (let j = 0; j < perPeer; j++) {
    const hs = new Handshake(respPub);
    hs.precomputedStaticStatic = x.shared(privs[i], respPub);
    const m = createInitiation(noise, id, hs, (j * K + i + 1) >>> 0, (n) => new Uint8Array(randomBytes(n)), base + j * 25);
    macs.addMacs(m, 0);
    msgs[j * K + i] = m;
  }
}
const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4');
const window = 16;
let next = 0, inflight = 0, done = 0, started = 0;
const sentAt = new Map();
function pump() {
  while (inflight < window && next < msgs.length) {
    const idx = next++;
    sentAt.set(idx + 1, performance.now());
    inflight++;
    sock.send(msgs[idx], Number(portText), host);
  }
}
sock.on('message', (m) => {
  if (m.length !== 92 || m[0] !== 2) return;
  const rx = m.readUInt32LE(8);
  if (!sentAt.delete(rx)) return;
  done++;
  inflight--;
  pump();
});
// Lost initiations (dropped by a busy responder) free their window slot after 200 ms.
const reaper = setInterval(() => {
  const now = performance.now();
  for (const [k, t] of sentAt) if (now - t > 200) { sentAt.delete(k); inflight--; }
  pump();
}, 50);
sock.bind(0, () => {
  started = performance.now();
  pump();
  setTimeout(() => {
    clearInterval(reaper);
    const s = (performance.now() - started) / 1000;
    console.log(JSON.stringify({ completed: done, seconds: +s.toFixed(2), perSecond: Math.round(done / s), exhausted: next >= msgs.length }));
    sock.close();
    process.exit(0);
  }, seconds * 1000);
});
