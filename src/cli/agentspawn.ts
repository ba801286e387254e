// Starting a background agent for `meshd up`, as early as possible. bin/meshd.js calls startEarly
// before the CLI's own modules load: a hand parse of the few daemon flags, and the agent process
// (a second Node start, ~200 ms) starts while the CLI loads commander and its commands. upCommand
// then adopts that agent when its checked flags give the same daemon arguments, and stops it
// otherwise. An agent started this way exits when the CLI goes away before sending `up` (a flag
// error), so a wrong guess leaves nothing behind. With a login server on the command line the CLI
// also begins the login itself (earlylogin.ts, loaded here on demand: GET /key, the identity, the
// Noise handshake), and upCommand sends the register request from this process. Statically, only
// node: modules and small helpers are imported.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultSocket, defaultStateDir } from './paths.ts';
import { socketAnswers } from '../util/unixsocket.ts';
import { timeline } from '../util/timeline.ts';

/** `--state mem:` (state/memstore.ts MEM_STATE, repeated here to keep this module small). */
const MEM = 'mem:';

/** The daemon flags `up` passes on to the agent it starts. */
export interface AgentFlags {
  stateDir?: string | undefined;
  state?: string | undefined;
  tun?: string | undefined;
  port?: string | undefined;
  verbose?: boolean | undefined;
  debug?: string | undefined;
  socks5Server?: string | undefined;
  outboundHttpProxyListen?: string | undefined;
}

/** An agent process started by `up`, until it said ready (or exited: its exit status). */
export interface StartedAgent {
  args: string[];
  child: ChildProcess;
  logPath: string;
  outcome: Promise<'ready' | number>;
}

/** Where a background agent logs: in the state dir, or (in-memory state) next to the socket. */
export function logPathOf(socket: string, f: AgentFlags): string {
  return f.state === MEM ? join(dirname(socket), 'meshd.log') : join(f.stateDir ?? defaultStateDir(), 'meshd.log');
}

/** The agent's command line (after the node binary) for these flags. */
export function agentArgs(socket: string, f: AgentFlags): string[] {
  const bin = fileURLToPath(new URL('../../../bin/meshd.js', import.meta.url));
  const mem = f.state === MEM;
  const args = [bin, '--socket', socket, 'daemon', ...(mem ? ['--state', MEM] : ['--state-dir', f.stateDir ?? defaultStateDir()]),
    '--tun', f.tun ?? 'meshd0', '--port', String(Number(f.port ?? '41641')), '--exit-when-down'];
  if (f.verbose) args.push('--verbose');
  if (f.debug) args.push('--debug', f.debug);
  if (f.socks5Server) args.push('--socks5-server', f.socks5Server);
  if (f.outboundHttpProxyListen) args.push('--outbound-http-proxy-listen', f.outboundHttpProxyListen);
  return args;
}

/**
 * The environment the agent starts with: the caller's, with MALLOC_ARENA_MAX=2 unless set. glibc
 * gives each thread that allocates its own arena (up to 8 per core); Node's V8 and libuv worker
 * threads then each keep free memory of their own (README "Chaos lab and soak": anonymous RSS
 * 19.5-22 MB with two arenas and src/daemon/memory.ts's trims, 23-26 MB without). The agent's hot
 * path allocates nothing per packet, so sharing two arenas costs no contention that matters; glibc
 * reads the variable once, at process start.
 */
export function agentEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return env.MALLOC_ARENA_MAX ? env : { ...env, MALLOC_ARENA_MAX: '2' };
}

/**
 * The login server (and CA file) of the `up` that starts an agent: the agent loads its identity
 * and dials control while `up` connects and sends the request (src/daemon/agent.ts
 * prepareControl). Passed in the environment, as CONTROL_HINT_ENV (JSON), not in the command line
 * `up` compares to adopt an early agent; no secret is in it.
 */
