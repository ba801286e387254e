// quad-100 on the data plane without a TUN: packets in as the host sends them, replies out with
// correct IPv4/IPv6 and UDP checksums; everything else passes untouched; junk is counted.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Buffer } from 'node:buffer';
import { classify, emitFragments, ipv4ChecksumOk, parseDnsPacket, udpChecksumOk, Verdict, writeUdpReply, SERVICE_IP4_BYTES, SERVICE_IP6_BYTES } from '../../src/dns/quad100.ts';
import { DnsService } from '../../src/dns/service.ts';
import { compileDnsConfig } from '../../src/dns/config.ts';
import { packet } from '../../src/dns/codec.ts';
import { ipv6Bytes } from '../../src/dns/names.ts';
import { labMap } from './fixtures.ts';

/** An IPv4 UDP packet from 100.64.0.1:5555 to dst:dport. */
function udp4(payload: Uint8Array, dst = SERVICE_IP4_BYTES, dport = 53, proto = 17): Uint8Array {
  const b = new Uint8Array(28 + payload.length);
  b[0] = 0x45; b[2] = b.length >> 8; b[3] = b.length & 0xff; b[8] = 64; b[9] = proto;
  b.set([100, 64, 0, 1], 12); b.set(dst, 16);
  b[20] = 0x15; b[21] = 0xb3; b[22] = dport >> 8; b[23] = dport & 0xff;
  b[24] = (8 + payload.length) >> 8; b[25] = (8 + payload.length) & 0xff;
  b.set(payload, 28);
  return b;
}

function udp6(payload: Uint8Array, dst = SERVICE_IP6_BYTES): Uint8Array {
  const b = new Uint8Array(48 + payload.length);
  b[0] = 0x60; b[4] = (8 + payload.length) >> 8; b[5] = (8 + payload.length) & 0xff; b[6] = 17; b[7] = 64;
  b.set(ipv6Bytes('fd7a:115c:a1e0::1'), 8); b.set(dst, 24);
  b[40] = 0x15; b[41] = 0xb3; b[42] = 0; b[43] = 53; b[44] = b[4]!; b[45] = b[5]!;
  b.set(payload, 48);
  return b;
}

const query = (name: string) => new Uint8Array(packet.encode({ type: 'query', id: 9, flags: 0x100, questions: [{ name, type: 'A' }] }));

