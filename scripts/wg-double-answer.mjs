#!/usr/bin/env node
// Probe: does a real wireguard-go answer BOTH of two copies of one handshake initiation that reach
// it together? wireguard-go checks an initiation's TAI64N replay and flood limits under a read lock
// and records them later under the write lock (device/noise-protocol.go ConsumeMessageInitiation),
// and runs one handshake goroutine per CPU, so two copies taken at once can both pass; each answer
// replaces the keypair of the one before, and an initiator that keeps the first answer sends under
// keys the responder has dropped (src/wg/README.md, "Copies of a first initiation").
//
//   sudo node scripts/wg-double-answer.mjs [--trials 300] [--gap 0] [--bin wireguard-go-current]
//
// A namespace of its own (meshd-wgrace-*) with wireguard-go on its loopback; per trial a fresh
// initiation (timestamps 1 s apart) is sent twice, back to back or --gap ms apart, and the
// responses naming it are counted for 60 ms after the second copy. Prints how many trials got 0, 1 and 2 answers, as one JSON line.
import { spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Noise, Handshake, createInitiation } from '../dist/src/wg/noise.js';
import { CookieGenerator } from '../dist/src/wg/cookie.js';
import { nodeCrypto } from '../dist/src/crypto/backend.js';
import { Lab, waitFor } from '../dist/test/harness/netns.js';
import { which } from '../dist/test/harness/prereq.js';

const argv = process.argv.slice(2);
const opt = (name, dflt) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1] : dflt; };
const x = nodeCrypto.x25519;
const rnd = (n) => new Uint8Array(randomBytes(n));
const b64 = (k) => Buffer.from(k).toString('base64');

if (argv[0] === '--probe') {
  // Inside the namespace: PRIV_B64 RESP_PUB_B64 PORT TRIALS GAP_MS
  const [, privB64, respB64, portText, trialsText, gapText] = argv;
  const gap = Number(gapText);
  const priv = new Uint8Array(Buffer.from(privB64, 'base64'));
  const respPub = new Uint8Array(Buffer.from(respB64, 'base64'));
  const id = { privateKey: priv, publicKey: x.publicFromPrivate(priv) };
  const noise = new Noise(nodeCrypto);
  const macs = new CookieGenerator(nodeCrypto, respPub);
  const ss = x.shared(priv, respPub);
  const answers = new Map();
  const sock = createSocket('udp4');
  sock.on('message', (m) => {
    if (m.length === 92 && m[0] === 2) { const r = m.readUInt32LE(8); answers.set(r, (answers.get(r) ?? 0) + 1); }
  });
  await new Promise((r) => sock.bind(0, '127.0.0.1', r));
  const base = Date.now();
  const trials = Number(trialsText);
  for (let t = 1; t <= trials; t++) {
    const hs = new Handshake(respPub);
    hs.precomputedStaticStatic = ss;
    const m = createInitiation(noise, id, hs, t, rnd, base + t * 1000);
    macs.addMacs(m, 0);
    sock.send(m, Number(portText), '127.0.0.1');
    if (gap > 0) await new Promise((r) => setTimeout(r, gap));
    sock.send(m, Number(portText), '127.0.0.1');
    await new Promise((r) => setTimeout(r, 60));
  }
  const hist = { 0: 0, 1: 0, 2: 0 };
  for (let t = 1; t <= trials; t++) { const n = Math.min(2, answers.get(t) ?? 0); hist[n]++; }
  console.log(JSON.stringify(hist));
  sock.close();
  process.exit(0);
}

const bin = which(opt('bin', 'wireguard-go-current'));
if (!bin) throw new Error('wireguard-go not found: run scripts/install-peers.sh');
const trials = Number(opt('trials', '300'));
const gap = Number(opt('gap', '0'));
const lab = new Lab('wgrace');
const dir = mkdtempSync(join(tmpdir(), 'meshd-wgrace-'));
try {
  const ns = lab.ns('r');
  const ifname = `wgr${process.pid % 100000}`;
  lab.spawn(ns, [bin, '-f', ifname], { env: { ...process.env, LOG_LEVEL: 'error' } });
  await waitFor('wireguard-go to create its interface', () => lab.tryExec(ns, ['wg', 'show', ifname]).status === 0, 10_000, 100);
  const respPriv = x.generatePrivate(rnd);
  const ourPriv = x.generatePrivate(rnd);
  const keyFile = join(dir, 'resp.key');
  writeFileSync(keyFile, `${b64(respPriv)}\n`, { mode: 0o600 });
  lab.exec(ns, ['wg', 'set', ifname, 'private-key', keyFile, 'listen-port', '51820', 'peer', b64(x.publicFromPrivate(ourPriv)), 'allowed-ips', '10.99.0.1/32']);
  lab.exec(ns, ['ip', 'link', 'set', ifname, 'up']);
  const r = spawnSync('ip', ['netns', 'exec', ns, process.execPath, new URL(import.meta.url).pathname, '--probe',
    b64(ourPriv), b64(x.publicFromPrivate(respPriv)), '51820', String(trials), String(gap)], { encoding: 'utf8', timeout: trials * (200 + gap) + 30_000 });
  if (r.status !== 0) throw new Error(`probe failed: ${r.stderr}`);
  const hist = JSON.parse(r.stdout.trim().split('\n').pop());
  console.log(JSON.stringify({ responder: bin, trials, gapMs: gap, answers: hist }));
} finally {
  rmSync(dir, { recursive: true, force: true });
  await lab.dispose();
}
