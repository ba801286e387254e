// The forwarder against fake upstream resolvers on loopback: UDP answers, TC -> TCP retry, soft
// SERVFAIL/REFUSED, dead upstreams ending in SERVFAIL, the in-flight cap; and DNS over streams:
// pipelining, the length cap, the connection cap.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { createSocket, type Socket } from 'node:dgram';
import { createServer, connect, type Server } from 'node:net';
import { Forwarder, clampEdns, udpSizeOf } from '../../src/dns/forwarder.ts';
import { parseQuery, Rcode, type Query } from '../../src/dns/resolver.ts';
import { packet } from '../../src/dns/codec.ts';
import { DnsStreamServer } from '../../src/dns/stream.ts';
import type { Route } from '../../src/dns/config.ts';

const q = (name: string, id = 0x4242) => new Uint8Array(packet.encode({ type: 'query', id, flags: 0x100, questions: [{ name, type: 'A' }] }));
const parsed = (b: Uint8Array) => parseQuery(b) as Query;
const rcodeOf = (b: Uint8Array | null) => (b ? b[3]! & 0xf : -1);

/** An answer to `query` with rcode and optionally TC, A 10.0.0.N per `n`. */
function answer(query: Buffer, rcode: number, opts: { tc?: boolean; ip?: string } = {}): Buffer {
  const m = packet.decode(query);
  return packet.encode({
    type: 'response', id: m.id, flags: 0x8180 & 0x7fff | rcode | (opts.tc ? 0x200 : 0),
    questions: m.questions, answers: opts.ip ? [{ name: m.questions![0]!.name, type: 'A', ttl: 60, data: opts.ip }] : [],
  });
}

/** A fake resolver on 127.0.0.1: UDP and TCP behaviour chosen per test. */
async function fake(udpMode: 'answer' | 'tc' | 'servfail' | 'refused' | 'silent' | 'none', tcpMode: 'answer' | 'none', ip = '10.0.0.1'): Promise<{ port: number; close(): void; udpSeen: number; tcpSeen: number }> {
  const state = { udpSeen: 0, tcpSeen: 0 };
  const tcp: Server = createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        state.tcpSeen++;
        const a = answer(buf.subarray(2, 2 + buf.readUInt16BE(0)), 0, { ip });
        const f = Buffer.alloc(2); f.writeUInt16BE(a.length);
        s.end(Buffer.concat([f, a]));
      }
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
  const port = (tcp.address() as { port: number }).port;
  if (tcpMode === 'none') await new Promise<void>((r) => tcp.close(() => r()));
  let udp: Socket | undefined;
  if (udpMode !== 'none') {
    udp = createSocket('udp4');
    const u = udp;
    u.on('message', (m, rinfo) => {
      state.udpSeen++;
      if (udpMode === 'silent') return;
      const rc = udpMode === 'servfail' ? Rcode.SERVFAIL : udpMode === 'refused' ? Rcode.REFUSED : 0;
      // A reply with the wrong ID first: it must be ignored.
      const wrong = Buffer.from(m); wrong.writeUInt16BE(m.readUInt16BE(0) ^ 1, 0);
      u.send(answer(wrong, 0, { ip: '6.6.6.6' }), rinfo.port, rinfo.address);
      u.send(answer(m, rc, { tc: udpMode === 'tc', ...(udpMode === 'tc' ? {} : { ip }) }), rinfo.port, rinfo.address);
    });
    await new Promise<void>((r) => u.bind(port, '127.0.0.1', r));
  }
  return {
    port,
    get udpSeen() { return state.udpSeen; },
    get tcpSeen() { return state.tcpSeen; },
    close() { udp?.close(); if (tcpMode !== 'none') tcp.close(); },
  };
}

const route = (...ports: number[]): Route => ({ suffix: '.', resolvers: ports.map((p) => ({ ip: '127.0.0.1', port: p, text: `127.0.0.1:${p}` })) });
const ipOf = (b: Uint8Array | null) => ((packet.decode(Buffer.from(b!)).answers?.[0] as { data?: string } | undefined)?.data);

