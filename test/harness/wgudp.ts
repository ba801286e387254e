// A stand-in I/O layer for e2e tests of the WireGuard core: one Device on a node:dgram socket, no
// TUN. It pings the peer's tunnel address (ICMP echo) and answers the peer's pings itself, and
// reports on stdout, one JSON object per line. The real I/O layer (native batched UDP + TUN) is
// elsewhere; this exists only so that the core can be checked against a real wireguard-go.
//
//   node dist/test/harness/wgudp.js '<json config>'   (see Config)
import dgram from 'node:dgram';
import { Device, type WgSink } from '../../src/wg/device.ts';
import { Endpoints } from '../../src/net/endpoint.ts';
import { nodeCrypto } from '../../src/crypto/backend.ts';
import { CookieGenerator } from '../../src/wg/cookie.ts';
import { INITIATION_SIZE } from '../../src/wg/messages.ts';

interface Config {
  /** Our private key, base64. */
  privateKey: string;
  /** The peer's public key, base64. */
  peerPublicKey: string;
  /** Pre-shared key, base64. */
  presharedKey?: string;
  /** Address and port to bind. */
  listen: { ip: string; port: number };
  /** The peer's endpoint; absent: learn it from its handshake. */
  peer?: { ip: string; port: number };
  /** Our tunnel IPv4 address and the peer's. */
  self: string;
  other: string;
  /** Echo requests to send (one every intervalMs), 0 = only answer. */
  pings: number;
  intervalMs: number;
  /** Exit after this long. */
  durationMs: number;
  /** Hold the device under load (handshakes need a cookie first). */
  underLoad?: boolean;
  /** Before pinging, send this many bogus initiations with a valid mac1 (to put the peer under load). */
  floodInitiations?: number;
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config;
const b64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));
const v4 = (s: string): number[] => s.split('.').map(Number);
const out = (o: object): void => { process.stdout.write(`${JSON.stringify(o)}\n`); };

const eps = new Endpoints();
const dev = new Device({ clock: { now: () => performance.now(), wall: () => Date.now() }, log: (msg) => out({ log: msg }) });
dev.setPrivateKey(b64(cfg.privateKey));
dev.setPeer(b64(cfg.peerPublicKey), {
  endpoint: cfg.peer ? eps.of(cfg.peer.ip, cfg.peer.port) : null,
  allowedIPs: [`${cfg.other}/32`],
  presharedKey: cfg.presharedKey ? b64(cfg.presharedKey) : null,
});

if (cfg.underLoad === true) dev.underLoad = true;

const sock = dgram.createSocket('udp4');
const stats = { replies: 0, requestsAnswered: 0, badReplies: 0 };
const sink: WgSink = {
  sendUdp(buf, off, len, to) { sock.send(buf.subarray(off, off + len), to.port, to.ip); },
  writeTun(buf, off, len) { onPacket(buf.slice(off, off + len)); },
};

function checksum(b: Uint8Array, off: number, len: number): number {
  let s = 0;
  for (let i = 0; i < len; i += 2) s += (b[off + i]! << 8) | (b[off + i + 1] ?? 0);
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

function icmp(type: number, id: number, seq: number, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(28 + payload.length);
  p[0] = 0x45; p[2] = p.length >> 8; p[3] = p.length & 0xff; p[8] = 64; p[9] = 1;
  p.set(v4(cfg.self), 12); p.set(v4(cfg.other), 16);
  const c = checksum(p, 0, 20); p[10] = c >> 8; p[11] = c & 0xff;
  p[20] = type; p[24] = id >> 8; p[25] = id & 0xff; p[26] = seq >> 8; p[27] = seq & 0xff;
  p.set(payload, 28);
  const c2 = checksum(p, 20, p.length - 20); p[22] = c2 >> 8; p[23] = c2 & 0xff;
  return p;
}

function send(pkt: Uint8Array): void {
  const buf = new Uint8Array(16 + pkt.length + 64);
  buf.set(pkt, 16);
  dev.sendPacketInPlace(buf, 16, pkt.length, buf.length - 16, sink);
}

const payloadFor = (seq: number): Uint8Array => new Uint8Array([0, 1, 100, 1000, 1372][seq % 5]!).fill(seq & 0xff);

function onPacket(p: Uint8Array): void {
  if (p[9] !== 1) return;
  const seq = (p[26]! << 8) | p[27]!;
  if (p[20] === 0) {
    const want = payloadFor(seq);
    const ok = p.length === 28 + want.length && want.every((b, i) => p[28 + i] === b);
    if (ok) stats.replies++; else stats.badReplies++;
  } else if (p[20] === 8) {
    stats.requestsAnswered++;
    send(icmp(0, (p[24]! << 8) | p[25]!, seq, p.subarray(28)));
  }
}

sock.on('message', (msg, rinfo) => {
  const u = new Uint8Array(msg.buffer, msg.byteOffset, msg.length);
  dev.receiveDatagramInPlace(u, 0, u.length, eps.of(rinfo.address, rinfo.port), sink);
});

sock.bind(cfg.listen.port, cfg.listen.ip, () => {
  out({ ready: true });
  const ticker = setInterval(() => dev.tick(sink), 50);
  if ((cfg.floodInitiations ?? 0) > 0 && cfg.peer) {
    const gen = new CookieGenerator(nodeCrypto, b64(cfg.peerPublicKey));
    for (let i = 0; i < cfg.floodInitiations!; i++) {
      const m = new Uint8Array(INITIATION_SIZE);
      globalThis.crypto.getRandomValues(m.subarray(4, 116));
      m[0] = 1;
      gen.addMacs(m, 0);
      sock.send(m, cfg.peer.port, cfg.peer.ip);
    }
  }
  let seq = 0;
  const pinger = cfg.pings > 0 ? setInterval(() => {
    if (++seq >= cfg.pings) clearInterval(pinger);
    send(icmp(8, 0x4d53, seq, payloadFor(seq)));
  }, cfg.intervalMs) : undefined;
  setTimeout(() => {
    clearInterval(ticker);
    if (pinger) clearInterval(pinger);
    out({ result: { ...stats, counters: Object.fromEntries(Object.entries(dev.counters).filter(([, v]) => v !== 0)), peers: dev.peers().map((p) => ({ endpoint: p.endpoint?.key ?? null, handshake: p.lastHandshakeWallMs > 0 })) } });
    sock.close();
  }, cfg.durationMs);
});
