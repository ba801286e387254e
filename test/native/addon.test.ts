// The addon's ABI at its edges: argument checks, reader lifetime, worker teardown, unref.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { native, nativeAddonPath } from '../../src/native/index.ts';
import { ENDPOINT_RAW_LEN } from '../../src/net/endpoint.ts';
import { RxBatch } from '../../src/net/batch.ts';
import { fold } from '../../src/netstack/ip.ts';
import { Endpoints } from '../../src/net/endpoint.ts';

const udpUrl = new URL('../../src/net/udp.js', import.meta.url).href;

describe('native addon', () => {
  it('loads with the expected ABI and endpoint size', () => {
    const n = native();
    assert.equal(n.abiVersion, 3);
    assert.equal(n.endpointRawLen, ENDPOINT_RAW_LEN);
    assert.equal(n.maxBatch, 128);
    assert.match(nativeAddonPath(), /native\/build\/meshd_native\.node$/);
  });

  it('rejects slices outside the buffer and wrong argument types before any syscall', () => {
    const n = native();
    const { fd } = n.udpOpen({ family: 4, port: 0, bindAddress: '127.0.0.1' });
    try {
      const buf = new Uint8Array(100);
      const addrs = new Uint8Array(40);
      assert.throws(() => n.udpSend(fd, buf, Int32Array.of(90), Int32Array.of(20), addrs, 1), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE' });
      assert.throws(() => n.udpSend(fd, buf, Int32Array.of(0), Int32Array.of(-1), addrs, 1), { name: 'RangeError' });
      assert.throws(() => n.udpSend(fd, buf, Int32Array.of(0), Int32Array.of(1), addrs, 2), { name: 'RangeError' });
      assert.throws(() => n.udpSend(fd, buf, Int32Array.of(0, 0, 0), Int32Array.of(1, 1, 1), addrs, 3), /addrs holds fewer/);
      assert.throws(() => n.udpSend(fd, [] as unknown as Uint8Array, Int32Array.of(0), Int32Array.of(1), addrs, 1), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE' });
      assert.throws(() => n.tunWrite(fd, buf, new Uint32Array(1) as unknown as Int32Array, Int32Array.of(1), 1), { name: 'TypeError' });
      assert.equal(n.udpSend(fd, buf, new Int32Array(0), new Int32Array(0), addrs, 0), 0);
      const rx = { buf: new Uint8Array(256), slotSize: 128, headroom: 0, slots: 2, lens: new Int32Array(2), addrs: new Uint8Array(40) };
      assert.throws(() => n.pollStart(fd, 'udp', { ...rx, slots: 0 }, () => {}), { name: 'RangeError' });
      assert.throws(() => n.pollStart(fd, 'udp', { ...rx, slots: 3 }, () => {}), /smaller than slots \* slotSize/);
      assert.throws(() => n.pollStart(fd, 'udp', { ...rx, addrs: undefined }, () => {}), /rx.addrs is required/);
      assert.throws(() => n.pollStart(fd, 'raw' as 'udp', rx, () => {}), /kind must be/);
    } finally {
      n.close(fd);
    }
  });

  it('refuses a second reader on the same fd with EEXIST and keeps counters after stopping', () => {
    const n = native();
    const { fd } = n.udpOpen({ family: 4, port: 0, bindAddress: '127.0.0.1' });
    const rx = new RxBatch({ slots: 4, slotSize: 128, headroom: 0 }, new Endpoints());
    const h = n.pollStart(fd, 'udp', rx, () => {});
    try {
      assert.throws(() => n.pollStart(fd, 'udp', rx, () => {}), { code: 'EEXIST', syscall: 'uv_poll_init' });
      assert.equal(n.pollStats(h).active, true);
    } finally {
      n.pollStop(h);
      n.pollStop(h); // idempotent
      n.close(fd);
    }
    assert.deepEqual(n.pollStats(h), {
      packets: 0, batches: 0, wakeups: 0, truncated: 0, errors: 0, kernelDrops: 0, lastErrno: 0, active: false,
      gsoReads: 0, gsoSegments: 0, csumCompleted: 0, badGso: 0, groMessages: 0, groSegments: 0,
    });
  });

  it('tears a running reader down with its worker thread', async () => {
    const code = `
      const { parentPort } = require('node:worker_threads');
      import(${JSON.stringify(udpUrl)}).then(({ UdpSocket }) => {
        const s = UdpSocket.open({ family: 4, bindAddress: '127.0.0.1' });
        s.startReading(() => {});
        parentPort.postMessage(s.port);
      });`;
    for (let round = 0; round < 3; round++) {
      const w = new Worker(code, { eval: true });
      const port = await new Promise<number>((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
      assert.ok(port > 0);
      assert.equal(await w.terminate(), 1);
    }
  });

  it('lets the process exit while an unref\'d reader runs', () => {
    const script = `import(${JSON.stringify(udpUrl)}).then(({ UdpSocket }) => {
      const s = UdpSocket.open({ family: 4, bindAddress: '127.0.0.1' });
      s.startReading(() => {});
      s.ref(false);
    });`;
    const r = spawnSync(process.execPath, ['-e', script], { timeout: 5000, encoding: 'utf8' });
    assert.equal(r.status, 0, `exit status ${r.status} signal ${r.signal}: ${r.stderr}`);
  });

  it('sum16 equals the JavaScript Internet checksum for any span (odd offsets and lengths, shared memory) and refuses spans past the end', () => {
    const n = native();
    assert.equal(typeof n.sum16, 'function');
    const sab = new SharedArrayBuffer(8192);
    for (const buf of [new Uint8Array(sab, 3), Buffer.alloc(6000).subarray(1)]) {
      for (let i = 0; i < buf.length; i++) buf[i] = (i * 7919 + 13) & 0xff;
      for (let k = 0; k < 400; k++) {
        const off = (k * 37) % 700, len = (k * 131) % 1600, base = k * 977;
        // sum16 below NATIVE_SUM_MIN is the JavaScript loop, which the stack's tests pin down.
        let js = base, i = off;
        for (; i + 1 < off + len; i += 2) js += (buf[i]! << 8) | buf[i + 1]!;
        if (i < off + len) js += buf[i]! << 8;
        assert.equal(fold(n.sum16!(buf, off, len, base)), fold(js), `off ${off} len ${len}`);
      }
    }
    assert.throws(() => n.sum16!(new Uint8Array(10), 4, 7, 0), /past the end/);
    assert.throws(() => n.sum16!(new Uint16Array(10) as unknown as Uint8Array, 0, 2, 0), /Uint8Array/);
  });

  it('dupFd gives a second fd for the same listening socket: a server on it accepts after the first closes; bad fds throw', async () => {
    const { createServer, connect } = await import('node:net');
    const a = createServer();
    await new Promise<void>((res) => a.listen(0, '127.0.0.1', () => res()));
    const { port } = a.address() as { port: number };
    const fd = (a as unknown as { _handle: { fd: number } })._handle.fd;
    const nfd = native().dupFd!(fd);
    assert.notEqual(nfd, fd);
    await new Promise<void>((res) => a.close(() => res()));
    const b = createServer((s) => { s.end('ok'); });
    b.listen({ fd: nfd });
    try {
      const got = await new Promise<string>((res, rej) => {
        const c = connect(port, '127.0.0.1');
        let t = '';
        c.on('data', (d) => { t += d; });
        c.on('end', () => res(t));
        c.on('error', rej);
        setTimeout(() => rej(new Error('no answer from the dup handle')), 3000).unref();
      });
      assert.equal(got, 'ok');
      assert.throws(() => native().dupFd!(-1), /EBADF/);
    } finally {
      b.close();
    }
  });
});
