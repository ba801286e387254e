// `meshd ping` and `meshd netcheck`: disco pings and a netcheck report from the running agent,
// printed as tailscale prints them (`pong from NAME (IP) via ... in Xms`).
import { LocalApiClient, LocalApiError, type NetcheckReport, type PingReply } from '../daemon/localapi.ts';
import { CliError } from './errors.ts';
import { parseDuration } from './duration.ts';

/** Flags of `meshd ping`. */
export interface PingFlags { c?: string; timeout?: string; untilDirect?: boolean; json?: boolean }

/** The line tailscale ping prints for one pong. */
export function formatPong(r: PingReply): string {
  const via = r.via === 'direct' ? r.endpoint ?? '?' : `DERP(${r.regionCode || r.region})`;
  return `pong from ${r.name} (${r.ip}) via ${via} in ${Math.max(0, Math.round(r.latencyMs))}ms`;
}

/**
 * `meshd ping PEER`: up to -c pings (default 10), one a second as pongs come; stops at the first
 * direct pong unless --until-direct=false. Without a direct pong: exit status 1, as tailscale does.
 */
export async function pingCommand(socket: string, peer: string, f: PingFlags): Promise<void> {
  const count = Number(f.c ?? '10');
  if (!Number.isInteger(count) || count < 1 || count > 1000) throw new CliError(`bad -c ${JSON.stringify(f.c)}: want a count from 1 to 1000`);
  const timeoutMs = parseDuration(f.timeout ?? '5s');
  const api = new LocalApiClient(socket);
  const replies: PingReply[] = [];
  let direct = false;
  for (let i = 0; i < count; i++) {
    const t0 = Date.now();
    try {
      const r = await api.ping({ peer, timeoutMs });
      replies.push(r);
      if (!f.json) console.log(formatPong(r));
      if (r.via === 'direct') { direct = true; if (f.untilDirect !== false) break; }
    } catch (e) {
      if (!(e instanceof LocalApiError)) throw e;
      if (e.code !== 'timeout') throw new CliError(e.message);
      if (!f.json) console.log(`ping "${peer}" timed out`);
    }
    const wait = 1000 - (Date.now() - t0);
    if (i < count - 1 && wait > 0) await new Promise((r) => setTimeout(r, wait));
  }
  if (f.json) console.log(JSON.stringify(replies));
  if (replies.length === 0) throw new CliError(`no reply from ${peer}`);
  if (!direct && f.untilDirect !== false) throw new CliError('direct connection not established');
}

/** The report as `tailscale netcheck` lays it out. */
export function formatNetcheck(r: NetcheckReport): string {
  const home = r.regions.find((g) => g.id === r.preferredDERP);
  const lines = [
    'Report:',
    `\t* UDP: ${r.udp}`,
    `\t* IPv4: ${r.globalV4 ? `yes, ${r.globalV4}` : '(no addr found)'}`,
    `\t* IPv6: ${r.globalV6 ? `yes, ${r.globalV6}` : 'no'}`,
    `\t* MappingVariesByDestIP: ${r.mappingVariesByDestIP ?? ''}`,
    `\t* PortMapping: ${r.portMapping == null ? 'not checked' : r.portMapping.join(', ')}`,
    `\t* Nearest DERP: ${home ? home.name || home.code : 'unknown'}`,
    '\t* DERP latency:',
  ];
  const sorted = [...r.regions].sort((a, b) => (a.latencyMs ?? Infinity) - (b.latencyMs ?? Infinity));
  for (const g of sorted) lines.push(`\t\t- ${g.code || g.id}: ${g.latencyMs === null ? '' : `${g.latencyMs.toFixed(1)}ms`}`.padEnd(24) + ` (${g.name})`);
  return lines.join('\n');
}

/** `meshd netcheck`. */
export async function netcheckCommand(socket: string, f: { json?: boolean }): Promise<void> {
  let r: NetcheckReport;
  try {
    r = await new LocalApiClient(socket).netcheck();
  } catch (e) {
    if (e instanceof LocalApiError) throw new CliError(e.message);
    throw e;
  }
  console.log(f.json ? JSON.stringify(r, null, 2) : formatNetcheck(r));
}