export interface ControlHint {
  loginServer: string;
  caFile?: string | undefined;
  /**
   * The CLI registers for this agent and sends it the identity over IPC (src/cli/earlylogin.ts):
   * the agent must not load or create keys of its own ahead of `up`.
   */
  cliLogin?: boolean | undefined;
}

/** The environment variable carrying a {@link ControlHint} to the agent. */
export const CONTROL_HINT_ENV = 'MESHD_CONTROL_HINT';

/** Spawns the agent detached, its output appended to its log, with an IPC channel for 'ready'. */
export function spawnAgent(socket: string, f: AgentFlags, hint?: ControlHint): StartedAgent {
  // In-memory state writes nothing under the state dir, not even the log.
  mkdirSync(f.state === MEM ? dirname(socket) : f.stateDir ?? defaultStateDir(), { recursive: true, mode: 0o700 });
  const logPath = logPathOf(socket, f);
  const fd = openSync(logPath, 'a', 0o600);
  const args = agentArgs(socket, f);
  timeline('cli: spawning the agent');
  const env = agentEnv(process.env);
  const child = spawn(process.execPath, args, {
    detached: true, stdio: ['ignore', fd, fd, 'ipc'], env: hint ? { ...env, [CONTROL_HINT_ENV]: JSON.stringify(hint) } : env,
  });
  closeSync(fd);
  const outcome = new Promise<'ready' | number>((resolve) => {
    const t = setTimeout(() => resolve(-1), 15_000);
    child.once('message', (m) => { if (m === 'ready') { clearTimeout(t); resolve('ready'); } });
    child.once('exit', (code) => { clearTimeout(t); resolve(code ?? 1); });
  });
  return { args, child, logPath, outcome };
}

const VALUE_FLAGS: Record<string, keyof AgentFlags> = {
  '--state-dir': 'stateDir', '--state': 'state', '--tun': 'tun', '--port': 'port', '--debug': 'debug',
  '--socks5-server': 'socks5Server', '--outbound-http-proxy-listen': 'outboundHttpProxyListen',
};

/**
 * The socket and daemon flags of an `up` command line (argv after the script), or undefined when
 * it is not one or asks for help. A guess: upCommand checks it against commander's parse.
 */
export function parseEarlyUp(argv: readonly string[]): { socket: string; flags: AgentFlags; hint?: ControlHint } | undefined {
  let socket = defaultSocket();
  let i = 0;
  const value = (a: string): string | undefined => (a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i]);
  for (; i < argv.length && argv[i] !== 'up'; i++) {
    const a = argv[i]!;
    if (a === '--socket' || a.startsWith('--socket=')) { const v = value(a); if (v === undefined) return undefined; socket = v; } else return undefined;
  }
  if (argv[i] !== 'up') return undefined;
  const flags: AgentFlags = {};
  let loginServer: string | undefined, caFile: string | undefined;
  for (i++; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h' || a === '--help' || a === '--') return undefined;
    const name = a.split('=')[0]!;
    if (name === '--verbose') flags.verbose = true;
    else if (name === '--login-server') loginServer = value(a);
    else if (name === '--ca-file') caFile = value(a);
    else if (name === '--socket') { const v = value(a); if (v === undefined) return undefined; socket = v; } else if (VALUE_FLAGS[name]) {
      const v = value(a);
      if (v === undefined) return undefined;
      (flags as Record<string, string>)[VALUE_FLAGS[name]] = v;
    }
  }
  return { socket, flags, ...(loginServer ? { hint: { loginServer, ...(caFile ? { caFile } : {}) } } : {}) };
}

/**
 * earlylogin.ts: from the bundle, its own CommonJS file compiled with a V8 code cache made at build
 * time (scripts/bundle.mjs, bin/codecache.js), as the agent's; from dist/src, the module itself.
 */