describe('forwarder', () => {
  const cleanups: (() => void)[] = [];
  after(() => { for (const c of cleanups) c(); });
  const fw = (o: Partial<ConstructorParameters<typeof Forwarder>[0]> = {}) => {
    const f = new Forwarder({ log: () => {}, udpBeforeTcpMs: 200, tcpTimeoutMs: 500, queryTimeoutMs: 1500, ...o });
    cleanups.push(() => f.close());
    return f;
  };

  it('forwards over UDP, ignoring answers with the wrong ID', async () => {
    const u = await fake('answer', 'none'); cleanups.push(() => u.close());
    const a = await fw().forward(q('www.example.net'), parsed(q('www.example.net')), route(u.port), false);
    assert.equal(rcodeOf(a), 0);
    assert.equal(ipOf(a), '10.0.0.1');
    assert.equal(a![0]! << 8 | a![1]!, 0x4242);
  });

  it('retries over TCP when the UDP answer is truncated', async () => {
    const u = await fake('tc', 'answer', '10.0.0.7'); cleanups.push(() => u.close());
    const a = await fw().forward(q('big.example.net'), parsed(q('big.example.net')), route(u.port), false);
    assert.equal(ipOf(a), '10.0.0.7');
    assert.equal(u.tcpSeen, 1);
  });

  it('treats SERVFAIL and REFUSED as soft: another resolver of the route wins', async () => {
    const bad = await fake('servfail', 'none'); cleanups.push(() => bad.close());
    const good = await fake('answer', 'none', '10.0.0.9'); cleanups.push(() => good.close());
    const a = await fw().forward(q('x.example'), parsed(q('x.example')), route(bad.port, good.port), false);
    assert.equal(ipOf(a), '10.0.0.9');
  });

  it('passes on the upstream SERVFAIL when all fail, the first REFUSED when all refuse', async () => {
    const s1 = await fake('servfail', 'none'); cleanups.push(() => s1.close());
    const r1 = await fake('refused', 'none'); cleanups.push(() => r1.close());
    const r2 = await fake('refused', 'none'); cleanups.push(() => r2.close());
    assert.equal(rcodeOf(await fw().forward(q('a.example'), parsed(q('a.example')), route(s1.port), false)), Rcode.SERVFAIL);
    assert.equal(rcodeOf(await fw().forward(q('a.example'), parsed(q('a.example')), route(r1.port, r2.port), false)), Rcode.REFUSED);
  });

  it('answers SERVFAIL at once for a closed port, and within the query timeout for a silent resolver', async () => {
    const dead = await fake('none', 'none'); // nothing listens: ICMP port unreachable and RST
    let t0 = Date.now();
    const a = await fw().forward(q('a.example'), parsed(q('a.example')), route(dead.port), false);
    assert.equal(rcodeOf(a), Rcode.SERVFAIL);
    assert.ok(Date.now() - t0 < 1000, `closed port: ${Date.now() - t0} ms`);
    const silent = await fake('silent', 'none'); cleanups.push(() => silent.close());
    t0 = Date.now();
    const f = fw();
    const b = await f.forward(q('a.example'), parsed(q('a.example')), route(silent.port), false);
    assert.equal(rcodeOf(b), Rcode.SERVFAIL);
    assert.ok(Date.now() - t0 >= 1400 && Date.now() - t0 < 3000, `silent: ${Date.now() - t0} ms`);
    assert.equal(f.counters.servfailTimeout, 1);
    assert.equal(f.pending, 0);
  });

  it('answers SERVFAIL (AA) when no route matches', async () => {
    const a = await fw().forward(q('a.example'), parsed(q('a.example')), undefined, false);
    assert.equal(rcodeOf(a), Rcode.SERVFAIL);
    assert.equal(a![2]! & 0x84, 0x84);
  });

  it('caps forwards in flight: the excess gets no answer and is counted', async () => {
    const silent = await fake('silent', 'none'); cleanups.push(() => silent.close());
    const f = fw({ maxInFlight: 2, queryTimeoutMs: 300 });
    const all = await Promise.all([0, 1, 2, 3].map((i) => f.forward(q(`n${i}.example`), parsed(q(`n${i}.example`)), route(silent.port), false)));
    assert.equal(all.filter((x) => x === null).length, 2);
    assert.equal(f.counters.dropInFlightCap, 2);
  });

  it('clamps an option-less EDNS size to 4095 and reads the client size', () => {
    const e = new Uint8Array(packet.encode({ type: 'query', id: 1, questions: [{ name: 'a', type: 'A' }], additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 8192, flags: 0, options: [] } as never] } as never));
    const c = clampEdns(e);
    assert.equal(udpSizeOf(c), 4095);
    assert.equal(udpSizeOf(e), 8192);
    assert.equal(udpSizeOf(q('a')), 512);
  });

  it('reads the EDNS size after answer and authority records with compressed names, and 512 from malformed queries', () => {
    const msg = (additionals: unknown[], extra: object = {}) => new Uint8Array(packet.encode({
      type: 'query', id: 7, questions: [{ name: 'x.example', type: 'A' }],
      answers: [{ type: 'A', name: 'x.example', data: '1.2.3.4' }], authorities: [{ type: 'NS', name: 'example', data: 'ns.example' }],
      additionals, ...extra,
    } as never));
    const opt = (size: number) => ({ type: 'OPT', name: '.', udpPayloadSize: size, flags: 0, options: [] });
    assert.equal(udpSizeOf(msg([{ type: 'A', name: 'ns.example', data: '5.6.7.8' }, opt(1232)])), 1232);
    assert.equal(udpSizeOf(msg([opt(4096), opt(9000)])), 4096, 'the first OPT');
    assert.equal(udpSizeOf(msg([opt(100)])), 512, 'never below 512');
    assert.equal(udpSizeOf(msg([{ type: 'A', name: 'ns.example', data: '5.6.7.8' }])), 512);
    const cut = msg([opt(1232)]);
    assert.equal(udpSizeOf(cut.subarray(0, cut.length - 5)), 512, 'an OPT cut short');
    // Found by scripts/fuzz.mjs: 57 bytes claiming 256 answers and 62,976 additional records (dns-packet took ~65 ms).
    const claim = Buffer.from('01300101000001000000f60000000d312d322d000000007669612d310000010000000000000d312d322d000000007669612d31340100020001', 'hex');
    assert.equal(udpSizeOf(claim), 512);
  });
});

