// Linux routing and firewall for exit nodes and subnet routes, after tailscaled's router
// (data-plane.md 7). Everything goes through `ip` and `nft`; nothing is touched that is not ours.
//
// Routing (both families), while the agent is up:
//   pref 5210  fwmark 0x80000/0xff0000  lookup main       meshd's own sockets (SO_MARK 0x80000)
//   pref 5230  fwmark 0x80000/0xff0000  lookup default
//   pref 5250  fwmark 0x80000/0xff0000  unreachable        ...never fall into the tunnel
//   pref 5270  lookup 52                                  the tailnet's routes win over main
//   table 52:  accepted subnet routes and, with an exit node, 0.0.0.0/0 and ::/0, all `dev <tun>`;
//              `throw <LAN prefix>` for --exit-node-allow-lan-access (lookup goes on to main)
// Every socket meshd opens for the tailnet's own traffic carries the bypass mark: the WireGuard UDP
// socket, and the TCP connections to control and DERP (src/net/tcp.ts makes their fds natively),
// whatever address their names resolve to. (Earlier versions added pref-5265 rules per control/DERP
// address instead; cleanupStale still removes those.)
// The tailnet range itself stays in main (netconf.ts) so nothing changes for plain peers.
//
// Forwarding (exit node / subnet router): nftables table `inet meshd`; a forward chain marks what
// arrives from the TUN with 0x40000 (tailscale's subnet-route mark) and a postrouting nat chain
// masquerades marked packets leaving any other interface. Accept-policy chains in a table of our
// own: other tables' rules still decide what is forwarded. Forwarding sysctls are checked, not set.
//
// Cleanup: close() removes all of it; cleanupStale() removes leftovers of a crashed agent (rules
// by exact selector, table 52 flushed, the nft table deleted). Table 52 and these priorities are
// tailscale's too: meshd and tailscaled cannot route through exit nodes on the same host.
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import type { Logf } from '../util/log.ts';

const run = promisify(execFile);

/** Routing table of the tailnet's routes (tailscale's, data-plane.md 7.1). */
export const ROUTE_TABLE = 52;
/** SO_MARK on meshd's own sockets: their packets bypass table 52. */
export const BYPASS_MARK = 0x80000;
/** Mark on packets forwarded from the TUN (masqueraded on the way out). */
export const SUBNET_MARK = 0x40000;
/** The part of the mark meshd uses. */
export const MARK_MASK = 0xff0000;
/** Priority of the per-address bypass rules of earlier versions (only removed now, by cleanupStale). */
export const BYPASS_HOST_PRIORITY = 5265;
/** The nftables table (family inet) meshd owns. */
export const NFT_TABLE = 'meshd';

const markSel = `0x${BYPASS_MARK.toString(16)}/0x${MARK_MASK.toString(16)}`;
/** The base policy rules, as `ip rule` selector + action words. */
export const BASE_RULES: readonly string[][] = [
  ['pref', '5210', 'fwmark', markSel, 'lookup', 'main'],
  ['pref', '5230', 'fwmark', markSel, 'lookup', 'default'],
  ['pref', '5250', 'fwmark', markSel, 'unreachable'],
  ['pref', '5270', 'lookup', String(ROUTE_TABLE)],
];

/** Runs a command; resolves stdout, rejects with the command and its stderr. */
export type Exec = (cmd: 'ip' | 'nft', args: string[], input?: string) => Promise<string>;

/** Runs `ip` or `nft` for real. */
export const execCommand: Exec = async (cmd, args, input) => {
  try {
    if (input !== undefined) {
      return await new Promise<string>((resolve, reject) => {
        const child = execFile(cmd, args, { timeout: 10_000 }, (err, stdout, stderr) => {
          if (err) reject(Object.assign(err, { stderr })); else resolve(stdout);
        });
        child.stdin?.end(input);
      });
    }
    return (await run(cmd, args, { timeout: 10_000 })).stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string; code?: string };
    if (err.code === 'ENOENT') throw new Error(`the ${cmd} command is missing: install ${cmd === 'ip' ? 'iproute2' : 'nftables'}`);
    throw new Error(`${cmd} ${args.join(' ')}: ${(err.stderr || err.message).trim()}`);
  }
};

