// dialRelay and TcpRelay (a proxy's outgoing netstack connection without node:stream) between two
// stacks on the event loop, relaying with a real loopback socket as a proxy does.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { NetstackDriver } from '../../src/netstack/device.ts';
import { TcpStream } from '../../src/netstack/stream.ts';
import { dialRelay, type TcpRelay } from '../../src/netstack/relay.ts';
import { S, type Tcb } from '../../src/netstack/tcp.ts';
import { collect, sha, sockets } from './sockets.ts';

/** Two drivers joined directly: A 100.64.0.1, B 100.64.0.2; `drop` cuts the wire. */
function pair(): { a: NetstackDriver; b: NetstackDriver; wire: { drop: boolean }; close: () => void } {
  let a: NetstackDriver | undefined, b: NetstackDriver | undefined;
  const state = { drop: false };
  const wire = (to: () => NetstackDriver) => (buf: Uint8Array, off: number, len: number): void => {
    if (state.drop) return;
    const copy = buf.slice(off, off + len);
    queueMicrotask(() => { const d = to(); d.stack.input(copy, 0, copy.length); d.schedule(); });
  };
  a = new NetstackDriver({ output: wire(() => b!) });
  b = new NetstackDriver({ output: wire(() => a!) });
  a.setFlush(() => {});
  b.setFlush(() => {});
  a.stack.setAddresses(['100.64.0.1/32']);
  b.stack.setAddresses(['100.64.0.2/32']);
  return { a, b, wire: state, close: () => { a.close(); b.close(); } };
}

const dial = (a: NetstackDriver, port = 80, timeoutMs = 5000): Promise<TcpRelay> => dialRelay(a.stack, () => a.schedule(), '100.64.0.2', port, timeoutMs);

const until = (cond: () => boolean): Promise<void> => new Promise((resolve, reject) => {
  const t0 = Date.now();
  const t = setInterval(() => {
    if (cond()) { clearInterval(t); resolve(); } else if (Date.now() - t0 > 5000) { clearInterval(t); reject(new Error('condition not reached in 5 s')); }
  }, 2);
});

describe('TcpRelay', () => {
  it('moves bulk data both ways intact, the client\'s end becomes our FIN and the peer\'s FIN ends the client', async () => {
    const { a, b, close } = pair();
    // B echoes everything and ends after the client's FIN.
    b.stack.listen(80, (t: Tcb) => { const s = new TcpStream(t, () => b.schedule()); s.pipe(s); });
    const up = await dial(a);
    assert.equal(up.localAddress, '100.64.0.1');
    assert.ok(up.localPort >= 32768);
    const [server, client, stop] = await sockets();
    up.relayWith(server);
    const data = randomBytes(2 * 1024 * 1024 + 5);
    const back = collect(client);
    client.end(data);
    const got = await back;
    assert.equal(got.length, data.length);
    assert.equal(sha(got), sha(data));
    client.destroy(); stop(); close();
  });

  it('sends what write() queued before the relay first, ahead of the client\'s bytes', async () => {
    const { a, b, close } = pair();
    const seen: Buffer[] = [];
    const peerEnd = new Promise<void>((resolve) => b.stack.listen(80, (t: Tcb) => {
      const s = new TcpStream(t, () => b.schedule());
      s.on('data', (d: Buffer) => seen.push(d));
      s.on('end', () => { s.end(); resolve(); });
    }));
    const up = await dial(a);
    up.write('GET / HTTP/1.1\r\n\r\n');
    up.write(Uint8Array.of(1, 2, 3));
    const [server, client, stop] = await sockets();
    up.relayWith(server);
    client.end('after');
    await peerEnd;
    assert.equal(Buffer.concat(seen).toString('latin1'), 'GET / HTTP/1.1\r\n\r\n\x01\x02\x03after');
    client.destroy(); stop(); close();
  });

  it('hands on what the peer sent before relayWith first, and a reset from the peer destroys the client\'s socket', async () => {
    const { a, b, close } = pair();
    let peer: TcpStream | undefined;
    b.stack.listen(80, (t: Tcb) => { peer = new TcpStream(t, () => b.schedule()); peer.on('error', () => {}); peer.write('banner\n'); peer.resume(); });
    const up = await dial(a);
    await until(() => up.tcb.unread > 0);
    await new Promise((r) => setImmediate(r));
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

  it('ends the client at once when the peer had already sent its FIN before relayWith', async () => {
    const { a, b, close } = pair();
    b.stack.listen(80, (t: Tcb) => { const s = new TcpStream(t, () => b.schedule()); s.end('bye'); s.resume(); });
    const up = await dial(a);
    await until(() => up.tcb.finReceived);
    const [server, client, stop] = await sockets();
    const got = collect(client);
    up.relayWith(server);
    assert.equal((await got).toString(), 'bye');
    client.destroy(); stop(); close();
  });

  it('lets the connection go (FIN to the peer) when the client\'s socket goes away', async () => {
    const { a, b, close } = pair();
    let peerEnded = false;
    b.stack.listen(80, (t: Tcb) => { const s = new TcpStream(t, () => b.schedule()); s.on('end', () => { peerEnded = true; s.end(); }); s.resume(); });
    const up = await dial(a);
    const [server, client, stop] = await sockets();
    up.relayWith(server);
    client.destroy();
    await until(() => peerEnded);
    // The socket's close lets go of the connection: it finishes in the background.
    await until(() => up.tcb.handler !== up);
    assert.ok(up.tcb.orphan || up.tcb.state === S.TIME_WAIT || up.tcb.closed, `let go in ${up.tcb.stateName}`);
    stop(); close();
  });

  it('rejects with ECONNREFUSED when nothing listens, and with ETIMEDOUT (resetting the attempt) when the peer never answers', async () => {
    const { a, wire, close } = pair();
    await assert.rejects(dial(a, 81), (e: Error & { code?: string }) => e.code === 'ECONNREFUSED');
    wire.drop = true;
    const before = a.stack.connectionCount;
    await assert.rejects(dial(a, 80, 50), (e: Error & { code?: string }) => e.code === 'ETIMEDOUT' && /timed out connecting to 100\.64\.0\.2:80/.test(e.message));
    assert.equal(a.stack.connectionCount, before, 'the timed-out attempt holds no connection');
    close();
  });

  it('rejects with ENETUNREACH when the stack has no address of the family', async () => {
    const { a, close } = pair();
    await assert.rejects(dialRelay(a.stack, () => a.schedule(), 'fd7a:115c:a1e0::2', 80, 1000), (e: Error & { code?: string }) => e.code === 'ENETUNREACH' && /no IPv6/.test(e.message));
    close();
  });

  it('destroy() before the relay resets the connection (the proxy\'s client left during the dial)', async () => {
    const { a, b, close } = pair();
    let peerErr: Error | undefined;
    b.stack.listen(80, (t: Tcb) => { const s = new TcpStream(t, () => b.schedule()); s.on('error', (e) => { peerErr = e; }); s.resume(); });
    const up = await dial(a);
    up.destroy();
    await until(() => peerErr !== undefined);
    assert.equal((peerErr as Error & { code?: string }).code, 'ECONNRESET');
    assert.ok(up.tcb.closed);
    close();
  });
});
