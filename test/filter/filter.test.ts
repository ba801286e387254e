// The packet filter on crafted IPv4/IPv6 packets: default deny, rules, replies to our own flows,
// ICMP as tailscale treats it, updates that keep flows.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PacketFilter, parseFilterIP, IPProto } from '../../src/filter/filter.ts';
import { FlowTable, KEY_WORDS } from '../../src/filter/flows.ts';
import { parsePrefix } from '../../src/wg/allowedips.ts';
import type { FilterRule } from '../../src/control/wire.ts';

const A = '100.64.0.1', B = '100.64.0.2', C = '100.64.0.3';
const A6 = 'fd7a:115c:a1e0::1', B6 = 'fd7a:115c:a1e0::2';

interface Pkt { src: string; dst: string; proto: number; sport?: number; dport?: number; flags?: number; icmpType?: number; fragOff?: number }

/** Builds an IPv4 or IPv6 packet with a minimal transport header (checksums are not checked). */
function pkt(p: Pkt): Uint8Array {
  const v6 = p.src.includes(':');
  const l4len = p.proto === IPProto.TCP ? 20 : 8;
  const hl = v6 ? 40 : 20;
  const b = new Uint8Array(hl + l4len);
  if (v6) {
    b[0] = 0x60;
    b[6] = p.proto;
    b[7] = 64;
    b.set(parsePrefix(p.src).bytes, 8);
    b.set(parsePrefix(p.dst).bytes, 24);
  } else {
    b[0] = 0x45;
    b[2] = b.length >> 8; b[3] = b.length & 0xff;
    const fo = p.fragOff ?? 0;
    b[6] = (fo >> 8) & 0x1f; b[7] = fo & 0xff;
    b[8] = 64;
    b[9] = p.proto;
    b.set(parsePrefix(p.src).bytes, 12);
    b.set(parsePrefix(p.dst).bytes, 16);
  }
  const l = hl;
  if (p.proto === IPProto.ICMP || p.proto === IPProto.ICMPv6) {
    b[l] = p.icmpType ?? (v6 ? 128 : 8);
  } else {
    b[l] = (p.sport ?? 0) >> 8; b[l + 1] = (p.sport ?? 0) & 0xff;
    b[l + 2] = (p.dport ?? 0) >> 8; b[l + 3] = (p.dport ?? 0) & 0xff;
    if (p.proto === IPProto.TCP) b[l + 13] = p.flags ?? 0x02;
  }
  return b;
}

function runIn(f: PacketFilter, p: Pkt): boolean {
  // At an offset inside a bigger buffer, as the data plane passes packets.
  const inner = pkt(p);
  const buf = new Uint8Array(inner.length + 48);
  buf.set(inner, 16);
  return f.runIn(buf, 16, inner.length);
}

const rule = (src: string[], dst: string, first = 0, last = 65535, proto?: number[]): FilterRule => ({
  SrcIPs: src, DstPorts: [{ IP: dst, Ports: { First: first, Last: last } }], ...(proto ? { IPProto: proto } : {}),
});

function filter(rules: FilterRule[], local = [`${B}/32`, `${B6}/128`]): PacketFilter {
  const f = new PacketFilter();
  f.update(rules, local);
  return f;
}

describe('parseFilterIP', () => {
  it('reads *, single addresses, CIDRs and ranges of both families', () => {
    assert.deepEqual(parseFilterIP('100.64.0.1'), [{ family: 4, lo: 0x64400001, hi: 0x64400001 }]);
    assert.deepEqual(parseFilterIP('100.64.0.0/10'), [{ family: 4, lo: 0x64400000, hi: 0x647fffff }]);
    assert.deepEqual(parseFilterIP('10.0.0.1-10.0.0.9'), [{ family: 4, lo: 0x0a000001, hi: 0x0a000009 }]);
    assert.equal(parseFilterIP('*').length, 2);
    const r = parseFilterIP('fd7a:115c:a1e0::/48')[0]!;
    assert.equal(r.family, 6);
    assert.deepEqual(r.hi, [0xfd7a115c, 0xa1e0ffff, 0xffffffff, 0xffffffff]);
    assert.throws(() => parseFilterIP('nonsense'), TypeError);
    assert.throws(() => parseFilterIP('10.0.0.9-10.0.0.1'), TypeError);
  });
});

