// quad-100's answers against golden bytes and tailscaled's rules (dns-netstack-portmap.md 1.6):
// names from a headscale-shaped map, TTLs, flags, SOA, NXDOMAIN vs NOERROR, PTR, FORMERR.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import type { NetworkMap } from '../../src/control/netmap.ts';
import { key, labMap } from './fixtures.ts';
import { compileDnsConfig } from '../../src/dns/config.ts';
import { packet } from '../../src/dns/codec.ts';
import { Resolver, Rcode, viaAddress, QType } from '../../src/dns/resolver.ts';
import { reverseName } from '../../src/dns/names.ts';

const NOW = 1_800_000_000;

function resolverFor(map: NetworkMap, acceptDns = true): Resolver {
  const r = new Resolver({ nowSec: () => NOW });
  r.setConfig(compileDnsConfig(map, { acceptDns, osSupportsSplit: false }));
  return r;
}

/** A query as dig sends it: ID 0x1234, RD and AD set. */
function query(name: string, type: string, flags = 0x0120): Uint8Array {
  return new Uint8Array(packet.encode({ type: 'query', id: 0x1234, flags, questions: [{ name, type: type as 'A', class: 'IN' }] }));
}

function reply(r: Resolver, q: Uint8Array): Buffer {
  const o = r.respond(q);
  assert.equal(o.kind, 'reply', `expected a local reply, got ${o.kind}`);
  return Buffer.from((o as { bytes: Uint8Array }).bytes);
}

const decode = (b: Uint8Array) => packet.decode(Buffer.from(b));

