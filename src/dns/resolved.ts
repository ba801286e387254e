// systemd-resolved mode: per-link DNS on the TUN through resolvectl, after TS:net/dns/resolved.go
// setConfigOverDBus (dns-netstack-portmap.md 1.8). resolvectl makes the same D-Bus calls:
//
//   resolvectl dns TUN IP...                SetLinkDNS
//   resolvectl domain TUN d... ~m... [~.]   SetLinkDomains: search domains, match domains, and the
//                                           routing-only root when there are servers but no match domains
//   resolvectl default-route TUN yes|no     SetLinkDefaultRoute(no match domains)
//   resolvectl llmnr|mdns|dnssec|dnsovertls TUN no
//   resolvectl flush-caches                 FlushCaches
//   resolvectl revert TUN                   RevertLink (on down; the link's settings also go with the TUN)
import { execFile } from 'node:child_process';
import type { Logf } from '../util/log.ts';
import type { OSConfig } from './config.ts';

/** Runs resolvectl with arguments; rejects with its stderr. */
export type ResolvectlExec = (args: string[]) => Promise<void>;

/** Runs the real resolvectl (5 s budget per call). */
export const runResolvectl: ResolvectlExec = (args) => new Promise((resolve, reject) => {
  execFile('resolvectl', args, { timeout: 5_000 }, (err, out, stderr) => {
    if (!err) { resolve(); return; }
    const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string };
    if (e.code === 'ENOENT') { reject(new Error('resolvectl is missing: install systemd-resolved, or set up the host without it (meshd then uses direct mode)')); return; }
    const why = (stderr || out).trim() || (e.killed ? 'no answer within 5 s' : `exit status ${String(e.code ?? e.signal)}`);
    reject(new Error(`resolvectl ${args.join(' ')}: ${why}`));
  });
});

/** The resolvectl calls that put `cfg` on link `tun`, in order. */
export function resolvedCommands(tun: string, cfg: OSConfig): string[][] {
  const domains = [
    ...cfg.searchDomains.map((d) => trim(d)),
    ...cfg.matchDomains.map((d) => `~${trim(d)}`),
  ];
  if (cfg.nameservers.length > 0 && cfg.matchDomains.length === 0) domains.push('~.');
  return [
    ['dns', tun, ...cfg.nameservers],
    ['domain', tun, ...domains],
    ['default-route', tun, cfg.matchDomains.length === 0 ? 'yes' : 'no'],
    ['llmnr', tun, 'no'],
    ['mdns', tun, 'no'],
    ['dnssec', tun, 'no'],
    ['dnsovertls', tun, 'no'],
    ['flush-caches'],
  ];
}

function trim(d: string): string {
  return d === '.' ? '.' : d.replace(/\.$/, '');
}

/** Configures systemd-resolved for the TUN link. */
export class ResolvedManager {
  private readonly tun: string;
  private readonly log: Logf;
  private readonly exec: ResolvectlExec;
  private applied = false;

  constructor(tun: string, log: Logf, exec: ResolvectlExec = runResolvectl) {
    this.tun = tun;
    this.log = log;
    this.exec = exec;
  }

  /** Applies `cfg` (an empty one reverts the link). */
  async set(cfg: OSConfig): Promise<void> {
    if (cfg.nameservers.length === 0 && cfg.searchDomains.length === 0) { await this.revert(); return; }
    const cmds = resolvedCommands(this.tun, cfg);
    // resolved learns about a new TUN from netlink: the first call may race it, so it is retried.
    for (let i = 0; ; i++) {
      try { await this.exec(cmds[0]!); break; } catch (e) {
        if (i >= 4 || /no answer within/.test((e as Error).message)) throw e;
        await new Promise((r) => setTimeout(r, 200 * (i + 1)));
      }
    }
    for (const args of cmds.slice(1)) await this.exec(args);
    this.applied = true;
    this.log(`dns: systemd-resolved: link ${this.tun} dns ${cfg.nameservers.join(' ')}; domains ${resolvedCommands(this.tun, cfg)[1]!.slice(2).join(' ')}`);
  }

  /** Reverts the link's settings (never throws: the TUN going away also drops them). */
  async revert(): Promise<void> {
    if (!this.applied) return;
    this.applied = false;
    await this.exec(['revert', this.tun]).catch((e: Error) => this.log(`dns: ${e.message}`));
  }
}
