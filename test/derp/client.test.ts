// The DERP client against an in-process fake server that scripts each connection, including hostile
// input: bogus frame lengths, bad boxes, refused upgrades, junk frames, silence, restarts.
import { afterEach, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { boxBefore, generateKeyPair } from '../../src/crypto/box.ts';
import { DERP_MAX_QUEUED_BYTES, DerpClient, type DerpClientOptions } from '../../src/derp/client.ts';
import {
  encodeFrame, encodeHealth, encodePeerGone, encodePingPong, encodeRecvPacket, encodeRestarting, encodeServerInfo,
  encodeServerKey, FrameType,
} from '../../src/derp/frames.ts';
import { FakeDerp, type FakeConn } from './fake-server.ts';

const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let server: FakeDerp | undefined;
let clients: DerpClient[] = [];

afterEach(async () => {
  for (const c of clients) c.close();
  clients = [];
  await server?.close();
  const errors = server?.errors ?? [];
  server = undefined;
  assert.deepEqual(errors.map((e) => e.message), [], 'fake server script errors');
});

async function setup(opts: Partial<DerpClientOptions> = {}): Promise<{ s: FakeDerp; c: DerpClient; key: ReturnType<typeof generateKeyPair> }> {
  const s = new FakeDerp();
  server = s;
  await s.listen();
  const key = generateKeyPair();
  const url = opts.url === '' ? `http://127.0.0.1:${s.port}` : s.url;
  const c = new DerpClient({ privateKey: key.privateKey, allowInsecureHttp: true, backoffInitialMs: 10, backoffMaxMs: 50, ...opts, url });
  clients.push(c);
  return { s, c, key };
}

async function waitFor(cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting for condition');
    await sleep(5);
  }
}

