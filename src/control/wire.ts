// JSON wire types of the control protocol (TS:tailcfg/tailcfg.go, TS:tailcfg/derpmap.go), the
// subset meshd sends or reads. Field names are Go's (PascalCase) except where a JSON tag renames
// them; see control-plane.md section 0. Keys are prefixed hex strings (keys.ts); prefixes are
// "1.2.3.4/32"; endpoints "ip:port"; times RFC 3339. Unknown fields are kept, never rejected.

/** tailcfg.NetInfo (the part meshd reports). */
export interface NetInfo {
  PreferredDERP?: number;
  DERPLatency?: Record<string, number>;
  MappingVariesByDestIP?: boolean | null;
  WorkingIPv6?: boolean | null;
  WorkingUDP?: boolean | null;
  [k: string]: unknown;
}

/** tailcfg.Hostinfo: sent whole with every request (headscale replaces its copy). */
export interface Hostinfo {
  IPNVersion?: string;
  FrontendLogID?: string;
  BackendLogID?: string;
  OS?: string;
  OSVersion?: string;
  Distro?: string;
  DistroVersion?: string;
  Hostname?: string;
  GoArch?: string;
  Machine?: string;
  RoutableIPs?: string[];
  ShieldsUp?: boolean;
  NetInfo?: NetInfo;
  Userspace?: boolean;
  UserspaceRouter?: boolean;
  [k: string]: unknown;
}

/** tailcfg.RegisterResponseAuth. */
export interface RegisterAuth {
  AuthKey?: string;
}

/** tailcfg.RegisterRequest (the fields headscale reads). */
export interface RegisterRequest {
  Version: number;
  NodeKey: string;
  OldNodeKey?: string;
  Auth?: RegisterAuth;
  Expiry?: string;
  Followup?: string;
  Hostinfo: Hostinfo;
  Ephemeral?: boolean;
}

/** tailcfg.User / tailcfg.Login as headscale sends them. */
export interface WireUser {
  ID: number;
  LoginName?: string;
  DisplayName?: string;
  ProfilePicURL?: string;
  Provider?: string;
  Created?: string;
}

/** tailcfg.RegisterResponse. */
export interface RegisterResponse {
  User?: WireUser;
  Login?: WireUser;
  NodeKeyExpired?: boolean;
  MachineAuthorized?: boolean;
  AuthURL?: string;
  Error?: string;
}

/** tailcfg.MapRequest (the fields meshd sends). */
export interface MapRequest {
  Version: number;
  Compress?: string;
  KeepAlive?: boolean;
  NodeKey: string;
  DiscoKey?: string;
  Stream: boolean;
  OmitPeers?: boolean;
  Hostinfo: Hostinfo;
  Endpoints?: string[];
  EndpointTypes?: number[];
}

/** tailcfg.EndpointType values (MapRequest.EndpointTypes). */
export const EndpointType = {
  unknown: 0,
  local: 1,
  stun: 2,
  portmapped: 3,
  stun4LocalPort: 4,
  explicitConf: 5,
} as const;
/** One of {@link EndpointType}. */
export type EndpointType = (typeof EndpointType)[keyof typeof EndpointType];

/** tailcfg.Node (peers and self). */
export interface WireNode {
  ID: number;
  StableID?: string;
  Name?: string;
  User?: number;
  Key: string;
  KeyExpiry?: string;
  Machine?: string;
  DiscoKey?: string;
  Addresses?: string[];
  AllowedIPs?: string[];
  Endpoints?: string[];
  HomeDERP?: number;
  /** Legacy "127.3.3.40:<region>" form of HomeDERP. */
  DERP?: string;
  Hostinfo?: Hostinfo;
  Created?: string;
  Cap?: number;
  Tags?: string[];
  PrimaryRoutes?: string[];
  LastSeen?: string | null;
  Online?: boolean | null;
  MachineAuthorized?: boolean;
  Expired?: boolean;
  CapMap?: Record<string, unknown[] | null>;
  KeySignature?: string | null;
  [k: string]: unknown;
}

