import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AllowedIPs, formatPrefix, parsePrefix } from '../../src/wg/allowedips.ts';
import { ipv6Bytes } from '../../src/net/endpoint.ts';

const v4 = (s: string): Uint8Array => Uint8Array.from(s.split('.').map(Number));

describe('AllowedIPs', () => {
  it('picks the longest matching IPv4 prefix', () => {
    const t = new AllowedIPs<string>();
    t.insert('10.0.0.0/8', 'wide');
    t.insert('10.1.0.0/16', 'mid');
    t.insert('10.1.2.3/32', 'host');
    t.insert('0.0.0.0/0', 'default');
    assert.equal(t.lookupV4(v4('10.1.2.3'), 0), 'host');
    assert.equal(t.lookupV4(v4('10.1.2.4'), 0), 'mid');
    assert.equal(t.lookupV4(v4('10.200.0.1'), 0), 'wide');
    assert.equal(t.lookupV4(v4('192.168.0.1'), 0), 'default');
  });

  it('picks the longest matching IPv6 prefix and keeps families apart', () => {
    const t = new AllowedIPs<string>();
    t.insert('fd7a:115c:a1e0::/48', 'tailnet');
    t.insert('fd7a:115c:a1e0::1/128', 'node');
    t.insert('1.2.3.4/32', 'v4');
    assert.equal(t.lookupV6(ipv6Bytes('fd7a:115c:a1e0::1'), 0), 'node');
    assert.equal(t.lookupV6(ipv6Bytes('fd7a:115c:a1e0::2'), 0), 'tailnet');
    assert.equal(t.lookupV6(ipv6Bytes('fd7a:115c:a1e1::1'), 0), undefined);
    assert.equal(t.lookupV6(ipv6Bytes('::'), 0), undefined);
  });

  it('moves a prefix to the last value that inserted it', () => {
    const t = new AllowedIPs<string>();
    t.insert('10.0.0.0/24', 'a');
    t.insert('10.0.0.0/24', 'b');
    assert.equal(t.lookupV4(v4('10.0.0.9'), 0), 'b');
    assert.deepEqual(t.prefixesOf('a'), []);
    assert.deepEqual(t.prefixesOf('b'), ['10.0.0.0/24']);
  });

  it('removes all prefixes of a value and falls back to shorter ones', () => {
    const t = new AllowedIPs<string>();
    t.insert('10.0.0.0/8', 'a');
    t.insert('10.0.0.0/24', 'b');
    t.insert('fd00::/8', 'b');
    t.removeValue('b');
    assert.equal(t.lookupV4(v4('10.0.0.1'), 0), 'a');
    assert.equal(t.lookupV6(ipv6Bytes('fd00::1'), 0), undefined);
    t.remove('10.0.0.0/8');
    assert.equal(t.lookupV4(v4('10.0.0.1'), 0), undefined);
  });

  it('looks up destination and source straight from IPv4 and IPv6 packet bytes', () => {
    const t = new AllowedIPs<string>();
    t.insert('10.0.0.2/32', 'dst4');
    t.insert('10.0.0.1/32', 'src4');
    t.insert('fd00::2/128', 'dst6');
    t.insert('fd00::1/128', 'src6');
    const p4 = new Uint8Array(20);
    p4[0] = 0x45; p4.set(v4('10.0.0.1'), 12); p4.set(v4('10.0.0.2'), 16);
    assert.equal(t.lookupDestination(p4, 0, 20), 'dst4');
    assert.equal(t.lookupSource(p4, 0, 20), 'src4');
    const p6 = new Uint8Array(40);
    p6[0] = 0x60; p6.set(ipv6Bytes('fd00::1'), 8); p6.set(ipv6Bytes('fd00::2'), 24);
    assert.equal(t.lookupDestination(p6, 0, 40), 'dst6');
    assert.equal(t.lookupSource(p6, 0, 40), 'src6');
    assert.equal(t.lookupDestination(p6, 0, 39), undefined, 'too short for IPv6');
    assert.equal(t.lookupDestination(Uint8Array.of(0x20), 0, 1), undefined, 'not IP');
  });

  it('parses CIDRs and bare addresses, clears host bits, and prints them canonically', () => {
    assert.equal(formatPrefix(parsePrefix('10.1.2.3/8')), '10.0.0.0/8');
    assert.equal(formatPrefix(parsePrefix('10.1.2.3')), '10.1.2.3/32');
    assert.equal(formatPrefix(parsePrefix('FD7A:115C:A1E0:0:0:0:0:1')), 'fd7a:115c:a1e0::1/128');
    assert.equal(formatPrefix(parsePrefix('2001:db8:1:2::/33')), '2001:db8::/33');
    assert.equal(formatPrefix(parsePrefix('::/0')), '::/0');
    assert.throws(() => parsePrefix('10.0.0.0/33'), /prefix length/);
    assert.throws(() => parsePrefix('example.com/8'), /not an IP address/);
  });

  it('handles many prefixes (growth of the trie arrays)', () => {
    const t = new AllowedIPs<number>();
    for (let i = 0; i < 2000; i++) t.insert(`10.${i >> 8}.${i & 255}.1/32`, i);
    for (let i = 0; i < 2000; i += 97) assert.equal(t.lookupV4(v4(`10.${i >> 8}.${i & 255}.1`), 0), i);
    assert.equal(t.lookupV4(v4('10.0.0.2'), 0), undefined);
  });
});