describe('quad-100 resolver core', () => {
  it('answers a peer by FQDN with its first IPv4, TTL 5, AA and RA set, AD echoed, no OPT: golden bytes', () => {
    const r = resolverFor(labMap());
    const b = reply(r, query('t1.meshd.test', 'A'));
    assert.equal(b.toString('hex'),
      '1234' + '85a0' + '0001000100000000' +
      '02743105' + Buffer.from('meshd').toString('hex') + '0474657374' + '00' + '00010001' +
      '02743105' + Buffer.from('meshd').toString('hex') + '0474657374' + '00' + '00010001' + '00000005' + '0004' + '64400002');
  });

  it('answers short names through the MagicDNS suffix, case-insensitively, keeping the client case', () => {
    const r = resolverFor(labMap());
    const m = decode(reply(r, query('T1', 'A')));
    assert.equal(m.questions![0]!.name, 'T1');
    assert.deepEqual(m.answers!.map((a) => [a.name, a.type, (a as { data: string }).data]), [['T1', 'A', '100.64.0.2']]);
    const self = decode(reply(r, query('m1.meshd.test', 'A')));
    assert.equal((self.answers![0] as { data: string }).data, '100.64.0.1');
  });

  it('gives a dual-stack peer no AAAA (NOERROR, no answer, SOA of the zone with TTL 10), an IPv6-only one its AAAA', () => {
    const r = resolverFor(labMap());
    const b = reply(r, query('t1.meshd.test', 'AAAA'));
    const m = decode(b);
    assert.equal(m.flags! & 0xf, Rcode.NOERROR);
    assert.equal(m.answers!.length, 0);
    assert.deepEqual(m.authorities, [{
      name: 'meshd.test', type: 'SOA', class: 'IN', ttl: 10, flush: false,
      data: { mname: 'meshd.test', rname: 'meshd.test', serial: NOW, refresh: 10, retry: 10, expire: 10, minimum: 10 },
    }]);
    const v6 = decode(reply(r, query('v6only.meshd.test', 'AAAA')));
    assert.equal((v6.answers![0] as { data: string }).data, 'fd7a:115c:a1e0::3');
    const v6a = decode(reply(r, query('v6only.meshd.test', 'A')));
    assert.equal(v6a.answers!.length, 0);
    assert.equal(v6a.authorities!.length, 1);
  });

  it('keeps AAAA for dual-stack peers when self has the magicdns-aaaa attribute', () => {
    const m = labMap();
    m.apply({ Node: { ...m.self!.raw, CapMap: { 'magicdns-aaaa': null } } });
    const a = decode(reply(resolverFor(m), query('t1.meshd.test', 'AAAA')));
    assert.equal((a.answers![0] as { data: string }).data, 'fd7a:115c:a1e0::2');
  });

  it('answers NXDOMAIN with the SOA for an unknown name in the zone and for the zone apex', () => {
    const r = resolverFor(labMap());
    for (const name of ['nope.meshd.test', 'meshd.test']) {
      const m = decode(reply(r, query(name, 'A')));
      assert.equal(m.flags! & 0xf, Rcode.NXDOMAIN, name);
      assert.equal(m.answers!.length, 0);
      assert.equal(m.authorities![0]!.name, 'meshd.test');
      assert.equal((m.authorities![0] as { ttl: number }).ttl, 10);
    }
  });

  it('serves extra records (first of the family), also outside the base domain', () => {
    const r = resolverFor(labMap());
    assert.equal((decode(reply(r, query('grafana.meshd.test', 'A'))).answers![0] as { data: string }).data, '100.64.0.99');
    assert.equal((decode(reply(r, query('grafana.meshd.test', 'AAAA'))).answers![0] as { data: string }).data, 'fd7a:115c:a1e0::99');
    assert.equal((decode(reply(r, query('db.example.internal', 'A'))).answers![0] as { data: string }).data, '100.64.0.98');
  });

  it('answers PTR for tailnet addresses of both families, extra records, and quad-100 itself', () => {
    const r = resolverFor(labMap());
    const ptr = (name: string) => decode(reply(r, query(name, 'PTR')));
    assert.equal((ptr('2.0.64.100.in-addr.arpa').answers![0] as { data: string }).data, 't1.meshd.test');
    const v6 = reverseName('fd7a:115c:a1e0::2').slice(0, -1);
    assert.equal(v6, `2.${'0.'.repeat(20)}e.1.a.c.5.1.1.a.7.d.f.ip6.arpa`);
    const a6 = ptr(v6);
    assert.equal((a6.answers![0] as { data: string }).data, 't1.meshd.test');
    assert.equal((a6.answers![0] as { ttl: number }).ttl, 5);
    assert.equal((ptr('99.0.64.100.in-addr.arpa').answers![0] as { data: string }).data, 'grafana.meshd.test');
    assert.equal((ptr('100.100.100.100.in-addr.arpa').answers![0] as { data: string }).data, 'magicdns.localhost-tailscale-daemon');
    const nx = ptr('77.0.64.100.in-addr.arpa');
    assert.equal(nx.flags! & 0xf, Rcode.NXDOMAIN);
    assert.equal(nx.authorities![0]!.name, '64.100.in-addr.arpa');
  });

  it('maps 4to6 addresses to IPv4 for PTR', () => {
    const r = resolverFor(labMap());
    // fd7a:115c:a1e0:ab12:4843:cd96:6240:2 carries 100.64.0.2
    const name = '2.0.0.0.0.4.2.6.6.9.d.c.3.4.8.4.2.1.b.a.0.e.1.a.c.5.1.1.a.7.d.f.ip6.arpa';
    assert.equal((decode(reply(r, query(name, 'PTR'))).answers![0] as { data: string }).data, 't1.meshd.test');
  });

  it('forwards what the tailnet does not hold, along the most specific route', () => {
    const r = resolverFor(labMap());
    const o = r.respond(query('db.corp.test', 'A'));
    assert.equal(o.kind, 'forward');
    assert.equal((o as { route: { suffix: string } }).route.suffix, 'corp.test.');
    const g = r.respond(query('www.example.net', 'A')) as unknown;
    assert.equal((g as { route: { suffix: string; resolvers: { ip: string }[] } }).route.suffix, '.');
    assert.equal((g as { route: { resolvers: { ip: string }[] } }).route.resolvers[0]!.ip, '198.18.0.53');
    assert.equal(r.respond(query('8.8.8.8.in-addr.arpa', 'PTR')).kind, 'forward');
  });

  it('answers NOTIMP for NS and SOA of an existing name and an empty NOERROR for other types', () => {
    const r = resolverFor(labMap());
    const ns = decode(reply(r, query('t1.meshd.test', 'NS')));
    assert.equal(ns.flags! & 0xf, Rcode.NOTIMP);
    assert.equal(ns.questions!.length, 1);
    assert.equal(ns.authorities!.length, 0);
    const txt = decode(reply(r, query('t1.meshd.test', 'TXT')));
    assert.equal(txt.flags! & 0xf, Rcode.NOERROR);
    assert.equal(txt.answers!.length + txt.authorities!.length, 0);
  });

  it('answers *.onion NXDOMAIN and magicdns.localhost-tailscale-daemon with the service IPs', () => {
    const r = resolverFor(labMap());
    assert.equal(decode(reply(r, query('foo.onion', 'A'))).flags! & 0xf, Rcode.NXDOMAIN);
    assert.equal((decode(reply(r, query('magicdns.localhost-tailscale-daemon', 'AAAA'))).answers![0] as { data: string }).data, 'fd7a:115c:a1e0::53');
  });

  it('synthesizes 4via6 addresses', () => {
    assert.equal(viaAddress('10-1-2-3-via-7.', QType.AAAA), 'fd7a:115c:a1e0:b1a:0:7:a01:203');
    assert.equal(viaAddress('10-1-2-3-via-7.', QType.A), '');
    assert.equal(viaAddress('10-1-2-3-via-7.example.com.', QType.AAAA), undefined);
  });

  it('sets RA only when RD was set, and echoes opcode and CD', () => {
    const r = resolverFor(labMap());
    const b = reply(r, query('t1.meshd.test', 'A', 0x0010));
    assert.equal(b.readUInt16BE(2), 0x8000 | 0x0400 | 0x0010);
  });

  it('with --accept-dns=false still answers names, but forwards nothing and claims no zone', () => {
    const r = resolverFor(labMap(), false);
    assert.equal((decode(reply(r, query('t1', 'A'))).answers![0] as { data: string }).data, '100.64.0.2');
    const o = r.respond(query('nope.meshd.test', 'A'));
    assert.equal(o.kind, 'forward');
    assert.equal((o as { route: unknown }).route, undefined);
  });

  it('reflects a map update at once: a rename and a removal', () => {
    const map = labMap();
    const r = resolverFor(map);
    map.apply({ PeersChanged: [{ ID: 2, Key: key('2'), Name: 't1-renamed.meshd.test.', Addresses: ['100.64.0.2/32'] }], PeersRemoved: [3] });
    r.setConfig(compileDnsConfig(map, { acceptDns: true, osSupportsSplit: false }));
    assert.equal(decode(reply(r, query('t1.meshd.test', 'A'))).flags! & 0xf, Rcode.NXDOMAIN);
    assert.equal((decode(reply(r, query('t1-renamed', 'A'))).answers![0] as { data: string }).data, '100.64.0.2');
    assert.equal(decode(reply(r, query('v6only.meshd.test', 'AAAA'))).flags! & 0xf, Rcode.NXDOMAIN);
    // An unknown single-label name is outside every zone: forwarded, as tailscaled does.
    assert.equal(r.respond(query('v6only', 'AAAA')).kind, 'forward');
  });
});

