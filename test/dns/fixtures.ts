// Shared inputs of the dns tests: a network map shaped as headscale v0.29.2 sends it.
import { NetworkMap } from '../../src/control/netmap.ts';
import type { MapResponse } from '../../src/control/wire.ts';

/** A node key made of one repeated hex digit. */
export const key = (c: string): string => `nodekey:${c.repeat(64)}`;

/** A map as headscale v0.29.2 sends it: base domain meshd.test, override_local_dns true, a split route, extra records. */
export function labMap(extra: Partial<MapResponse> = {}): NetworkMap {
  const m = new NetworkMap();
  m.apply({
    Node: { ID: 1, Key: key('1'), Name: 'm1.meshd.test.', Addresses: ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128'] },
    Peers: [
      { ID: 2, Key: key('2'), Name: 't1.meshd.test.', Addresses: ['100.64.0.2/32', 'fd7a:115c:a1e0::2/128'] },
      { ID: 3, Key: key('3'), Name: 'v6only.meshd.test.', Addresses: ['fd7a:115c:a1e0::3/128'] },
    ],
    DNSConfig: {
      Resolvers: [{ Addr: '198.18.0.53' }],
      Routes: { 'corp.test': [{ Addr: '198.18.0.54' }] },
      Domains: ['meshd.test'],
      Proxied: true,
      ExtraRecords: [
        { Name: 'grafana.meshd.test', Type: 'A', Value: '100.64.0.99' },
        { Name: 'grafana.meshd.test', Type: 'AAAA', Value: 'fd7a:115c:a1e0::99' },
        { Name: 'db.example.internal', Type: 'A', Value: '100.64.0.98' },
      ],
    },
    ...extra,
  });
  return m;
}

