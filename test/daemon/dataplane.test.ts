// The data plane's layers working together in one process: the real DataPlane (TunWrapper, device
// runner, handshake queue), the real WireGuard Device with node:crypto and the real clock, over an
// in-memory host device and an in-memory UDP link (test/harness/memio.ts).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nodeCrypto } from '../../src/crypto/backend.ts';
import { DataPlane } from '../../src/daemon/dataplane.ts';
import { Device, UNDER_LOAD_QUEUE_DEPTH, type WgSink } from '../../src/wg/device.ts';
import { CookieGenerator } from '../../src/wg/cookie.ts';
import { INITIATION_SIZE, MessageType } from '../../src/wg/messages.ts';
import { PeerEndpoint } from '../../src/magicsock/peer-endpoint.ts';
import type { Endpoint } from '../../src/net/endpoint.ts';
import type { PacketFilter } from '../../src/filter/filter.ts';
import { MemHost, memLink } from '../harness/memio.ts';
import { rand, seededRandom } from '../harness/bytes.ts';
import { FakeClock, ipv4 } from '../harness/wgpipe.ts';

const MTU = 1280;
const quiet = (): void => {};

/** Two data planes joined in memory, with a completed handshake. */
async function pair() {
  const link = memLink(MTU);
  const hostA = new MemHost(MTU), hostB = new MemHost(MTU);
  const a = DataPlane.open({ name: 'a', mtu: MTU, log: quiet, device: hostA, bind: link.a });
  const b = DataPlane.open({ name: 'b', mtu: MTU, log: quiet, device: hostB, bind: link.b });
  a.device.setPrivateKey(nodeCrypto.x25519.generatePrivate(rand));
  b.device.setPrivateKey(nodeCrypto.x25519.generatePrivate(rand));
  a.device.setPeer(b.device.publicKey()!, { endpoint: link.b.self, allowedIPs: ['10.0.0.2/32'] });
  b.device.setPeer(a.device.publicKey()!, { endpoint: link.a.self, allowedIPs: ['10.0.0.1/32'] });
  const pkt = ipv4('10.0.0.1', '10.0.0.2', 1200);
  hostA.inject(pkt, 1);
  await until(() => hostB.written === 1, 'the first packet after the handshake');
  const close = (): void => { a.close(); b.close(); };
  return { link, hostA, hostB, a, b, pkt, close };
}

