// `meshd dns status [--json]` and `meshd dns query NAME [TYPE] [--json]`, laid out as tailscale's
// (TS:cmd/tailscale/cli/dns-status.go, dns-query.go).
import { Buffer } from 'node:buffer';
import { LocalApiClient, LocalApiError } from '../daemon/localapi.ts';
import type { DnsStatus } from '../dns/service.ts';
import { packet } from '../dns/codec.ts';
import { CliError } from './errors.ts';

const RCODE_NAMES = ['RCodeSuccess', 'RCodeFormatError', 'RCodeServerFailure', 'RCodeNameError', 'RCodeNotImplemented', 'RCodeRefused'];

async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof LocalApiError) throw new CliError(e.message);
    throw e;
  }
}

/** The text of `meshd dns status`. */
export function formatDnsStatus(s: DnsStatus): string {
  const l: string[] = [];
  l.push("=== 'Use Tailscale DNS' status ===", '');
  if (s.acceptDns) {
    l.push('Tailscale DNS: enabled.', '', 'meshd is configured to handle DNS queries on this device.',
      "Run 'meshd up --accept-dns=false' to revert to your system default DNS resolver.");
  } else {
    l.push('Tailscale DNS: disabled.', '', "(Run 'meshd up --accept-dns' to start sending DNS queries to the meshd DNS resolver.)");
  }
  l.push('', '=== MagicDNS configuration ===', '', 'This is the DNS configuration provided by the coordination server to this device.', '');
  if (s.magicDNS) l.push(`MagicDNS: enabled tailnet-wide (suffix = ${s.suffix}).`, '', `Other devices in your tailnet can reach this device at ${s.selfName}`);
  else l.push('MagicDNS: disabled tailnet-wide.');
  l.push('', 'Resolvers (in preference order):');
  if (s.resolvers.length === 0) l.push('  (no resolvers configured, system default will be used: see \'System DNS configuration\' below)');
  for (const r of s.resolvers) l.push(`  - ${r}`);
  l.push('', 'Split DNS Routes:');
  const routes = Object.entries(s.splitRoutes);
  if (routes.length === 0) l.push('  (no routes configured: split DNS disabled)');
  for (const [d, rs] of routes.sort()) for (const r of rs.length ? rs : ['(answered by quad-100)']) l.push(`  - ${d.padEnd(30)} -> ${r}`);
  l.push('', 'Search Domains:');
  if (s.searchDomains.length === 0) l.push('  (no search domains configured)');
  for (const d of s.searchDomains) l.push(`  - ${d}`);
  if (s.extraRecords.length > 0) {
    l.push('', 'Extra DNS Records:');
    for (const r of s.extraRecords) l.push(`  - ${r.name} ${r.type || 'A'} ${r.value}`);
  }
  if (s.unusable.length > 0) l.push('', `Resolvers meshd cannot use (DNS over HTTPS): ${s.unusable.join(', ')}`);
  l.push('', '=== System DNS configuration ===', '');
  const h = s.host;
  l.push(`Mode: ${h.mode}${h.detected ? ` (tailscale would use ${h.detected}; meshd uses direct)` : ''}${h.why ? ` -- ${h.why}` : ''}`);
  if (h.applied) {
    l.push(`Nameservers: ${h.applied.nameservers.join(' ') || '-'}`);
    l.push(`Search domains: ${h.applied.searchDomains.join(' ') || '-'}`);
    if (h.applied.matchDomains.length) l.push(`Match domains: ${h.applied.matchDomains.join(' ')}`);
  }
  if (h.error) l.push(`Error: ${h.error}`);
  return l.join('\n');
}

/** `meshd dns status`. */
export async function dnsStatusCommand(socket: string, f: { json?: boolean }): Promise<void> {
  const s = await call(() => new LocalApiClient(socket).dnsStatus());
  console.log(f.json ? JSON.stringify(s, null, 2) : formatDnsStatus(s));
}

/** One answer row as tailscale prints it. */
interface Row { name: string; ttl: number; class: string; type: string; body: string }

function bodyOf(a: { type: string; data?: unknown }): string {
  const d = a.data;
  if (typeof d === 'string') return a.type === 'PTR' || a.type === 'CNAME' || a.type === 'NS' ? `${d}.` : d;
  if (Array.isArray(d)) return d.map((x) => Buffer.isBuffer(x) ? x.toString() : String(x)).join(' ');
  return JSON.stringify(d);
}

/** `meshd dns query NAME [TYPE]`. */
export async function dnsQueryCommand(socket: string, name: string, type: string | undefined, f: { json?: boolean }): Promise<void> {
  const qtype = (type ?? 'A').toUpperCase();
  if (!/^[A-Z0-9]{1,10}$/.test(qtype)) throw new CliError(`bad query type ${JSON.stringify(type)}: want A, AAAA, PTR, TXT, ...`);
  const r = await call(() => new LocalApiClient(socket).dnsQuery(name, qtype));
  const msg = packet.decode(Buffer.from(r.bytes, 'base64'));
  const rcode = (msg.flags ?? 0) & 0xf;
  const answers: Row[] | null = rcode === 0 ? (msg.answers ?? []).map((a) => ({
    name: `${a.name}.`, ttl: 'ttl' in a ? a.ttl ?? 0 : 0, class: `Class${'class' in a ? a.class ?? 'IN' : 'IN'}`.replace('ClassIN', 'ClassINET'),
    type: `Type${a.type}`, body: bodyOf(a as { type: string; data?: unknown }),
  })) : null;
  const code = RCODE_NAMES[rcode] ?? `RCode${rcode}`;
  if (f.json) {
    console.log(JSON.stringify({ Name: name, QueryType: qtype, Resolvers: r.resolvers.map((a) => ({ Addr: a })), ResponseCode: code, Answers: answers }, null, 2));
    return;
  }
  const out: string[] = [`DNS query for ${JSON.stringify(name)} (${qtype}) using internal resolver:`, ''];
  if (r.resolvers.length === 1) out.push(`Forwarding to resolver: ${r.resolvers[0]}`);
  else { out.push('Multiple resolvers available:'); for (const a of r.resolvers) out.push(`  - ${a}`); }
  out.push('', `Response code: ${code}`, '');
  if (answers === null) out.push('No answers were returned.');
  else {
    if (answers.length === 0) out.push('  (no answers found)');
    const rows = [['Name', 'TTL', 'Class', 'Type', 'Body'], ['----', '---', '-----', '----', '----'], ...answers.map((a) => [a.name, String(a.ttl), a.class, a.type, a.body])];
    const w = rows[0]!.map((_, i) => Math.max(...rows.map((x) => x[i]!.length)));
    for (const row of rows) out.push(row.map((c, i) => (i < row.length - 1 ? c.padEnd(w[i]! + 2) : c)).join(''));
    out.push('');
  }
  console.log(out.join('\n'));
}
