// Fuzz targets: every decoder meshd feeds with bytes from the network or a file, driven the way
// meshd drives it. Each target takes arbitrary bytes and must return normally, or throw only the
// error its contract names (caught and handled by its caller); anything else is a crash. Targets
// also check the structural memory bounds of stream readers (buffered bytes never exceed one
// capped frame plus the chunk being fed). Used by test/fuzz/decoders.test.ts (fast-check, fixed
// seeds) and scripts/fuzz.mjs (long runs, coverage-guided where @jazzer.js/core installs).
//
// Structured inputs (the map JSON, filter rules, UAPI text) are built from the bytes by a small
// grammar (jsonFromBytes), so a coverage-guided fuzzer steers the structure, not just the bytes.
import { messageTypeOf, parseInitiation, parseResponse, parseCookieReply, writeInitiation, writeResponse, writeCookieReply, MessageType } from '../../src/wg/messages.ts';
import { parseDisco, marshalDisco, decodeDisco } from '../../src/disco/disco.ts';
import { isStunPacket, parseBindingRequest, parseBindingResponse } from '../../src/stun/stun.ts';
import { FrameReader, parseServerMessage, parseServerKey, parseServerInfo, parseClientInfo, FRAME_HEADER_LEN } from '../../src/derp/frames.ts';
import { RecordReader, TransportCipher, MAX_MESSAGE_SIZE } from '../../src/control/noise/framing.ts';
import { MapFrameReader } from '../../src/control/mapframe.ts';
import { NetworkMap } from '../../src/control/netmap.ts';
import { MapShapeError, checkFilterRules } from '../../src/control/wirecheck.ts';
import type { MapResponse, FilterRule } from '../../src/control/wire.ts';
import { parseSet, UapiError } from '../../src/uapi/protocol.ts';
import { PacketFilter, compileRules } from '../../src/filter/filter.ts';
import { planRoutes, DEFAULT_PREFS } from '../../src/router/plan.ts';
import { Endpoints } from '../../src/net/endpoint.ts';
import { compileDnsConfig } from '../../src/dns/config.ts';
import { bindingRequest, bindingResponse } from '../../src/stun/stun.ts';
import { encodeFrame, encodeRecvPacket, encodePeerGone, encodeHealth, encodeRestarting, encodePingPong, encodeServerKey, encodeServerInfo, encodeClientInfo, FrameType } from '../../src/derp/frames.ts';
import { sealRecords } from '../../src/control/noise/framing.ts';
import { encodeMapFrame } from '../../src/control/mapframe.ts';
import { bigMap } from '../harness/bigmap.ts';
import { STACK_TARGETS } from './targets-stack.ts';
import fc from 'fast-check';

const utf8 = (v: unknown): Uint8Array => new TextEncoder().encode(JSON.stringify(v));
/** JSON text as the client parses it, or (for bytes that are not JSON) the byte grammar. */
function jsonOf(d: Uint8Array): unknown {
  try { return JSON.parse(new TextDecoder().decode(d)); } catch { return jsonFromBytes(d); }
}

