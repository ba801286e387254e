// UdpSocket over loopback: batched send and receive, source endpoints, dual-stack mapping, errors.
import { describe, it, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:os';
import { spawnSync } from 'node:child_process';
import { UdpSocket } from '../../src/net/udp.ts';
import { TxBatch, slotSizeFor, type RxBatch } from '../../src/net/batch.ts';
import { Endpoints, type Endpoint } from '../../src/net/endpoint.ts';
import { isNativeError } from '../../src/native/index.ts';
import { waitFor } from '../harness/netns.ts';

const open: UdpSocket[] = [];
function sock(opts: Parameters<typeof UdpSocket.open>[0]): UdpSocket {
  const s = UdpSocket.open(opts);
  open.push(s);
  return s;
}
afterEach(() => {
  for (const s of open.splice(0)) s.close();
});

/** Datagram i: 2 + (i*97 % 1400) bytes, starting with i (16 bits) then a pattern seeded by i. */
function datagram(i: number): Uint8Array {
  const len = 2 + ((i * 97) % 1400);
  const d = new Uint8Array(len);
  d[0] = i >> 8;
  d[1] = i & 0xff;
  for (let k = 2; k < len; k++) d[k] = (i * 31 + k * 7) & 0xff;
  return d;
}

interface Got { data: Uint8Array; from: Endpoint }

/** Collects received datagrams (copied out of the batch) until n arrived or timeout. */
function collect(s: UdpSocket, n: number, timeoutMs = 5000): Promise<Got[]> {
  const got: Got[] = [];
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      s.stopReading();
      reject(new Error(`received ${got.length} of ${n} datagrams`));
    }, timeoutMs);
    s.startReading((b: RxBatch) => {
      for (let i = 0; i < b.count; i++) got.push({ data: b.packet(i).slice(), from: b.endpoint(i) });
      if (got.length >= n) {
        clearTimeout(timer);
        s.stopReading();
        resolve(got);
      }
    }, reject);
  });
}

function sendAll(from: UdpSocket, to: Endpoint, n: number): number {
  const tx = new TxBatch({ slots: 128, slotSize: slotSizeFor(1500), headroom: 64 });
  let sent = 0;
  for (let i = 0; i < n; i++) {
    const d = datagram(i);
    // Alternate the two ways of filling a slot: copy (push) and write in place (reserve+commit).
    if (i % 2 === 0) {
      assert.ok(tx.push(d, 0, d.length, to.raw));
    } else {
      const at = tx.reserve();
      tx.buf.set(d, at);
      tx.commit(at, d.length, to.raw);
    }
    if (tx.full) sent += from.sendBatch(tx);
  }
  sent += from.sendBatch(tx);
  return sent;
}

function checkAll(got: Got[], n: number, source: Endpoint): void {
  assert.equal(got.length, n);
  const seen = new Set<number>();
  for (const g of got) {
    const i = (g.data[0]! << 8) | g.data[1]!;
    assert.deepEqual(g.data, datagram(i), `datagram ${i} differs`);
    assert.equal(g.from, source, `datagram ${i} from ${g.from.key}, want ${source.key}`); // interned: same object
    seen.add(i);
  }
  assert.equal(seen.size, n);
}

