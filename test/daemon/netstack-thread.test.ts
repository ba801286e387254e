// UserspaceThread: the Userspace (netstack, SOCKS5 proxy) in a worker thread, packets through the
// shared rings. The "tailnet" is a second netstack in this thread wired to the ThreadDevice as the
// data plane would be: a SOCKS5 client on loopback reaches a server on that peer stack through the
// worker, and bytes both ways arrive intact. Also: a worker that fails is reported, not hung on.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { ThreadDevice, UserspaceThread, netstackThreadEnabled, jitFlags, JIT_FLAGS } from '../../src/daemon/netstack-thread.ts';
import { PacketRing } from '../../src/netstack/ring-shared.ts';
import { spawnSync } from 'node:child_process';
import { NetstackDevice } from '../../src/netstack/device.ts';
import { TcpStream } from '../../src/netstack/stream.ts';
import { TxBatch, slotSizeFor } from '../../src/net/batch.ts';
import type { NetworkMap } from '../../src/control/netmap.ts';
import type { Tcb } from '../../src/netstack/tcp.ts';

const hash = (x: Uint8Array): string => createHash('sha256').update(x).digest('hex');

/** Joins the worker's device and a peer stack as the data plane joins the device and the tunnel. */
function wire(us: UserspaceThread, peer: NetstackDevice): void {
  const tx = new TxBatch({ slots: 128, slotSize: slotSizeFor(1280, 0, 0), headroom: 0 });
  peer.startReading((b) => {
    for (let i = 0; i < b.count; i++) tx.push(b.buf, b.offset(i), b.lens[i]!);
    us.device.writeBatch(tx);
  });
  us.device.startReading((b) => {
    const s = peer.stack;
    s.holdClock();
    for (let i = 0; i < b.count; i++) s.input(b.buf, b.offset(i), b.lens[i]!);
    s.releaseClock();
    peer.driver.schedule();
  });
}

/** SOCKS5 CONNECT (no auth) to an IPv4 address; resolves with the socket once connected. */
function socksConnect(proxy: string, ip: string, port: number): Promise<Socket> {
  const [host, p] = [proxy.slice(0, proxy.lastIndexOf(':')), Number(proxy.slice(proxy.lastIndexOf(':') + 1))];
  return new Promise((resolve, reject) => {
    const s = connect({ host, port: p, allowHalfOpen: true });
    s.once('error', reject);
    let stage = 0, got = Buffer.alloc(0);
    s.on('connect', () => s.write(Buffer.from([5, 1, 0])));
    const onData = (d: Buffer): void => {
      got = Buffer.concat([got, d]);
      if (stage === 0 && got.length >= 2) {
        assert.deepEqual([...got.subarray(0, 2)], [5, 0]);
        got = got.subarray(2);
        stage = 1;
        s.write(Buffer.from([5, 1, 0, 1, ...ip.split('.').map(Number), port >> 8, port & 0xff]));
      }
      if (stage === 1 && got.length >= 10) {
        s.off('data', onData);
        if (got[1] !== 0) { reject(new Error(`SOCKS5 reply ${got[1]}`)); return; }
        const rest = got.subarray(10);
        if (rest.length > 0) s.unshift(rest);
        s.off('error', reject);
        resolve(s);
      }
    };
    s.on('data', onData);
  });
}

const mapOf = (self: string, peer: string): NetworkMap => ({
  self: { name: 'me.tailnet.test.', addresses: [`${self}/32`] },
  peers: new Map([[2, { name: 'peer.tailnet.test.', hostname: 'peer', addresses: [`${peer}/32`] }]]),
}) as unknown as NetworkMap;