// Well-formed map messages with a few wrong fields: the valid structure reaches deep into apply(),
// the route plan and the filter; the mutations test the shape check.
const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('hex'));
const keyPool = fc.constantFrom(...Array.from({ length: 6 }, (_, i) => `nodekey:${String(i + 1).repeat(64)}`), 'nodekey:xyz', `NODEKEY:${'A'.repeat(64)}`);
const prefix = fc.oneof(
  fc.tuple(fc.nat(255), fc.nat(255), fc.nat(32)).map(([a, b, l]) => `100.${64 + (a % 64)}.${b}.1/${l}`),
  fc.constantFrom('0.0.0.0/0', '::/0', '198.19.5.0/24', 'fd7a:115c:a1e0::1/128', '100.64.0.1/32', '10.0.0.0/8', '1.2.3.4', 'bogus', '300.0.0.0/8', '::ffff:1.2.3.4/128'),
);
const ipText = fc.oneof(prefix, fc.constantFrom('*', '100.64.0.0-100.64.0.9', '100.64.0.9-100.64.0.1', 'cap:x', '::/0', 'fd7a::-fd7a::ff'));
const arbRule = fc.record({
  SrcIPs: fc.array(ipText, { maxLength: 4 }),
  DstPorts: fc.array(fc.record({ IP: ipText, Ports: fc.record({ First: fc.integer({ min: -1, max: 70000 }), Last: fc.integer({ min: -1, max: 70000 }) }) }), { maxLength: 4 }),
  IPProto: fc.option(fc.array(fc.integer({ min: -1, max: 300 }), { maxLength: 4 }), { nil: undefined }),
}, { requiredKeys: ['SrcIPs'] });
const arbNode = fc.record({
  ID: fc.integer({ min: 0, max: 12 }),
  Key: keyPool,
  DiscoKey: fc.oneof(hex64.map((h) => `discokey:${h}`), fc.constant('discokey:00')),
  Name: fc.constantFrom('a.ts.net.', 'exit.example.', '', 'x'),
  Addresses: fc.array(prefix, { maxLength: 3 }),
  AllowedIPs: fc.array(prefix, { maxLength: 4 }),
  Endpoints: fc.array(fc.constantFrom('1.2.3.4:41641', '[2001:db8::1]:41641', 'junk', '1.2.3.4:99999'), { maxLength: 3 }),
  HomeDERP: fc.integer({ min: 0, max: 3 }),
  Hostinfo: fc.record({ Hostname: fc.constantFrom('exit', 'x', '') }),
  Online: fc.boolean(),
  Expired: fc.boolean(),
  KeyExpiry: fc.constantFrom('0001-01-01T00:00:00Z', '2020-01-01T00:00:00Z'),
}, { requiredKeys: ['ID', 'Key'] });
const arbDerpMap = fc.record({
  Regions: fc.dictionary(fc.constantFrom('1', '2', '900'), fc.oneof(fc.constant(null), fc.record({
    RegionID: fc.integer({ min: 0, max: 1000 }), RegionCode: fc.string({ maxLength: 4 }),
    Nodes: fc.array(fc.record({ Name: fc.string({ maxLength: 3 }), RegionID: fc.nat(1000), HostName: fc.constantFrom('derp.example', '1.2.3.4', ''), IPv4: fc.constantFrom('1.2.3.4', 'none', ''), STUNOnly: fc.boolean(), DERPPort: fc.nat(70000) }), { maxLength: 2 }),
  }))),
});
const dnsAddr = fc.constantFrom('198.18.0.53', 'https://dns.example/q', 'bogus', '[::1]:53', '1.1.1.1:5353', '', 'fd7a:115c:a1e0::53');
const arbDnsConfig = fc.record({
  Resolvers: fc.array(fc.record({ Addr: dnsAddr }), { maxLength: 2 }),
  Routes: fc.dictionary(fc.constantFrom('corp.test', '.', 'x..y', '', 'tailnet.example'), fc.oneof(fc.constant(null), fc.array(fc.record({ Addr: dnsAddr }), { maxLength: 2 }))),
  Domains: fc.array(fc.constantFrom('tailnet.example', '', '..', 'a.b', 'x'.repeat(70)), { maxLength: 2 }),
  ExtraRecords: fc.array(fc.record({ Name: fc.constantFrom('x.tailnet.example', '', 'x', 'y.other.'), Type: fc.constantFrom('A', 'AAAA', 'CNAME', ''),
    Value: fc.constantFrom('100.64.0.9', 'fd7a::9', 'bogus', '') }), { maxLength: 2 }),
  Proxied: fc.boolean(),
}, { requiredKeys: [] });
const arbMapResponse = fc.record({
  DNSConfig: arbDnsConfig,
  Node: arbNode, Peers: fc.array(arbNode, { maxLength: 4 }), PeersChanged: fc.array(arbNode, { maxLength: 2 }),
  PeersRemoved: fc.array(fc.integer({ min: 0, max: 12 }), { maxLength: 3 }),
  PeersChangedPatch: fc.array(fc.record({ NodeID: fc.integer({ min: 0, max: 12 }), DERPRegion: fc.nat(3), Endpoints: fc.array(fc.constantFrom('1.2.3.4:1', 'x'), { maxLength: 2 }), Key: keyPool, Online: fc.boolean(), DiscoKey: fc.constant('discokey:zz') }, { requiredKeys: ['NodeID'] }), { maxLength: 3 }),
  OnlineChange: fc.dictionary(fc.constantFrom('1', '2', '3', 'x', '-1'), fc.boolean()),
  PeerSeenChange: fc.dictionary(fc.constantFrom('1', '2', '99'), fc.boolean()),
  DERPMap: arbDerpMap,
  PacketFilter: fc.array(arbRule, { maxLength: 3 }),
  PacketFilters: fc.dictionary(fc.constantFrom('base', 'x', '*'), fc.oneof(fc.constant(null), fc.array(arbRule, { maxLength: 2 }))),
  Domain: fc.constantFrom('example.com', ''), ControlTime: fc.constantFrom('2026-01-01T00:00:00Z', '0001-01-01T00:00:00Z'),
  KeepAlive: fc.boolean(), PingRequest: fc.record({ URL: fc.constantFrom('', 'x') }),
}, { requiredKeys: [] });
/** Replaces one field, anywhere, with an arbitrary JSON value. */
function mutate(v: unknown, pick: number, repl: unknown): unknown {
  let n = pick;
  const walk = (x: unknown): unknown => {
    if (n-- === 0) return repl;
    if (Array.isArray(x)) return x.map(walk);
    if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, y]) => [k, walk(y)]));
    return x;
  };
  return walk(v);
}
const arbMessages = fc.array(fc.oneof(
  { weight: 3, arbitrary: arbMapResponse },
  { weight: 2, arbitrary: fc.tuple(arbMapResponse, fc.nat(60), fc.jsonValue({ maxDepth: 1 })).map(([m, i, j]) => mutate(m, i, j)) },
), { minLength: 1, maxLength: 2 });
const uapiLine = fc.oneof(
  fc.tuple(fc.constantFrom('private_key', 'listen_port', 'fwmark', 'replace_peers', 'public_key', 'remove', 'update_only', 'preshared_key',
    'endpoint', 'persistent_keepalive_interval', 'replace_allowed_ips', 'allowed_ip', 'protocol_version', 'bogus', ''),
  fc.oneof(hex64, fc.constantFrom('true', 'false', '0', '65535', '65536', '-1', '1.2.3.4:51820', '[::1]:1', '10.0.0.0/8', '10.0.0.1/33', '::/0', '1', ''), fc.string({ maxLength: 8 })))
    .map(([k, v]) => `${k}=${v}`),
  fc.string({ maxLength: 12 }),
);

