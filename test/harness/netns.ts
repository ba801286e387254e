// Network-namespace lab for e2e tests and benchmarks. Every namespace is named meshd-*, every
// address comes from the plan in DEVELOPERS.md (198.18.0.0/24 simulated internet, 198.19.N.0/24
// LANs, 2001:db8::/32), and everything is removed on dispose() and on process exit, also when a
// test fails. Nothing is added to the root namespace.
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { sh } from './prereq.ts';

const live = new Set<Lab>();
process.on('exit', () => {
  for (const lab of live) lab.disposeSync();
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    for (const lab of live) lab.disposeSync();
    process.exit(130);
  });
}

/** A set of namespaces and processes that belong to one test. */
export class Lab {
  readonly prefix: string;
  readonly namespaces: string[] = [];
  readonly procs: ChildProcess[] = [];
  private disposed = false;

  constructor(tag: string) {
    // Short names: interface names derived from them must fit in 15 bytes.
    this.prefix = `meshd-${tag}-${process.pid % 100000}`;
    live.add(this);
  }

  /** Creates namespace `${prefix}-${name}` with loopback up; returns its full name. */
  ns(name: string): string {
    const full = `${this.prefix}-${name}`;
    spawnSync('ip', ['netns', 'del', full]);
    sh('ip', ['netns', 'add', full]);
    this.namespaces.push(full);
    this.exec(full, ['ip', 'link', 'set', 'lo', 'up']);
    return full;
  }

  /** Runs a command inside a namespace and returns stdout (throws on failure). */
  exec(ns: string, argv: string[], opts: { input?: string; timeoutMs?: number } = {}): string {
    const [cmd, ...rest] = argv;
    if (!cmd) throw new Error('exec: empty argv');
    return sh('ip', ['netns', 'exec', ns, cmd, ...rest], opts);
  }

  /** Like exec, but returns {status, stdout, stderr} instead of throwing. */
  tryExec(ns: string, argv: string[], timeoutMs = 30_000): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', timeout: timeoutMs });
    return { status: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  }

  /** Starts a long-running process in a namespace; it is killed on dispose. */
  spawn(ns: string, argv: string[], opts: SpawnOptions = {}): ChildProcess {
    const p = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    // Always drain: Node writes to pipes synchronously, so an unread pipe that fills up blocks the
    // child. Listeners attached right after spawn() still see every chunk.
    p.stdout?.resume();
    p.stderr?.resume();
    this.procs.push(p);
    return p;
  }

  /**
   * Joins two namespaces with a veth pair and gives each end an IPv4 /24 and an IPv6 /64 address.
   * `a4`/`b4` are full IPv4 addresses in the same /24, `a6`/`b6` IPv6 addresses in the same /64.
   */
  link(a: string, b: string, addrs: { a4: string; b4: string; a6?: string; b6?: string }, names = { a: 'veth0', b: 'veth0' }): void {
    const tmpA = `mv${process.pid % 100000}a${this.namespaces.length}`;
    const tmpB = `mv${process.pid % 100000}b${this.namespaces.length}`;
    // Created directly inside the namespaces, so the root namespace never sees the interfaces.
    sh('ip', ['link', 'add', tmpA, 'netns', a, 'type', 'veth', 'peer', 'name', tmpB, 'netns', b]);
    this.exec(a, ['ip', 'link', 'set', tmpA, 'name', names.a]);
    this.exec(b, ['ip', 'link', 'set', tmpB, 'name', names.b]);
    this.exec(a, ['ip', 'addr', 'add', `${addrs.a4}/24`, 'dev', names.a]);
    this.exec(b, ['ip', 'addr', 'add', `${addrs.b4}/24`, 'dev', names.b]);
    if (addrs.a6 && addrs.b6) {
      this.exec(a, ['ip', 'addr', 'add', `${addrs.a6}/64`, 'dev', names.a, 'nodad']);
      this.exec(b, ['ip', 'addr', 'add', `${addrs.b6}/64`, 'dev', names.b, 'nodad']);
    }
    this.exec(a, ['ip', 'link', 'set', names.a, 'up']);
    this.exec(b, ['ip', 'link', 'set', names.b, 'up']);
  }

  /** Makes namespace `sw` a switch: a bridge br0 that {@link attach} plugs hosts into. */
  switch(sw: string): void {
    this.exec(sw, ['ip', 'link', 'add', 'br0', 'type', 'bridge']);
    this.exec(sw, ['ip', 'link', 'set', 'br0', 'up']);
  }

  /** Plugs namespace `ns` into switch `sw` with interface `dev` and the given addresses (with prefix). */
  attach(ns: string, sw: string, addrs: string[], dev = 'veth0'): void {
    const n = this.ports++;
    const tmpA = `mv${process.pid % 100000}p${n}`;
    const tmpB = `mv${process.pid % 100000}s${n}`;
    sh('ip', ['link', 'add', tmpA, 'netns', ns, 'type', 'veth', 'peer', 'name', tmpB, 'netns', sw]);
    this.exec(ns, ['ip', 'link', 'set', tmpA, 'name', dev]);
    this.exec(sw, ['ip', 'link', 'set', tmpB, 'master', 'br0']);
    this.exec(sw, ['ip', 'link', 'set', tmpB, 'up']);
    for (const a of addrs) {
      this.exec(ns, ['ip', 'addr', 'add', a, 'dev', dev, ...(a.includes(':') ? ['nodad'] : [])]);
    }
    this.exec(ns, ['ip', 'link', 'set', dev, 'up']);
  }

  private ports = 0;

  /** Kills processes and deletes the namespaces. Safe to call twice. */
  async dispose(): Promise<void> {
    for (const p of this.procs) {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    }
    const deadline = Date.now() + 3000;
    for (const p of this.procs) {
      while (p.exitCode === null && p.signalCode === null && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    this.disposeSync();
  }

  /** Synchronous teardown for exit handlers: SIGKILL whatever is left, then delete namespaces. */
  disposeSync(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const p of this.procs) {
      if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    }
    for (const ns of this.namespaces) {
      // Kill anything still running in the namespace (e.g. daemons that forked away from us).
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean)) {
        try { process.kill(Number(pid), 'SIGKILL'); } catch { /* gone */ }
      }
      spawnSync('ip', ['netns', 'del', ns]);
    }
    live.delete(this);
  }
}

/** Waits until fn returns true, polling every `everyMs`, for at most `timeoutMs`. */
export async function waitFor(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 10_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let i = 0; Date.now() < deadline && i < 100_000; i++) {
    if (await fn()) return;
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}