describe('ThreadDevice into the worker', () => {
  it('takes a frame per write while the worker keeps up, but fills frames across writes while it is behind, publishing the rest at the turn\'s end', async () => {
    const shape = { frames: 4, slots: 32, slotSize: slotSizeFor(1280, 0, 0), headroom: 0 };
    const toStack = PacketRing.create(shape), fromStack = PacketRing.create(shape);
    const dev = new ThreadDevice(toStack, fromStack, 1280);
    const tx = new TxBatch({ slots: 128, slotSize: slotSizeFor(1280, 0, 0), headroom: 0 });
    const pkt = new Uint8Array(1280);
    tx.push(pkt, 0, 100);
    dev.writeBatch(tx);
    assert.equal(toStack.pending, 1, 'an idle worker gets the packet at once');
    // The worker has not taken that frame: 30 writes of 3 packets in one turn (the data plane's
    // UDP batches) share frames. One frame per write would hold 9 of the 90 in the 3 frames left.
    for (let w = 0; w < 30; w++) { for (let i = 0; i < 3; i++) tx.push(pkt, 0, 1000); dev.writeBatch(tx); }
    assert.equal(toStack.pending, 3, 'full frames go at once');
    await new Promise((r) => setImmediate(r));
    assert.equal(toStack.pending, 4, 'the partly filled frame went at the end of the turn');
    assert.equal(dev.dropsIn, 0);
    let packets = 0;
    toStack.drain((b) => { packets += b.count; }, 4);
    assert.equal(packets, 91);
    dev.close();
  });
});