/** One fuzz target. */
export interface Target {
  readonly name: string;
  /** Structure-aware inputs for fast-check (as bytes run() takes); default: arbitrary bytes. */
  readonly arb?: fc.Arbitrary<Uint8Array>;
  /** Runs the decoder on arbitrary bytes; throws only on a crash (or the contract's own error, filtered by `expected`). */
  run(data: Uint8Array): void;
  /** True for errors the contract allows (its caller catches them and drops or reconnects). */
  expected?(e: unknown): boolean;
  /** Valid inputs to mutate (scripts/fuzz.mjs adds fast-check samples of `arb`). */
  seeds?(): Uint8Array[];
  /** Words the mutator inserts (tokens of the format; latin1). */
  readonly dict?: readonly string[];
  /** Longest mutated input (default 4096 bytes). */
  readonly maxLen?: number;
  /** Share of inputs scripts/fuzz.mjs takes fresh from `arb` rather than mutating the corpus (default 0.2). */
  readonly fresh?: number;
}

/** Raised by a target when a structural bound is broken (always a crash). */
export class BoundError extends Error {}

const KEY = new Uint8Array(32).fill(7);
const endpoints = new Endpoints(1024);

/** Splits data into 1..4 chunks at points taken from its first bytes (stream readers see arbitrary splits). */
function chunks(data: Uint8Array): Uint8Array[] {
  if (data.length < 2) return [data];
  const n = 1 + (data[0]! % 4);
  const body = data.subarray(1);
  const out: Uint8Array[] = [];
  let off = 0;
  for (let i = 1; i < n && off < body.length; i++) {
    const step = 1 + ((data[i % data.length]! * 7 + i) % Math.max(1, body.length - off));
    out.push(body.subarray(off, off + step));
    off += step;
  }
  if (off < body.length) out.push(body.subarray(off));
  return out;
}

