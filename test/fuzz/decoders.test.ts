// Property tests over every decoder meshd feeds with bytes from the network or a file (targets in
// ./targets.ts): none throws outside its contract or buffers beyond its bound on arbitrary input,
// and every codec with an encoder round-trips. Fixed seeds: a failure reproduces; scripts/fuzz.mjs
// runs the same targets for millions of inputs.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TARGETS, runOne } from './targets.ts';
import { Mutator } from './mutate.ts';
import { bindingRequest, bindingResponse, parseBindingRequest, parseBindingResponse } from '../../src/stun/stun.ts';
import { FrameReader, encodeRecvPacket, parseServerMessage } from '../../src/derp/frames.ts';
import { RecordReader, TransportCipher, sealRecords } from '../../src/control/noise/framing.ts';
import { MapFrameReader, encodeMapFrame } from '../../src/control/mapframe.ts';
import { NetworkMap } from '../../src/control/netmap.ts';
import { MapShapeError, checkFilterRules } from '../../src/control/wirecheck.ts';
import { Endpoints } from '../../src/net/endpoint.ts';
import { compileDnsConfig } from '../../src/dns/config.ts';
import type { MapResponse } from '../../src/control/wire.ts';

const SEED = 20261130;
/** Runs per target: enough to cover each shape, a few seconds in all. */
const RUNS: Record<string, number> = { netmap: 250, 'filter-rules': 600, 'dns-query': 600, netstack: 600 };

/** Splits bytes at arbitrary points. */
const splits = (total: number) => fc.array(fc.nat(total), { maxLength: 5 }).map((cuts) => [...new Set(cuts)].sort((a, b) => a - b));
function cut(b: Uint8Array, at: number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let off = 0;
  for (const c of at) { if (c > off && c < b.length) { out.push(b.subarray(off, c)); off = c; } }
  out.push(b.subarray(off));
  return out;
}

describe('decoders never crash on arbitrary input', () => {
  for (const t of TARGETS) {
    it(`${t.name}: returns or fails as its contract says, within its memory bound`, () => {
      fc.assert(fc.property(t.arb ?? fc.uint8Array({ maxLength: 300 }), (d) => {
        const e = runOne(t, d);
        if (e) throw e;
      }), { seed: SEED, numRuns: RUNS[t.name] ?? 1500 });
    });
  }
});

describe('decoders never crash on mutated valid messages', () => {
  for (const t of TARGETS) {
    it(`${t.name}: survives byte mutations of its seed corpus`, () => {
      const seeds = [...(t.seeds?.() ?? []), ...(t.arb ? fc.sample(t.arb, { numRuns: 20, seed: SEED }) : [])];
      if (seeds.length === 0) return;
      const m = new Mutator(SEED, { dict: t.dict ?? [], maxLen: t.maxLen ?? 4096 });
      for (let i = 0; i < (RUNS[t.name] ?? 1500) / 3; i++) {
        const d = m.mutate(seeds[m.rng.below(seeds.length)]!, seeds[m.rng.below(seeds.length)]!);
        const e = runOne(t, d);
        if (e) throw new Error(`input ${i} (${Buffer.from(d).toString('hex').slice(0, 200)}): ${e.stack}`);
      }
    });
  }
});

describe('codecs round-trip', () => {
  const endpoints = new Endpoints(64);
  it('STUN: a binding request and response parse back to their transaction and endpoint', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 12, maxLength: 12 }), fc.boolean(), fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.integer({ min: 1, max: 65535 }),
      (tx, v4, a6, port) => {
        const req = parseBindingRequest(bindingRequest(tx));
        assert.ok(req.ok);
        assert.deepEqual(req.txId, tx);
        const ip = v4 ? `${a6[0]}.${a6[1]}.${a6[2]}.${a6[3]}` : Buffer.from(a6).toString('hex').replace(/(....)(?!$)/g, '$1:');
        const ep = endpoints.parse(v4 ? `${ip}:${port}` : `[${ip}]:${port}`);
        const res = parseBindingResponse(bindingResponse(tx, ep), endpoints);
        assert.ok(res.ok);
        assert.deepEqual(res.txId, tx);
        assert.equal(res.endpoint.key, ep.key);
      }), { seed: SEED, numRuns: 300 });
  });

  it('DERP: RecvPacket frames split anywhere come back whole and in order', () => {
    fc.assert(fc.property(fc.array(fc.tuple(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ maxLength: 200 })), { minLength: 1, maxLength: 4 }), splits(1000),
      (pkts, at) => {
        const wire = Buffer.concat(pkts.map(([src, p]) => encodeRecvPacket(src, p)));
        const r = new FrameReader();
        const got: [Uint8Array, Uint8Array][] = [];
        for (const c of cut(wire, at)) {
          r.push(c);
          for (let f = r.next(); f !== undefined; f = r.next()) {
            assert.ok(!('error' in f));
            const m = parseServerMessage(f);
            assert.ok(m.ok && m.msg.type === 'recv-packet');
            got.push([Uint8Array.from(m.msg.source), Uint8Array.from(m.msg.data)]);
          }
        }
        assert.deepEqual(got, pkts.map(([s, p]) => [Uint8Array.from(s), Uint8Array.from(p)]));
      }), { seed: SEED, numRuns: 300 });
  });

  it('TS2021 records: what one side seals, the other opens, whatever the TCP segmentation', () => {
    fc.assert(fc.property(fc.uint8Array({ minLength: 32, maxLength: 32 }), fc.uint8Array({ maxLength: 9000 }), splits(9100), (key, data, at) => {
      const wire = Buffer.concat(sealRecords(new TransportCipher(key), data));
      const rx = new RecordReader(new TransportCipher(key));
      const out: Uint8Array[] = [];
      for (const c of cut(wire, at)) out.push(...rx.feed(c));
      assert.deepEqual(Buffer.concat(out), Buffer.from(data));
      assert.equal(rx.pending, 0);
    }), { seed: SEED, numRuns: 200 });
  });

  it('map frames: messages split anywhere come back as the same JSON', () => {
    fc.assert(fc.property(fc.array(fc.jsonValue({ maxDepth: 3 }), { minLength: 1, maxLength: 4 }), splits(4000), (msgs, at) => {
      const wire = Buffer.concat(msgs.map((m) => encodeMapFrame(m)));
      const r = new MapFrameReader();
      const texts: string[] = [];
      for (const c of cut(wire, at)) texts.push(...r.feed(c));
      assert.deepEqual(texts, msgs.map((m) => JSON.stringify(m)));
    }), { seed: SEED, numRuns: 300 });
  });
});

