// Host network configuration for the tailnet interface, through iproute2: addresses and routes on
// our own TUN device only. Everything we add is on the TUN, so it disappears with the device; the
// explicit removals exist for address changes while running.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { Logf } from '../util/log.ts';

const run = promisify(execFile);

/** The tailnet IPv4 range (CGNAT), routed into the TUN. */
export const TAILNET_V4 = '100.64.0.0/10';
/** The tailnet IPv6 range (Tailscale ULA), routed into the TUN. */
export const TAILNET_V6 = 'fd7a:115c:a1e0::/48';

/** Runs `ip ARGS`; throws an error naming the command and ip's message. */
export async function ip(args: string[]): Promise<string> {
  try {
    const r = await run('ip', args, { timeout: 10_000 });
    return r.stdout;
  } catch (e) {
    const err = e as { stderr?: string; message: string; code?: string };
    if (err.code === 'ENOENT') throw new Error('the ip command is missing: install iproute2');
    throw new Error(`ip ${args.join(' ')}: ${(err.stderr ?? err.message).trim()}`);
  }
}

/**
 * Runs `ip -batch -` with one command per line (no global options per line: ip takes the family
 * from each address); throws naming the failed line. One process for what would take one each.
 */
export async function ipBatch(lines: readonly string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = execFile('ip', ['-batch', '-'], { timeout: 10_000 }, (err, _out, stderr) => {
      if (!err) { resolve(); return; }
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') { reject(new Error('the ip command is missing: install iproute2')); return; }
      const failed = /-:(\d+)/.exec(stderr)?.[1];
      const line = failed ? lines[Number(failed) - 1] : undefined;
      reject(new Error(`ip ${line ?? `-batch (${lines.join('; ')})`}: ${(stderr.split('\n').find((l) => l && !/^Command failed/.test(l)) ?? err.message).trim()}`));
    });
    child.stdin?.end(`${lines.join('\n')}\n`);
  });
}

/** Keeps the TUN device's addresses and routes equal to what the network map says. */
export class NetConf {
  private readonly dev: string;
  private readonly log: Logf;
  private addrs = new Set<string>();
  private routes = new Set<string>();

  constructor(dev: string, log: Logf) {
    this.dev = dev;
    this.log = log;
  }

  /** Sets the device's addresses (prefixes like 100.64.0.1/32) and routes (CIDRs). */
  async apply(addresses: readonly string[], routes: readonly string[]): Promise<void> {
    const want = new Set(addresses);
    for (const a of this.addrs) {
      if (!want.has(a)) { await ip(['addr', 'del', a, 'dev', this.dev]).catch(() => {}); this.addrs.delete(a); }
    }
    const wantRoutes = new Set(routes);
    for (const r of this.routes) {
      if (!wantRoutes.has(r)) { await ip([r.includes(':') ? '-6' : '-4', 'route', 'del', r, 'dev', this.dev]).catch(() => {}); this.routes.delete(r); }
    }
    // New addresses, then new routes (a route through the device wants it up and addressed), in
    // one ip process: on a busy host each process costs the event loop a few ms to start.
    const addAddrs = [...want].filter((a) => !this.addrs.has(a));
    const addRoutes = [...wantRoutes].filter((r) => !this.routes.has(r));
    if (addAddrs.length + addRoutes.length === 0) return;
    await ipBatch([
      ...addAddrs.map((a) => `addr replace ${a} dev ${this.dev}${a.includes(':') ? ' nodad' : ''}`),
      ...addRoutes.map((r) => `route replace ${r} dev ${this.dev}`),
    ]);
    for (const a of addAddrs) { this.addrs.add(a); this.log(`address ${a} on ${this.dev}`); }
    for (const r of addRoutes) this.routes.add(r);
  }

  /** Forgets state (the device is gone, and with it its addresses and routes). */
  reset(): void {
    this.addrs.clear();
    this.routes.clear();
  }
}
