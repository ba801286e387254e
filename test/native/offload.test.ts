// The TUN offload code without a kernel: coalescing (tunWrite's "GRO") and splitting (the TSO/USO
// reader), through the addon's test entry points offloadCoalesce and offloadSplit. The cases follow
// wireguard-go's tun/offload_linux_test.go: IPv4/IPv6, TCP options, PSH/FIN, out-of-order,
// different flows, bad checksums, fragments, UDP. A frame is the 10-byte virtio-net header
// followed by the packet the kernel gets; splitting it must give back the packets that went in.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { native, offloadSwitches } from '../../src/native/index.ts';
import { build, checksumsOk, layout, pattern, vnet, type PacketSpec } from './fixtures/packets.ts';

const TCP = 1, UDP = 2;

function coalesce(pkts: Uint8Array[], flags = TCP | UDP): { frames: Uint8Array[]; badCsum: number } {
  const { buf, offsets, lens } = layout(pkts);
  return native().offloadCoalesce(buf, offsets, lens, pkts.length, flags);
}

function split(frame: Uint8Array): Uint8Array[] | null {
  const slot = 2048, head = 64, slots = 128;
  const out = new Uint8Array(slot * slots);
  const lens = new Int32Array(slots);
  const n = native().offloadSplit(frame, out, slot, head, lens);
  if (n < 0) return null;
  return Array.from({ length: n }, (_, i) => out.slice(i * slot + head, i * slot + head + lens[i]!));
}

function tcpRun(n: number, size: number, base: Partial<PacketSpec> = {}): Uint8Array[] {
  return Array.from({ length: n }, (_, i) => build({ proto: 'tcp', seq: 1 + i * size, id: 1000 + i, payload: pattern(size, i), ...base }));
}