describe('regressions found by fuzzing', () => {
  const self = { ID: 1, Key: `nodekey:${'1'.repeat(64)}`, Addresses: ['100.64.0.1/32'] };
  const peer = { ID: 2, Key: `nodekey:${'2'.repeat(64)}`, Addresses: ['100.64.0.2/32'] };

  // Each crashed NetworkMap.apply with a TypeError, some after changing part of the map.
  const bad: [string, unknown][] = [
    ['PacketFilters as a boolean', { PacketFilters: true }],
    ['a null peer', { Peers: [null] }],
    ['a PacketFilters chunk that is not an array', { PacketFilters: { base: {} } }],
    ['ControlTime as a number', { ControlTime: 5, Peers: [peer] }],
    ['SrcIPs as a number', { PacketFilter: [{ SrcIPs: 43557 }] }],
    ['a peer\'s Addresses as a string', { PeersChanged: [{ ...peer, Addresses: '100.64.0.9/32' }] }],
    ['a self node with a bad key', { Node: { ...self, Key: 'nodekey:zz' }, Domain: 'changed' }],
    ['DNSConfig.ExtraRecords as a boolean', { DNSConfig: { ExtraRecords: false }, Domain: 'changed' }],
    ['DNSConfig.ExtraRecords as an object', { DNSConfig: { ExtraRecords: { Name: 'x' } } }],
    ['a DNSConfig record whose Value is a number', { DNSConfig: { ExtraRecords: [{ Name: 'x', Type: 'A', Value: 7 }] } }],
  ];
  for (const [what, msg] of bad) {
    it(`refuses a map message with ${what}, leaving the map as it was`, () => {
      const m = new NetworkMap();
      m.apply({ Node: self, Peers: [peer], Domain: 'example.com' } as MapResponse);
      const before = JSON.stringify({ peers: [...m.peers.keys()], self: m.self?.id, domain: m.domain, time: m.controlTime, filters: [...m.packetFilters] });
      assert.throws(() => m.apply(msg as MapResponse), (e: Error) => e instanceof MapShapeError || /^key /.test(e.message));
      assert.equal(JSON.stringify({ peers: [...m.peers.keys()], self: m.self?.id, domain: m.domain, time: m.controlTime, filters: [...m.packetFilters] }), before);
    });
  }

  it('accepts null for any field and unknown fields, as Go\'s JSON decoding does', () => {
    const m = new NetworkMap();
    m.apply({ Node: { ...self, Hostinfo: null, Tags: null }, Peers: [{ ...peer, Endpoints: null, Future: { x: 1 } }], DERPMap: null, Whatever: [1] } as unknown as MapResponse);
    assert.equal(m.peers.size, 1);
  });

  // These crashed compileDnsConfig (the MagicDNS configuration from the map) with a TypeError.
  it('compiles DNS from resolvers without an address and records without a name, as Go reads null: unusable or skipped', () => {
    const m = new NetworkMap();
    m.apply({
      Node: { ...self, Name: 'self.example.' }, Peers: [peer],
      DNSConfig: {
        Resolvers: [{ Addr: null }, {}, { Addr: '198.18.0.53' }], Routes: { 'corp.test': [{}], 'x.test': null },
        ExtraRecords: [{ Name: null, Type: 'A', Value: '100.64.0.9' }, { Name: 'ok.example', Value: null }, { Name: 'g.example', Type: 'A', Value: '100.64.0.8' }],
      },
    } as unknown as MapResponse);
    const cfg = compileDnsConfig(m, { acceptDns: true, osSupportsSplit: false });
    assert.deepEqual(cfg.unusable, ['', '', '']);
    assert.deepEqual([...cfg.resolver.hosts.keys()], ['g.example.']);
    assert.deepEqual(cfg.resolver.routes.find((r) => r.suffix === '.')?.resolvers.map((u) => u.text), ['198.18.0.53']);
  });

  it('names the bad field of a packet filter in one line', () => {
    assert.throws(() => checkFilterRules([{ SrcIPs: ['*'], DstPorts: [{ IP: '*', Ports: { First: '22', Last: 22 } }] }]),
      { name: 'MapShapeError', message: 'map message: PacketFilter[0].DstPorts[0].Ports.First is not a number' });
  });
});
