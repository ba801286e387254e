// Two MagicSocks joined by an in-memory "network" (no sockets, no DERP): disco finds the direct
// path, and hostile datagrams are dropped and counted without a throw.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { generateKeyPair } from '../../src/crypto/box.ts';
import { DISCO_MAGIC, encodeDisco } from '../../src/disco/disco.ts';
import { boxBefore } from '../../src/crypto/box.ts';
import { Endpoints, type Endpoint } from '../../src/net/endpoint.ts';
import { MagicSock } from '../../src/magicsock/magicsock.ts';
import type { NodeInfo } from '../../src/control/netmap.ts';

interface Side { ms: MagicSock; addr: string; node: { privateKey: Uint8Array; publicKey: Uint8Array }; disco: { privateKey: Uint8Array; publicKey: Uint8Array }; endpoints: Endpoints }

function nodeInfo(s: Side, name: string): NodeInfo {
  return {
    id: 1, stableId: name, name: `${name}.test.`, hostname: name, user: 1, nodeKey: s.node.publicKey, nodeKeyText: '',
    discoKey: s.disco.publicKey, discoKeyText: '', addresses: [], allowedIPs: [], endpoints: [s.addr], homeDERP: 0,
    online: true, expired: false, keyExpiry: undefined, lastSeen: undefined, tags: [], primaryRoutes: [], raw: {} as NodeInfo['raw'],
  } as unknown as NodeInfo;
}

describe('MagicSock over an in-memory network', () => {
  let now = 1000;
  const queue: { to: string; from: string; data: Uint8Array }[] = [];
  const sides = new Map<string, Side>();
  const wgIn: { side: string; len: number }[] = [];
  /** The kernel refuses every send (a full socket buffer past the wait budget). */
  let refuse = false;
  function make(addr: string): Side {
    const endpoints = new Endpoints();
    const node = generateKeyPair(), disco = generateKeyPair();
    const s = { addr, node, disco, endpoints } as Side;
    s.ms = new MagicSock({
      io: {
        endpoints, listenPort: 41641,
        sendDatagram: (data: Uint8Array, to: Endpoint) => { if (refuse) return false; queue.push({ to: to.key, from: addr, data: data.slice() }); return true; },
        receiveWireGuard: (_b: Uint8Array, _o: number, len: number) => { wgIn.push({ side: addr, len }); },
      },
      nodePrivate: node.privateKey, discoPrivate: disco.privateKey, log: () => {}, derpHttp: false,
      localEndpoints: () => [addr], onReport: () => {}, now: () => now,
    });
    sides.set(addr, s);
    return s;
  }
  function pump(): number {
    let n = 0;
    for (; queue.length > 0 && n < 1000; n++) {
      const d = queue.shift()!;
      const dst = sides.get(d.to);
      if (!dst) continue;
      const buf = new Uint8Array(d.data.length + 64);
      buf.set(d.data, 32);
      dst.ms.receiveOther(buf, 32, d.data.length, dst.endpoints.parse(d.from));
      now += 1;
    }
    return n;
  }
  const a = make('10.0.0.1:41641'), b = make('10.0.0.2:41641');
  const vepB = a.ms.upsertPeer(nodeInfo(b, 'b'));
  b.ms.upsertPeer(nodeInfo(a, 'a'));
  after(() => { a.ms.close(); b.ms.close(); });

  it('sends nowhere direct until a pong, then to the peer address', () => {
    const wg = new Uint8Array(64);
    assert.equal(a.ms.route(vepB, wg, 0, 32), null, 'no direct path yet (DERP only, and no DERP here)');
    assert.ok(pump() >= 2, 'a ping and a pong crossed');
    assert.equal(a.ms.route(vepB, wg, 0, 32)?.key, '10.0.0.2:41641');
    assert.equal(a.ms.pathOf(b.node.publicKey)?.direct, '10.0.0.2:41641');
    assert.equal(b.ms.counters.pongsSent, 1);
  });

  it('keeps the direct path when a ping cannot be sent (only the ping is forgotten, as in tailscale)', async () => {
    // Under a heavy transfer the socket buffer can be full past the wait budget: the send fails but
    // says nothing about the peer. Dropping bestAddr there put every packet on DERP.
    const wg = new Uint8Array(64);
    refuse = true;
    const r = a.ms.ping(b.node.publicKey, 20);
    refuse = false;
    assert.equal(await r, undefined, 'no pong: the ping never left');
    assert.equal(a.ms.route(vepB, wg, 0, 32)?.key, '10.0.0.2:41641', 'still direct');
    assert.equal(a.ms.pathOf(b.node.publicKey)?.direct, '10.0.0.2:41641');
  });

  it('with no direct path, sends over UDP to where the device last authenticated the peer from', () => {
    const c = make('10.0.0.3:41641');
    const vepC = b.ms.upsertPeer(nodeInfo(c, 'c'));
    const wg = new Uint8Array(64);
    assert.equal(b.ms.route(vepC, wg, 0, 32), null, 'no path: DERP only');
    queue.length = 0; // the discovery pings: lost
    vepC.noteAuthenticatedFrom(vepC); // over DERP: says nothing about UDP
    assert.equal(b.ms.route(vepC, wg, 0, 32), null);
    vepC.noteAuthenticatedFrom(b.endpoints.parse('10.0.0.3:41641'));
    assert.equal(b.ms.route(vepC, wg, 0, 32)?.key, '10.0.0.3:41641');
    assert.equal(b.ms.pathOf(c.node.publicKey)?.direct, null, 'not a confirmed direct path');
    now += 5_000;
    assert.equal(b.ms.route(vepC, wg, 0, 32), null, 'heard 5 s ago: DERP only again');
    queue.length = 0;
    c.ms.close();
  });

  it('drops random bytes, truncated disco, forged boxes and unknown senders, counting each', () => {
    const from = b.endpoints.parse('10.0.0.9:9');
    const feed = (p: Uint8Array) => b.ms.receiveOther(p, 0, p.length, from);
    const c0 = { ...b.ms.counters };
    for (let i = 0; i < 200; i++) feed(new Uint8Array(randomBytes(1 + (i % 300))));
    // Cut inside the header (junk) and inside the box (a box that cannot open).
    for (const len of [DISCO_MAGIC.length + 40, DISCO_MAGIC.length + 32 + 24 + 8]) {
      const truncated = new Uint8Array(len);
      truncated.set(DISCO_MAGIC, 0);
      truncated.set(a.disco.publicKey, DISCO_MAGIC.length);
      feed(truncated);
    }
    const forged = encodeDisco({ type: 'ping', txId: new Uint8Array(12), padding: 0 }, a.disco.publicKey, boxBefore(generateKeyPair().publicKey, a.disco.privateKey));
    feed(forged);
    const stranger = generateKeyPair();
    feed(encodeDisco({ type: 'ping', txId: new Uint8Array(12), padding: 0 }, stranger.publicKey, boxBefore(b.disco.publicKey, stranger.privateKey)));
    const c = b.ms.counters;
    assert.ok(c.dropJunk > c0.dropJunk, 'random bytes counted as junk');
    assert.ok(c.dropDiscoBadBox >= c0.dropDiscoBadBox + 2, `truncated and forged boxes: ${c.dropDiscoBadBox}`);
    assert.equal(c.dropDiscoUnknownSender, c0.dropDiscoUnknownSender + 1);
    assert.equal(c.pongsSent, c0.pongsSent, 'nothing answered');
  });
});

