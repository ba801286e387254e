// `meshd wait HOST...` and `meshd up --wait-for HOST,...`: return once every host answers a disco
// ping (directly or through DERP), or say which did not within the time given. A host is a tailnet
// IP, a hostname or a node name; one that is not in the map yet is asked again until it appears,
// so a peer joining a moment later still counts. Uses the agent's `ping` (the one of `meshd ping`).
import { LocalApiClient, LocalApiError, type PingReply } from '../daemon/localapi.ts';
import { CliError } from './errors.ts';
import { parseDuration } from './duration.ts';
import { formatPong } from './magic.ts';

/** How long one ping waits for its pong before the next is sent (ms). */
export const PING_TRY_MS = 2_000;
/** Pause before asking again about a host that is not in the map, or has no disco key yet (ms). */
export const NOT_YET_MS = 250;

/** The outcome for one host. */
export type WaitResult =
  | { host: string; ok: true; reply: PingReply; ms: number }
  | { host: string; ok: false; reason: string };

/** What waitForHosts needs from the agent (the local API client, or a fake in tests). */
export interface Pinger {
  ping(req: { peer: string; timeoutMs: number }): Promise<PingReply>;
}

/** Splits `a,b c` lists of hosts; rejects empty or odd names. */
export function parseHosts(values: readonly string[]): string[] {
  const out: string[] = [];
  for (const v of values) {
    for (const h of v.split(/[\s,]+/)) {
      if (!h) continue;
      if (!/^[A-Za-z0-9.:_@-]{1,253}$/.test(h)) throw new CliError(`bad host ${JSON.stringify(h)}: give a tailnet IP, a hostname or a node name`);
      if (!out.includes(h)) out.push(h);
    }
  }
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Pings every host until it answers or `deadline` (Date.now() ms) passes. Each host is pinged on
 * its own, at once and again after every timeout, so the first answer ends its wait.
 */
export async function waitForHosts(api: Pinger, hosts: readonly string[], deadline: number, onAnswer?: (r: WaitResult & { ok: true }) => void): Promise<WaitResult[]> {
  const t0 = Date.now();
  return Promise.all(hosts.map(async (host): Promise<WaitResult> => {
    let reason = 'no answer';
    for (let i = 0; i < 100_000; i++) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      try {
        const reply = await api.ping({ peer: host, timeoutMs: Math.max(100, Math.min(PING_TRY_MS, left)) });
        const r = { host, ok: true as const, reply, ms: Date.now() - t0 };
        onAnswer?.(r);
        return r;
      } catch (e) {
        if (!(e instanceof LocalApiError)) throw e;
        if (e.code === 'not_running' || e.code === 'permission') throw new CliError(e.message);
        reason = e.code === 'no_such_peer' ? 'not in the tailnet' : e.code === 'timeout' ? 'no answer' : e.message;
        if (e.code !== 'timeout') await sleep(Math.min(NOT_YET_MS, Math.max(0, deadline - Date.now())));
      }
    }
    return { host, ok: false, reason };
  }));
}

/** The one line per host that did not answer. */
export function failureLine(r: WaitResult & { ok: false }, waitedMs: number): string {
  return `${r.host} did not answer within ${(waitedMs / 1000).toFixed(waitedMs < 10_000 ? 1 : 0)}s (${r.reason})`;
}

/** Waits for the hosts; prints a pong line per answer (stdout or stderr) and fails naming the rest. */
export async function waitAndReport(api: Pinger, hosts: readonly string[], deadline: number, out: (line: string) => void): Promise<void> {
  const t0 = Date.now();
  const results = await waitForHosts(api, hosts, deadline, (r) => out(`${formatPong(r.reply)} (after ${r.ms}ms)`));
  const failed = results.filter((r): r is WaitResult & { ok: false } => !r.ok);
  if (failed.length === 0) return;
  const waited = Date.now() - t0;
  // All but the last go out as lines of their own; the last is the command's error line.
  for (const f of failed.slice(0, -1)) console.error(`meshd: ${failureLine(f, waited)}`);
  throw new CliError(failureLine(failed[failed.length - 1]!, waited));
}

/** `meshd wait HOST...`. */
export async function waitCommand(socket: string, hosts: string[], f: { timeout?: string; json?: boolean }): Promise<void> {
  const list = parseHosts(hosts);
  if (list.length === 0) throw new CliError('meshd wait needs at least one host');
  let timeoutMs: number;
  try {
    timeoutMs = parseDuration(f.timeout ?? '30s');
  } catch (e) {
    throw new CliError(`--timeout: ${(e as Error).message}`);
  }
  const api = new LocalApiClient(socket);
  if (f.json) {
    const results = await waitForHosts(api, list, Date.now() + timeoutMs);
    console.log(JSON.stringify(results));
    if (results.some((r) => !r.ok)) process.exitCode = 1;
    return;
  }
  await waitAndReport(api, list, Date.now() + timeoutMs, (l) => console.log(l));
}