/** tailcfg.PeerChange: a partial update of one peer. */
export interface PeerChange {
  NodeID: number;
  DERPRegion?: number;
  Cap?: number;
  CapMap?: Record<string, unknown[] | null>;
  Endpoints?: string[] | null;
  Key?: string | null;
  KeySignature?: string | null;
  DiscoKey?: string | null;
  Online?: boolean | null;
  LastSeen?: string | null;
  KeyExpiry?: string | null;
}

/** tailcfg.DERPNode. */
export interface DERPNode {
  Name: string;
  RegionID: number;
  HostName: string;
  CertName?: string;
  IPv4?: string;
  IPv6?: string;
  STUNPort?: number;
  STUNOnly?: boolean;
  DERPPort?: number;
  InsecureForTests?: boolean;
  STUNTestIP?: string;
  CanPort80?: boolean;
}

/** tailcfg.DERPRegion. */
export interface DERPRegion {
  RegionID: number;
  RegionCode: string;
  RegionName: string;
  Avoid?: boolean;
  NoMeasureNoHome?: boolean;
  Nodes: DERPNode[];
}

/** tailcfg.DERPMap; region IDs are decimal string keys in JSON. */
export interface DERPMap {
  HomeParams?: { RegionScore?: Record<string, number> | null } | null;
  Regions?: Record<string, DERPRegion | null> | null;
  omitDefaultRegions?: boolean;
}

/** tailcfg.PortRange. */
export interface PortRange {
  First: number;
  Last: number;
}

/** tailcfg.NetPortRange. */
export interface NetPortRange {
  IP: string;
  Bits?: number | null;
  Ports: PortRange;
}

/** tailcfg.FilterRule. */
export interface FilterRule {
  SrcIPs: string[];
  SrcBits?: number[] | null;
  DstPorts?: NetPortRange[];
  IPProto?: number[];
  CapGrant?: unknown[];
}

/** tailcfg.DNSResolver. */
export interface DNSResolver {
  Addr: string;
  BootstrapResolution?: string[];
  UseWithExitNode?: boolean;
}

/** tailcfg.DNSConfig. */
export interface DNSConfig {
  Resolvers?: DNSResolver[];
  Routes?: Record<string, DNSResolver[] | null>;
  FallbackResolvers?: DNSResolver[];
  Domains?: string[];
  Proxied?: boolean;
  Nameservers?: string[];
  CertDomains?: string[];
  ExtraRecords?: Array<{ Name: string; Type?: string; Value: string }>;
  [k: string]: unknown;
}

/** tailcfg.UserProfile. */
export interface UserProfile {
  ID: number;
  LoginName?: string;
  DisplayName?: string;
  ProfilePicURL?: string;
}

/** tailcfg.PingRequest. */
export interface PingRequest {
  URL: string;
  URLIsNoise?: boolean;
  Log?: boolean;
  Types?: string;
  IP?: string;
  Payload?: string;
}

/** tailcfg.MapResponse: zero/absent fields mean "unchanged". */
export interface MapResponse {
  KeepAlive?: boolean;
  PingRequest?: PingRequest | null;
  PopBrowserURL?: string;
  Node?: WireNode | null;
  DERPMap?: DERPMap | null;
  Peers?: WireNode[] | null;
  PeersChanged?: WireNode[] | null;
  PeersRemoved?: number[] | null;
  PeersChangedPatch?: PeerChange[] | null;
  PeerSeenChange?: Record<string, boolean> | null;
  OnlineChange?: Record<string, boolean> | null;
  DNSConfig?: DNSConfig | null;
  Domain?: string;
  CollectServices?: boolean | null;
  PacketFilter?: FilterRule[] | null;
  PacketFilters?: Record<string, FilterRule[] | null> | null;
  UserProfiles?: UserProfile[] | null;
  SSHPolicy?: unknown;
  ControlTime?: string | null;
  [k: string]: unknown;
}