describe('PacketFilter.runIn', () => {
  it('drops everything before the first update (allow-none)', () => {
    const f = new PacketFilter();
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.TCP, dport: 22 }), false);
    assert.equal(f.counters.dropNotLocal, 1);
  });

  it('admits a TCP SYN that a rule allows and drops one to another port or from another source', () => {
    const f = filter([rule([A], B, 22, 22)]);
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.TCP, dport: 22 }), true);
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.TCP, dport: 80 }), false);
    assert.equal(runIn(f, { src: C, dst: B, proto: IPProto.TCP, dport: 22 }), false);
    assert.equal(f.counters.dropNoRule, 2);
    assert.equal(f.counters.acceptedIn, 1);
  });

  it('lets any TCP segment that is not a pure SYN through (replies to our connections)', () => {
    const f = filter([]);
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.TCP, sport: 80, dport: 40000, flags: 0x12 }), true, 'SYN-ACK');
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.TCP, sport: 80, dport: 40000, flags: 0x10 }), true, 'ACK');
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.TCP, sport: 80, dport: 40000, flags: 0x02 }), false, 'SYN');
  });

  it('admits UDP replies to a flow we started, only for the exact reversed tuple', () => {
    const f = filter([]);
    const out = pkt({ src: B, dst: A, proto: IPProto.UDP, sport: 5000, dport: 53 });
    f.runOut(out, 0, out.length);
    assert.equal(f.flowCount, 1);
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.UDP, sport: 53, dport: 5000 }), true);
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.UDP, sport: 53, dport: 5001 }), false);
    assert.equal(runIn(f, { src: C, dst: B, proto: IPProto.UDP, sport: 53, dport: 5000 }), false);
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.UDP, sport: 5000, dport: 53 }), false, 'same direction is not a reply');
  });

  it('admits IPv6 UDP replies too, and keeps flows across a rule update', () => {
    const f = filter([]);
    const out = pkt({ src: B6, dst: A6, proto: IPProto.UDP, sport: 7000, dport: 7001 });
    f.runOut(out, 0, out.length);
    f.update([], [`${B}/32`, `${B6}/128`]);
    assert.equal(runIn(f, { src: A6, dst: B6, proto: IPProto.UDP, sport: 7001, dport: 7000 }), true);
    assert.equal(runIn(f, { src: A6, dst: B6, proto: IPProto.UDP, sport: 7001, dport: 7002 }), false);
  });

  it('treats ICMP as tailscale does: replies and errors always, echo requests per rule on any port', () => {
    const f = filter([rule([A, A6], '*', 443, 443)]);
    assert.equal(runIn(f, { src: C, dst: B, proto: IPProto.ICMP, icmpType: 0 }), true, 'echo reply');
    assert.equal(runIn(f, { src: C, dst: B, proto: IPProto.ICMP, icmpType: 3 }), true, 'unreachable');
    assert.equal(runIn(f, { src: C, dst: B, proto: IPProto.ICMP, icmpType: 11 }), true, 'time exceeded');
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.ICMP, icmpType: 8 }), true, 'echo request from an allowed source');
    assert.equal(runIn(f, { src: C, dst: B, proto: IPProto.ICMP, icmpType: 8 }), false, 'echo request from another source');
    assert.equal(runIn(f, { src: A6, dst: B6, proto: IPProto.ICMPv6, icmpType: 128 }), true, 'v6 echo request');
    assert.equal(runIn(f, { src: 'fd7a:115c:a1e0::9', dst: B6, proto: IPProto.ICMPv6, icmpType: 128 }), false);
    assert.equal(runIn(f, { src: 'fd7a:115c:a1e0::9', dst: B6, proto: IPProto.ICMPv6, icmpType: 129 }), true, 'v6 echo reply');
    assert.equal(runIn(f, { src: 'fd7a:115c:a1e0::9', dst: B6, proto: IPProto.ICMPv6, icmpType: 2 }), true, 'packet too big');
  });

  it('honours IPProto: a UDP-only rule does not open TCP', () => {
    const f = filter([rule(['*'], '*', 0, 65535, [IPProto.UDP])]);
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.UDP, dport: 9 }), true);
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.TCP, dport: 9 }), false);
  });

  it('admits other protocols only with a rule listing them over the full port range', () => {
    const gre = 47;
    assert.equal(runIn(filter([rule(['*'], '*', 0, 65535, [gre])]), { src: A, dst: B, proto: gre }), true);
    assert.equal(runIn(filter([rule(['*'], '*', 1, 100, [gre])]), { src: A, dst: B, proto: gre }), false);
    assert.equal(runIn(filter([rule(['*'], '*')]), { src: A, dst: B, proto: gre }), false);
    assert.equal(runIn(filter([]), { src: A, dst: B, proto: IPProto.TSMP }), true, 'TSMP always');
  });

  it('drops packets to addresses that are not ours, multicast and link-local, even with allow-all', () => {
    const f = filter([rule(['*'], '*')]);
    assert.equal(runIn(f, { src: A, dst: C, proto: IPProto.TCP, dport: 22 }), false);
    assert.equal(runIn(f, { src: A, dst: '224.0.0.1', proto: IPProto.UDP, dport: 5353 }), false);
    assert.equal(runIn(f, { src: A, dst: '169.254.1.1', proto: IPProto.UDP, dport: 1 }), false);
    assert.equal(runIn(f, { src: A6, dst: 'ff02::1', proto: IPProto.UDP, dport: 1 }), false);
    assert.equal(runIn(f, { src: A6, dst: 'fe80::1', proto: IPProto.UDP, dport: 1 }), false);
    assert.deepEqual([f.counters.dropNotLocal, f.counters.dropMulticast, f.counters.dropLinkLocal], [1, 2, 2]);
  });

  it('admits traffic to routes the node serves (exit node: 0.0.0.0/0 and ::/0)', () => {
    const f = filter([rule(['*'], '*')], [`${B}/32`, '0.0.0.0/0', '::/0']);
    assert.equal(runIn(f, { src: A, dst: '198.18.0.200', proto: IPProto.TCP, dport: 80 }), true);
    assert.equal(runIn(f, { src: A6, dst: '2001:db8::c8', proto: IPProto.TCP, dport: 80 }), true);
  });

  it('drops runts and junk without throwing, accepts keepalives and non-first fragments', () => {
    const f = filter([]);
    assert.equal(f.runIn(new Uint8Array(10), 0, 0), true, 'empty = keepalive');
    assert.equal(f.runIn(new Uint8Array(10), 0, 10), false);
    const junk = new Uint8Array(60).fill(0xff);
    assert.equal(f.runIn(junk, 0, 60), false);
    const tcpShort = pkt({ src: A, dst: B, proto: IPProto.TCP, dport: 22 }).subarray(0, 24);
    assert.equal(f.runIn(tcpShort, 0, tcpShort.length), false);
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.UDP, dport: 1, fragOff: 100 }), true);
    for (let n = 0; n < 200; n++) {
      const b = new Uint8Array(n).map(() => Math.floor(Math.random() * 256));
      if (n > 0) b[0] = (n % 2 ? 0x45 : 0x60);
      f.runIn(b, 0, n);
      f.runOut(b, 0, n);
    }
  });

  it('skips cap: sources and bad entries, keeping the rest', () => {
    const f = new PacketFilter();
    f.update([{ SrcIPs: ['cap:foo', A, 'junk'], DstPorts: [{ IP: B, Ports: { First: 0, Last: 65535 } }] }], [`${B}/32`]);
    assert.equal(f.ruleCount, 1);
    assert.equal(f.problems.length, 2);
    assert.equal(runIn(f, { src: A, dst: B, proto: IPProto.TCP, dport: 1 }), true);
  });

  it('allocates nothing per packet on the hot path', () => {
    const f = filter([rule([A], B, 22, 22), rule(['*'], '*', 443, 443)]);
    const out = pkt({ src: B, dst: A, proto: IPProto.UDP, sport: 5000, dport: 53 });
    const syn = pkt({ src: A, dst: B, proto: IPProto.TCP, dport: 22 });
    const reply = pkt({ src: A, dst: B, proto: IPProto.UDP, sport: 53, dport: 5000 });
    for (let i = 0; i < 20_000; i++) { f.runOut(out, 0, out.length); f.runIn(syn, 0, syn.length); f.runIn(reply, 0, reply.length); }
    globalThis.gc?.();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < 200_000; i++) { f.runOut(out, 0, out.length); f.runIn(syn, 0, syn.length); f.runIn(reply, 0, reply.length); }
    const grew = process.memoryUsage().heapUsed - before;
    assert.ok(grew < 2_000_000, `heap grew ${grew} bytes over 600k packets`);
  });
});

describe('FlowTable', () => {
  const key = (n: number) => { const k = new Uint32Array(KEY_WORDS); k[0] = 0x411; k[1] = n; k[2] = 0x64400001; return k; };

  it('evicts the least recently used flow when full', () => {
    const t = new FlowTable(4);
    for (let i = 0; i < 4; i++) t.record(key(i));
    t.record(key(0)); // refresh 0: 1 is now the oldest
    t.record(key(4));
    assert.equal(t.size, 4);
    assert.equal(t.has(key(1)), false);
    for (const i of [0, 2, 3, 4]) assert.equal(t.has(key(i)), true, `flow ${i}`);
  });

  it('holds 512 flows by default and survives heavy churn', () => {
    const t = new FlowTable();
    for (let i = 0; i < 5000; i++) t.record(key(i));
    assert.equal(t.size, 512);
    for (let i = 5000 - 512; i < 5000; i++) assert.equal(t.has(key(i)), true);
    assert.equal(t.has(key(5000 - 513)), false);
    t.clear();
    assert.equal(t.has(key(4999)), false);
  });
});