/** Runs event-loop turns until cond() holds; fails after 10 s. */
async function until(cond: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!cond()) {
    if (Date.now() > end) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** An initiation with random contents and a valid mac1 for `responder` (no mac2: no cookie yet, or with `gen`'s). */
function junkInitiation(responder: Uint8Array, gen = new CookieGenerator(nodeCrypto, responder), now = 0): Uint8Array {
  const m = rand(INITIATION_SIZE);
  m[0] = MessageType.Initiation; m[1] = 0; m[2] = 0; m[3] = 0;
  gen.addMacs(m, now);
  return m;
}

describe('DataPlane layers', () => {
  it('sends a first initiation\'s deferred copy when the copy gap ends, not at the next timer beat', async () => {
    // Beats 10 s apart: only a timer armed for the gap's end can send the copy within the wait.
    const link = memLink(MTU);
    const a = DataPlane.open({ name: 'a', mtu: MTU, log: quiet, device: new MemHost(MTU), bind: link.a, initiationResendMs: 1000, tickMs: 10_000 });
    try {
      a.device.setPrivateKey(nodeCrypto.x25519.generatePrivate(rand));
      const peer = nodeCrypto.x25519.publicFromPrivate(nodeCrypto.x25519.generatePrivate(rand));
      a.device.setPeer(peer, { endpoint: link.b.self, allowedIPs: ['10.0.0.2/32'] }); // nobody answers
      assert.equal(a.handshakeIfIdle(peer), true, 'the first initiation went');
      assert.equal(a.resendPendingInitiation(peer), false, 'a copy right after it waits for the gap');
      assert.equal(a.device.counters.txInitiationResends, 0);
      const t0 = Date.now();
      await until(() => a.device.counters.txInitiationResends === 1 || Date.now() - t0 > 1500, 'the copy');
      assert.equal(a.device.counters.txInitiationResends, 1, 'the copy went within 1.5 s (the gap is 100 ms)');
    } finally {
      a.close();
    }
  });

  it('keeps carrying data while a flood of valid-mac1 initiations waits in the handshake queue, answering the flood with cookie replies', async () => {
    const p = await pair();
    try {
      const flooder = p.link.endpoints.of('198.18.0.66', 40000);
      const flood = Array.from({ length: 128 }, () => junkInitiation(p.b.device.publicKey()!));
      const rounds = 30, perRound = 32;
      let whileQueued = 0;
      const write = p.hostB.writeBatch.bind(p.hostB);
      p.hostB.writeBatch = (tx) => { if (p.b.handshakes.length > 0) whileQueued += tx.count; return write(tx); };
      for (let r = 0; r < rounds; r++) {
        p.link.b.inject(flood, flooder);
        p.hostA.inject(p.pkt, perRound);
        await until(() => p.hostB.written === 1 + (r + 1) * perRound, `round ${r + 1}'s data`);
      }
      const c = p.b.device.counters;
      assert.ok(whileQueued >= rounds * perRound * 0.9,
        `${whileQueued} of ${rounds * perRound} data packets reached the host while handshakes were queued`);
      assert.ok(c.underLoadEntered! >= 1, 'the queue depth put the device under load');
      assert.ok(c.txCookieReplies! > 0 && c.dropRxNeedCookie === c.txCookieReplies, 'initiations without mac2 got cookie replies under load');
      const cookies = p.link.b.elsewhere.filter((d) => d.to === flooder && d.data[0] === MessageType.CookieReply);
      assert.equal(cookies.length, c.txCookieReplies, 'cookie replies went to the flooder');
      await until(() => p.b.handshakes.length === 0, 'the queue to drain');
      assert.equal(c.rxData, 1 + rounds * perRound);
      assert.equal(c.dropRxDecryptFailed, 0);
    } finally {
      p.close();
    }
  });

  it(`is under load from a queue depth of ${UNDER_LOAD_QUEUE_DEPTH}, not below`, () => {
    const clock = new FakeClock();
    const d = new Device({ clock, random: seededRandom(3) });
    d.noteHandshakeQueueDepth(UNDER_LOAD_QUEUE_DEPTH - 1);
    assert.equal(d.underLoad, false);
    d.noteHandshakeQueueDepth(UNDER_LOAD_QUEUE_DEPTH);
    assert.equal(d.underLoad, true);
    clock.t += 999;
    assert.equal(d.underLoad, true, 'for a second after');
    clock.t += 2;
    assert.equal(d.underLoad, false);
  });

  it('rate-limits handshakes that came over DERP per sending node, not per the DERP address they share', () => {
    const clock = new FakeClock();
    const r = new Device({ clock, random: seededRandom(5) });
    r.setPrivateKey(nodeCrypto.x25519.generatePrivate(rand));
    const rpub = r.publicKey()!;
    r.underLoad = true;
    const out: { data: Uint8Array; to: Endpoint }[] = [];
    const sink: WgSink = { sendUdp: (b, o, l, to) => { out.push({ data: b.slice(o, o + l), to }); }, writeTun: () => {} };
    // Two DERP peers as magicsock makes them: both 127.3.3.40, told apart by node key.
    const x = new PeerEndpoint(1, 'aa'.repeat(32)), y = new PeerEndpoint(2, 'bb'.repeat(32));
    assert.equal(x.ip, y.ip);
    const cookieFor = (ep: PeerEndpoint): CookieGenerator => {
      const gen = new CookieGenerator(nodeCrypto, rpub);
      const m = junkInitiation(rpub, gen, clock.now());
      r.receiveDatagramInPlace(m, 0, m.length, ep, sink);
      const reply = out.pop()!;
      assert.equal(reply.to, ep);
      assert.equal(reply.data[0], MessageType.CookieReply);
      assert.ok(gen.consumeReply(reply.data, clock.now()));
      return gen;
    };
    const gx = cookieFor(x);
    for (let i = 0; i < 8; i++) {
      const m = junkInitiation(rpub, gx, clock.now());
      r.receiveDatagramInPlace(m, 0, m.length, x, sink);
    }
    const limited = r.counters.dropRxRateLimited!;
    assert.ok(limited >= 3, `x exhausted its burst (${limited} rate-limited)`);
    const invalid = r.counters.dropRxHandshakeInvalid!;
    const gy = cookieFor(y);
    const m = junkInitiation(rpub, gy, clock.now());
    r.receiveDatagramInPlace(m, 0, m.length, y, sink);
    assert.equal(r.counters.dropRxRateLimited, limited, 'y has its own bucket');
    assert.equal(r.counters.dropRxHandshakeInvalid, invalid + 1, "y's initiation passed the limiter (and then failed as junk)");
  });

  it('runs the packet filter on the TUN side: RunIn decides what reaches the host, and deliverToHost bypasses it', async () => {
    const p = await pair();
    try {
      let runIn = 0;
      p.b.filter = { runIn: () => { runIn++; return false; }, runOut: () => {}, counters: {} } as unknown as PacketFilter;
      p.hostA.inject(p.pkt, 4);
      await until(() => p.b.device.counters.rxData === 5, 'four more packets decrypted');
      assert.equal(runIn, 4);
      assert.equal(p.hostB.written, 1, 'the filter kept them from the host');
      p.b.deliverToHost(p.pkt, 0, p.pkt.length);
      assert.equal(p.hostB.written, 2);
      p.b.local = { handleOutbound: () => true };
      p.hostB.inject(ipv4('10.0.0.2', '10.0.0.1', 40), 3);
      assert.equal(p.b.device.counters.txData, 0, 'the local handler took the packets before WireGuard');
    } finally {
      p.close();
    }
  });
});

describe('DataPlane on a lossy path', () => {
  it("pauses UDP GSO while the sender's counters show loss on the way in, and not on a clean path", async () => {
    const p = await pair();
    try {
      p.b.runTimers();
      for (let k = 1; k <= 3; k++) {
        p.hostA.inject(p.pkt, 100);
        await until(() => p.b.device.counters.rxData === 1 + 100 * k, 'packets over a clean link');
      }
      p.b.runTimers();
      assert.equal(p.link.b.gsoPaused, false, 'a clean path keeps GSO');
      assert.equal(p.b.device.counters.rxCountersSkipped, 0);
      p.link.a.dropEvery = 8; // 12.5% of a's transport messages lost
      for (let k = 1; k <= 4; k++) {
        p.hostA.inject(p.pkt, 100);
        await until(() => p.b.device.counters.rxData === 301 + 100 * k - p.link.a.lost, 'the packets the link kept');
      }
      p.b.runTimers();
      assert.equal(p.b.device.counters.rxCountersSkipped! - p.b.device.counters.rxCountersLate!, p.link.a.lost - 1,
        'every lost one counted but the last one sent (no later counter shows it yet)');
      assert.equal(p.link.b.gsoPaused, true, 'b sends one datagram per skb while its incoming path loses 12.5%');
      assert.equal(p.link.a.gsoPaused, false, 'a saw no loss on its way in');
      assert.equal(p.b.counters().lossyWindows! >= 1, true);
    } finally {
      p.close();
    }
  });
});