// A small grammar from bytes to JSON values, with the vocabulary of MapResponse and FilterRule.
const KEYS = ['Node', 'Peers', 'PeersChanged', 'PeersRemoved', 'PeersChangedPatch', 'PeerSeenChange', 'OnlineChange', 'DERPMap',
  'Regions', 'Nodes', 'RegionID', 'HostName', 'IPv4', 'IPv6', 'STUNOnly', 'DERPPort', 'HomeParams', 'PacketFilter', 'PacketFilters',
  'DNSConfig', 'UserProfiles', 'Domain', 'ControlTime', 'KeepAlive', 'PingRequest', 'URL', 'SSHPolicy', 'ID', 'StableID', 'Name', 'Key',
  'KeyExpiry', 'Machine', 'DiscoKey', 'Addresses', 'AllowedIPs', 'Endpoints', 'DERP', 'HomeDERP', 'Hostinfo', 'Online', 'LastSeen',
  'Expired', 'Cap', 'CapMap', 'Tags', 'PrimaryRoutes', 'User', 'NodeID', 'SrcIPs', 'SrcBits', 'DstPorts', 'IP', 'Ports', 'First', 'Last',
  'IPProto', 'CapGrant', 'Hostname', 'RoutableIPs', 'Resolvers', 'Addr', 'Routes', 'LoginName', 'DisplayName', '*', 'base', '__proto__',
  'constructor', 'toString'];
const STRINGS = [`nodekey:${'ab'.repeat(32)}`, `nodekey:${'cd'.repeat(32)}`, `discokey:${'ef'.repeat(32)}`, `mkey:${'12'.repeat(32)}`,
  '100.64.0.1/32', '100.64.0.2', 'fd7a:115c:a1e0::1/128', '0.0.0.0/0', '::/0', '*', '198.19.5.0/24', '198.18.0.1-198.18.0.9',
  '1.2.3.4:41641', '[2001:db8::1]:41641', '127.3.3.40:1', 'cap:x', 'http://127.0.0.1:1/ping', '0001-01-01T00:00:00Z',
  '2026-01-01T00:00:00Z', '', 'x', 'nodekey:', '10.0.0.0/33', '::ffff:1.2.3.4', 'derp.example', '300.1.1.1'];
const NUMBERS = [0, 1, -1, 2, 6, 17, 58, 255, 65535, 65536, 2 ** 31, -(2 ** 31), 2 ** 53, 1.5, 1e308, -0];

/** Reads bytes as a JSON value (depth- and size-bounded). */
export function jsonFromBytes(data: Uint8Array): unknown {
  let i = 0;
  let budget = 400;
  const next = (): number => (i < data.length ? data[i++]! : 0);
  const value = (depth: number): unknown => {
    if (--budget <= 0) return null;
    const t = next();
    switch (depth >= 6 ? t % 4 : t % 7) {
      case 0: return null;
      case 1: return (t & 8) !== 0;
      case 2: return (t & 16) ? NUMBERS[next() % NUMBERS.length]! : next() * 256 + next();
      case 3: return (t & 16) ? STRINGS[next() % STRINGS.length]! : String.fromCharCode(...Array.from({ length: next() % 12 }, () => 32 + (next() % 95)));
      case 4: case 5: {
        const n = next() % 6;
        return Array.from({ length: n }, () => value(depth + 1));
      }
      default: {
        const o: Record<string, unknown> = {};
        const n = next() % 7;
        for (let k = 0; k < n; k++) {
          const key = KEYS[next() % KEYS.length]!;
          Object.defineProperty(o, key, { value: value(depth + 1), enumerable: true, writable: true, configurable: true });
        }
        return o;
      }
    }
  };
  return value(0);
}

