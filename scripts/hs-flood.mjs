#!/usr/bin/env node
// Handshake load generator for scripts/bench: sends valid WireGuard initiations from many peer
// identities to one responder and counts what comes back. Runs inside a lab namespace.
//   hs-flood.mjs KEYFILE RESPONDER_PUB_B64 HOST PORT SECONDS [RATE]
// KEYFILE: JSON array of base64 private keys, one per initiating peer (the responder knows them all).
// Initiations are built before the clock starts, round-robin over the peers with timestamps 25 ms
// apart per peer (so replay and per-peer flood checks pass at the rates used).
//   - With RATE: open loop, RATE initiations per second whatever the responder does (the load a
//     busy network puts on it); counts responses and cookie replies per second.
//   - Without: closed loop with 16 in flight (how fast it answers when it never builds a queue).
// Prints one JSON line.
import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { Noise, Handshake, createInitiation } from '../dist/src/wg/noise.js';
import { CookieGenerator } from '../dist/src/wg/cookie.js';
import { nodeCrypto } from '../dist/src/crypto/backend.js';

const [keyFile, respB64, host, portText, secondsText, rateText] = process.argv.slice(2);
const seconds = Number(secondsText);
const rate = rateText ? Number(rateText) : 0;
const port = Number(portText);
const privs = JSON.parse(readFileSync(keyFile, 'utf8')).map((b) => new Uint8Array(Buffer.from(b, 'base64')));
const respPub = new Uint8Array(Buffer.from(respB64, 'base64'));
const noise = new Noise(nodeCrypto);
const x = nodeCrypto.x25519;
const total = Math.ceil(seconds * (rate || 8000));
const K = privs.length;
const perPeer = Math.ceil(total / K);
const msgs = new Array(K * perPeer);
const base = Date.now();
for (let i = 0; i < K; i++) {
  const id = { privateKey: privs[i], publicKey: x.publicFromPrivate(privs[i]) };
  const macs = new CookieGenerator(nodeCrypto, respPub);
  const ss = x.shared(privs[i], respPub);
  for (let j = 0; j < perPeer; j++) {
    const hs = new Handshake(respPub);
    hs.precomputedStaticStatic = ss;
    const m = createInitiation(noise, id, hs, (j * K + i + 1) >>> 0, (n) => new Uint8Array(randomBytes(n)), base + j * 25);
    macs.addMacs(m, 0);
    msgs[j * K + i] = m;
  }
}
const sock = createSocket(host.includes(':') ? 'udp6' : 'udp4');
let next = 0, responses = 0, cookies = 0, started = 0;

if (rate > 0) {
  sock.on('message', (m) => {
    if (m.length === 92 && m[0] === 2) responses++;
    else if (m.length === 64 && m[0] === 3) cookies++;
  });
  sock.bind(0, () => {
    started = performance.now();
    console.log(JSON.stringify({ ready: true }));
    // Every 2 ms, send what the schedule says is due by now: a fixed offered rate.
    const pump = setInterval(() => {
      const due = Math.min(msgs.length, Math.floor(((performance.now() - started) / 1000) * rate));
      while (next < due) sock.send(msgs[next++], port, host);
    }, 2);
    setTimeout(() => {
      clearInterval(pump);
      // Answers to the last initiations may still be on their way.
      setTimeout(() => {
        const s = seconds;
        console.log(JSON.stringify({ mode: 'open', offeredPerSecond: rate, sent: next, responses, cookieReplies: cookies, seconds: s, perSecond: Math.round(responses / s), cookiesPerSecond: Math.round(cookies / s) }));
        sock.close();
        process.exit(0);
      }, 300);
    }, seconds * 1000);
  });
} else {
  const window = 16;
  let inflight = 0;
  const sentAt = new Map();
  const pump = () => {
    while (inflight < window && next < msgs.length) {
      const idx = next++;
      sentAt.set(idx + 1, performance.now());
      inflight++;
      sock.send(msgs[idx], port, host);
    }
  };
  sock.on('message', (m) => {
    if (m.length !== 92 || m[0] !== 2) return;
    const rx = m.readUInt32LE(8);
    if (!sentAt.delete(rx)) return;
    responses++;
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
      console.log(JSON.stringify({ mode: 'closed', completed: responses, seconds: +s.toFixed(2), perSecond: Math.round(responses / s), exhausted: next >= msgs.length }));
      sock.close();
      process.exit(0);
    }, seconds * 1000);
  });
}
