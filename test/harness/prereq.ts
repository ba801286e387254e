// Prerequisite checks for tests that need root, kernel features or real peers.
// Outside CI a missing prerequisite skips the test with a sentence naming what is missing;
// with CI=true it is a failure, never a skip (CI must install everything it needs).
import { accessSync, constants, existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { delimiter, join } from 'node:path';

/** Finds an executable on PATH, in ~/go/bin or in extra directories; undefined when absent. */
export function which(cmd: string, extraDirs: string[] = []): string | undefined {
  const home = process.env.HOME ?? '/root';
  const dirs = [...(process.env.PATH ?? '').split(delimiter), join(home, 'go', 'bin'), ...extraDirs];
  for (const d of dirs) {
    if (!d) continue;
    const p = join(d, cmd);
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** One missing thing and how to get it. */
export interface Missing {
  what: string;
  fix: string;
}

/** Checks root, /dev/net/tun, netns support and the listed commands. */
export function checkPrereqs(opts: { root?: boolean; tun?: boolean; commands?: string[] }): Missing[] {
  const missing: Missing[] = [];
  if (opts.root && process.getuid?.() !== 0) missing.push({ what: 'root', fix: 'run the tests as root' });
  if (opts.tun && !existsSync('/dev/net/tun')) missing.push({ what: '/dev/net/tun', fix: 'load the tun module' });
  for (const c of opts.commands ?? []) {
    if (!which(c)) missing.push({ what: `command ${c}`, fix: installHint(c) });
  }
  return missing;
}

function installHint(cmd: string): string {
  switch (cmd) {
    case 'wireguard-go': return 'apt-get install wireguard-go';
    case 'wg': return 'apt-get install wireguard-tools';
    case 'iperf3': return 'apt-get install iperf3';
    case 'nft': return 'apt-get install nftables';
    case 'ip': return 'apt-get install iproute2';
    case 'ping': return 'apt-get install iputils-ping';
    case 'headscale': return 'scripts/install-peers.sh (builds headscale v0.29.2 with go)';
    case 'tailscaled':
    case 'tailscale':
    case 'derper': return 'scripts/install-peers.sh (builds tailscale v1.102.3 with go)';
    default: return `install ${cmd}`;
  }
}

/**
 * Returns a skip reason (string) when prerequisites are missing outside CI, false when all are
 * present; throws under CI=true. Use as `it('...', { skip: needs({...}) }, ...)`.
 */
export function needs(opts: { root?: boolean; tun?: boolean; commands?: string[] }): string | false {
  const missing = checkPrereqs(opts);
  if (missing.length === 0) return false;
  const text = missing.map((m) => `${m.what} (${m.fix})`).join(', ');
  if (process.env.CI === 'true') throw new Error(`missing prerequisites under CI: ${text}`);
  return `missing: ${text}`;
}

/** Runs a command synchronously and returns stdout; throws with stderr on failure. */
export function sh(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', input: opts.input, timeout: opts.timeoutMs ?? 30_000 });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}