describe('derp/client against a fake server', () => {
  it('refuses a plain-http URL unless allowInsecureHttp is set', () => {
    assert.throws(() => new DerpClient({ url: 'http://127.0.0.1:1/derp', privateKey: generateKeyPair().privateKey }), /allowInsecureHttp/);
    assert.throws(() => new DerpClient({ url: 'ftp://x/derp', privateKey: generateKeyPair().privateKey }), /scheme/);
  });

  it('does the handshake, sends NotePreferred, and speaks packets, pings and server notices', async () => {
    const { s, c, key } = await setup({ preferred: true, appName: 'meshd-test' });
    const peer = generateKeyPair().publicKey;
    let conn: FakeConn | undefined;
    const got: { type: number; payload: string }[] = [];
    s.script = async (fc) => {
      conn = fc;
      await s.handshake(fc);
      for (;;) { const f = await fc.nextFrame(); got.push({ type: f.type, payload: toHex(f.payload) }); }
    };
    c.start();
    const [info] = await once(c, 'connected');
    assert.equal(toHex(info.serverKey), toHex(s.key.publicKey));
    // Connected once ClientInfo is sent (as tailscale's derp.NewClient); the server reads it after.
    await waitFor(() => conn?.clientKey !== undefined && c.verified);
    assert.equal(toHex(conn!.clientKey!), toHex(key.publicKey));
    assert.deepEqual(conn!.info, { version: 2, canAckPings: true, appName: 'meshd-test' });
    assert.match(conn!.head, /^GET \/derp HTTP\/1\.1\r\n/);
    assert.match(conn!.head, /\r\nUpgrade: DERP\r\n/);
    assert.match(conn!.head, /\r\nConnection: Upgrade\r\n/);
    assert.match(conn!.head, new RegExp(`\\r\\nHost: 127\\.0\\.0\\.1:${s.port}\\r\\n`));

    const packets: [string, string][] = [];
    const events: string[] = [];
    c.on('packet', (src, data) => packets.push([toHex(src), toHex(data)]));
    c.on('peer-gone', (p, r) => events.push(`gone ${toHex(p).slice(0, 4)} ${r}`));
    c.on('health', (p) => events.push(`health ${p}`));
    c.on('keep-alive', () => events.push('keepalive'));

    conn!.write(encodePingPong(FrameType.ping, Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8])));
    conn!.write(encodeRecvPacket(peer, Uint8Array.from([0xca, 0xfe])));
    conn!.write(encodeFrame(0x42, Uint8Array.from([1, 2, 3]))); // unknown type: skipped
    conn!.write(encodeFrame(FrameType.recvPacket, new Uint8Array(10))); // short: dropped
    conn!.write(encodeFrame(FrameType.peerGone, peer)); // old server: no reason byte
    conn!.write(encodePeerGone(peer, 1));
    conn!.write(encodeHealth('duplicate connection'));
    conn!.write(encodeFrame(FrameType.keepAlive));
    conn!.write(encodeServerKey(s.key.publicKey)); // late ServerKey: ignored
    assert.ok(c.send(peer, Uint8Array.from([0xbe, 0xef])));

    await waitFor(() => events.includes('keepalive') && got.length >= 3);
    assert.deepEqual(packets, [[toHex(peer), 'cafe']]);
    assert.deepEqual(events, [`gone ${toHex(peer).slice(0, 4)} 0`, `gone ${toHex(peer).slice(0, 4)} 1`, 'health duplicate connection', 'keepalive']);
    assert.equal(got[0]?.type, FrameType.notePreferred, 'NotePreferred comes first');
    got.sort((a, b) => a.type - b.type);
    assert.deepEqual(got, [
      { type: FrameType.sendPacket, payload: `${toHex(peer)}beef` },
      { type: FrameType.notePreferred, payload: '01' },
      { type: FrameType.pong, payload: '0102030405060708' },
    ]);
    assert.equal(c.counters.unknownFrames, 1);
    assert.equal(c.counters.bogusFrames, 1);
    assert.equal(c.counters.pingsAnswered, 1);
    assert.equal(c.counters.packetsIn, 1);
    assert.equal(c.counters.packetsOut, 1);
    assert.equal(c.state, 'connected');
  });

  it('is usable as soon as ClientInfo is sent: a packet goes out before the server\'s ServerInfo (as tailscale\'s derp.NewClient)', async () => {
    const { s, c } = await setup();
    const peer = generateKeyPair().publicKey;
    let before: { type: number; payload: string } | undefined;
    s.script = async (fc) => {
      await fc.readHead();
      fc.write('HTTP/1.1 101 Switching Protocols\r\n\r\n');
      fc.write(encodeServerKey(s.key.publicKey));
      const ci = await fc.nextFrame();
      assert.equal(ci.type, FrameType.clientInfo);
      // No ServerInfo until the client's first packet arrived.
      const f = await fc.nextFrame();
      before = { type: f.type, payload: toHex(f.payload) };
      fc.write(encodeServerInfo(boxBefore(ci.payload.slice(0, 32), s.key.privateKey)));
      for (;;) await fc.nextFrame();
    };
    c.on('connected', () => { c.send(peer, Uint8Array.from([0xab])); });
    c.start();
    await waitFor(() => c.verified);
    assert.deepEqual(before, { type: FrameType.sendPacket, payload: `${toHex(peer)}ab` });
    assert.equal(c.counters.connects, 1);
  });

  it('closes on a bogus frame length, counts it, and reconnects', async () => {
    const { s, c } = await setup();
    s.script = async (fc, i) => {
      await s.handshake(fc);
      if (i === 0) fc.write(Uint8Array.from([FrameType.recvPacket, 0xff, 0xff, 0xff, 0xff, 0]));
    };
    const reasons: string[] = [];
    c.on('disconnected', (r) => reasons.push(r));
    c.start();
    await waitFor(() => c.counters.connects === 2);
    assert.equal(c.counters.protocolErrors, 1);
    assert.match(reasons[0]!, /bogus frame length 4294967295/);
    assert.equal(s.conns.length, 2);
  });

  it('retries with backoff after a refused upgrade (HTTP 426)', async () => {
    const { s, c } = await setup();
    s.script = async (fc, i) => {
      if (i === 0) {
        await fc.readHead();
        fc.write('HTTP/1.1 426 Upgrade Required\r\nContent-Length: 35\r\n\r\nDERP requires connection upgrade\n');
        return;
      }
      await s.handshake(fc);
    };
    c.start();
    await once(c, 'connected');
    assert.equal(c.counters.connectFailures, 1);
    assert.equal(c.counters.protocolErrors, 1);
  });

  it('treats a bad greeting or an unopenable ServerInfo as a failed connect', async () => {
    const { s, c } = await setup();
    const other = generateKeyPair();
    s.script = async (fc, i) => {
      if (i === 0) {
        await fc.readHead();
        fc.write('HTTP/1.1 101 Switching Protocols\r\n\r\n');
        const bad = encodeServerKey(s.key.publicKey);
        bad[5] = 0; // breaks the magic
        fc.write(bad);
        return;
      }
      if (i === 1) {
        await fc.readHead();
        fc.write('HTTP/1.1 101 Switching Protocols\r\n\r\n');
        fc.write(encodeServerKey(s.key.publicKey));
        const ci = await fc.nextFrame();
        // sealed with the wrong key
        fc.write(encodeServerInfo(boxBefore(ci.payload.slice(0, 32), other.privateKey)));
        return;
      }
      await s.handshake(fc);
    };
    c.start();
    // The second attempt is usable once its ClientInfo is sent, then closed by its bad ServerInfo:
    // a failed connect (not a disconnect), and only the third is verified.
    await waitFor(() => c.verified);
    assert.equal(c.counters.connectFailures, 2);
    assert.equal(c.counters.protocolErrors, 2);
    assert.equal(c.counters.disconnects, 0);
    assert.equal(c.counters.connects, 2, 'attempts 2 and 3 were usable');
  });

  it('treats random bytes instead of an HTTP response as a failed connect, then connects', async () => {
    const { s, c } = await setup({ url: '' });
    s.script = async (fc, i) => {
      if (i < 2) {
        await fc.readHead();
        fc.write(Uint8Array.from({ length: i === 0 ? 20_000 : 300 }, () => (Math.random() * 256) | 0));
        if (i === 1) fc.write('\r\n\r\n');
        return;
      }
      await s.handshake(fc);
    };
    c.start();
    await once(c, 'connected');
    assert.equal(c.counters.protocolErrors, 2);
    assert.match(s.conns[2]!.head, /^GET \/derp HTTP\/1\.1/, 'a URL without a path asks for /derp');
  });

  it('survives random junk frames after the handshake, counting them', async () => {
    const { s, c } = await setup();
    s.script = async (fc, i) => {
      await s.handshake(fc);
      if (i > 0) return;
      for (let n = 0; n < 500; n++) {
        const type = (Math.random() * 32) | 0;
        if (type === FrameType.serverInfo) continue;
        const len = (Math.random() * 60) | 0;
        fc.write(encodeFrame(type, Uint8Array.from({ length: len }, () => (Math.random() * 256) | 0)));
      }
      fc.write(encodeFrame(FrameType.keepAlive));
    };
    let ka = 0;
    c.on('keep-alive', () => ka++);
    c.start();
    await waitFor(() => c.counters.framesIn >= 400 && ka > 0);
    assert.ok(c.counters.unknownFrames + c.counters.bogusFrames > 0);
    assert.equal(c.counters.connects, 1, 'junk of allowed sizes does not break the connection');
  });

  it('reconnects after the server goes silent for longer than the read timeout', async () => {
    const { s, c } = await setup({ readTimeoutMs: 200 });
    const reasons: string[] = [];
    c.on('disconnected', (r) => reasons.push(r));
    c.start();
    await waitFor(() => c.counters.connects === 2, 3000);
    assert.match(reasons[0]!, /no frame from server for 200 ms/);
    assert.equal(s.conns.length, 2);
  });

  it('closes a connection whose queued writes make no progress for writeTimeoutMs (server stopped reading), then reconnects', async () => {
    const { s, c } = await setup({ writeTimeoutMs: 300 });
    const reasons: string[] = [];
    c.on('disconnected', (r) => reasons.push(r));
    c.start();
    await waitFor(() => c.connected && s.conns.length === 1);
    s.conns[0]!.socket.pause(); // a black hole: nothing is read, nothing is refused
    const dst = new Uint8Array(32).fill(7);
    const pkt = new Uint8Array(60_000);
    for (let i = 0; i < 400 && c.counters.writeTimeouts === 0; i++) {
      for (let k = 0; k < 8; k++) c.send(dst, pkt);
      await sleep(5);
    }
    await waitFor(() => c.counters.connects === 2, 5000);
    assert.equal(c.counters.writeTimeouts, 1);
    assert.match(reasons[0]!, /made no progress for 300 ms/);
  });

  it('gives up a connection whose server stops answering after a liveness ping, and reconnects within the bound', async () => {
    const live = { idlePingMs: 300, activePingMs: 100, pingTimeoutMs: 200 };
    const { s, c } = await setup({ liveness: live });
    const reasons: string[] = [];
    c.on('disconnected', (r) => reasons.push(r));
    let pingsSeen = 0;
    s.script = async (fc, i) => {
      await s.handshake(fc);
      if (i > 0) return;
      // A black hole: the connection stays open, nothing comes back (no pong, no keep-alive).
      for (;;) if ((await fc.nextFrame()).type === FrameType.ping) pingsSeen++;
    };
    c.start();
    await once(c, 'connected');
    const t0 = Date.now();
    await waitFor(() => c.counters.connects === 2, 3000);
    const ms = Date.now() - t0;
    // idle 300 + timeout 200, checked every 20 ms, then one backoff (<= 50 ms) and a loopback handshake.
    assert.ok(ms < 900, `reconnected ${ms} ms after the server went silent`);
    assert.ok(ms >= 480, `not before idle + timeout (${ms} ms)`);
    assert.equal(c.counters.livenessTimeouts, 1);
    assert.equal(pingsSeen, 1, 'one ping, then no more while it is outstanding');
    assert.match(reasons[0]!, /no answer from server within 200 ms of a ping/);
  });

  it('pings soon after a send the server does not answer (a side with data for a dead server)', async () => {
    const { s, c } = await setup({ liveness: { idlePingMs: 60_000, activePingMs: 100, pingTimeoutMs: 200 } });
    s.script = async (fc, i) => { await s.handshake(fc); if (i === 0) for (;;) await fc.nextFrame(); };
    c.start();
    await once(c, 'connected');
    await sleep(150);
    const t0 = Date.now();
    c.send(new Uint8Array(32).fill(3), new Uint8Array(100));
    await waitFor(() => c.counters.connects === 2, 3000);
    const ms = Date.now() - t0;
    assert.ok(ms < 600, `reconnected ${ms} ms after the send (idle ping alone would take 60 s)`);
    assert.equal(c.counters.livenessTimeouts, 1);
  });

  it('keeps a live idle connection, pinging it a bounded number of times', async () => {
    const { s, c } = await setup({ liveness: { idlePingMs: 100, activePingMs: 50, pingTimeoutMs: 100 } });
    let pings = 0;
    s.script = async (fc) => {
      await s.handshake(fc);
      for (;;) {
        const f = await fc.nextFrame();
        if (f.type === FrameType.ping) { pings++; fc.write(encodePingPong(FrameType.pong, f.payload)); }
      }
    };
    c.start();
    await once(c, 'connected');
    await sleep(1500);
    assert.equal(c.counters.connects, 1, 'no reconnect while the server answers');
    assert.equal(c.counters.livenessTimeouts, 0);
    assert.equal(c.counters.livenessPings, pings);
    // One per idlePingMs (+ the 20 ms tick and the round trip) at most: 15 in 1.5 s; at least a few.
    assert.ok(pings >= 5 && pings <= 15, `${pings} pings in 1.5 s idle`);
  });

  it('does not ping a connection that keeps hearing from the server', async () => {
    const { s, c } = await setup({ liveness: { idlePingMs: 250, activePingMs: 150, pingTimeoutMs: 100 } });
    s.script = async (fc) => {
      await s.handshake(fc);
      for (let i = 0; i < 60 && !fc.socket.destroyed; i++) { fc.write(encodeFrame(FrameType.keepAlive, new Uint8Array(0))); await sleep(25); }
    };
    c.start();
    await once(c, 'connected');
    for (let i = 0; i < 40; i++) { c.send(new Uint8Array(32).fill(3), new Uint8Array(100)); await sleep(25); }
    assert.equal(c.counters.livenessPings, 0);
    assert.equal(c.counters.connects, 1);
  });

  it('gives a TCP connect dialTimeoutMs, then retries', async () => {
    // A dialer whose connect never completes stands in for a SYN into a black hole.
    const { Socket } = await import('node:net');
    let dials = 0;
    const { c } = await setup({
      dialTimeoutMs: 100, connectTimeoutMs: 10_000,
      dial: () => { dials++; const sock = new Socket(); (sock as { connecting: boolean }).connecting = true; return sock; },
    });
    const t0 = Date.now();
    c.start();
    await waitFor(() => c.counters.connectFailures >= 2, 3000);
    assert.ok(Date.now() - t0 < 1000, 'not the 10 s handshake limit');
    assert.ok(dials >= 2);
  });

  it('dials at once when asked while its reconnect backoff has grown (a packet waits after the network returns)', async () => {
    // The network is down: every connect fails at once (here: refused), and the backoff grows to
    // seconds. When it is back, a packet to send must not wait for the backoff.
    const { createServer, connect } = await import('node:net');
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const deadPort = (closed.address() as { port: number }).port;
    await new Promise<void>((r) => closed.close(() => r()));
    let down = true;
    const logs: string[] = [];
    const { c } = await setup({
      backoffInitialMs: 2000, backoffMaxMs: 5000, log: (m) => logs.push(m), random: () => 0.99,
      dial: () => connect({ host: '127.0.0.1', port: down ? deadPort : server!.port }),
    });
    c.start();
    await waitFor(() => c.counters.connectFailures >= 1 && c.state === 'waiting');
    c.dialSoon();
    await waitFor(() => c.counters.connectFailures >= 2 && c.state === 'waiting');
    c.dialSoon();
    c.dialSoon();
    await waitFor(() => c.counters.connectFailures >= 3 && c.state === 'waiting');
    assert.equal(logs.filter((l) => l.startsWith('connect failed:')).length, 1, `the same failure logged once: ${logs.join(' | ')}`);
    down = false;
    const t0 = performance.now();
    c.dialSoon();
    await waitFor(() => c.connected, 1500);
    assert.ok(performance.now() - t0 < 500, `connected ${Math.round(performance.now() - t0)} ms after the ask, not after the ~2-4 s backoff`);
    await waitFor(() => c.verified, 1500); // the failures are summed up once ServerInfo checks out
    assert.ok(logs.some((l) => /connected after 3 failed attempts/.test(l)), logs.join(' | '));
    c.dialSoon(); // connected: nothing to do
    assert.equal(c.counters.connects, 1);
  });

  it('keeps at most ~32 packets queued in-process for a server that does not read, dropping and counting the rest', async () => {
    const { s, c } = await setup({ writeTimeoutMs: 60_000 });
    c.start();
    await waitFor(() => c.connected && s.conns.length === 1);
    s.conns[0]!.socket.pause();
    const dst = new Uint8Array(32).fill(7);
    const pkt = new Uint8Array(1400);
    let maxQueued = 0;
    // The kernel's socket buffers on loopback take a few MB first; then our queue fills.
    for (let i = 0; i < 2000 && c.counters.dropBackpressure < 100; i++) {
      for (let k = 0; k < 50; k++) { c.send(dst, pkt); maxQueued = Math.max(maxQueued, c.queuedBytes); }
      await sleep(1);
    }
    assert.ok(c.counters.dropBackpressure >= 100, 'sends beyond the queue are dropped');
    assert.ok(maxQueued <= DERP_MAX_QUEUED_BYTES + 1400 + 40, `at most ${DERP_MAX_QUEUED_BYTES} bytes (+ one frame) queued, saw ${maxQueued}`);
    assert.ok(maxQueued >= DERP_MAX_QUEUED_BYTES, `the queue did fill (${maxQueued})`);
  });

  it('keeps a connection whose writes are slow but moving', async () => {
    const { s, c } = await setup({ writeTimeoutMs: 300 });
    c.start();
    await waitFor(() => c.connected && s.conns.length === 1);
    const dst = new Uint8Array(32).fill(7);
    const pkt = new Uint8Array(1000);
    for (let i = 0; i < 100; i++) { c.send(dst, pkt); await sleep(10); }
    assert.equal(c.counters.writeTimeouts, 0);
    assert.equal(c.counters.connects, 1);
  });

  it('follows a Restarting frame: waits reconnectIn, then retries within tryFor', async () => {
    const { s, c } = await setup({ backoffInitialMs: 5, backoffMaxMs: 5 });
    let downAt = 0;
    s.script = async (fc, i) => {
      if (i === 1 || i === 2) { fc.socket.destroy(); return; } // still restarting: refuse twice
      await s.handshake(fc);
      if (i === 0) {
        fc.write(encodeRestarting(300, 2000));
        await sleep(20);
        downAt = Date.now();
        fc.socket.destroy();
      }
    };
    const restarts: number[][] = [];
    c.on('restarting', (a, b) => restarts.push([a, b]));
    c.start();
    await waitFor(() => c.counters.connects === 2, 4000);
    assert.deepEqual(restarts, [[300, 2000]]);
    assert.equal(s.conns.length, 4);
    assert.ok(Date.now() - downAt >= 290, `reconnected after ${Date.now() - downAt} ms, want >= 300`);
  });

  it('uses fast start with a known server key, and falls back to a full upgrade when the key changed', async () => {
    const s = new FakeDerp();
    server = s;
    await s.listen();
    const c = new DerpClient({ url: s.url, privateKey: generateKeyPair().privateKey, allowInsecureHttp: true, serverKey: s.key.publicKey, backoffInitialMs: 10 });
    clients.push(c);
    c.start();
    await once(c, 'connected');
    assert.ok(s.conns[0]!.fastStart);

    const wrong = generateKeyPair().publicKey;
    const c2 = new DerpClient({ url: s.url, privateKey: generateKeyPair().privateKey, allowInsecureHttp: true, serverKey: wrong, backoffInitialMs: 10 });
    clients.push(c2);
    c2.start();
    await once(c2, 'connected');
    assert.equal(c2.counters.protocolErrors, 1);
    assert.ok(s.conns[1]!.fastStart);
    assert.ok(!s.conns[2]!.fastStart, 'second attempt does the full upgrade');
    assert.equal(toHex(c2.serverKey!), toHex(s.key.publicKey));
  });

  it('drops sends it cannot make and counts why', async () => {
    const { s, c } = await setup();
    const peer = generateKeyPair().publicKey;
    assert.equal(c.send(peer, new Uint8Array(10)), false);
    assert.equal(c.counters.dropNotConnected, 1);
    s.script = async (fc) => { await s.handshake(fc, { tokenBucketBytesPerSecond: 10, tokenBucketBytesBurst: 300 }); };
    c.start();
    await once(c, 'connected');
    await waitFor(() => c.verified); // the token bucket comes with ServerInfo
    assert.equal(c.send(peer, new Uint8Array(65537)), false);
    assert.equal(c.counters.dropTooBig, 1);
    assert.equal(c.send(peer, new Uint8Array(200)), true);
    assert.equal(c.send(peer, new Uint8Array(200)), false, 'over the server token bucket');
    assert.equal(c.counters.dropRateLimited, 1);
    assert.throws(() => c.send(new Uint8Array(31), new Uint8Array(1)), /32 bytes/);
  });

  it('measures a DERP ping round trip and fails pending pings on close', async () => {
    const { s, c } = await setup();
    s.script = async (fc) => {
      await s.handshake(fc);
      for (;;) {
        const f = await fc.nextFrame();
        if (f.type === FrameType.ping) fc.write(encodePingPong(FrameType.pong, f.payload));
        if (f.type === FrameType.sendPacket) return; // then stop answering
      }
    };
    c.start();
    await once(c, 'connected');
    const rtt = await c.ping();
    assert.ok(rtt >= 0 && rtt < 1000);
    c.send(generateKeyPair().publicKey, new Uint8Array(1));
    await sleep(20);
    const p = c.ping();
    c.close();
    await assert.rejects(p, /closed/);
    assert.equal(c.state, 'closed');
  });
});
