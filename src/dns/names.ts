// DNS name helpers with tailscale's semantics (TS:util/dnsname): names are FQDN strings, lowercase
// ASCII where they are keys, with a trailing dot; "." is the root. A label is 1-63 bytes and a name
// at most 254 characters with its trailing dot. Reverse names: d.c.b.a.in-addr.arpa. and exactly 32
// nibbles under ip6.arpa. (TS:net/dns/resolver/tsdns.go rdnsNameToIPv4/6).
import { isIPv4, isIPv6 } from 'node:net';

/** Longest name in presentation form, trailing dot included (RFC 1035 2.3.4, as tailscale counts). */
export const MAX_NAME_LENGTH = 254;
/** Longest label (RFC 1035 2.3.4). */
export const MAX_LABEL_LENGTH = 63;

/** An invalid DNS name; the message names it. */
export class DnsNameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DnsNameError';
  }
}

/** `s` as an FQDN (trailing dot added, one leading dot dropped); throws DnsNameError on an empty or long label or name. */
export function toFQDN(s: string): string {
  if (s === '' || s === '.') return '.';
  if (s.startsWith('.')) s = s.slice(1);
  const raw = s.endsWith('.') ? s : `${s}.`;
  if (raw.length > MAX_NAME_LENGTH) throw new DnsNameError(`${JSON.stringify(s)} is too long to be a DNS name`);
  let start = 0;
  for (let i = 0; i < raw.length; i++) {
    if (raw.charCodeAt(i) !== 0x2e) continue;
    const n = i - start;
    if (n === 0 || n > MAX_LABEL_LENGTH) throw new DnsNameError(`${JSON.stringify(raw.slice(start, i))} is not a valid DNS label`);
    start = i + 1;
  }
  return raw;
}

/** ASCII lowercase (DNS names compare case-insensitively only in ASCII, RFC 4343). */
export function asciiLower(s: string): string {
  return /[A-Z]/.test(s) ? s.replace(/[A-Z]+/g, (m) => m.toLowerCase()) : s;
}

/** `name` ends with `zone` on a label boundary, or equals it (both FQDNs; "." contains everything). */
export function zoneContains(zone: string, name: string): boolean {
  if (zone === name || zone === '.') return true;
  return name.length > zone.length && name.endsWith(zone) && name.charCodeAt(name.length - zone.length - 1) === 0x2e;
}

/** Labels in an FQDN ("." has 0). */
export function labelCount(fqdn: string): number {
  if (fqdn === '.') return 0;
  let n = 0;
  for (let i = 0; i < fqdn.length; i++) if (fqdn.charCodeAt(i) === 0x2e) n++;
  return n;
}

/** The IPv4 address of a `d.c.b.a.in-addr.arpa.` name, or undefined. */
export function reverseToIPv4(fqdn: string): string | undefined {
  const suffix = '.in-addr.arpa.';
  if (!fqdn.endsWith(suffix)) return undefined;
  const parts = fqdn.slice(0, -suffix.length).split('.');
  if (parts.length !== 4) return undefined;
  const ip = parts.reverse().join('.');
  return isIPv4(ip) && !parts.some((p) => p.length > 1 && p.startsWith('0')) ? ip : undefined;
}

/** The IPv6 address (canonical text) of a 32-nibble `...ip6.arpa.` name, or undefined. */
export function reverseToIPv6(fqdn: string): string | undefined {
  const suffix = '.ip6.arpa.';
  if (!fqdn.endsWith(suffix)) return undefined;
  const s = fqdn.slice(0, -suffix.length);
  if (s.length !== 63) return undefined;
  let hex = '';
  for (let i = s.length - 1; i >= 0; i -= 2) {
    const c = s[i]!;
    if (!/[0-9a-f]/.test(c) || (i > 0 && s[i - 1] !== '.')) return undefined;
    hex += c;
  }
  return canonicalIPv6(hex.match(/.{4}/g)!.join(':'));
}

/** RFC 5952 text of an IPv6 address, or undefined when `ip` is not one. */
export function canonicalIPv6(ip: string): string | undefined {
  if (!isIPv6(ip)) return undefined;
  // URL parsing yields the RFC 5952 canonical form.
  return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
}

/** The reverse-lookup name of an IPv4 or IPv6 address. */
export function reverseName(ip: string): string {
  if (isIPv4(ip)) return `${ip.split('.').reverse().join('.')}.in-addr.arpa.`;
  const b = ipv6Bytes(ip);
  let out = '';
  for (let i = 15; i >= 0; i--) out += `${(b[i]! & 15).toString(16)}.${(b[i]! >> 4).toString(16)}.`;
  return `${out}ip6.arpa.`;
}

/** The 16 bytes of an IPv6 address (throws on bad text). */
export function ipv6Bytes(ip: string): Uint8Array {
  const c = canonicalIPv6(ip);
  if (c === undefined) throw new DnsNameError(`${JSON.stringify(ip)} is not an IPv6 address`);
  const [head, tail] = c.includes('::') ? c.split('::') as [string, string] : [c, undefined];
  const h = head ? head.split(':') : [];
  const t = tail ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => { const v = Number.parseInt(g, 16); out[i * 2] = v >> 8; out[i * 2 + 1] = v & 255; });
  return out;
}

/** Tailscale's 4to6 range fd7a:115c:a1e0:ab12:4843:cd96:6200::/104: the IPv4 address inside, or undefined (TS:net/tsaddr Tailscale6to4). */
export function tailscale6to4(ip: string): string | undefined {
  if (!isIPv6(ip)) return undefined;
  const b = ipv6Bytes(ip);
  const pre = [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0xab, 0x12, 0x48, 0x43, 0xcd, 0x96, 0x62];
  for (let i = 0; i < pre.length; i++) if (b[i] !== pre[i]) return undefined;
  return `100.${b[13]}.${b[14]}.${b[15]}`;
}
