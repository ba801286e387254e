// The SOCKS5 and HTTP proxy framing against malformed, hostile and silent clients, with a fake
// dialer (an in-process echo) over loopback sockets.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { PassThrough, Duplex } from 'node:stream';
import { SocksHandshake, serveSocks, newProxyCounters, Rep, reply, parseUdpDatagram, writeUdpDatagram, type ProxyDialer } from '../../src/proxy/socks5.ts';
import { createSocket } from 'node:dgram';
import { serveHttpProxy, parseRequestHead, parseAuthority } from '../../src/proxy/http.ts';
import { parseListenAddr } from '../../src/daemon/userspace.ts';

/** A dialer whose connections echo what they get; `fail` makes it reject with a code. */
function echoDialer(fail?: string): ProxyDialer & { dialed: string[] } {
  const dialed: string[] = [];
  return {
    dialed,
    dial(host: string, port: number) {
      dialed.push(`${host}:${port}`);
      if (fail) return Promise.reject(Object.assign(new Error(`dial failed (${fail})`), { code: fail }));
      const a = new PassThrough();
      const d = Duplex.from({ readable: a, writable: a }) as Duplex & { localAddress?: string; localPort?: number };
      d.localAddress = '100.64.0.1';
      d.localPort = 40000;
      return Promise.resolve(d);
    },
  };
}

const servers: Server[] = [];
after(() => { for (const s of servers) s.close(); });

async function proxy(kind: 'socks' | 'http', dialer: ProxyDialer, opts: { auth?: { user: string; pass: string }; ms?: number } = {}) {
  const counters = newProxyCounters();
  const srv = createServer({ allowHalfOpen: true }, (s) => {
    if (kind === 'socks') serveSocks(s, dialer, { auth: opts.auth, handshakeMs: opts.ms ?? 2000, counters });
    else serveHttpProxy(s, dialer, { headMs: opts.ms ?? 2000, counters });
  });
  servers.push(srv);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  return { port, counters };
}

/** Sends bytes, collects everything until the server closes (bounded by 3 s). */
function exchange(port: number, parts: (Uint8Array | string)[], waitMs = 3000): Promise<{ data: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const s: Socket = connect({ port, host: '127.0.0.1' });
    const chunks: Buffer[] = [];
    let closed = false;
    const t = setTimeout(() => { s.destroy(); resolve({ data: Buffer.concat(chunks), closed }); }, waitMs);
    s.on('data', (d) => chunks.push(d));
    s.on('error', () => {});
    s.on('close', () => { closed = true; clearTimeout(t); resolve({ data: Buffer.concat(chunks), closed }); });
    s.on('connect', () => { for (const p of parts) s.write(p); });
  });
}