describe('DNS over streams', () => {
  it('DnsService.listenTcp serves quad-100 over TCP on a stack that hands out streams (both service IPs)', async () => {
    const { DnsService } = await import('../../src/dns/service.ts');
    const { labMap } = await import('./fixtures.ts');
    const svc = new DnsService({ log: () => {}, tunName: 'x', etcDir: '/nonexistent' });
    svc.setAcceptDns(false);
    svc.start(() => {});
    await svc.apply(labMap());
    const listeners = new Map<string, (s: import('node:stream').Duplex) => void>();
    svc.listenTcp({ listen: (addr, port, cb) => { listeners.set(`${addr}:${port}`, cb); } });
    assert.deepEqual([...listeners.keys()].sort(), ['100.100.100.100:53', 'fd7a:115c:a1e0::53:53']);
    const tcp = createServer((s) => listeners.get('100.100.100.100:53')!(s));
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    try {
      const c = connect((tcp.address() as { port: number }).port, '127.0.0.1');
      const m = q('t1.meshd.test', 77);
      const f = Buffer.alloc(2 + m.length); f.writeUInt16BE(m.length); f.set(m, 2);
      c.write(f);
      const got = await new Promise<Buffer>((resolve) => { let b = Buffer.alloc(0); c.on('data', (d: Buffer) => { b = Buffer.concat([b, d]); if (b.length >= 2 && b.length >= 2 + b.readUInt16BE(0)) resolve(b); }); });
      c.destroy();
      assert.equal(ipOf(got.subarray(2)), '100.64.0.2');
    } finally {
      tcp.close();
      await svc.stop();
    }
  });


  it('answers pipelined queries, closes on a 64 KiB length with no body, caps connections', async () => {
    const srv = new DnsStreamServer(async (m) => { await new Promise((r) => setTimeout(r, m[1] === 1 ? 50 : 0)); return m; }, { maxConnections: 2, idleMs: 2000 });
    const tcp = createServer((s) => srv.serve(s));
    await new Promise<void>((r) => tcp.listen(0, '127.0.0.1', r));
    const port = (tcp.address() as { port: number }).port;
    try {
      const c = connect(port, '127.0.0.1');
      const frames: number[] = [];
      let buf = Buffer.alloc(0);
      c.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) { frames.push(buf[3]!); buf = buf.subarray(2 + buf.readUInt16BE(0)); }
      });
      await new Promise<void>((r) => c.once('connect', () => r()));
      const framed = (id: number) => { const m = q('x', id); const f = Buffer.alloc(2 + m.length); f.writeUInt16BE(m.length); f.set(m, 2); return f; };
      c.write(Buffer.concat([framed(1), framed(2)]));
      for (let i = 0; i < 50 && frames.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
      assert.deepEqual(frames, [2, 1], 'the fast answer overtakes the slow one');
      // A length prefix of 65535 and no body: the server ends the connection and counts it.
      const closed = new Promise<void>((r) => c.once('close', () => r()));
      c.write(Buffer.from([0xff, 0xff]));
      await closed;
      assert.equal(srv.counters.badLength, 1);
      // Two connections are allowed; a third is refused.
      const a = connect(port, '127.0.0.1'), b = connect(port, '127.0.0.1');
      await Promise.all([a, b].map((s) => new Promise((r) => s.once('connect', r))));
      const third = connect(port, '127.0.0.1');
      await new Promise<void>((r) => third.once('close', () => r()));
      for (let i = 0; i < 50 && srv.counters.refusedConnections < 1; i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(srv.counters.refusedConnections, 1);
      a.destroy(); b.destroy();
    } finally {
      srv.close();
      tcp.close();
    }
  });
});