describe('UserspaceThread', () => {
  it('is on unless MESHD_NETSTACK_THREAD=0', () => {
    assert.equal(netstackThreadEnabled({}), true);
    assert.equal(netstackThreadEnabled({ MESHD_NETSTACK_THREAD: '1' }), true);
    assert.equal(netstackThreadEnabled({ MESHD_NETSTACK_THREAD: '0' }), false);
  });

  it('sets the sooner-tiering V8 flags unless MESHD_JIT_FLAGS says otherwise', () => {
    assert.equal(jitFlags({}), JIT_FLAGS);
    assert.equal(jitFlags({ MESHD_JIT_FLAGS: '0' }), undefined);
    assert.equal(jitFlags({ MESHD_JIT_FLAGS: ' ' }), undefined);
    assert.equal(jitFlags({ MESHD_JIT_FLAGS: '--interrupt-budget=8192' }), '--interrupt-budget=8192');
  });

  it('with the flags applied, a function is optimized after fewer calls than with V8 defaults', { timeout: 30_000 }, () => {
    // In a child with natives syntax: count the calls until V8 marks f for TurboFan or has optimized
    // it (status bits: 16 optimized, 256 marked, 512 marked for concurrent, 1024 compiling concurrently).
    const mod = new URL('../../src/daemon/netstack-thread.js', import.meta.url).href;
    const script = `const { applyJitFlags } = await import(${JSON.stringify(mod)}); applyJitFlags();
      function f(o) { let s = 0; for (let i = 0; i < 10; i++) s += o.x * i; return s; }
      let n = -1; for (let i = 0; i < 200000; i++) { f({ x: i }); if (i % 10 === 0 && (%GetOptimizationStatus(f) & 1808)) { n = i; break; } }
      console.log(n);`;
    const callsToOptimize = (env: string): number => {
      const r = spawnSync(process.execPath, ['--allow-natives-syntax', '--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, MESHD_JIT_FLAGS: env }, timeout: 20_000 });
      assert.equal(r.status, 0, r.stderr);
      const n = Number(r.stdout.trim());
      assert.ok(n > 0, `never optimized (${r.stdout.trim()})`);
      return n;
    };
    const defaults = callsToOptimize('0'), ours = callsToOptimize(JIT_FLAGS);
    assert.ok(ours * 2 <= defaults, `optimized after ${ours} calls with ${JIT_FLAGS}, ${defaults} with V8's defaults`);
  });

  it('SOCKS5 through the worker reaches a peer stack: 3 MB each way arrive hash-identical; counters come from the worker', { timeout: 60_000 }, async () => {
    const logs: string[] = [];
    let fatal: Error | undefined;
    const us = new UserspaceThread({ log: (l) => logs.push(l), socks5: '127.0.0.1:0', onFatal: (e) => { fatal = e; } });
    const peer = new NetstackDevice();
    try {
      await us.start();
      assert.match(us.listening.socks5 ?? '', /^127\.0\.0\.1:\d+$/);
      peer.stack.setAddresses(['100.64.0.2/32']);
      wire(us, peer);
      us.setMap(mapOf('100.64.0.1', '100.64.0.2'), new Map([[2, ['100.64.0.2/32']]]), false);
      const up = randomBytes(3 * 1024 * 1024), down = randomBytes(3 * 1024 * 1024 + 7);
      const atPeer: Buffer[] = [];
      const peerDone = new Promise<void>((resolve) => {
        peer.stack.listen(80, (t: Tcb) => {
          const s = new TcpStream(t, () => peer.driver.schedule());
          s.on('data', (d: Buffer) => atPeer.push(d));
          s.on('end', () => resolve());
          s.end(down);
        });
      });
      const c = await socksConnect(us.listening.socks5!, '100.64.0.2', 80);
      const atClient: Buffer[] = [];
      const clientDone = new Promise<void>((resolve, reject) => {
        c.on('data', (d: Buffer) => atClient.push(d));
        c.on('end', () => resolve());
        c.on('error', reject);
      });
      c.end(up);
      await Promise.all([peerDone, clientDone]);
      assert.equal(hash(Buffer.concat(atPeer)), hash(up), 'upload intact');
      assert.equal(hash(Buffer.concat(atClient)), hash(down), 'download intact');
      c.destroy();
      const k = us.counters();
      assert.ok((k['socks5.connected'] ?? 0) >= 1, JSON.stringify(k));
      assert.ok((k['netstack.threadInPackets'] ?? 0) > 100, 'packets crossed into the worker');
      assert.equal(k['netstack.threadRingDrops'], 0);
      assert.equal(fatal, undefined);
    } finally {
      us.close();
      us.device.close();
      peer.close();
    }
    const exited = await new Promise<boolean>((r) => {
      const w = (us as unknown as { worker: { once(e: string, f: () => void): void; threadId: number } }).worker;
      if (w.threadId === -1) { r(true); return; }
      const t = setTimeout(() => r(false), 3000);
      w.once('exit', () => { clearTimeout(t); r(true); });
    });
    assert.ok(exited, 'the worker ends after close');
  });

  it('a proxy that cannot listen fails start with the listener error', { timeout: 20_000 }, async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as AddressInfo).port;
    const us = new UserspaceThread({ log: () => {}, socks5: `127.0.0.1:${port}` });
    try {
      await assert.rejects(us.start(), new RegExp(`^Error: cannot listen on 127\\.0\\.0\\.1:${port}: EADDRINUSE$`));
    } finally {
      us.close();
      us.device.close();
      taken.close();
    }
  });

  it('a worker that fails after start is reported once through onFatal with its error', { timeout: 20_000 }, async () => {
    const code = `import { parentPort } from 'node:worker_threads';
      parentPort.postMessage({ t: 'started', listening: {} });
      setTimeout(() => { throw new Error('boom in the stack'); }, 50);`;
    const fatal: Error[] = [];
    const us = new UserspaceThread({ log: () => {}, entry: new URL(`data:text/javascript,${encodeURIComponent(code)}`), onFatal: (e) => fatal.push(e) });
    await us.start();
    await new Promise<void>((r) => { const t = setInterval(() => { if (fatal.length > 0) { clearInterval(t); r(); } }, 10); setTimeout(() => { clearInterval(t); r(); }, 5000); });
    assert.equal(fatal.length, 1);
    assert.match(fatal[0]!.message, /^netstack thread failed: boom in the stack$/);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(fatal.length, 1, 'the exit after the error is not a second report');
    us.close();
  });
});