const isUapiError = (e: unknown): boolean => e instanceof UapiError;
const noiseError = (e: unknown): boolean => e instanceof Error && e.message.startsWith('noise:');

/** n bytes of a pattern (deterministic seeds). */
function filled(n: number, tag: number): Uint8Array {
  return Uint8Array.from({ length: n }, (_, i) => (i * 31 + tag * 17) & 255);
}

/** A stream target's input: the chunking byte (see chunks()), then the wire bytes. */
function withChunkByte(b: number, ...parts: Uint8Array[]): Uint8Array {
  return Uint8Array.from([b, ...parts.flatMap((p) => [...p])]);
}

/** Every target. */
export const TARGETS: readonly Target[] = [
  {
    name: 'wireguard',
    seeds: () => [[1, 148], [2, 92], [3, 64], [4, 48]].map(([t, n]) => { const b = filled(n!, t!); b.set([t!, 0, 0, 0]); return b; }),
    run(d) {
      const t = messageTypeOf(d, 0, d.length);
      if (t === MessageType.Initiation) {
        const m = parseInitiation(d);
        if (!eq(writeInitiation(m).subarray(0, 116), d.subarray(0, 116))) throw new Error('initiation does not round-trip');
      } else if (t === MessageType.Response) {
        const m = parseResponse(d);
        if (!eq(writeResponse(m).subarray(0, 60), d.subarray(0, 60))) throw new Error('response does not round-trip');
      } else if (t === MessageType.CookieReply) {
        if (!eq(writeCookieReply(parseCookieReply(d)), d)) throw new Error('cookie reply does not round-trip');
      }
    },
  },
  {
    name: 'disco',
    seeds: () => [
      marshalDisco({ type: 'ping', txId: filled(12, 1), nodeKey: filled(32, 2), padding: 0 }),
      marshalDisco({ type: 'pong', txId: filled(12, 3), src: endpoints.parse('198.18.0.1:41641') }),
      marshalDisco({ type: 'call-me-maybe', endpoints: [endpoints.parse('198.18.0.1:41641'), endpoints.parse('[2001:db8::1]:41641')] }),
      marshalDisco({ type: 'bind-udp-relay-endpoint', vni: 7, generation: 1, remoteKey: filled(32, 4), challenge: filled(32, 5) }),
    ],
    run(d) {
      const r = parseDisco(d, endpoints);
      if (r.ok) {
        // Decode -> encode -> decode is a fixed point, except that a ping's all-zero node key is
        // "no key" (tailscale's Ping.AppendMarshal omits it, so its 32 bytes leave the packet).
        const again = parseDisco(marshalDisco(r.msg), endpoints);
        const norm = (m: unknown): string => JSON.stringify(m, (k, v: unknown) => (k === 'nodeKey' && v instanceof Uint8Array && v.every((x) => x === 0)) || k === 'padding' ? undefined : big(k, v));
        const zeroKeyPing = r.msg.type === 'ping' && r.msg.nodeKey?.every((x) => x === 0) === true;
        if (!again.ok || (zeroKeyPing ? norm(again.msg) !== norm(r.msg) : JSON.stringify(again.msg, big) !== JSON.stringify(r.msg, big))) {
          throw new Error('disco message does not round-trip');
        }
      }
      decodeDisco(d, () => KEY, endpoints);
    },
  },
  {
    name: 'stun',
    seeds: () => [bindingRequest(filled(12, 1)), bindingResponse(filled(12, 2), endpoints.parse('198.18.0.1:41641')), bindingResponse(filled(12, 3), endpoints.parse('[2001:db8::1]:9'))],
    run(d) {
      isStunPacket(d);
      parseBindingRequest(d);
      parseBindingResponse(d, endpoints);
    },
  },
  {
    name: 'derp-frames',
    seeds: () => [
      withChunkByte(0, encodeServerKey(filled(32, 1)), encodeServerInfo(KEY, { tokenBucketBytesPerSecond: 1000 }), encodeRecvPacket(filled(32, 2), filled(40, 3))),
      withChunkByte(3, encodePingPong(FrameType.ping, filled(8, 1)), encodePeerGone(filled(32, 4), 1), encodeHealth('bad'), encodeRestarting(100, 200),
        encodeFrame(FrameType.keepAlive), encodeClientInfo(filled(32, 5), KEY, { version: 2, canAckPings: true })),
    ],
    run(d) {
      const max = 4096;
      const reader = new FrameReader(max);
      for (const c of chunks(d)) {
        reader.push(c);
        for (let k = 0; k < 1000; k++) {
          const f = reader.next();
          if (f === undefined) break;
          if ('error' in f) return; // the client closes the connection
          parseServerMessage(f, endpoints);
          parseServerKey(f.payload);
          parseServerInfo(f.payload, KEY);
          parseClientInfo(f.payload, () => KEY);
        }
        if (reader.buffered > max + FRAME_HEADER_LEN + c.length) throw new BoundError(`derp reader holds ${reader.buffered} bytes`);
      }
    },
  },
  {
    name: 'noise-records',
    seeds: () => [withChunkByte(1, ...sealRecords(new TransportCipher(KEY), filled(100, 1))), withChunkByte(2, ...sealRecords(new TransportCipher(KEY), filled(5000, 2)))],
    expected: noiseError,
    run(d) {
      const reader = new RecordReader(new TransportCipher(KEY));
      for (const c of chunks(d)) {
        reader.feed(c);
        if (reader.pending > MAX_MESSAGE_SIZE + c.length) throw new BoundError(`noise reader holds ${reader.pending} bytes`);
      }
    },
  },
  {
    name: 'map-frames',
    seeds: () => [withChunkByte(2, encodeMapFrame({ KeepAlive: true }), encodeMapFrame(bigMap(2, `nodekey:${'a'.repeat(64)}`)))],
    expected: (e) => e instanceof RangeError && /exceeds/.test(e.message),
    run(d) {
      const max = 4096;
      const reader = new MapFrameReader(max);
      for (const c of chunks(d)) {
        for (const text of reader.feed(c)) {
          try { JSON.parse(text); } catch { /* the client reconnects */ }
        }
        if (reader.pending > max + 4 + c.length) throw new BoundError(`map reader holds ${reader.pending} bytes`);
      }
    },
  },
  {
    name: 'netmap',
    seeds: () => [utf8([bigMap(3, `nodekey:${'a'.repeat(64)}`), { PeersChangedPatch: [{ NodeID: 3, Endpoints: ['1.2.3.4:5'] }], PeersRemoved: [2] }]),
      utf8([bigMap(2, `nodekey:${'a'.repeat(64)}`), { DNSConfig: { Resolvers: [{ Addr: '198.18.0.53' }], Routes: { 'corp.test': [{ Addr: '198.18.0.54' }] }, Domains: ['tailnet.example'],
        ExtraRecords: [{ Name: 'x.tailnet.example', Type: 'A', Value: '100.64.0.9' }] } }])],
    dict: [...KEYS.map((k) => `"${k}":`), ...STRINGS.map((v) => `"${v}"`), 'null', 'true', '[]', '{}', ',', '-1', '1e309'],
    maxLen: 65536,
    fresh: 0.05, // a fresh map costs ~360 us to generate, 4x what it costs to apply
    arb: arbMessages.map(utf8),
    // The client turns these into a protocol error and reconnects; the map is left unchanged.
    expected: (e) => e instanceof MapShapeError || (e instanceof RangeError && /^key /.test(e.message)),
    run(d) {
      // Two messages folded into one map, as the stream does; then what the agent does with it.
      const m = new NetworkMap();
      const v = jsonOf(d);
      for (const msg of Array.isArray(v) ? v.slice(0, 4) : [v]) {
        if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) continue; // the client rejects these
        const before = JSON.stringify([...m.peers.keys(), m.self?.id, m.controlTime, m.domain]);
        try {
          m.apply(msg as MapResponse);
        } catch (e) {
          if (JSON.stringify([...m.peers.keys(), m.self?.id, m.controlTime, m.domain]) !== before) throw new Error(`a refused message changed the map (${(e as Error).message})`);
          throw e;
        }
      }
      compileDnsConfig(m, { acceptDns: true, osSupportsSplit: false });
      const plan = planRoutes(m, { ...DEFAULT_PREFS, exitNode: 'exit', acceptRoutes: true }, { lanPrefixes: ['198.19.5.0/24'] });
      MAP_FILTER.update(m.packetFilter, plan.localNets, plan.notLocalNets);
      MAP_FILTER.runIn(PROBE_PACKET, 0, PROBE_PACKET.length);
    },
  },
  {
    name: 'uapi',
    dict: ['\n', 'public_key=', 'allowed_ip=', 'endpoint=', 'replace_allowed_ips=true', 'remove=true', 'listen_port=', '=', '/32', '/128'],
    arb: fc.array(uapiLine, { maxLength: 12 }).map((ls) => new TextEncoder().encode(ls.join('\n'))),
    expected: isUapiError,
    run(d) {
      const text = new TextDecoder().decode(d);
      parseSet(text.split('\n'));
    },
  },
  {
    name: 'filter-rules',
    dict: ['"SrcIPs":', '"DstPorts":', '"IP":', '"Ports":', '"First":', '"Last":', '"IPProto":', '"*"', '"100.64.0.0/10"', '"::/0"', 'null', '[]', '{}', ','],
    arb: fc.array(fc.oneof({ weight: 4, arbitrary: arbRule }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 2 }) }), { maxLength: 5 }).map(utf8),
    expected: (e) => e instanceof MapShapeError,
    run(d) {
      const v = jsonOf(d);
      const rules = Array.isArray(v) ? v : [v];
      checkFilterRules(rules); // the map's shape check, before the filter sees them
      compileRules(rules as FilterRule[], []);
    },
  },
  {
    name: 'filter-packets',
    // IP headers with a chosen version and protocol, the rest random (addresses often in the tailnet).
    arb: fc.tuple(fc.constantFrom(0x45, 0x46, 0x4f, 0x44, 0x60, 0x00), fc.constantFrom(1, 6, 17, 58, 132, 99, 0, 43, 44, 60),
      fc.boolean(), fc.uint8Array({ maxLength: 96 })).map(([v, proto, tailnet, rest]) => {
      const p = new Uint8Array(Math.max(rest.length, 20));
      p.set(rest);
      p[0] = v;
      if (v >> 4 === 4) { p[9] = proto; if (tailnet) p.set([100, 64, 0, 2, 100, 64, 0, 1], 12); }
      else if (v >> 4 === 6) { p[6] = proto; if (tailnet && p.length >= 40) { p.set([0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0], 8); p.set([0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0], 24); } }
      return p;
    }),
    run(d) {
      FILTER.runIn(d, 0, d.length);
      FILTER.runOut(d, 0, d.length);
      if (d.length > 8) FILTER.runIn(d, 4, d.length - 4);
    },
  },
  ...STACK_TARGETS,
];

