// Which mechanism configures the host's resolver, decided as tailscale's net/dns dnsMode does on
// Linux (TS:net/dns/manager_linux.go dnsMode, resolvedIsActuallyResolver; direct.go resolvOwner;
// dns-netstack-portmap.md 1.8):
//
//   /etc/resolv.conf missing                        -> direct
//   owner (last leading # comment naming it):
//     systemd-resolved, really in use               -> systemd-resolved (network-manager for NM 1.26.0-1.26.5)
//     systemd-resolved, not in use                  -> direct
//     resolvconf: Debian's | openresolv | missing   -> debian-resolvconf | openresolv | direct
//     NetworkManager, resolved in use               -> systemd-resolved (or network-manager)
//     anything else                                 -> direct
//   "really in use": nsswitch `hosts:` lists resolve before dns, or every nameserver is 127.0.0.53.
//
// meshd implements direct and systemd-resolved; where tailscale would drive resolvconf or
// NetworkManager, meshd uses direct and says so (`meshd dns status`).
import { parseResolvConf } from './resolvconf.ts';

/** A configurator tailscale may pick. */
export type DnsMode = 'direct' | 'systemd-resolved' | 'debian-resolvconf' | 'openresolv' | 'network-manager';

/** What detection reads from the host (injected for tests). */
export interface ModeEnv {
  readFile(path: string): string | undefined;
  /** systemd-resolved answers (its varlink or D-Bus endpoint exists). */
  resolvedRunning(): boolean;
  /** NetworkManager runs and manages DNS through resolved. */
  nmUsesResolved(): boolean;
  /** The resolvconf flavour installed ('' = none). */
  resolvconfStyle(): '' | 'debian' | 'openresolv';
}

/** The mode, and a short trace of why (for logs and `dns status`). */
export interface ModeDecision {
  readonly mode: DnsMode;
  readonly why: string;
}

/** The owner a resolv.conf's leading comments name (TS resolvOwner). */
export function resolvOwner(text: string): '' | 'systemd-resolved' | 'NetworkManager' | 'resolvconf' {
  let likely: '' | 'systemd-resolved' | 'NetworkManager' | 'resolvconf' = '';
  const lines = text.split('\n');
  // Go's ReadString loop ignores a last line without a newline.
  for (let i = 0; i < lines.length - 1; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    if (!line.startsWith('#')) return likely;
    if (line.includes('systemd-resolved')) likely = 'systemd-resolved';
    else if (line.includes('NetworkManager')) likely = 'NetworkManager';
    else if (line.includes('resolvconf')) likely = 'resolvconf';
  }
  return likely;
}

/** TS resolvedIsActuallyResolver: libnss_resolve before dns, or only 127.0.0.53 as nameserver. */
export function resolvedInUse(env: ModeEnv, resolvConf: string): boolean {
  const nss = env.readFile('/etc/nsswitch.conf');
  if (nss !== undefined) {
    for (const line of nss.split('\n')) {
      const f = line.trim().split(/\s+/);
      if (f.length < 2 || f[0] !== 'hosts:') continue;
      for (const m of f.slice(1)) {
        if (m === 'dns') break;
        if (m === 'resolve') return true;
      }
    }
  }
  const ns = parseResolvConf(resolvConf).nameservers;
  return ns.length > 0 && ns.every((n) => n === '127.0.0.53');
}

/** Decides the mode (TS dnsMode). */
export function detectMode(env: ModeEnv): ModeDecision {
  const rc = env.readFile('/etc/resolv.conf');
  if (rc === undefined) return { mode: 'direct', why: '/etc/resolv.conf is missing' };
  switch (resolvOwner(rc)) {
    case 'systemd-resolved':
      if (!resolvedInUse(env, rc)) return { mode: 'direct', why: 'resolv.conf names systemd-resolved but does not use it' };
      return { mode: 'systemd-resolved', why: 'systemd-resolved manages /etc/resolv.conf' };
    case 'resolvconf': {
      const style = env.resolvconfStyle();
      if (style === 'debian') return { mode: 'debian-resolvconf', why: 'Debian resolvconf manages /etc/resolv.conf' };
      if (style === 'openresolv') return { mode: 'openresolv', why: 'openresolv manages /etc/resolv.conf' };
      return { mode: 'direct', why: 'resolv.conf names resolvconf, which is not installed' };
    }
    case 'NetworkManager':
      if (!resolvedInUse(env, rc)) return { mode: 'direct', why: 'NetworkManager writes resolv.conf itself' };
      if (!env.nmUsesResolved() && !env.resolvedRunning()) return { mode: 'direct', why: 'NetworkManager without systemd-resolved' };
      return { mode: 'systemd-resolved', why: 'NetworkManager uses systemd-resolved' };
    default:
      return { mode: 'direct', why: 'no resolver manager owns /etc/resolv.conf' };
  }
}
