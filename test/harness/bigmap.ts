// Large tailnets for scale tests and scripts/bench-scale.mjs: n peers shaped like headscale's
// (addresses, endpoints, disco keys, home DERP), and one-peer deltas.
import type { WireNode } from '../../src/control/wire.ts';

const hex = (i: number, tag: number): string => (tag.toString(16).padStart(2, '0') + i.toString(16).padStart(62, '0'));

/** Peer i (1-based) of a large tailnet. */
export function bigPeer(i: number, gen = 0): WireNode {
  const a = 64 + ((i >> 16) & 63), b = (i >> 8) & 255, c = i & 255;
  return {
    ID: i + 1,
    StableID: `n${i}`,
    Name: `node-${i}.tailnet.example.`,
    User: 1,
    Key: `nodekey:${hex(i, 0xaa)}`,
    Machine: `mkey:${hex(i, 0xbb)}`,
    DiscoKey: `discokey:${hex(i, 0xcc)}`,
    Addresses: [`100.${a}.${b}.${c}/32`, `fd7a:115c:a1e0::${i.toString(16)}/128`],
    AllowedIPs: [`100.${a}.${b}.${c}/32`, `fd7a:115c:a1e0::${i.toString(16)}/128`],
    Endpoints: [`198.18.${(i >> 8) & 255}.${i & 255}:${41641 + gen}`, `[2001:db8::${i.toString(16)}]:41641`],
    HomeDERP: 1,
    Hostinfo: { Hostname: `node-${i}`, OS: 'linux' },
    Online: true,
    KeyExpiry: '0001-01-01T00:00:00Z',
  };
}

/** The self node of a large tailnet. */
export function bigSelf(key: string): WireNode {
  return { ID: 1, Key: key, Addresses: ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128'], AllowedIPs: ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128'], Hostinfo: { Hostname: 'self' } };
}

/** A full map response with n peers (IDs 2..n+1). */
export function bigMap(n: number, selfKey: string): Record<string, unknown> {
  return {
    Node: bigSelf(selfKey),
    Peers: Array.from({ length: n }, (_, i) => bigPeer(i + 1)),
    DERPMap: { Regions: { 1: { RegionID: 1, RegionCode: 'lab', Nodes: [{ Name: '1a', RegionID: 1, HostName: '127.0.0.1', DERPPort: 1 }] } } },
    PacketFilter: [{ SrcIPs: ['*'], DstPorts: [{ IP: '*', Ports: { First: 0, Last: 65535 } }] }],
    Domain: 'tailnet.example',
  };
}

/** A delta changing one peer's endpoints (what headscale sends when a peer roams). */
export function onePeerDelta(i: number, gen: number): Record<string, unknown> {
  return { PeersChangedPatch: [{ NodeID: i + 1, Endpoints: bigPeer(i, gen).Endpoints }] };
}