/** What the host should route and forward. */
export interface RouterConfig {
  /** Prefixes routed into the TUN through table 52 (accepted subnet routes, exit routes). */
  routes: readonly string[];
  /** Prefixes that skip table 52 (LAN kept local with --exit-node-allow-lan-access). */
  throwRoutes: readonly string[];
  /** Masquerade traffic from the tailnet leaving other interfaces (exit node, subnet router). */
  masquerade: boolean;
}

const fam = (p: string): string => (p.includes(':') ? '-6' : '-4');

/** The nftables script for masquerading (applied atomically with nft -f -). */
export function nftRuleset(tun: string): string {
  const mark = `0x${SUBNET_MARK.toString(16)}`, mask = `0x${MARK_MASK.toString(16)}`;
  return `table inet ${NFT_TABLE} {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "${tun}" meta mark set meta mark | ${mark}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname != "${tun}" meta mark & ${mask} == ${mark} masquerade
  }
}
`;
}

/** Keeps the host's policy rules, table 52 and the nft table equal to a {@link RouterConfig}. */
export class LinuxRouter {
  private readonly tun: string;
  private readonly log: Logf;
  private readonly exec: Exec;
  private baseRules = false;
  private baseRulesAdding: Promise<void> | undefined;
  private routes = new Set<string>();
  private throws = new Set<string>();
  private nft = false;

  constructor(tun: string, log: Logf, exec: Exec = execCommand) {
    this.tun = tun;
    this.log = log;
    this.exec = exec;
  }

  /**
   * Adds the base policy rules, once (again after a failure). They depend on no map: the agent
   * starts them with the data plane, while control prepares the first map, so that map's
   * application does not wait for (and share the event loop with) eight more ip processes.
   */
  prepare(): Promise<void> {
    if (!this.baseRulesAdding) {
      // Eight rules with distinct priorities, an ip process each, side by side; the two
      // `unreachable` ones last: the control connection (marked) is live while they go in, and a
      // marked packet must find 5210 (lookup main) before it can meet 5250.
      const add = (rules: readonly string[][]): Promise<unknown> =>
        Promise.all(['-4', '-6'].flatMap((f) => rules.map((r) => this.exec('ip', [f, 'rule', 'add', ...r]))));
      const p = add(BASE_RULES.filter((r) => !r.includes('unreachable')))
        .then(() => add(BASE_RULES.filter((r) => r.includes('unreachable'))))
        .then(() => { this.baseRules = true; });
      this.baseRulesAdding = p;
      p.catch(() => { if (this.baseRulesAdding === p) this.baseRulesAdding = undefined; });
    }
    return this.baseRulesAdding;
  }

  /** Applies a configuration, changing only what differs from the last one. */
  async set(cfg: RouterConfig): Promise<void> {
    if (!this.baseRules) await this.prepare();
    const wantRoutes = new Set(cfg.routes), wantThrows = new Set(cfg.throwRoutes);
    for (const t of wantThrows) {
      if (this.throws.has(t)) continue;
      await this.exec('ip', [fam(t), 'route', 'replace', 'throw', t, 'table', String(ROUTE_TABLE)]);
      this.throws.add(t);
    }
    for (const r of this.routes) {
      if (wantRoutes.has(r)) continue;
      await this.exec('ip', [fam(r), 'route', 'del', r, 'dev', this.tun, 'table', String(ROUTE_TABLE)]).catch(() => {});
      this.routes.delete(r);
    }
    for (const r of wantRoutes) {
      if (this.routes.has(r)) continue;
      await this.exec('ip', [fam(r), 'route', 'replace', r, 'dev', this.tun, 'table', String(ROUTE_TABLE)]);
      this.routes.add(r);
      this.log(`route ${r} via ${this.tun} (table ${ROUTE_TABLE})`);
    }
    for (const t of this.throws) {
      if (wantThrows.has(t)) continue;
      await this.exec('ip', [fam(t), 'route', 'del', 'throw', t, 'table', String(ROUTE_TABLE)]).catch(() => {});
      this.throws.delete(t);
    }
    if (cfg.masquerade && !this.nft) {
      await this.exec('nft', ['delete', 'table', 'inet', NFT_TABLE]).catch(() => {});
      await this.exec('nft', ['-f', '-'], nftRuleset(this.tun));
      this.nft = true;
      this.log(`nftables table inet ${NFT_TABLE}: masquerading tailnet traffic leaving other interfaces`);
    } else if (!cfg.masquerade && this.nft) {
      await this.exec('nft', ['delete', 'table', 'inet', NFT_TABLE]).catch(() => {});
      this.nft = false;
    }
  }

