// TcpStream between two stacks on the event loop (each stack's output is the other's input): the
// readable side, and sendTo(), which writes received data straight into a sink.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { NetstackDriver } from '../../src/netstack/device.ts';
import { TcpStream } from '../../src/netstack/stream.ts';
import type { Tcb } from '../../src/netstack/tcp.ts';
import { collect, sha, sockets } from './sockets.ts';

const noHandler = { onData() {}, onEnd() {}, onWritable() {}, onClose() {} };

/** Two drivers joined directly: A 100.64.0.1, B 100.64.0.2. */
function pair(): { a: NetstackDriver; b: NetstackDriver; close: () => void } {
  let a: NetstackDriver | undefined, b: NetstackDriver | undefined;
  const wire = (to: () => NetstackDriver) => (buf: Uint8Array, off: number, len: number): void => {
    const copy = buf.slice(off, off + len);
    queueMicrotask(() => { const d = to(); d.stack.input(copy, 0, copy.length); d.schedule(); });
  };
  a = new NetstackDriver({ output: wire(() => b!) });
  b = new NetstackDriver({ output: wire(() => a!) });
  a.setFlush(() => {});
  b.setFlush(() => {});
  a.stack.setAddresses(['100.64.0.1/32']);
  b.stack.setAddresses(['100.64.0.2/32']);
  return { a, b, close: () => { a.close(); b.close(); } };
}

/** B serves `data` on port 80 to the first connection, then ends it. */
function serve(b: NetstackDriver, data: Buffer): void {
  b.stack.listen(80, (t: Tcb) => {
    const s = new TcpStream(t, () => b.schedule());
    s.end(data);
    s.resume();
  });
}

async function connectA(a: NetstackDriver): Promise<TcpStream> {
  const t = a.stack.connect('100.64.0.2', 80, noHandler);
  const s = new TcpStream(t, () => a.schedule());
  a.schedule();
  await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject); });
  return s;
}

describe('TcpStream', () => {
  it('sendTo writes everything the peer sends into the sink in order and ends it at the FIN, while a slow sink holds the window', async () => {
    const { a, b, close } = pair();
    const data = randomBytes(3 * 1024 * 1024 + 17);
    serve(b, data);
    const s = await connectA(a);
    const got: Buffer[] = [];
    let maxHeld = 0;
    // A sink that finishes each write a tick later and so builds a backlog the window must count.
    const sink = new Writable({
      highWaterMark: 64 * 1024,
      write(chunk: Buffer, _enc, cb) { got.push(Buffer.from(chunk)); maxHeld = Math.max(maxHeld, this.writableLength); setImmediate(cb); },
    });
    const finished = new Promise<void>((resolve) => sink.once('finish', resolve));
    s.sendTo(sink);
    await finished;
    const all = Buffer.concat(got);
    assert.equal(all.length, data.length);
    assert.equal(createHash('sha256').update(all).digest('hex'), createHash('sha256').update(data).digest('hex'));
    // The unread bytes the window counts never exceed the receive buffer.
    assert.ok(maxHeld <= a.stack.cfg.rcvBuf + 256 * 1024, `sink held ${maxHeld}`);
    // Nothing went through the readable side.
    assert.equal(s.readableLength, 0);
    close();
  });

  it('sendTo first hands on data that arrived before it was called', async () => {
    const { a, b, close } = pair();
    const data = Buffer.from('banner before the relay\n');
    serve(b, data);
    const s = await connectA(a);
    // Let the data and the FIN arrive while nobody reads.
    await new Promise<void>((resolve) => { const t = setInterval(() => { if (s.readableLength > 0) { clearInterval(t); resolve(); } }, 1); });
    await new Promise((r) => setTimeout(r, 10));
    const got: Buffer[] = [];
    const sink = new Writable({ write(chunk: Buffer, _enc, cb) { got.push(Buffer.from(chunk)); cb(); } });
    const finished = new Promise<void>((resolve) => sink.once('finish', resolve));
    s.sendTo(sink);
    await finished;
    assert.equal(Buffer.concat(got).toString(), data.toString());
    close();
  });

  it('the readable side gets bulk data intact and ends', async () => {
    const { a, b, close } = pair();
    const data = randomBytes(1024 * 1024 + 3);
    serve(b, data);
    const s = await connectA(a);
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    await new Promise<void>((resolve) => s.once('end', resolve));
    assert.ok(Buffer.concat(chunks).equals(data));
    close();
  });

  describe('relayWith (a proxy relay without the stream machinery)', () => {

    it('moves bulk data both ways intact, the client\'s end becomes our FIN and the peer\'s FIN ends the client', async () => {
      const { a, b, close } = pair();
      // B echoes everything and ends after the client's FIN.
      b.stack.listen(80, (t: Tcb) => { const s = new TcpStream(t, () => b.schedule()); s.pipe(s); });
      const up = await connectA(a);
      const [server, client, stop] = await sockets();
      up.relayWith(server);
      const data = randomBytes(2 * 1024 * 1024 + 5);
      const back = collect(client);
      client.end(data);
      const got = await back;
      assert.equal(got.length, data.length);
      assert.equal(sha(got), sha(data));
      assert.equal(up.listenerCount('close') + up.listenerCount('end'), 0, 'the Duplex sides were not used');
      client.destroy(); stop(); close();
    });

    it('hands on what arrived before it was called first, and a reset from the peer destroys the client\'s socket', async () => {
      const { a, b, close } = pair();
      let peer: TcpStream | undefined;
      b.stack.listen(80, (t: Tcb) => { peer = new TcpStream(t, () => b.schedule()); peer.on('error', () => {}); peer.write('banner\n'); peer.resume(); });
      const up = await connectA(a);
      await new Promise<void>((r) => { const t = setInterval(() => { if (up.readableLength > 0) { clearInterval(t); r(); } }, 1); });
      const [server, client, stop] = await sockets();
      const first = new Promise<Buffer>((r) => client.once('data', r));
      up.relayWith(server);
      assert.equal((await first).toString(), 'banner\n');
      const closed = new Promise<void>((r) => client.once('end', () => r()));
      client.on('error', () => {});
      peer!.destroy(new Error('reset by the test'));
      b.schedule();
      await closed;
      assert.ok(server.destroyed, 'the proxy side was destroyed');
      stop(); close();
    });

    it('closes the connection when the client\'s socket goes away', async () => {
      const { a, b, close } = pair();
      let peerEnded = false;
      b.stack.listen(80, (t: Tcb) => { const s = new TcpStream(t, () => b.schedule()); s.on('end', () => { peerEnded = true; s.end(); }); s.resume(); });
      const up = await connectA(a);
      const [server, client, stop] = await sockets();
      up.relayWith(server);
      const serverClosed = new Promise<void>((r) => server.once('close', () => r()));
      client.destroy();
      await serverClosed;
      await new Promise<void>((r) => { const t = setInterval(() => { if (peerEnded) { clearInterval(t); r(); } }, 2); });
      assert.ok(up.tcb.closed || up.tcb.handler === undefined, 'the connection is let go');
      stop(); close();
    });
  });
});
