// Port-mapping wire formats without I/O (reference dns-netstack-portmap.md 3.3-3.5; tailscale
// net/portmapper): NAT-PMP (RFC 6886) and PCP (RFC 6887) datagrams to the gateway's UDP 5351, SSDP
// M-SEARCH and its answers (UPnP discovery, UDP 1900), and the little of UPnP IGD's XML we need: the
// services of a root device description and SOAP calls with their answers.
//
// NAT-PMP, all big-endian:
//   address request  00 00                        reply  00 80 result(2) epoch(4) ip(4)
//   map request      00 01 0000 int(2) ext(2) lifetime(4)   (op 1 = UDP)
//   map reply        00 81 result(2) epoch(4) int(2) ext(2) lifetime(4)
// PCP (version 2): header 24 bytes ver | R,op | 0 | result (replies) | lifetime(4) | client IP(16) or
//   epoch(4)+reserved(12); MAP body 36 bytes nonce(12) | proto(1) | 0(3) | int(2) | ext(2) | ext IP(16).
// The XML is a handful of fixed element names, so plain text matching does; no XML library needed.

/** The NAT-PMP/PCP server port on the gateway. */
export const PMP_PORT = 5351;
/** The SSDP port and multicast group. */
export const SSDP_PORT = 1900;
export const SSDP_GROUP = '239.255.255.250';
/** Lease asked for, seconds (tailscale: 2 h, renewed at half). */
export const MAP_LIFETIME_S = 7200;

const PCP_VERSION = 2;
const PCP_OP_ANNOUNCE = 0;
const PCP_OP_MAP = 1;
const PROTO_UDP = 17;

/** Parses a dotted IPv4 address into 4 bytes; throws on anything else. */
export function ipv4Bytes(ip: string): Uint8Array {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) throw new Error(`not an IPv4 address: ${JSON.stringify(ip)}`);
  const b = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const v = Number(m[i + 1]);
    if (v > 255) throw new Error(`not an IPv4 address: ${JSON.stringify(ip)}`);
    b[i] = v;
  }
  return b;
}