describe('MagicSock between two NATs that drop unsolicited packets', () => {
  // Each side's NAT lets in a datagram only from an address that side has sent to before.
  let now = 1000;
  const queue: { to: string; from: string; data: Uint8Array }[] = [];
  const sides = new Map<string, Side>();
  const sentTo = new Set<string>();
  let dropped = 0;
  function make(addr: string): Side {
    const endpoints = new Endpoints();
    const node = generateKeyPair(), disco = generateKeyPair();
    const s = { addr, node, disco, endpoints } as Side;
    s.ms = new MagicSock({
      io: {
        endpoints, listenPort: 41641,
        sendDatagram: (data: Uint8Array, to: Endpoint) => { sentTo.add(`${addr}>${to.key}`); queue.push({ to: to.key, from: addr, data: data.slice() }); return true; },
        receiveWireGuard: () => {},
      },
      nodePrivate: node.privateKey, discoPrivate: disco.privateKey, log: () => {}, derpHttp: false,
      localEndpoints: () => [addr], onReport: () => {}, now: () => now,
    });
    sides.set(addr, s);
    return s;
  }
  function pump(): void {
    for (let n = 0; queue.length > 0 && n < 1000; n++) {
      const d = queue.shift()!;
      const dst = sides.get(d.to);
      if (!dst) continue;
      if (!sentTo.has(`${d.to}>${d.from}`)) { dropped++; continue; }
      dst.ms.receiveOther(d.data, 0, d.data.length, dst.endpoints.parse(d.from));
      now += 1;
    }
  }
  const a = make('198.18.0.101:41641'), b = make('198.18.0.102:41641');
  const vepB = a.ms.upsertPeer(nodeInfo(b, 'b'));
  const vepA = b.ms.upsertPeer(nodeInfo(a, 'a'));
  after(() => { a.ms.close(); b.ms.close(); });

  it('both sides go direct within a round trip of the second side starting, not after a 5 s retry', () => {
    const wg = new Uint8Array(64);
    a.ms.route(vepB, wg, 0, 32); // a pings b: dropped at b's NAT, but opens a's
    pump();
    assert.equal(dropped, 1, "a's first ping died at b's NAT");
    now += 20;
    b.ms.route(vepA, wg, 0, 32); // b starts (on a's call-me-maybe or its first packet): its ping gets through
    pump();
    assert.notEqual(b.ms.pathOf(a.node.publicKey)?.direct, null, 'b direct');
    assert.equal(a.ms.pathOf(b.node.publicKey)?.direct, '198.18.0.102:41641', 'a direct by pinging back');
    assert.ok(now < 1100, `within ms: ${now}`);
  });
});