async function loadEarlyLogin(): Promise<typeof import('./earlylogin.ts')> {
  const cjs = new URL('./early.cjs', import.meta.url);
  if (!existsSync(cjs)) return import('./earlylogin.ts');
  const { loadCached } = await import(new URL('../../../bin/codecache.js', import.meta.url).href) as { loadCached(file: string): typeof import('./earlylogin.ts') };
  return loadCached(fileURLToPath(cjs));
}

/** The agent bin/meshd.js started for this process's `up`, if any (adopted or stopped by upCommand). */
export let earlyAgent: StartedAgent | undefined;

/** The login the CLI began for that agent (src/cli/earlylogin.ts), if any; taken by upCommand. */
export let earlyLogin: Promise<import('./earlylogin.ts').EarlyLogin | undefined> | undefined;

/** Takes the early login (the caller owns it from now: registers with it or closes it). */
export function takeEarlyLogin(): Promise<import('./earlylogin.ts').EarlyLogin | undefined> {
  const l = earlyLogin ?? Promise.resolve(undefined);
  earlyLogin = undefined;
  return l;
}

/** The CLI registers for the agent it starts unless MESHD_CLI_REGISTER=0 (then the agent does). */
export function cliRegisterEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env.MESHD_CLI_REGISTER !== '0';
}

/**
 * bin/meshd.js: for `up` as root (or userspace networking) with no agent answering on the socket,
 * starts the agent now. Never throws: the ordinary path reports any problem.
 */
export async function startEarly(argv: readonly string[]): Promise<void> {
  try {
    const up = parseEarlyUp(argv);
    if (!up || (process.getuid?.() !== 0 && up.flags.tun !== 'userspace-networking')) return;
    if (await socketAnswers(up.socket)) return;
    const cliLogin = up.hint !== undefined && cliRegisterEnabled();
    const agent = spawnAgent(up.socket, up.flags, up.hint && cliLogin ? { ...up.hint, cliLogin } : up.hint);
    earlyAgent = agent;
    if (cliLogin) {
      // GET /key, the identity and the Noise handshake start before the CLI's own modules load
      // (they then overlap that load); the register request waits for upCommand's checked flags.
      const target = { url: up.hint!.loginServer, caFile: up.hint!.caFile, stateDir: up.flags.state === MEM ? undefined : up.flags.stateDir ?? defaultStateDir() };
      earlyLogin = loadEarlyLogin().then((m) => m.EarlyLogin.begin(target, agent.child), () => undefined);
      await earlyLogin;
    }
  } catch {
    earlyAgent = undefined;
  }
}

/** The early agent if it was started with exactly `args`; otherwise stops it (by its pid) and returns undefined. */
export function adoptEarly(args: readonly string[]): StartedAgent | undefined {
  const e = earlyAgent;
  earlyAgent = undefined;
  if (!e) return undefined;
  if (e.args.length === args.length && e.args.every((a, i) => a === args[i])) return e;
  e.child.kill('SIGKILL');
  e.child.disconnect?.();
  return undefined;
}

/**
 * Drops the early agent without `up` (the CLI failed first): closing the IPC channel makes it exit
 * on its own (removing its socket); waits for that, up to 5 s, then kills it.
 */
export async function releaseEarly(): Promise<void> {
  const e = earlyAgent;
  earlyAgent = undefined;
  await (await takeEarlyLogin())?.close();
  if (e) await stopAgent(e);
}

/**
 * Stops an agent `up` started that was not sent `up` (a flag error, or the CLI's register failed):
 * closing the IPC channel makes it exit on its own (removing its socket); waits for that, up to
 * 5 s, then kills it.
 */
export async function stopAgent(e: StartedAgent): Promise<void> {
  const gone = new Promise<void>((resolve) => {
    if (e.child.exitCode !== null || e.child.signalCode !== null) { resolve(); return; }
    const t = setTimeout(() => { e.child.kill('SIGKILL'); resolve(); }, 5_000);
    e.child.once('exit', () => { clearTimeout(t); resolve(); });
  });
  if (e.child.connected) e.child.disconnect();
  await gone;
}