function ipv4Text(b: Uint8Array, off: number): string {
  return `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;
}

/** Writes ip as an IPv4-mapped IPv6 address (::ffff:a.b.c.d) at out[off..off+16). */
function writeMapped(ip: string, out: Uint8Array, off: number): void {
  out.fill(0, off, off + 16);
  out[off + 10] = 0xff;
  out[off + 11] = 0xff;
  out.set(ipv4Bytes(ip), off + 12);
}

/** The IPv4 address in a 16-byte field, when it is IPv4-mapped. */
function readMapped(b: Uint8Array, off: number): string | undefined {
  for (let i = 0; i < 10; i++) if (b[off + i] !== 0) return undefined;
  if (b[off + 10] !== 0xff || b[off + 11] !== 0xff) return undefined;
  return ipv4Text(b, off + 12);
}

// ---- NAT-PMP ----------------------------------------------------------------------------------

/** NAT-PMP external address request. */
export function pmpAddressRequest(): Uint8Array {
  return Uint8Array.of(0, 0);
}

/** NAT-PMP UDP mapping request; lifetime 0 with suggested port 0 deletes (RFC 6886 3.4). */
export function pmpMapRequest(internalPort: number, suggestedExternalPort: number, lifetimeS: number): Uint8Array {
  const b = new Uint8Array(12);
  const v = new DataView(b.buffer);
  b[1] = 1;
  v.setUint16(4, internalPort);
  v.setUint16(6, suggestedExternalPort);
  v.setUint32(8, lifetimeS);
  return b;
}

/** A NAT-PMP reply. */
export type PmpReply =
  | { kind: 'address'; result: number; epoch: number; ip: string }
  | { kind: 'map'; result: number; epoch: number; internalPort: number; externalPort: number; lifetimeS: number };

/** Parses a NAT-PMP reply; undefined for anything else (a PCP packet, junk). */
export function parsePmp(b: Uint8Array): PmpReply | undefined {
  if (b.length < 8 || b[0] !== 0) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  const result = v.getUint16(2), epoch = v.getUint32(4);
  if (b[1] === 0x80 && b.length >= 12) return { kind: 'address', result, epoch, ip: ipv4Text(b, 8) };
  if (b[1] === 0x81 && b.length >= 16) {
    return { kind: 'map', result, epoch, internalPort: v.getUint16(8), externalPort: v.getUint16(10), lifetimeS: v.getUint32(12) };
  }
  return undefined;
}

// ---- PCP --------------------------------------------------------------------------------------

function pcpHeader(op: number, lifetimeS: number, clientIp: string, bodyLen: number): Uint8Array {
  const b = new Uint8Array(24 + bodyLen);
  b[0] = PCP_VERSION;
  b[1] = op;
  new DataView(b.buffer).setUint32(4, lifetimeS);
  writeMapped(clientIp, b, 8);
  return b;
}

/** PCP ANNOUNCE (lifetime 0): the probe for whether the gateway speaks PCP. */
export function pcpAnnounce(clientIp: string): Uint8Array {
  return pcpHeader(PCP_OP_ANNOUNCE, 0, clientIp, 0);
}

/** PCP MAP for UDP; the same nonce with lifetime 0 deletes (RFC 6887 11.1, 15). */
export function pcpMapRequest(clientIp: string, nonce: Uint8Array, internalPort: number, suggestedExternalPort: number, suggestedExternalIp: string, lifetimeS: number): Uint8Array {
  if (nonce.length !== 12) throw new Error('PCP nonce must be 12 bytes');
  const b = pcpHeader(PCP_OP_MAP, lifetimeS, clientIp, 36);
  b.set(nonce, 24);
  b[36] = PROTO_UDP;
  const v = new DataView(b.buffer);
  v.setUint16(40, internalPort);
  v.setUint16(42, suggestedExternalPort);
  writeMapped(suggestedExternalIp, b, 44);
  return b;
}

/** A PCP reply (header, plus the MAP body when it is one). */
export interface PcpReply {
  op: number; result: number; lifetimeS: number; epoch: number;
  map?: { nonce: Uint8Array; protocol: number; internalPort: number; externalPort: number; externalIp: string | undefined };
}

/** Parses a PCP reply (R bit set, version 2); undefined for anything else. */
export function parsePcp(b: Uint8Array): PcpReply | undefined {
  if (b.length < 24 || b[0] !== PCP_VERSION || (b[1]! & 0x80) === 0) return undefined;
  const v = new DataView(b.buffer, b.byteOffset, b.length);
  const r: PcpReply = { op: b[1]! & 0x7f, result: b[3]!, lifetimeS: v.getUint32(4), epoch: v.getUint32(8) };
  if (r.op === PCP_OP_MAP && b.length >= 60) {
    r.map = {
      nonce: b.slice(24, 36), protocol: b[36]!, internalPort: v.getUint16(40), externalPort: v.getUint16(42),
      externalIp: readMapped(b, 44),
    };
  }
  return r;
}

/** PCP result codes worth naming in logs (RFC 6887 7.4). */
export const PCP_RESULTS: Record<number, string> = {
  0: 'SUCCESS', 1: 'UNSUPP_VERSION', 2: 'NOT_AUTHORIZED', 3: 'MALFORMED_REQUEST', 4: 'UNSUPP_OPCODE',
  5: 'UNSUPP_OPTION', 6: 'MALFORMED_OPTION', 7: 'NETWORK_FAILURE', 8: 'NO_RESOURCES', 9: 'UNSUPP_PROTOCOL',
  10: 'USER_EX_QUOTA', 11: 'CANNOT_PROVIDE_EXTERNAL', 12: 'ADDRESS_MISMATCH', 13: 'EXCESSIVE_REMOTE_PEERS',
};

// ---- SSDP -------------------------------------------------------------------------------------

/** An SSDP M-SEARCH for `st` (tailscale sends ssdp:all to the gateway and the group). */
export function ssdpSearch(st: string): Uint8Array {
  return new TextEncoder().encode(`M-SEARCH * HTTP/1.1\r\nHOST: ${SSDP_GROUP}:${SSDP_PORT}\r\nST: ${st}\r\nMAN: "ssdp:discover"\r\nMX: 2\r\n\r\n`);
}

/** An SSDP answer naming an Internet Gateway Device. */
export interface SsdpAnswer { location: string; server: string; usn: string; st: string }

/** Parses an SSDP answer; undefined unless it is an HTTP 200 naming an InternetGatewayDevice. */
export function parseSsdp(b: Uint8Array): SsdpAnswer | undefined {
  const text = new TextDecoder('latin1').decode(b);
  if (!/^HTTP\/1\.[01] 200/i.test(text) || !text.includes(':InternetGatewayDevice:')) return undefined;
  const header = (name: string) => new RegExp(`^${name}:[ \\t]*(.*?)\\s*$`, 'im').exec(text)?.[1] ?? '';
  const location = header('LOCATION');
  if (!location) return undefined;
  return { location, server: header('SERVER'), usn: header('USN'), st: header('ST') };
}

// ---- UPnP IGD ---------------------------------------------------------------------------------

/** A WAN connection service of an IGD. */
export interface UpnpService { serviceType: string; controlUrl: string }

/** Service types we can map with, best first (tailscale's selectBestService order). */
export const UPNP_SERVICE_TYPES = [
  'urn:schemas-upnp-org:service:WANIPConnection:2',
  'urn:schemas-upnp-org:service:WANIPConnection:1',
  'urn:schemas-upnp-org:service:WANPPPConnection:1',
] as const;

function tag(xml: string, name: string): string | undefined {
  const m = new RegExp(`<(?:[\\w-]+:)?${name}\\b[^>]*>([\\s\\S]*?)</(?:[\\w-]+:)?${name}>`, 'i').exec(xml);
  return m ? decodeXml(m[1]!.trim()) : undefined;
}

function decodeXml(s: string): string {
  return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, '&');
}

function encodeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/**
 * The WAN connection services of a root device description, best first, with control URLs made
 * absolute against `base` (URLBase when the description has one, else the description's URL).
 */
export function parseRootDescription(xml: string, base: string): UpnpService[] {
  const urlBase = tag(xml, 'URLBase') || base;
  const out: UpnpService[] = [];
  for (const m of xml.matchAll(/<(?:[\w-]+:)?service\b[^>]*>([\s\S]*?)<\/(?:[\w-]+:)?service>/gi)) {
    const serviceType = tag(m[1]!, 'serviceType');
    const control = tag(m[1]!, 'controlURL');
    if (!serviceType || !control) continue;
    if (!(UPNP_SERVICE_TYPES as readonly string[]).includes(serviceType)) continue;
    let controlUrl: string;
    try { controlUrl = new URL(control, urlBase).toString(); } catch { continue; }
    out.push({ serviceType, controlUrl });
  }
  const rank = (s: UpnpService) => (UPNP_SERVICE_TYPES as readonly string[]).indexOf(s.serviceType);
  return out.sort((a, b) => rank(a) - rank(b));
}

/** A SOAP request body for `action` of `serviceType` with arguments in order. */
export function soapBody(serviceType: string, action: string, args: [string, string | number][]): string {
  const inner = args.map(([k, v]) => `<${k}>${encodeXml(String(v))}</${k}>`).join('');
  return '<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" ' +
    's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>' +
    `<u:${action} xmlns:u="${encodeXml(serviceType)}">${inner}</u:${action}></s:Body></s:Envelope>\r\n`;
}

/** The answer to a SOAP call: named values, or the UPnPError code and text of a fault. */
export type SoapResult = { ok: true; values: Record<string, string> } | { ok: false; code: number; description: string };

/** Parses a SOAP response (or fault) body. */
export function parseSoapResponse(xml: string): SoapResult {
  if (/<(?:[\w-]+:)?Fault\b/i.test(xml)) {
    return { ok: false, code: Number(tag(xml, 'errorCode') ?? 0) || 0, description: tag(xml, 'errorDescription') ?? tag(xml, 'faultstring') ?? 'SOAP fault' };
  }
  const resp = /<(?:[\w-]+:)?(\w+)Response\b[^>]*>([\s\S]*?)<\/(?:[\w-]+:)?\1Response>/i.exec(xml);
  if (!resp) return { ok: false, code: 0, description: 'no response element' };
  const values: Record<string, string> = {};
  for (const m of resp[2]!.matchAll(/<(?:[\w-]+:)?(\w+)\b[^>]*>([\s\S]*?)<\/(?:[\w-]+:)?\1>/g)) values[m[1]!] = decodeXml(m[2]!.trim());
  return { ok: true, values };
}
