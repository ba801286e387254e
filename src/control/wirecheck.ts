// Shape check of a MapResponse before it is folded into the network map (check at the boundary,
// then trust). Go's json.Unmarshal, which tailscaled uses, rejects a message whose known fields
// have the wrong JSON type; this does the same for the fields meshd reads, so NetworkMap.apply,
// the route plan and the packet filter only ever see well-typed values, and a bad message changes
// nothing (the client reconnects). As in Go: unknown fields are ignored and null is accepted for
// any field (it means "absent"); null is refused inside arrays, where Go would hand out a nil
// node or an empty string.

/** A field schema: a JSON type, an array or string-keyed map of one schema, or an object's fields. */
type Schema = 'str' | 'num' | 'bool' | 'any' | { arr: Schema } | { map: Schema } | { obj: Record<string, Schema> };

const strs: Schema = { arr: 'str' };
const nums: Schema = { arr: 'num' };

const HOSTINFO: Schema = { obj: { Hostname: 'str', RoutableIPs: strs, OS: 'str' } };
const NODE: Schema = {
  obj: {
    ID: 'num', StableID: 'str', Name: 'str', User: 'num', Key: 'str', KeyExpiry: 'str', Machine: 'str', DiscoKey: 'str',
    Addresses: strs, AllowedIPs: strs, Endpoints: strs, HomeDERP: 'num', DERP: 'str', Hostinfo: HOSTINFO, Cap: 'num',
    Tags: strs, PrimaryRoutes: strs, LastSeen: 'str', Online: 'bool', Expired: 'bool', CapMap: { map: 'any' }, KeySignature: 'str',
  },
};
const PATCH: Schema = {
  obj: {
    NodeID: 'num', DERPRegion: 'num', Cap: 'num', CapMap: { map: 'any' }, Endpoints: strs, Key: 'str', KeySignature: 'str',
    DiscoKey: 'str', Online: 'bool', LastSeen: 'str', KeyExpiry: 'str',
  },
};
const DERP_NODE: Schema = {
  obj: {
    Name: 'str', RegionID: 'num', HostName: 'str', CertName: 'str', IPv4: 'str', IPv6: 'str', STUNPort: 'num', STUNOnly: 'bool',
    DERPPort: 'num', InsecureForTests: 'bool', STUNTestIP: 'str', CanPort80: 'bool',
  },
};
const REGION: Schema = { obj: { RegionID: 'num', RegionCode: 'str', RegionName: 'str', Avoid: 'bool', NoMeasureNoHome: 'bool', Nodes: { arr: DERP_NODE } } };
const RULE: Schema = {
  obj: {
    SrcIPs: strs, SrcBits: nums, IPProto: nums, CapGrant: { arr: 'any' },
    DstPorts: { arr: { obj: { IP: 'str', Bits: 'num', Ports: { obj: { First: 'num', Last: 'num' } } } } },
  },
};
/** The MapResponse fields meshd reads. */
const MAP_RESPONSE: Schema = {
  obj: {
    Node: NODE, Peers: { arr: NODE }, PeersChanged: { arr: NODE }, PeersRemoved: nums, PeersChangedPatch: { arr: PATCH },
    PeerSeenChange: { map: 'bool' }, OnlineChange: { map: 'bool' },
    DERPMap: { obj: { Regions: { map: REGION }, HomeParams: 'any', omitDefaultRegions: 'bool' } },
    PacketFilter: { arr: RULE }, PacketFilters: { map: { arr: RULE } },
    DNSConfig: {
      obj: {
        Resolvers: { arr: { obj: { Addr: 'str' } } }, Domains: strs, Routes: { map: { arr: { obj: { Addr: 'str' } } } }, Proxied: 'bool',
        ExtraRecords: { arr: { obj: { Name: 'str', Type: 'str', Value: 'str' } } },
      },
    },
    UserProfiles: { arr: { obj: { ID: 'num', LoginName: 'str', DisplayName: 'str' } } },
    Domain: 'str', ControlTime: 'str', KeepAlive: 'bool', PingRequest: { obj: { URL: 'str' } }, SSHPolicy: 'any',
  },
};

/** A message whose shape is wrong; the path names the first bad field. */
export class MapShapeError extends TypeError {
  constructor(path: string, want: string) {
    super(`map message: ${path} is not ${want}`);
    this.name = 'MapShapeError';
  }
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function check(v: unknown, s: Schema, path: string, inArray: boolean): void {
  if (v === null && !inArray) return;
  if (s === 'any') return;
  if (s === 'str') { if (typeof v !== 'string') throw new MapShapeError(path, 'a string'); return; }
  if (s === 'num') { if (typeof v !== 'number') throw new MapShapeError(path, 'a number'); return; }
  if (s === 'bool') { if (typeof v !== 'boolean') throw new MapShapeError(path, 'a boolean'); return; }
  if ('arr' in s) {
    if (!Array.isArray(v)) throw new MapShapeError(path, 'an array');
    for (let i = 0; i < v.length; i++) check(v[i], s.arr, `${path}[${i}]`, true);
    return;
  }
  if (!isObject(v)) throw new MapShapeError(path, 'an object');
  if ('map' in s) {
    for (const k of Object.keys(v)) check(v[k], s.map, `${path}.${k}`, false);
    return;
  }
  for (const k of Object.keys(s.obj)) {
    if (Object.hasOwn(v, k)) check(v[k], s.obj[k]!, `${path}.${k}`, false);
  }
}

/** Throws MapShapeError when a parsed map message has a wrong-typed field meshd reads. */
export function checkMapResponse(r: unknown): void {
  check(r, MAP_RESPONSE, 'MapResponse', true);
}

/** Throws MapShapeError unless v is a well-typed FilterRule[] (packet filters from a map or a file). */
export function checkFilterRules(v: unknown): void {
  check(v, { arr: RULE }, 'PacketFilter', true);
}