  /** Removes everything this router added. Never throws. */
  async close(): Promise<void> {
    await this.baseRulesAdding?.catch(() => {});
    this.baseRulesAdding = undefined;
    const had = this.baseRules || this.nft;
    this.baseRules = this.nft = false;
    this.routes.clear();
    this.throws.clear();
    if (had) await cleanupStale(this.log, this.exec);
  }
}

/**
 * Removes what a meshd agent may have left (after kill -9): the base rules and (older versions') pref-5265 rules of
 * both families, the routes in table 52, the nft table. Bounded loops; never throws.
 */
export async function cleanupStale(log: Logf, exec: Exec = execCommand): Promise<number> {
  let removed = 0;
  const tryExec = async (cmd: 'ip' | 'nft', args: string[]) => { try { await exec(cmd, args); return true; } catch { return false; } };
  // Both families and nft side by side; a rule listing first, so that a clean host (every start)
  // costs five ip/nft processes instead of thirteen failing deletes (~100-250 ms before `up`).
  await Promise.all([...['-4', '-6'].map(async (f) => {
    let rules: string | undefined;
    try { rules = await exec('ip', [f, 'rule', 'show']); } catch { rules = undefined; /* unknown: try every delete */ }
    const present = (pref: string): boolean => rules === undefined || new RegExp(`^${pref}:`, 'm').test(rules);
    // Last rule first: while this runs, the agent may already dial control with the bypass mark,
    // and deleting 5210 (lookup main) before 5250 (unreachable) made that dial fail (ENETUNREACH).
    for (const r of [...BASE_RULES].reverse()) {
      if (!present(r[1]!)) continue;
      for (let i = 0; i < 16 && await tryExec('ip', [f, 'rule', 'del', ...r]); i++) removed++;
    }
    if (present(String(BYPASS_HOST_PRIORITY))) {
      for (let i = 0; i < 256 && await tryExec('ip', [f, 'rule', 'del', 'pref', String(BYPASS_HOST_PRIORITY)]); i++) removed++;
    }
    let listed = '';
    try { listed = await exec('ip', [f, 'route', 'show', 'table', String(ROUTE_TABLE)]); } catch { /* table absent */ }
    if (listed.trim()) { await tryExec('ip', [f, 'route', 'flush', 'table', String(ROUTE_TABLE)]); removed++; }
  }), (async () => { if (await tryExec('nft', ['delete', 'table', 'inet', NFT_TABLE])) removed++; })()]);
  if (removed > 0) log(`removed ${removed} leftover routing/firewall entries of an earlier meshd`);
  return removed;
}

/** Reads a sysctl file; undefined when it is missing. */
function readSysctl(path: string): string | undefined {
  try { return readFileSync(path, 'utf8').trim(); } catch { return undefined; }
}

/**
 * Checks IP forwarding for an exit node or subnet router (data-plane.md 7.6: checked, not set).
 * Returns a warning saying exactly what to run, or undefined when forwarding is on.
 */
export function forwardingWarning(needV4: boolean, needV6: boolean, read = readSysctl): string | undefined {
  const on = (v: string | undefined) => v === '1' || v === '2';
  const off: string[] = [];
  if (needV4 && !on(read('/proc/sys/net/ipv4/ip_forward'))) off.push('net.ipv4.ip_forward=1');
  if (needV6 && !on(read('/proc/sys/net/ipv6/conf/all/forwarding'))) off.push('net.ipv6.conf.all.forwarding=1');
  if (off.length === 0) return undefined;
  return `IP forwarding is off, so subnet routes and exit node traffic will not work: run ` +
    `"sysctl -w ${off.join(' ')}" (and put those lines in /etc/sysctl.d/99-meshd.conf to keep them)`;
}