describe('offload: coalescing written packets', () => {
  for (const v6 of [false, true]) {
    it(`coalesces contiguous IPv${v6 ? 6 : 4} TCP segments into one TSO frame that splits back byte for byte`, () => {
      const pkts = tcpRun(3, 1000, { v6 });
      const { frames } = coalesce(pkts);
      assert.equal(frames.length, 1);
      const h = vnet(frames[0]!);
      const iph = v6 ? 40 : 20;
      assert.deepEqual(h, { flags: 1, gsoType: v6 ? 4 : 1, hdrLen: iph + 20, gsoSize: 1000, csumStart: iph, csumOffset: 16 });
      assert.equal(frames[0]!.length, 10 + iph + 20 + 3000);
      assert.deepEqual(split(frames[0]!), pkts);
    });
  }

  it('coalesces only segments whose TCP options match byte for byte', () => {
    const ts = (v: number): number[] => [1, 1, 8, 10, 0, 0, 0, v, 0, 0, 0, 1];
    const same = tcpRun(2, 500, { options: ts(7) });
    assert.equal(coalesce(same).frames.length, 1);
    const differ = [build({ proto: 'tcp', seq: 1, options: ts(7), payload: pattern(500, 1) }), build({ proto: 'tcp', seq: 501, options: ts(8), payload: pattern(500, 2) })];
    assert.equal(coalesce(differ).frames.length, 2);
  });

  it('ends a run at PSH and carries PSH on the super-packet; splitting puts it back on the last segment only', () => {
    const pkts = tcpRun(3, 800);
    pkts[1] = build({ proto: 'tcp', seq: 801, id: 1001, flags: 0x18, payload: pattern(800, 1) });
    const { frames } = coalesce(pkts);
    assert.equal(frames.length, 2);
    assert.equal(vnet(frames[0]!).gsoSize, 800);
    assert.equal(frames[0]![10 + 20 + 13]! & 0x08, 0x08, 'PSH set on the coalesced head');
    assert.deepEqual(split(frames[0]!), pkts.slice(0, 2));
    assert.deepEqual(vnet(frames[1]!).gsoType, 0);
    assert.deepEqual(frames[1]!.subarray(10), pkts[2]);
  });

  it('never coalesces FIN, SYN, RST or URG segments, nor pure ACKs', () => {
    for (const flags of [0x11, 0x02, 0x14, 0x30]) {
      const pkts = [build({ proto: 'tcp', seq: 1, payload: pattern(100, 1) }), build({ proto: 'tcp', seq: 101, flags, payload: pattern(100, 2) })];
      const { frames } = coalesce(pkts);
      assert.equal(frames.length, 2, `flags ${flags.toString(16)}`);
      assert.deepEqual(frames.map((f) => f.subarray(10)), pkts);
    }
    const acks = [build({ proto: 'tcp', seq: 1, payload: new Uint8Array(0) }), build({ proto: 'tcp', seq: 1, payload: new Uint8Array(0) })];
    assert.equal(coalesce(acks).frames.length, 2);
  });

  it('leaves out-of-order segments apart and unchanged', () => {
    const run = tcpRun(3, 1000);
    const pkts = [run[0]!, run[2]!, run[1]!];
    const { frames } = coalesce(pkts);
    assert.equal(frames.length, 3);
    for (const [i, f] of frames.entries()) {
      assert.equal(vnet(f).gsoType, 0);
      assert.deepEqual(f.subarray(10), pkts[i]);
    }
  });

  it('keeps flows apart: interleaved segments of two flows make two frames in order of first appearance', () => {
    const a = tcpRun(2, 600, { sport: 1111 });
    const b = tcpRun(2, 600, { sport: 2222 });
    const { frames } = coalesce([a[0]!, b[0]!, a[1]!, b[1]!]);
    assert.equal(frames.length, 2);
    assert.deepEqual(split(frames[0]!), a);
    assert.deepEqual(split(frames[1]!), b);
    const otherAck = [build({ proto: 'tcp', seq: 1, ack: 5, payload: pattern(100, 1) }), build({ proto: 'tcp', seq: 101, ack: 6, payload: pattern(100, 2) })];
    assert.equal(coalesce(otherAck).frames.length, 2, 'a different ACK number is another flow');
  });

  it('does not coalesce across different TTL, ToS or IPv4 fragments', () => {
    const base = (over: Partial<PacketSpec>, i: number): Uint8Array => build({ proto: 'tcp', seq: 1 + i * 100, payload: pattern(100, i), ...over });
    assert.equal(coalesce([base({}, 0), base({ ttl: 63 }, 1)]).frames.length, 2);
    assert.equal(coalesce([base({}, 0), base({ tos: 4 }, 1)]).frames.length, 2);
    assert.equal(coalesce([base({ frag: 0x2000 }, 0), base({ frag: 0x2000 }, 1)]).frames.length, 2, 'MF set');
    assert.equal(coalesce([base({ frag: 0x0010 }, 0), base({ frag: 0x0010 }, 1)]).frames.length, 2, 'fragment offset');
  });

  it('verifies checksums: a bad segment is written as it came, counted, and not merged', () => {
    const pkts = tcpRun(3, 700);
    pkts[1] = build({ proto: 'tcp', seq: 701, id: 1001, payload: pattern(700, 1), badChecksum: true });
    const r = coalesce(pkts);
    assert.equal(r.badCsum, 1);
    assert.equal(r.frames.length, 3);
    assert.deepEqual(r.frames.map((f) => f.subarray(10)), pkts);
    const badHead = tcpRun(2, 700);
    badHead[0] = build({ proto: 'tcp', seq: 1, id: 1000, payload: pattern(700, 0), badChecksum: true });
    const r2 = coalesce(badHead);
    assert.equal(r2.frames.length, 2);
    assert.deepEqual(r2.frames.map((f) => f.subarray(10)), badHead);
  });

  it('lets a shorter segment end a run and never appends a larger one', () => {
    const a = [build({ proto: 'tcp', seq: 1, id: 1, payload: pattern(1000, 1) }), build({ proto: 'tcp', seq: 1001, id: 2, payload: pattern(500, 2) }),
      build({ proto: 'tcp', seq: 1501, id: 3, payload: pattern(1000, 3) })];
    const r = coalesce(a);
    assert.equal(r.frames.length, 2);
    assert.deepEqual(split(r.frames[0]!), a.slice(0, 2));
    const b = [build({ proto: 'tcp', seq: 1, payload: pattern(500, 1) }), build({ proto: 'tcp', seq: 501, payload: pattern(1000, 2) })];
    assert.equal(coalesce(b).frames.length, 2);
  });

  for (const v6 of [false, true]) {
    it(`coalesces IPv${v6 ? 6 : 4} UDP datagrams of one flow into one USO frame only when UDP coalescing is on`, () => {
      const pkts = Array.from({ length: 4 }, (_, i) => build({ v6, proto: 'udp', id: 50 + i, payload: pattern(i === 3 ? 300 : 1200, i) }));
      const { frames } = coalesce(pkts);
      assert.equal(frames.length, 1);
      const iph = v6 ? 40 : 20;
      assert.deepEqual(vnet(frames[0]!), { flags: 1, gsoType: 5, hdrLen: iph + 8, gsoSize: 1200, csumStart: iph, csumOffset: 6 });
      assert.deepEqual(split(frames[0]!), pkts);
      assert.equal(coalesce(pkts, TCP).frames.length, 4);
    });
  }

  it('accepts an IPv4 UDP checksum of 0 (none) when coalescing', () => {
    const pkts = Array.from({ length: 3 }, (_, i) => build({ proto: 'udp', id: 7 + i, payload: pattern(1000, i), zeroUdpChecksum: true }));
    const { frames, badCsum } = coalesce(pkts);
    assert.equal(badCsum, 0);
    assert.equal(frames.length, 1);
    const out = split(frames[0]!)!;
    assert.equal(out.length, 3);
    for (const [i, p] of out.entries()) {
      assert.ok(checksumsOk(p));
      assert.deepEqual(p.subarray(28), pkts[i]!.subarray(28));
    }
  });

  it('stops a frame at 64 segments', () => {
    const pkts = tcpRun(100, 100);
    const { frames } = coalesce(pkts);
    assert.equal(frames.length, 2);
    assert.equal(split(frames[0]!)!.length, 64);
    assert.deepEqual([...split(frames[0]!)!, ...split(frames[1]!)!], pkts);
  });
});