describe('SOCKS5 handshake codec (RFC 1928, RFC 1929)', () => {
  it('parses a no-auth CONNECT to a domain, keeping bytes that follow the request', () => {
    const h = new SocksHandshake({ auth: false });
    const g = h.feed(Uint8Array.of(5, 2, 0, 2));
    assert.deepEqual(g, { t: 'reply', bytes: Uint8Array.of(5, 0), close: false });
    assert.deepEqual(h.feed(new Uint8Array(0)), { t: 'more' });
    const r = h.feed(Buffer.concat([Buffer.from([5, 1, 0, 3, 2]), Buffer.from('t1'), Buffer.from([0x1f, 0x40]), Buffer.from('GET')]));
    assert.equal(r.t, 'request');
    if (r.t === 'request') {
      assert.deepEqual(r.req, { host: 't1', port: 8000, kind: 'domain', cmd: 'connect' });
      assert.equal(Buffer.from(r.rest).toString(), 'GET');
    }
  });

  it('takes requests byte by byte, and IPv4 and IPv6 address types', () => {
    for (const [atyp, addr, want] of [[1, [100, 64, 0, 2], '100.64.0.2'], [4, [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 'fd7a:115c:a1e0:0:0:0:0:2']] as const) {
      const h = new SocksHandshake({ auth: false });
      const bytes = [5, 1, 0, 5, 1, 0, atyp, ...addr, 0, 80];
      let last;
      for (const b of bytes) last = h.feed(Uint8Array.of(b));
      assert.equal(last?.t, 'request');
      if (last?.t === 'request') assert.equal(last.req.host, want);
    }
  });

  it('answers bad input with the right reply code: no acceptable method FF, BIND 07, unknown ATYP 08, bad version closes', () => {
    assert.deepEqual(new SocksHandshake({ auth: false }).feed(Uint8Array.of(5, 1, 2)), { t: 'error', reply: Uint8Array.of(5, 0xff), reason: 'client does not offer no-auth' });
    const b = new SocksHandshake({ auth: false }); b.feed(Uint8Array.of(5, 1, 0));
    const bind = b.feed(Uint8Array.of(5, 2, 0, 1, 1, 2, 3, 4, 0, 80));
    assert.equal(bind.t, 'error');
    if (bind.t === 'error') assert.equal(bind.reply![1], Rep.cmdUnsupported);
    const a = new SocksHandshake({ auth: false }); a.feed(Uint8Array.of(5, 1, 0));
    const at = a.feed(Uint8Array.of(5, 1, 0, 9, 1, 2));
    assert.equal(at.t, 'error');
    if (at.t === 'error') assert.equal(at.reply![1], Rep.atypUnsupported);
    const v4 = new SocksHandshake({ auth: false }).feed(Uint8Array.of(4, 1, 0, 80));
    assert.equal(v4.t, 'error');
    if (v4.t === 'error') assert.equal(v4.reply, null);
  });

  it('writes replies with IPv4 and IPv6 bound addresses', () => {
    assert.deepEqual([...reply(0, '100.64.0.1', 1080)], [5, 0, 0, 1, 100, 64, 0, 1, 4, 56]);
    const r6 = reply(0, 'fd7a:115c:a1e0::1', 1);
    assert.equal(r6.length, 22);
    assert.equal(r6[3], 4);
    assert.equal(r6[19], 1);
  });
});

describe('SOCKS5 UDP ASSOCIATE (RFC 1928 7)', () => {
  it('parses UDP ASSOCIATE requests and datagram headers, and writes reply datagrams with the sender in front', () => {
    const h = new SocksHandshake({ auth: false }); h.feed(Uint8Array.of(5, 1, 0));
    const r = h.feed(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, 0, 0));
    assert.equal(r.t, 'request');
    if (r.t === 'request') assert.equal(r.req.cmd, 'udp');
    const d = parseUdpDatagram(Buffer.concat([Buffer.from([0, 0, 0, 3, 2]), Buffer.from('t1'), Buffer.from([0x1b, 0x59]), Buffer.from('ping')]));
    assert.ok(typeof d !== 'string');
    if (typeof d !== 'string') { assert.equal(d.host, 't1'); assert.equal(d.port, 7001); assert.equal(Buffer.from(d.data).toString(), 'ping'); }
    const back = writeUdpDatagram('100.64.0.2', 7001, Buffer.from('pong'));
    assert.deepEqual([...back.subarray(0, 10)], [0, 0, 0, 1, 100, 64, 0, 2, 0x1b, 0x59]);
    const round = parseUdpDatagram(writeUdpDatagram('fd7a:115c:a1e0::2', 53, Buffer.from('x')));
    assert.ok(typeof round !== 'string' && round.host === 'fd7a:115c:a1e0:0:0:0:0:2' && round.port === 53);
    assert.match(parseUdpDatagram(Uint8Array.of(0, 0, 1, 1, 1, 2, 3, 4, 0, 80)) as string, /fragment/);
    assert.match(parseUdpDatagram(Uint8Array.of(0, 0, 0, 9)) as string, /address type 9/);
    assert.match(parseUdpDatagram(Uint8Array.of(0, 0, 0, 1, 1, 2)) as string, /shorter/);
  });

  it('relays datagrams both ways while the control connection lives, drops fragments, and ends with it', async () => {
    const sent: string[] = [];
    let closed = 0;
    const dialer: ProxyDialer = {
      dial: () => Promise.reject(new Error('no TCP here')),
      associateUdp(onReply) {
        return {
          send(host, port, data) { sent.push(`${host}:${port}:${Buffer.from(data).toString()}`); onReply('100.64.0.2', port, Buffer.from(`re:${Buffer.from(data).toString()}`)); },
          close() { closed++; },
        };
      },
    };
    const { port, counters } = await proxy('socks', dialer);
    const s = connect({ port, host: '127.0.0.1' });
    const head: Buffer[] = [];
    await new Promise<void>((res) => s.on('connect', () => res()));
    s.write(Uint8Array.of(5, 1, 0));
    s.write(Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, 0, 0));
    await new Promise<void>((res) => s.on('data', (d) => { head.push(d); if (Buffer.concat(head).length >= 12) res(); }));
    const rep = Buffer.concat(head);
    assert.deepEqual([...rep.subarray(0, 4)], [5, 0, 5, 0]);
    assert.deepEqual([...rep.subarray(5, 10)], [1, 127, 0, 0, 1], 'bound on the control connection\'s address');
    const bndPort = rep.readUInt16BE(10);
    const u = createSocket('udp4');
    const got: string[] = [];
    u.on('message', (m) => { const d = parseUdpDatagram(m); if (typeof d !== 'string') got.push(`${d.host}:${d.port}:${Buffer.from(d.data).toString()}`); });
    await new Promise<void>((res) => u.bind(0, '127.0.0.1', () => res()));
    u.send(Uint8Array.of(0, 0, 1, 1, 100, 64, 0, 2, 0x1b, 0x59, 120), bndPort, '127.0.0.1'); // a fragment: dropped
    u.send(writeUdpDatagram('100.64.0.2', 7001, Buffer.from('a')), bndPort, '127.0.0.1');
    u.send(Buffer.concat([Buffer.from([0, 0, 0, 3, 2]), Buffer.from('t1'), Buffer.from([0x1b, 0x59]), Buffer.from('b')]), bndPort, '127.0.0.1');
    for (let i = 0; i < 100 && got.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(got, ['100.64.0.2:7001:re:a', '100.64.0.2:7001:re:b']);
    assert.deepEqual(sent, ['100.64.0.2:7001:a', 't1:7001:b']);
    assert.equal(counters.udpAssociations, 1);
    assert.equal(counters.udpDropped, 1, 'the fragment');
    s.end();
    for (let i = 0; i < 100 && closed === 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(closed, 1, 'the association ends with the control connection');
    u.close();
    s.destroy();
  });

  it('refuses UDP ASSOCIATE with 07 when the dialer cannot relay UDP', async () => {
    const { port } = await proxy('socks', echoDialer());
    const r = await exchange(port, [Uint8Array.of(5, 1, 0), Uint8Array.of(5, 3, 0, 1, 0, 0, 0, 0, 0, 0)]);
    assert.equal(r.data[3], Rep.cmdUnsupported);
    assert.ok(r.closed);
  });
});

describe('SOCKS5 server', () => {
  it('relays a CONNECT through the dialer and reports the bound address', async () => {
    const d = echoDialer();
    const { port, counters } = await proxy('socks', d);
    const host = Buffer.from('t1.meshd.test');
    const r = await exchange(port, [Uint8Array.of(5, 1, 0), Buffer.concat([Buffer.from([5, 1, 0, 3, host.length]), host, Buffer.from([0, 80])]), 'hello'], 500);
    assert.deepEqual([...r.data.subarray(0, 2)], [5, 0]);
    assert.deepEqual([...r.data.subarray(2, 12)], [5, 0, 0, 1, 100, 64, 0, 1, 0x9c, 0x40]);
    assert.equal(r.data.subarray(12).toString(), 'hello', 'echoed through');
    assert.deepEqual(d.dialed, ['t1.meshd.test:80']);
    assert.equal(counters.connected, 1);
  });

  it('maps dial errors to reply codes: refused 05, unresolvable 04', async () => {
    for (const [code, rep] of [['ECONNREFUSED', 5], ['ENOTFOUND', 4], ['EWHATEVER', 1]] as const) {
      const { port, counters } = await proxy('socks', echoDialer(code));
      const r = await exchange(port, [Uint8Array.of(5, 1, 0), Uint8Array.of(5, 1, 0, 1, 100, 64, 0, 2, 0, 80)]);
      assert.equal(r.data[3], rep, code);
      assert.ok(r.closed);
      assert.equal(counters.failed, 1);
    }
  });

  it('checks username/password (RFC 1929): wrong ones get 01 01 and a close', async () => {
    const auth = { user: 'ci', pass: 's3cret' };
    const { port, counters } = await proxy('socks', echoDialer(), { auth });
    const creds = (u: string, p: string) => Buffer.concat([Buffer.from([1, u.length]), Buffer.from(u), Buffer.from([p.length]), Buffer.from(p)]);
    const bad = await exchange(port, [Uint8Array.of(5, 1, 2), creds('ci', 'nope')]);
    assert.deepEqual([...bad.data], [5, 2, 1, 1]);
    assert.ok(bad.closed);
    assert.equal(counters.authFailed, 1);
    const noAuth = await exchange(port, [Uint8Array.of(5, 1, 0)]);
    assert.deepEqual([...noAuth.data], [5, 0xff], 'no-auth is refused when credentials are set');
    const good = await exchange(port, [Uint8Array.of(5, 1, 2), creds('ci', 's3cret'), Uint8Array.of(5, 1, 0, 1, 100, 64, 0, 2, 0, 80), 'x'], 500);
    assert.deepEqual([...good.data.subarray(0, 5)], [5, 2, 1, 0, 5]);
    assert.equal(good.data.subarray(-1).toString(), 'x');
  });

  it('answers a greeting sent with its CONNECT in one write, and a lone greeting at once', async () => {
    // The server side of a client connection, in process: each write() the proxy makes is recorded.
    const client = () => {
      const writes: Buffer[] = [];
      const sock = new Duplex({
        read() {},
        write(chunk: Buffer, _e, cb) { writes.push(Buffer.from(chunk)); cb(); },
        final(cb) { cb(); },
      });
      return { sock, writes };
    };
    const tick = () => new Promise((r) => setImmediate(r));
    const req = Uint8Array.of(5, 1, 0, 1, 100, 64, 0, 2, 0, 80);
    const together = client();
    serveSocks(together.sock, echoDialer(), { counters: newProxyCounters() });
    together.sock.push(Buffer.concat([Uint8Array.of(5, 1, 0), req]));
    await tick(); await tick();
    assert.equal(together.writes.length, 1, 'method and CONNECT replies in one write');
    assert.deepEqual([...together.writes[0]!], [5, 0, 5, 0, 0, 1, 100, 64, 0, 1, 0x9c, 0x40]);
    const creds = Buffer.concat([Buffer.from([1, 2]), Buffer.from('ci'), Buffer.from([1]), Buffer.from('p')]);
    const auth = client();
    serveSocks(auth.sock, echoDialer(), { auth: { user: 'ci', pass: 'p' }, counters: newProxyCounters() });
    auth.sock.push(Buffer.concat([Uint8Array.of(5, 1, 2), creds, req]));
    await tick(); await tick();
    assert.deepEqual(auth.writes.map((w) => [...w.subarray(0, 6)]), [[5, 2, 1, 0, 5, 0]], 'method, auth and CONNECT replies in one write');
    const failed = client();
    serveSocks(failed.sock, echoDialer('ECONNREFUSED'), { counters: newProxyCounters() });
    failed.sock.push(Buffer.concat([Uint8Array.of(5, 1, 0), req]));
    await tick(); await tick();
    assert.deepEqual(failed.writes.map((w) => [...w.subarray(0, 4)]), [[5, 0, 5, Rep.refused]], 'held method reply goes out with the error reply');
    const lone = client();
    serveSocks(lone.sock, echoDialer(), { counters: newProxyCounters() });
    lone.sock.push(Uint8Array.of(5, 1, 0));
    await tick();
    assert.deepEqual(lone.writes.map((w) => [...w]), [[5, 0]], 'a client waiting for the method reply gets it without sending more');
    lone.sock.push(req);
    await tick(); await tick();
    assert.equal(lone.writes.length, 2);
    assert.deepEqual([...lone.writes[1]!.subarray(0, 2)], [5, 0]);
    for (const c of [together, auth, failed, lone]) c.sock.destroy();
  });

  it('closes on a client that says nothing, and on junk, counting both', async () => {
    const { port, counters } = await proxy('socks', echoDialer(), { ms: 200 });
    const silent = await exchange(port, [], 2000);
    assert.ok(silent.closed, 'silent client closed');
    assert.equal(counters.idleTimeout, 1);
    const junk = await exchange(port, [Buffer.alloc(2000, 0x41)]);
    assert.ok(junk.closed);
    assert.equal(counters.badRequest, 1);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(counters.active, 0, 'nothing held');
  });
});

describe('HTTP proxy', () => {
  it('parses heads and authorities, refusing malformed ones with one-line reasons', () => {
    assert.equal(parseRequestHead(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n')), undefined, 'incomplete');
    const r = parseRequestHead(Buffer.from('CONNECT t1:443 HTTP/1.1\r\nHost: t1:443\r\n\r\nrest'));
    assert.equal(r?.method, 'CONNECT');
    assert.equal(Buffer.from(r!.rest).toString(), 'rest');
    assert.throws(() => parseRequestHead(Buffer.from('BLAH\r\n\r\n')), /malformed request line/);
    assert.throws(() => parseRequestHead(Buffer.alloc(20_000, 0x41)), /larger than 16 KiB/);
    assert.deepEqual(parseAuthority('[fd7a:115c:a1e0::2]:80'), { host: 'fd7a:115c:a1e0::2', port: 80 });
    assert.throws(() => parseAuthority('t1'), /want host:port/);
  });

  it('tunnels CONNECT and forwards absolute-URI requests with hop-by-hop headers dropped', async () => {
    const d = echoDialer();
    const { port } = await proxy('http', d);
    const c = await exchange(port, ['CONNECT t1:8000 HTTP/1.1\r\nHost: t1:8000\r\n\r\n', 'ping'], 500);
    assert.equal(c.data.toString(), 'HTTP/1.1 200 OK\r\n\r\nping');
    const g = await exchange(port, ['GET http://t1:8000/x?y=1 HTTP/1.1\r\nHost: t1:8000\r\nProxy-Connection: keep-alive\r\nAccept: */*\r\n\r\n'], 500);
    // The echo dialer sends the forwarded request straight back.
    assert.equal(g.data.toString(), 'GET /x?y=1 HTTP/1.1\r\nHost: t1:8000\r\nAccept: */*\r\nConnection: close\r\n\r\n');
    assert.deepEqual(d.dialed, ['t1:8000', 't1:8000']);
  });

  it('answers 400 for relative URIs and junk, 502 with the reason when the dial fails, 408 for silent clients', async () => {
    const { port, counters } = await proxy('http', echoDialer(), { ms: 200 });
    const rel = await exchange(port, ['GET /x HTTP/1.1\r\nHost: a\r\n\r\n']);
    assert.match(rel.data.toString(), /^HTTP\/1\.1 400 [^]*bogus RequestURI; must be absolute URL or CONNECT/);
    const junk = await exchange(port, ['\x16\x03\x01junk\r\n\r\n']);
    assert.match(junk.data.toString(), /^HTTP\/1\.1 400 /);
    const silent = await exchange(port, [], 2000);
    assert.match(silent.data.toString(), /^HTTP\/1\.1 408 /);
    assert.equal(counters.idleTimeout, 1);
    const f = await proxy('http', echoDialer('ECONNREFUSED'));
    const bad = await exchange(f.port, ['CONNECT t1:1 HTTP/1.1\r\n\r\n']);
    assert.match(bad.data.toString(), /^HTTP\/1\.1 502 [^]*Meshd-Connect-Error: dial failed \(ECONNREFUSED\)/);
  });

  it('parses listen addresses, defaulting to loopback', () => {
    assert.deepEqual(parseListenAddr('localhost:1080', 'f'), { host: '127.0.0.1', port: 1080 });
    assert.deepEqual(parseListenAddr(':1080', 'f'), { host: '127.0.0.1', port: 1080 });
    assert.deepEqual(parseListenAddr('1080', 'f'), { host: '127.0.0.1', port: 1080 });
    assert.deepEqual(parseListenAddr('[::1]:8080', 'f'), { host: '::1', port: 8080 });
    assert.throws(() => parseListenAddr('example.com:1', '--socks5-server'), /bad --socks5-server "example.com:1": the address must be an IP or localhost/);
    assert.throws(() => parseListenAddr('x', '--socks5-server'), /want ADDR:PORT/);
  });
});