describe('quad-100 resolver core on bad input', () => {
  const r = resolverFor(labMap());
  const formErr = (q: Uint8Array, withQuestion: boolean) => {
    const o = r.respond(q);
    assert.equal(o.kind, 'reply');
    const b = Buffer.from((o as { bytes: Uint8Array }).bytes);
    assert.equal(b[3]! & 0xf, Rcode.FORMERR);
    assert.equal(b.readUInt16BE(0), q.length >= 2 ? (q[0]! << 8) | q[1]! : 0);
    assert.equal(b.readUInt16BE(4), withQuestion ? 1 : 0);
  };

  it('drops a truncated header and counts it', () => {
    const before = r.counters.dropShort;
    assert.equal(r.respond(new Uint8Array([1, 2, 3])).kind, 'drop');
    assert.equal(r.counters.dropShort, before + 1);
  });

  it('answers FORMERR for a response, QDCOUNT 0, a cut question, a compression loop, a bad label type', () => {
    const q = query('t1.meshd.test', 'A');
    const resp = new Uint8Array(q); resp[2]! |= 0x80;
    formErr(resp, false);
    const noq = new Uint8Array(q); noq[5] = 0;
    formErr(noq, false);
    formErr(q.subarray(0, q.length - 3), false);
    // A name that points at itself.
    formErr(Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]), false);
    // Label length 64 (0x40 is a reserved label type on the wire).
    formErr(Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, ...new Array<number>(64).fill(0x61), 0, 0, 1, 0, 1]), false);
  });

  it('answers FORMERR for a name over 255 bytes', () => {
    const labels: number[] = [];
    for (let i = 0; i < 5; i++) labels.push(63, ...new Array<number>(63).fill(0x61));
    formErr(Uint8Array.from([0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, ...labels, 0, 0, 1, 0, 1]), false);
  });

  it('uses the first of many questions', () => {
    const q = new Uint8Array(packet.encode({ type: 'query', id: 7, flags: 0x100, questions: [{ name: 't1.meshd.test', type: 'A' }, { name: 'x.meshd.test', type: 'A' }] }));
    const m = decode(reply(r, q));
    assert.equal((m.answers![0] as { data: string }).data, '100.64.0.2');
  });

  it('never throws on random bytes', () => {
    let seed = 42;
    const rnd = () => { seed = (seed * 1103515245 + 12345) & 0x7fffffff; return seed >> 16; };
    for (let i = 0; i < 5000; i++) {
      const b = new Uint8Array(rnd() % 80);
      for (let j = 0; j < b.length; j++) b[j] = rnd() & 0xff;
      if (i % 2 === 0 && b.length > 5) { b[2] = 0; b[4] = 0; b[5] = 1; }
      const o = r.respond(b);
      assert.ok(o.kind === 'reply' || o.kind === 'drop' || o.kind === 'forward');
    }
  });
});