describe('offload: checksums against a plain reference', () => {
  it('splits coalesced runs of random sizes back into packets whose checksums the reference accepts', () => {
    let seed = 12345;
    const rnd = (n: number): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed % n; };
    for (let round = 0; round < 200; round++) {
      const v6 = rnd(2) === 1, proto = rnd(2) === 1 ? 'udp' as const : 'tcp' as const;
      const size = 1 + rnd(1400), count = 2 + rnd(5), tail = 1 + rnd(size);
      const pkts = Array.from({ length: count }, (_, i) => build({
        v6, proto, seq: 1 + i * size, id: 9 + i, payload: pattern(i === count - 1 ? tail : size, round * 7 + i),
      }));
      const { frames, badCsum } = coalesce(pkts);
      assert.equal(badCsum, 0);
      assert.equal(frames.length, 1, `round ${round}: ${proto} v6=${v6} size ${size} tail ${tail}`);
      const out = split(frames[0]!)!;
      for (const p of out) assert.ok(checksumsOk(p), `round ${round}`);
      assert.deepEqual(out, pkts, `round ${round}`);
    }
  });
});

describe('offload: splitting read super-packets', () => {
  it('splits a 64 KiB TSO read into MSS-sized packets with FIN and PSH only on the last, ignoring a wrong hdr_len', () => {
    const pkts = tcpRun(52, 1240);
    const { frames } = coalesce(pkts);
    assert.equal(frames.length, 1);
    const f = frames[0]!;
    f[10 + 20 + 13] = 0x19; // FIN|PSH|ACK on the super-packet, as the kernel would hand over
    new DataView(f.buffer).setUint16(2, f.length - 10, true); // hdr_len spanning everything: not trusted
    const out = split(f)!;
    assert.equal(out.length, 52);
    for (const [i, p] of out.entries()) {
      assert.ok(checksumsOk(p), `segment ${i} checksums`);
      assert.equal(p[33], i === 51 ? 0x19 : 0x10);
      assert.deepEqual(p.subarray(40), pkts[i]!.subarray(40));
      assert.equal(new DataView(p.buffer, p.byteOffset).getUint32(24), 1 + i * 1240);
    }
  });

  it('completes the checksum of a single NEEDS_CSUM packet from the kernel\'s pseudo-header seed', () => {
    for (const proto of ['tcp', 'udp'] as const) {
      const p = build({ proto, payload: pattern(333, 9) });
      const at = 20 + (proto === 'tcp' ? 16 : 6);
      // The kernel leaves the folded pseudo-header sum (not complemented) in the field.
      let acc = 0;
      for (let i = 12; i < 20; i += 2) acc += (p[i]! << 8) | p[i + 1]!;
      acc += (proto === 'tcp' ? 6 : 17) + (p.length - 20);
      while (acc > 0xffff) acc = (acc & 0xffff) + (acc >>> 16);
      p[at] = acc >> 8;
      p[at + 1] = acc & 0xff;
      const frame = new Uint8Array(10 + p.length);
      const dv = new DataView(frame.buffer);
      frame[0] = 1;
      dv.setUint16(6, 20, true);
      dv.setUint16(8, at - 20, true);
      frame.set(p, 10);
      const out = split(frame)!;
      assert.equal(out.length, 1);
      assert.ok(checksumsOk(out[0]!), proto);
      assert.deepEqual(out[0], build({ proto, payload: pattern(333, 9) }));
    }
  });

  it('rejects malformed virtio headers and super-packets', () => {
    const good = coalesce(tcpRun(2, 100)).frames[0]!;
    const bad = (edit: (f: Uint8Array, dv: DataView) => void): Uint8Array | null => {
      const f = good.slice();
      edit(f, new DataView(f.buffer));
      return f;
    };
    assert.equal(split(good.subarray(0, 10)), null, 'no packet');
    assert.equal(split(bad((f) => { f[1] = 4; })!), null, 'TCPV6 on an IPv4 packet');
    assert.equal(split(bad((_f, dv) => dv.setUint16(4, 0, true))!), null, 'gso_size 0');
    assert.equal(split(bad((f) => { f[10 + 20 + 12] = 0x40; })!), null, 'TCP data offset below 5');
    assert.equal(split(bad((_f, dv) => dv.setUint16(6, 24, true))!), null, 'csum_start is not the IPv4 header length');
    assert.equal(split(bad((f) => { f[1] = 3; })!), null, 'old UFO type');
  });
});

describe('offload kill switches', () => {
  it('reads MESHD_DISABLE_* from the environment: any value but empty, 0 or false turns an offload off', () => {
    assert.deepEqual(offloadSwitches({}), { tunOffload: true, tunGro: true, udpGso: true, udpGro: true });
    assert.deepEqual(offloadSwitches({ MESHD_DISABLE_TUN_OFFLOAD: '1', MESHD_DISABLE_TUN_GRO: 'yes', MESHD_DISABLE_UDP_GSO: 'true', MESHD_DISABLE_UDP_GRO: 'on' }),
      { tunOffload: false, tunGro: false, udpGso: false, udpGro: false });
    assert.deepEqual(offloadSwitches({ MESHD_DISABLE_TUN_OFFLOAD: '0', MESHD_DISABLE_TUN_GRO: '', MESHD_DISABLE_UDP_GSO: 'false', MESHD_DISABLE_UDP_GRO: 'FALSE' }),
      { tunOffload: true, tunGro: true, udpGso: true, udpGro: true });
  });
});