describe('UdpSocket', () => {
  it('sends a batch of 300 distinct datagrams over 127.0.0.1 and receives them intact with the sender as source', async () => {
    const eps = new Endpoints();
    const rx = sock({ family: 4, bindAddress: '127.0.0.1', endpoints: eps });
    const tx = sock({ family: 4, bindAddress: '127.0.0.1' });
    const pending = collect(rx, 300);
    assert.equal(sendAll(tx, eps.of('127.0.0.1', rx.port), 300), 300);
    const got = await pending;
    const source = eps.of('127.0.0.1', tx.port);
    checkAll(got, 300, source);
    assert.equal(source.family, 4);
    const st = rx.stats().rx!;
    assert.equal(st.packets, 300);
    assert.ok(st.batches >= 3, `300 datagrams in ${st.batches} batches of at most 128`);
    assert.equal(st.truncated, 0);
    assert.equal(tx.stats().txPackets, 300);
  });

  it('sends runs of full-size datagrams as GSO messages, but small ones (TCP ACKs in WireGuard) one per message', async () => {
    const eps = new Endpoints();
    const rx = sock({ family: 4, bindAddress: '127.0.0.1', endpoints: eps });
    const tx = sock({ family: 4, bindAddress: '127.0.0.1' });
    if (!tx.stats().offload.gso) return; // no UDP_SEGMENT on this kernel: nothing to tell apart
    const to = eps.of('127.0.0.1', rx.port);
    const pending = collect(rx, 96);
    const batch = new TxBatch({ slots: 128, slotSize: slotSizeFor(1500), headroom: 64 });
    const send = (n: number, size: number): void => {
      for (let i = 0; i < n; i++) assert.ok(batch.push(new Uint8Array(size).fill(i), 0, size, to.raw));
      assert.equal(tx.sendBatch(batch), n);
    };
    send(32, 96); // a read batch of ACKs to one peer
    const afterAcks = tx.stats();
    assert.equal(afterAcks.txGsoMessages, 0, 'no ACK shares a skb with another');
    send(32, 112);
    assert.equal(tx.stats().txGsoMessages, 0);
    send(32, 1312); // a TSO burst split into full-size WireGuard datagrams
    const st = tx.stats();
    assert.ok(st.txGsoMessages >= 1 && st.txGsoDatagrams === 32, `one run of 32: ${st.txGsoMessages} messages, ${st.txGsoDatagrams} datagrams`);
    assert.equal((await pending).length, 96, 'all arrive');
  });

  it('sends every datagram as its own message while GSO is paused (a lossy path), and runs again after', async () => {
    const eps = new Endpoints();
    const rx = sock({ family: 4, bindAddress: '127.0.0.1', endpoints: eps });
    const tx = sock({ family: 4, bindAddress: '127.0.0.1' });
    if (!tx.stats().offload.gso) return; // no UDP_SEGMENT on this kernel: nothing to pause
    const to = eps.of('127.0.0.1', rx.port);
    const pending = collect(rx, 64);
    const batch = new TxBatch({ slots: 128, slotSize: slotSizeFor(1500), headroom: 64 });
    const send = (n: number): void => {
      for (let i = 0; i < n; i++) assert.ok(batch.push(new Uint8Array(1312).fill(i), 0, 1312, to.raw));
      assert.equal(tx.sendBatch(batch), n);
    };
    tx.pauseGso(true);
    assert.equal(tx.stats().offload.gsoPaused, true);
    send(32); // a TSO burst's worth of full-size WireGuard datagrams
    assert.equal(tx.stats().txGsoMessages, 0, 'no run shares a skb while paused');
    assert.equal(tx.stats().offload.gso, true, 'the capability stays');
    tx.pauseGso(false);
    send(32);
    const st = tx.stats();
    assert.ok(st.txGsoMessages >= 1 && st.txGsoDatagrams === 32, `one run again: ${st.txGsoMessages} messages, ${st.txGsoDatagrams} datagrams`);
    assert.equal((await pending).length, 64, 'all arrive');
  });

  it('sends a batch over ::1 and reports IPv6 source endpoints', async () => {
    const eps = new Endpoints();
    const rx = sock({ family: 6, bindAddress: '::1', endpoints: eps });
    const tx = sock({ family: 6, bindAddress: '::1' });
    const pending = collect(rx, 100);
    assert.equal(sendAll(tx, eps.of('::1', rx.port), 100), 100);
    const got = await pending;
    const source = eps.of('::1', tx.port);
    checkAll(got, 100, source);
    assert.equal(source.family, 6);
    assert.equal(source.key, `[::1]:${tx.port}`);
  });

  it('shows a datagram from an IPv4 sender on a dual-stack socket as family 4', async () => {
    const eps = new Endpoints();
    const rx = sock({ family: 6, endpoints: eps }); // bound to ::, IPV6_V6ONLY=0
    const tx = sock({ family: 4, bindAddress: '127.0.0.1' });
    const pending = collect(rx, 10);
    assert.equal(sendAll(tx, eps.of('127.0.0.1', rx.port), 10), 10);
    const got = await pending;
    checkAll(got, 10, eps.of('127.0.0.1', tx.port));
    assert.equal(got[0]!.from.family, 4);
    assert.equal(got[0]!.from.ip, '127.0.0.1');
  });

  it('sends to an IPv4 destination from a dual-stack socket (as ::ffff:a.b.c.d)', async () => {
    const eps = new Endpoints();
    const rx = sock({ family: 4, bindAddress: '127.0.0.1', endpoints: eps });
    const tx = sock({ family: 6 });
    const pending = collect(rx, 20);
    assert.equal(sendAll(tx, eps.of('127.0.0.1', rx.port), 20), 20);
    checkAll(await pending, 20, eps.of('127.0.0.1', tx.port));
  });

  it('drops, counts and does not throw for an IPv6 destination on an IPv4 socket or a slot without endpoint', () => {
    const eps = new Endpoints();
    const tx = sock({ family: 4, bindAddress: '127.0.0.1' });
    const batch = new TxBatch({ slots: 4, slotSize: 256, headroom: 64 });
    const d = new Uint8Array(10);
    batch.push(d, 0, 10, eps.of('::1', 9).raw);
    batch.push(d, 0, 10);
    assert.equal(tx.sendBatch(batch), 0);
    assert.equal(batch.count, 0);
    const st = tx.stats();
    assert.deepEqual({ rx: st.rx, txPackets: st.txPackets, txDropped: st.txDropped }, { rx: undefined, txPackets: 0, txDropped: 2 });
  });

  it('drops a datagram longer than maxDatagram and counts it as truncated', async () => {
    const eps = new Endpoints();
    const rx = sock({ family: 4, bindAddress: '127.0.0.1', maxDatagram: 256, endpoints: eps });
    const tx = sock({ family: 4, bindAddress: '127.0.0.1' });
    const to = eps.of('127.0.0.1', rx.port);
    const pending = collect(rx, 2);
    assert.ok(tx.sendTo(new Uint8Array(1000).fill(1), to));
    assert.ok(tx.sendTo(new Uint8Array(100).fill(2), to));
    assert.ok(tx.sendTo(new Uint8Array(256).fill(3), to));
    const got = await pending;
    assert.deepEqual(got.map((g) => [g.data.length, g.data[0]]), [[100, 2], [256, 3]]);
    assert.equal(rx.stats().rx!.truncated, 1);
  });

  it('counts datagrams the kernel dropped for a full receive queue', { skip: process.getuid?.() === 0 ? false : 'needs root (SO_RCVBUFFORCE for a tiny buffer)' }, async () => {
    const eps = new Endpoints();
    const rx = sock({ family: 4, bindAddress: '127.0.0.1', rcvbuf: 4096, endpoints: eps });
    const tx = sock({ family: 4, bindAddress: '127.0.0.1' });
    const to = eps.of('127.0.0.1', rx.port);
    for (let i = 0; i < 50; i++) tx.sendTo(new Uint8Array(1000), to); // nobody reads: most are dropped
    let got = 0;
    rx.startReading((b) => { got += b.count; });
    await waitFor('the queued datagrams', () => got > 0, 2000, 5);
    tx.sendTo(new Uint8Array(10), to); // carries the drop count
    await waitFor('the last datagram', () => rx.stats().rx!.packets === got && got > 1 && rx.stats().rx!.kernelDrops > 0, 2000, 5);
    const st = rx.stats().rx!;
    assert.equal(st.kernelDrops, 50 - (st.packets - 1));
  });

  it('stops delivering batches once stopReading is called inside the callback', async () => {
    const eps = new Endpoints();
    const rx = sock({ family: 4, bindAddress: '127.0.0.1', slots: 4, endpoints: eps });
    const tx = sock({ family: 4, bindAddress: '127.0.0.1' });
    let calls = 0;
    rx.startReading(() => {
      calls++;
      rx.stopReading();
    });
    assert.equal(sendAll(tx, eps.of('127.0.0.1', rx.port), 40), 40);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(calls, 1);
    assert.equal(rx.stats().rx!.active, false);
  });

  it('lets a callback close its socket and poll a new one on the same fd number', async () => {
    const eps = new Endpoints();
    const first = UdpSocket.open({ family: 4, bindAddress: '127.0.0.1', endpoints: eps });
    const tx = sock({ family: 4, bindAddress: '127.0.0.1' });
    const second = new Promise<{ fd: number; got: Got[] }>((resolve, reject) => {
      first.startReading(() => {
        const fd = first.fd;
        first.close(); // inside its own callback
        const next = sock({ family: 4, bindAddress: '127.0.0.1', endpoints: eps });
        collect(next, 1).then((got) => resolve({ fd: next.fd === fd ? fd : -1, got }), reject);
        tx.sendTo(datagram(7), eps.of('127.0.0.1', next.port));
      });
    });
    tx.sendTo(datagram(1), eps.of('127.0.0.1', first.port));
    const { fd, got } = await second;
    assert.notEqual(fd, -1, 'the new socket was expected to reuse the fd number');
    assert.deepEqual(got[0]!.data, datagram(7));
  });

  it('refuses a port already in use with EADDRINUSE and says what to do', () => {
    const a = sock({ family: 4, bindAddress: '127.0.0.1' });
    assert.throws(() => UdpSocket.open({ family: 4, bindAddress: '127.0.0.1', port: a.port }), (err: unknown) => {
      assert.ok(isNativeError(err));
      assert.equal(err.code, 'EADDRINUSE');
      assert.equal(err.errno, -constants.errno.EADDRINUSE);
      assert.equal(err.syscall, 'bind');
      assert.match(err.message, new RegExp(`port ${a.port} is in use by another socket: pick another port`));
      return true;
    });
  });

  it('refuses an address that is not local with EADDRNOTAVAIL and bad options with a TypeError', () => {
    assert.throws(() => UdpSocket.open({ family: 4, bindAddress: '192.0.2.1' }), { code: 'EADDRNOTAVAIL', syscall: 'bind' });
    assert.throws(() => UdpSocket.open({ family: 4, bindAddress: 'not-an-ip' }), { name: 'TypeError', code: 'ERR_INVALID_ARG_VALUE' });
    assert.throws(() => UdpSocket.open({ family: 5 as 4 }), { name: 'TypeError' });
  });

  it('sets SO_MARK and forced buffer sizes when asked', { skip: process.getuid?.() === 0 ? false : 'needs root (CAP_NET_ADMIN)' }, () => {
    const s = sock({ family: 6, mark: 0x80000, rcvbuf: 4 << 20, sndbuf: 4 << 20 });
    assert.equal(s.rcvbuf, 8 << 20); // the kernel reports twice the size it granted
    assert.equal(s.sndbuf, 8 << 20);
    const ss = spawnSync('ss', ['-uane', 'sport', '=', `:${s.port}`], { encoding: 'utf8' });
    if (ss.status === 0) assert.match(ss.stdout, /fwmark:0x80000/);
  });
});