/** An IPv4 TCP SYN from 100.64.0.2:1234 to 100.64.0.1:22. */
const PROBE_PACKET = Uint8Array.from([0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 100, 64, 0, 2, 100, 64, 0, 1,
  0x04, 0xd2, 0, 22, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
const FILTER = new PacketFilter();
/** One filter for the netmap target (update() replaces everything but the flow table). */
const MAP_FILTER = new PacketFilter();
FILTER.update([
  { SrcIPs: ['*'], DstPorts: [{ IP: '*', Ports: { First: 22, Last: 22 } }] },
  { SrcIPs: ['100.64.0.0/10', 'fd7a:115c:a1e0::/48'], DstPorts: [{ IP: '100.64.0.1', Ports: { First: 0, Last: 65535 } }], IPProto: [6, 17, 1, 58, 132] },
], ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128', '0.0.0.0/0']);

function eq(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function big(_k: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
  return v;
}

/** Runs a target on one input; returns the crash (unexpected error) or undefined. */
export function runOne(t: Target, data: Uint8Array): Error | undefined {
  try {
    t.run(data);
    return undefined;
  } catch (e) {
    if (!(e instanceof BoundError) && t.expected?.(e)) return undefined;
    return e instanceof Error ? e : new Error(String(e));
  }
}
