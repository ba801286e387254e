// The agent's own entry: the `meshd --socket S daemon ...` command line that `up` starts
// (agentspawn.ts agentArgs), run without commander or the other commands. bin/meshd.js loads it from
// dist/bundle/cli/agent.cjs, a CommonJS bundle compiled from a V8 code cache made at build time
// (scripts/bundle.mjs, bin/codecache.js): the agent's start-up is on the way to the register
// request, and each ms of it is a ms later for the first packet (README, bench-nat). Anything but
// the plain shape (help, an unknown or repeated flag, a bad value) goes to commander in main.ts,
// which gives the usual messages.
import type { DaemonFlags } from './tailnet.ts';
import { CliError } from './errors.ts';
import { defaultSocket } from './paths.ts';
import { timeline } from '../util/timeline.ts';

timeline('agent entry loaded');

const VALUE_FLAGS: Record<string, keyof DaemonFlags> = {
  '--state-dir': 'stateDir', '--state': 'state', '--tun': 'tun', '--port': 'port', '--debug': 'debug',
  '--socks5-server': 'socks5Server', '--outbound-http-proxy-listen': 'outboundHttpProxyListen',
};
const BOOL_FLAGS: Record<string, keyof DaemonFlags> = { '--verbose': 'verbose', '--exit-when-down': 'exitWhenDown' };

/**
 * The socket and flags of a plain `[--socket S] daemon [flags]` command line (argv after the
 * script), or undefined for anything else: main.ts then parses it with commander.
 */
export function parseAgentArgv(argv: readonly string[]): { socket: string; flags: DaemonFlags } | undefined {
  let i = 0;
  let socket: string | undefined;
  const valueOf = (a: string): string | undefined => {
    const eq = a.indexOf('=');
    if (eq >= 0) return a.slice(eq + 1);
    const v = argv[++i];
    return v === undefined || v.startsWith('-') ? undefined : v;
  };
  for (; i < argv.length && argv[i] !== 'daemon'; i++) {
    const a = argv[i]!;
    if (socket !== undefined || a.split('=')[0] !== '--socket') return undefined;
    socket = valueOf(a);
    if (socket === undefined) return undefined;
  }
  if (argv[i] !== 'daemon') return undefined;
  const flags: DaemonFlags = {};
  const seen = new Set<string>();
  for (i++; i < argv.length; i++) {
    const a = argv[i]!;
    const name = a.split('=')[0]!;
    if (seen.has(name)) return undefined;
    seen.add(name);
    if (BOOL_FLAGS[name] && name === a) (flags as Record<string, boolean>)[BOOL_FLAGS[name]] = true;
    else if (VALUE_FLAGS[name]) {
      const v = valueOf(a);
      if (v === undefined) return undefined;
      (flags as Record<string, string>)[VALUE_FLAGS[name]] = v;
    } else return undefined;
  }
  return { socket: socket ?? defaultSocket(), flags };
}

/**
 * Runs the agent for a plain daemon command line; false (having done nothing) for any other.
 * Errors print one line `meshd: ...` and set the exit status, as main.ts does.
 */
export async function runAgent(argv: readonly string[]): Promise<boolean> {
  const cmd = parseAgentArgv(argv);
  if (!cmd) return false;
  try {
    const { daemonCommand } = await import('./tailnet.ts');
    await daemonCommand(cmd.socket, cmd.flags);
  } catch (e) {
    console.error(`meshd: ${(e as Error).message ?? String(e)}`);
    process.exitCode = e instanceof CliError ? e.exitCode : 1;
  }
  return true;
}

/**
 * For the code cache made at build time (scripts/bundle.mjs): loads the modules the agent loads
 * before its register request, and those it loads right after, so their top-level code is
 * compiled into the cache. Starts nothing.
 */
export async function warm(): Promise<void> {
  await import('./tailnet.ts');
  const agent = await import('../daemon/agent.ts');
  await agent.dataPlaneModules();
}