describe('quad-100 packets', () => {
  it('classifies: quad-100 UDP/53 is DNS; other ports and protocols are services; other destinations pass', () => {
    const q = query('t1.meshd.test');
    assert.equal(classify(udp4(q), 0, 28 + q.length), Verdict.DNS);
    assert.equal(classify(udp6(q), 0, 48 + q.length), Verdict.DNS);
    assert.equal(classify(udp4(q, SERVICE_IP4_BYTES, 54), 0, 28 + q.length), Verdict.OTHER_SERVICE);
    assert.equal(classify(udp4(q, SERVICE_IP4_BYTES, 53, 6), 0, 28 + q.length), Verdict.OTHER_SERVICE);
    assert.equal(classify(udp4(q, Uint8Array.from([100, 64, 0, 2])), 0, 28 + q.length), Verdict.NOT_OURS);
    assert.equal(classify(udp6(q, ipv6Bytes('fd7a:115c:a1e0::54')), 0, 48 + q.length), Verdict.NOT_OURS);
    const frag = udp4(q); frag[6] = 0x20; // MF
    assert.equal(classify(frag, 0, frag.length), Verdict.MALFORMED);
    const long = udp4(q); long[25] = 0xff; // UDP length beyond the packet
    assert.equal(classify(long, 0, long.length), Verdict.MALFORMED);
  });

  it('writes replies with valid IPv4 header and UDP checksums, swapped addresses and ports', () => {
    const q = query('x');
    const p = parseDnsPacket(udp4(q), 0);
    const out = new Uint8Array(2000);
    const payload = new Uint8Array(333).fill(7);
    const n = writeUdpReply(out, p.flow, payload);
    const r = out.subarray(0, n);
    assert.equal(n, 20 + 8 + 333);
    assert.ok(ipv4ChecksumOk(r));
    assert.ok(udpChecksumOk(r));
    assert.deepEqual([...r.subarray(12, 16)], [100, 100, 100, 100]);
    assert.deepEqual([...r.subarray(16, 20)], [100, 64, 0, 1]);
    assert.equal((r[20]! << 8) | r[21]!, 53);
    assert.equal((r[22]! << 8) | r[23]!, 0x15b3);
    const p6 = parseDnsPacket(udp6(q), 0);
    const n6 = writeUdpReply(out, p6.flow, payload.subarray(0, 101));
    assert.ok(udpChecksumOk(out.subarray(0, n6)));
    assert.equal(Buffer.from(out.subarray(8, 24)).toString('hex'), Buffer.from(SERVICE_IP6_BYTES).toString('hex'));
  });

  it('fragments replies larger than the MTU (IPv4 and IPv6) so that they reassemble to the original datagram', () => {
    const payload = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) & 0xff);
    for (const v6 of [false, true]) {
      const p = parseDnsPacket(v6 ? udp6(query('x')) : udp4(query('x')), 0);
      const out = new Uint8Array(4000);
      const n = writeUdpReply(out, p.flow, payload);
      const frags: Uint8Array[] = [];
      assert.equal(emitFragments(out, n, 1280, 0x1234, new Uint8Array(1280), (b, o, l) => frags.push(b.slice(o, o + l))), 3);
      const hlen = v6 ? 48 : 20;
      const whole = new Uint8Array(n - (v6 ? 40 : 20));
      for (const f of frags) {
        assert.ok(f.length <= 1280);
        let off: number, more: boolean;
        if (v6) {
          assert.equal(f[6], 44);
          assert.equal(f[40], 17);
          off = ((f[42]! << 8) | (f[43]! & 0xf8));
          more = (f[43]! & 1) === 1;
          assert.equal((f[4]! << 8) | f[5]!, f.length - 40);
        } else {
          assert.ok(ipv4ChecksumOk(f));
          off = (((f[6]! & 0x1f) << 8) | f[7]!) * 8;
          more = (f[6]! & 0x20) !== 0;
          assert.equal((f[2]! << 8) | f[3]!, f.length);
        }
        whole.set(f.subarray(hlen), off);
        assert.equal(more, f !== frags.at(-1));
      }
      assert.deepEqual(whole, out.subarray(v6 ? 40 : 20, n));
    }
  });

  it('the service answers a query packet with a reply packet through deliver, and lets other packets pass', async () => {
    const svc = new DnsService({ log: () => {}, tunName: 'x', etcDir: '/nonexistent' });
    svc.setAcceptDns(false);
    const got: Uint8Array[] = [];
    svc.start((b, o, l) => got.push(b.slice(o, o + l)));
    await svc.apply(labMap());
    const q = query('t1.meshd.test');
    assert.equal(svc.handleOutbound(udp4(q), 0, 28 + q.length), true);
    assert.equal(svc.handleOutbound(udp6(q), 0, 48 + q.length), true);
    const other = udp4(q, Uint8Array.from([100, 64, 0, 2]));
    assert.equal(svc.handleOutbound(other, 0, other.length), false);
    await new Promise((r) => setImmediate(r));
    assert.equal(got.length, 2);
    const a4 = packet.decode(Buffer.from(got[0]!.subarray(28)));
    assert.equal((a4.answers![0] as { data: string }).data, '100.64.0.2');
    assert.ok(udpChecksumOk(got[0]!) && ipv4ChecksumOk(got[0]!));
    assert.ok(udpChecksumOk(got[1]!));
    // Junk to quad-100 is consumed and counted, never thrown.
    const junk = udp4(new Uint8Array([1, 2, 3]));
    assert.equal(svc.handleOutbound(junk, 0, junk.length), true);
    const bad = udp4(q); bad[25] = 0xff;
    assert.equal(svc.handleOutbound(bad, 0, bad.length), true);
    await new Promise((r) => setImmediate(r));
    const c = svc.status().counters;
    assert.equal(c.dropShort, 1);
    assert.equal(c.udpMalformed, 1);
    await svc.stop();
  });

  it('compiles the host config: service IPs and search domain with global resolvers; the host resolvers become "." in direct mode without them', () => {
    const cfg = compileDnsConfig(labMap(), { acceptDns: true, osSupportsSplit: false });
    assert.deepEqual(cfg.os, { nameservers: ['100.100.100.100', 'fd7a:115c:a1e0::53'], searchDomains: ['meshd.test.'], matchDomains: [] });
    assert.deepEqual(cfg.resolver.routes.map((r) => [r.suffix, r.resolvers.map((u) => u.text)]), [['corp.test.', ['198.18.0.54']], ['.', ['198.18.0.53']]]);
    const noGlobal = labMap({ DNSConfig: { Proxied: true, Domains: ['meshd.test'], Routes: { 'corp.test': [{ Addr: '198.18.0.54' }] } } });
    const direct = compileDnsConfig(noGlobal, { acceptDns: true, osSupportsSplit: false, base: { nameservers: ['10.0.0.2', '100.100.100.100'], searchDomains: ['lan'] } });
    assert.deepEqual(direct.resolver.routes.map((r) => [r.suffix, r.resolvers.map((u) => u.ip)]), [['corp.test.', ['198.18.0.54']], ['.', ['10.0.0.2']]]);
    assert.deepEqual(direct.os.searchDomains, ['meshd.test.', 'lan.']);
    const split = compileDnsConfig(noGlobal, { acceptDns: true, osSupportsSplit: true });
    assert.deepEqual(split.os.nameservers, ['100.100.100.100', 'fd7a:115c:a1e0::53']);
    assert.ok(split.os.matchDomains.includes('meshd.test.') && split.os.matchDomains.includes('corp.test.') && split.os.matchDomains.includes('64.100.in-addr.arpa.'));
    assert.equal(split.resolver.routes.some((r) => r.suffix === '.'), false, 'resolved split mode: no "." route in quad-100');
    const off = compileDnsConfig(labMap(), { acceptDns: false, osSupportsSplit: false });
    assert.deepEqual(off.os, { nameservers: [], searchDomains: [], matchDomains: [] });
  });
});
