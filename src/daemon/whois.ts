// `meshd whois IP`: which node of the network map (this one or a peer) holds a tailnet address,
// and which user owns it, as `tailscale whois` answers. Tagged nodes are owned by their tags
// (headscale reports them under its "Tagged Devices" pseudo-user).
import type { NetworkMap } from '../control/netmap.ts';
import type { WhoisReply } from './localapi.ts';

/** No node has the address. */
export class WhoisError extends Error {
  /** Stable code for the local API. */
  readonly code = 'no_such_peer';
}

/** Looks up an address (or address:port, [v6]:port) in the map. */
export function whoisIn(map: NetworkMap, addr: string): WhoisReply {
  const text = addr.trim();
  const m = /^\[([0-9a-fA-F:.]+)\](?::\d+)?$/.exec(text) ?? /^([\d.]+):\d+$/.exec(text);
  const ip = (m ? m[1]! : text).toLowerCase();
  const nodes = [...(map.self ? [map.self] : []), ...map.peers.values()];
  const n = nodes.find((x) => x.addresses.some((a) => a.split('/')[0]!.toLowerCase() === ip));
  if (!n) throw new WhoisError(`no node in the tailnet has the address ${addr}`);
  const u = map.userProfiles.get(n.user);
  return {
    node: { id: n.id, name: n.name, hostname: n.hostname, addresses: [...n.addresses], tags: [...n.tags], self: n === map.self, keyExpiry: n.keyExpiry ?? null },
    user: n.tags.length > 0 ? { id: n.user, loginName: 'tagged-devices', displayName: 'Tagged Devices' }
      : { id: n.user, loginName: u?.LoginName ?? '', displayName: u?.DisplayName ?? '' },
  };
}
