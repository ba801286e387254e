// The native readers keep raw pointers into JS ArrayBuffers across event-loop turns. Transferring
// (detaching) one of those buffers while a reader runs must not let the reader write into freed
// memory: it re-fetches the pointers before every read and stops with EFAULT when one is gone.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { MessageChannel } from 'node:worker_threads';
import { constants } from 'node:os';
import { native } from '../../src/native/index.ts';
import { UdpSocket } from '../../src/net/udp.ts';

function sendTo(port: number, n: number): Promise<void> {
  const s = createSocket('udp4');
  return new Promise((resolve) => {
    let left = n;
    for (let i = 0; i < n; i++) s.send(Buffer.alloc(100, i), port, '127.0.0.1', () => { if (--left === 0) { s.close(); resolve(); } });
  });
}

function waitUntil(what: string, cond: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const tick = (): void => {
      if (cond()) resolve();
      else if (Date.now() > end) reject(new Error(`timed out waiting for ${what}`));
      else setTimeout(tick, 5);
    };
    tick();
  });
}

describe('native readers and detached buffers', () => {
  for (const which of ['buf', 'lens', 'addrs'] as const) {
    it(`stops with EFAULT, without writing, when rx.${which} is transferred while reading`, async () => {
      const n = native();
      const { fd, port } = n.udpOpen({ family: 4, port: 0, bindAddress: '127.0.0.1' });
      const rx = { buf: new Uint8Array(4 * 256), slotSize: 256, headroom: 0, slots: 4, lens: new Int32Array(4), addrs: new Uint8Array(80) };
      const calls: number[] = [];
      const h = n.pollStart(fd, 'udp', rx, (c) => { calls.push(c); });
      try {
        await sendTo(port, 1);
        await waitUntil('a first batch', () => calls.length > 0);
        assert.equal(calls[0], 1);
        const moved = which === 'buf' ? rx.buf.buffer : which === 'lens' ? rx.lens.buffer : rx.addrs.buffer;
        const copy = structuredClone(moved, { transfer: [moved] });
        assert.equal(moved.byteLength, 0, 'detached');
        await sendTo(port, 3);
        await waitUntil('the reader to stop', () => calls.length > 1);
        assert.deepEqual(calls, [1, -constants.errno.EFAULT]);
        const st = n.pollStats(h);
        assert.equal(st.active, false);
        assert.equal(st.lastErrno, -constants.errno.EFAULT);
        assert.equal(st.packets, 1, 'nothing was read into a detached buffer');
        assert.ok(copy.byteLength > 0);
      } finally {
        n.pollStop(h);
        n.close(fd);
      }
    });
  }

  it('reports the detach to UdpSocket.onError, also when the buffer leaves through a MessageChannel inside onBatch', async () => {
    const sock = UdpSocket.open({ family: 4, bindAddress: '127.0.0.1' });
    const { port1, port2 } = new MessageChannel();
    const errors: Error[] = [];
    let batches = 0;
    try {
      sock.startReading((b) => {
        batches++;
        const ab = b.buf.buffer as ArrayBuffer;
        port1.postMessage(ab, [ab]);
      }, (e) => errors.push(e));
      await sendTo(sock.port, 1);
      await waitUntil('the first batch', () => batches === 1);
      await sendTo(sock.port, 1);
      await waitUntil('the error', () => errors.length === 1);
      assert.equal(batches, 1);
      assert.equal((errors[0] as Error & { code?: string }).code, 'EFAULT');
      assert.match(errors[0]!.message, /^udp :\d+: reading stopped: a receive buffer was detached/);
      assert.equal(sock.stats().rx?.active, false);
    } finally {
      port1.close();
      port2.close();
      sock.close();
    }
  });
});
