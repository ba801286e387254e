// The tailnet commands: daemon, up, down, logout, status, ip. They talk to the agent over the
// local API; `up` starts an agent in the background when none answers.
import type { ChildProcess } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
// Only what the CLI side needs is imported statically: `up` runs before (and beside) an agent's
// start, and loading the agent's modules here (control, WireGuard, DNS, netstack) cost ~150 ms.
import { agentLogIn, AUTH_URL_PROGRESS, checkLoginServer, parseListenAddr, USERSPACE_TUN } from '../daemon/upcheck.ts';
import { LocalApiClient, LocalApiError, LocalApiServer, socketAnswers, type Status, type UpRequest } from '../daemon/localapi.ts';
import { parseRouteList } from '../router/plan.ts';
import { stderrLogger } from '../util/log.ts';
import { CliError } from './errors.ts';
import { parseDuration } from './duration.ts';
import { ROOT_SOCKET } from './paths.ts';
import { sanitizeHostname } from '../util/dnsname.ts';
import { MEM_STATE } from '../state/memstore.ts';
import { parseHosts, waitAndReport } from './wait.ts';
import { timeline } from '../util/timeline.ts';
import { adoptEarly, agentArgs, CONTROL_HINT_ENV, earlyAgent, spawnAgent, stopAgent, takeEarlyLogin, type AgentFlags, type ControlHint, type StartedAgent } from './agentspawn.ts';
import type { StateFile } from '../state/store.ts';
import type { CliRegistered } from '../daemon/agent.ts';

/** Defaults, as documented in the README (main.ts repeats them for its help text). */
export const DEFAULTS = {
  stateDir: '/var/lib/meshd',
  socket: '/run/meshd/meshd.sock',
  tun: 'meshd0',
  port: '41641',
} as const;

/** Daemon flags (also accepted by up, for when it has to start an agent). */
export interface DaemonFlags {
  stateDir?: string;
  /** `mem:`: keep the identity in memory only (ephemeral runs). */
  state?: string;
  tun?: string;
  port?: string;
  verbose?: boolean;
  exitWhenDown?: boolean;
  socks5Server?: string;
  outboundHttpProxyListen?: string;
  /** ADDR:PORT (or PORT) for an HTTP server with /debug/metrics; loopback when no address is given. */
  debug?: string;
}

/** Parses --debug: PORT, :PORT or ADDR:PORT; the address defaults to 127.0.0.1. */
export function parseDebugAddr(text: string): { host: string; port: number } {
  const m = /^(?:(\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost)?:)?(\d{1,5})$/.exec(text.trim());
  const port = Number(m?.[2]);
  if (!m || port < 1 || port > 65535) throw new CliError(`bad --debug ${JSON.stringify(text)}: want ADDR:PORT or PORT, e.g. 127.0.0.1:9090`);
  return { host: (m[1] ?? '127.0.0.1').replace(/^\[|\]$/g, ''), port };
}

function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new CliError(`${what} needs root (it creates a TUN device and routes): run it with sudo, or use --tun=userspace-networking`);
}

/** down/logout: root for the system agent; a user's own (userspace) agent answers on a socket the user owns. */
function requireRootFor(what: string, socket: string): void {
  if (socket === ROOT_SOCKET) requireRoot(what);
}

function checkDaemonFlags(f: DaemonFlags): { stateDir: string; tun: string; port: number; mem: boolean } {
  const tun = f.tun ?? DEFAULTS.tun;
  if (tun !== USERSPACE_TUN && !/^[A-Za-z0-9_.-]{1,15}$/.test(tun)) throw new CliError(`bad --tun ${JSON.stringify(tun)}: use 1-15 letters, digits, '_', '-' or '.', or userspace-networking`);
  if ((f.socks5Server || f.outboundHttpProxyListen) && tun !== USERSPACE_TUN) {
    throw new CliError('--socks5-server and --outbound-http-proxy-listen need --tun=userspace-networking');
  }
  try {
    if (f.socks5Server) parseListenAddr(f.socks5Server, '--socks5-server');
    if (f.outboundHttpProxyListen) parseListenAddr(f.outboundHttpProxyListen, '--outbound-http-proxy-listen');
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  const port = Number(f.port ?? DEFAULTS.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CliError(`bad --port ${f.port}: want 0-65535 (0 picks a free port)`);
  if (f.debug !== undefined) parseDebugAddr(f.debug);
  if (f.state !== undefined && f.state !== MEM_STATE) throw new CliError(`bad --state ${JSON.stringify(f.state)}: only ${MEM_STATE} (keys in memory, logged out when the agent ends); use --state-dir for a directory`);
  return { stateDir: f.stateDir ?? DEFAULTS.stateDir, tun, port, mem: f.state === MEM_STATE };
}

/** Where a background agent logs: in the state dir, or (in-memory state) next to the socket. */
export function agentLogPath(socket: string, f: DaemonFlags): string {
  const { stateDir, mem } = checkDaemonFlags(f);
  return mem ? join(dirname(socket), 'meshd.log') : agentLogIn(stateDir);
}

/** `meshd daemon`: runs the agent in the foreground until SIGTERM/SIGINT or a shutdown request. */
export async function daemonCommand(socket: string, f: DaemonFlags): Promise<void> {
  const { stateDir, tun, port, mem } = checkDaemonFlags(f);
  const userspace = tun === USERSPACE_TUN;
  if (!userspace) requireRoot('meshd daemon');
  const log = stderrLogger('meshd');
  const { Agent } = await import('../daemon/agent.ts');
  timeline('agent modules loaded');
  let exit!: () => void;
  const exited = new Promise<void>((r) => { exit = r; });
  const agent = new Agent({
    stateDir, tunName: tun, port, log, exitWhenDown: f.exitWhenDown ?? false, memState: mem, onExit: () => exit(),
    ...(userspace ? { userspace: { socks5: f.socks5Server, httpProxy: f.outboundHttpProxyListen, socksAuth: socksAuthFromEnv() } } : {}),
  });
  // Started by `up` (src/cli/agentspawn.ts): its login server is known before its request comes.
  const hint = process.env[CONTROL_HINT_ENV];
  delete process.env[CONTROL_HINT_ENV];
  if (hint && f.exitWhenDown) {
    try {
      const h = JSON.parse(hint) as ControlHint;
      // With cliLogin the CLI loads or creates the keys and sends them (below): none made here.
      if (typeof h.loginServer === 'string' && !h.cliLogin) agent.prepareControl(h.loginServer, typeof h.caFile === 'string' ? h.caFile : undefined);
    } catch { /* not ours: up does it all */ }
  }
  // From the CLI that started us (upCommand, src/cli/earlylogin.ts): the identity it registers
  // with, word that its register request is out, and the `up` request (sent ahead of the local API
  // one, with what the CLI's register learned when it registered for us).
  if (f.exitWhenDown && process.send) {
    const onMessage = (m: unknown): void => {
      const msg = (m ?? {}) as { login?: { url?: unknown; caFile?: unknown; state?: unknown; serverKey?: unknown }; registerSent?: unknown; up?: unknown; registered?: unknown };
      const l = msg.login;
      if (l && typeof l.url === 'string' && l.state && typeof l.state === 'object') {
        timeline('agent: identity from the CLI');
        agent.acceptLogin(l.url, typeof l.caFile === 'string' ? l.caFile : undefined, l.state as StateFile, typeof l.serverKey === 'string' ? l.serverKey : undefined);
      } else if (msg.registerSent === true) {
        agent.cliRegisterSent();
      } else if (msg.up && typeof msg.up === 'object' && !agent.upRequested) {
        timeline('agent: up request over IPC');
        const reg = msg.registered as { loginName?: unknown } | undefined;
        agent.upAhead(msg.up as UpRequest, reg && typeof reg === 'object' ? { loginName: typeof reg.loginName === 'string' ? reg.loginName : undefined } : undefined);
      }
    };
    // Messages that came while the agent loaded (bin/meshd.js queues them from its first line).
    const early = (globalThis as { meshdEarlyIpc?: { queue: unknown[]; listener: (m: unknown) => void } }).meshdEarlyIpc;
    if (early) {
      process.off('message', early.listener);
      for (const m of early.queue.splice(0)) onMessage(m);
    }
    process.on('message', onMessage);
    process.once('disconnect', () => process.off('message', onMessage));
  }
  const api = new LocalApiServer(socket, agent);
  try {
    await api.listen();
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  // Not awaited: the first `up` waits for it once logged in, so it overlaps registration. An agent
  // `up` started leaves it to that `up`, which starts it once the register request is sent.
  if (!f.exitWhenDown) void agent.cleanupStale();
  if (f.debug) await serveDebug(parseDebugAddr(f.debug), agent, log);
  log(`agent listening on ${socket} (state ${mem ? MEM_STATE : stateDir}, tun ${tun}, port ${port})`);
  timeline('agent ready');
  if (process.send) {
    // Started by `up` (src/cli/agentspawn.ts): a CLI that goes away before sending up (it found a
    // flag error after starting us early) leaves nothing running.
    const orphaned = (): void => { if (!agent.upRequested) { log('the CLI that started this agent went away before up'); exit(); } };
    if (f.exitWhenDown && !process.connected) orphaned();
    else if (f.exitWhenDown) process.once('disconnect', orphaned);
    if (process.connected) process.send('ready', () => {});
  }
  if (!f.exitWhenDown) void agent.resume();
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, () => { log(`${sig}: shutting down`); exit(); });
  await exited;
  await agent.end();
  await api.close();
  log('stopped');
  // Nothing is left to do; half-closed connections must not keep the process alive. A fatal
  // error (Agent.fatal) set the exit status.
  process.exit(process.exitCode ?? 0);
}

/** The --debug HTTP server: GET /debug/metrics (as tailscaled's) and /metrics. */
async function serveDebug(at: { host: string; port: number }, agent: { metrics(): string }, log: (l: string) => void): Promise<void> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && (req.url === '/debug/metrics' || req.url === '/metrics')) {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
      res.end(agent.metrics());
    } else {
      res.writeHead(404).end('not found: try /debug/metrics\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new CliError(`--debug ${at.host}:${at.port}: ${(e as NodeJS.ErrnoException).code ?? e.message}`)));
    server.listen(at.port, at.host, () => resolve());
  });
  server.unref();
  log(`debug server on http://${at.host.includes(':') ? `[${at.host}]` : at.host}:${at.port}/debug/metrics`);
}

/** Reads --authkey: a literal key or file:PATH. */
export function readAuthKey(value: string | undefined): string | undefined {
  if (value === undefined) return undefined;
  if (value.startsWith('file:')) {
    const path = value.slice(5);
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (e) {
      throw new CliError(`cannot read the auth key from ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
    }
    const key = text.trim();
    if (!key) throw new CliError(`the auth key file ${path} is empty`);
    return key;
  }
  if (!value.trim()) throw new CliError('--authkey is empty: pass the key, or file:PATH');
  return value.trim();
}

/** The daemon flags `up` starts its agent with, checked (throws CliError naming a bad one). */
export function checkedAgentFlags(f: DaemonFlags): AgentFlags {
  const { stateDir, tun, port, mem } = checkDaemonFlags(f);
  return { ...f, stateDir, tun, port: String(port), state: mem ? MEM_STATE : undefined };
}

/**
 * Starts `meshd daemon` in the background (or adopts the one bin/meshd.js started for these flags)
 * and waits until it answers. Returns its process, whose IPC channel the caller closes once the
 * agent has our `up` (until then, the agent exits when the channel closes).
 */
async function startAgent(socket: string, f: DaemonFlags, hint: ControlHint, req: UpRequest, progress: (msg: string) => void): Promise<ChildProcess> {
  const flags = checkedAgentFlags(f);
  const early = adoptEarly(agentArgs(socket, flags));
  // The register request from this process (src/cli/earlylogin.ts), when bin/meshd.js began one
  // for the agent it started and these checked flags name the same server and state. Any other is
  // closed first (it waits for new keys it was writing): only then may an agent read or make keys.
  const login = await takeEarlyLogin();
  const mine = early && login?.matches({ url: req.loginServer, caFile: req.caFile, stateDir: flags.state === MEM_STATE ? undefined : flags.stateDir }) ? login : undefined;
  if (!mine) await login?.close();
  const a = early ?? spawnAgent(socket, flags, hint);
  let registered: CliRegistered | undefined;
  if (mine) {
    const deadline = Date.now() + req.timeoutMs;
    // An agent that dies meanwhile ends the wait: nothing would take over the registration.
    const died = a.outcome.then((o) => (o === 'ready' ? new Promise<never>(() => {}) : Promise.reject(agentFailure(a, o))));
    died.catch(() => {});
    try {
      registered = await Promise.race([mine.register(req, progress), died]);
    } catch (e) {
      // The agent was never told to go on: it exits when the IPC channel closes.
      await mine.close();
      await stopAgent(a);
      if (e instanceof CliError) throw e;
      const err = e as { code?: unknown; message?: string; retryable?: unknown };
      throw new LocalApiError(typeof err.code === 'string' ? err.code : 'internal', err.message ?? String(e), err.retryable === true);
    }
    void mine.close();
    // The agent's part of `up` gets what is left of --timeout (the same request object goes over
    // the local API below, which joins the one sent ahead only when the two are equal).
    req.timeoutMs = Math.max(1_000, deadline - Date.now());
  }
  // The request goes ahead over the IPC channel (the agent begins `up` as soon as it can, and the
  // same request over the local API below joins it); only this private channel carries the key.
  if (a.child.connected) a.child.send({ up: req, ...(registered ? { registered } : {}) }, () => {});
  const outcome = await a.outcome;
  if (outcome !== 'ready') throw agentFailure(a, outcome);
  timeline('cli: agent ready');
  return a.child;
}

/** The error for an agent that exited (or never said ready) before `up`: its log's last line. */
function agentFailure(a: StartedAgent, outcome: number): CliError {
  if (outcome === -1) a.child.kill('SIGKILL');
  const tail = existsSync(a.logPath) ? readFileSync(a.logPath, 'utf8').trim().split('\n').pop() ?? '' : '';
  return new CliError(`the agent did not start: ${tail.replace(/^.*?meshd: /, '') || `exit status ${outcome}`}`);
}

/** Lets the CLI exit without the agent it started: closes the IPC channel (see startAgent). */
function letGo(child: ChildProcess | undefined): void {
  if (child?.connected) child.disconnect();
  child?.unref();
}

/** Options of `meshd up`. */
export interface UpFlags extends DaemonFlags {
  loginServer?: string;
  authkey?: string;
  hostname?: string;
  timeout?: string;
  caFile?: string;
  json?: boolean;
  advertiseExitNode?: boolean;
  advertiseRoutes?: string;
  exitNode?: string;
  exitNodeAllowLanAccess?: boolean;
  acceptRoutes?: boolean;
  acceptDns?: boolean;
  advertiseTags?: string;
  /** Hosts that must answer before up returns (comma-separated). */
  waitFor?: string;
  /** Attempts after the first on errors where retrying helps. */
  retry?: string;
}

/** Parses --advertise-tags: `tag:a,tag:b`. */
export function parseTags(text: string | undefined): string[] | undefined {
  if (text === undefined) return undefined;
  const tags = text.split(',').map((t) => t.trim()).filter(Boolean);
  for (const t of tags) {
    if (!/^tag:[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/.test(t)) throw new CliError(`bad --advertise-tags entry ${JSON.stringify(t)}: tags look like tag:ci (letters, digits, '-', '_')`);
  }
  return tags;
}

/** The hostname to register with: sanitized to a DNS label as tailscale does (said on stderr when changed). */
export function checkHostname(name: string | undefined, say: (line: string) => void): string | undefined {
  if (name === undefined) return undefined;
  const clean = sanitizeHostname(name);
  if (!clean) throw new CliError(`bad --hostname ${JSON.stringify(name)}: nothing of it is usable as a DNS label (use letters, digits and '-')`);
  if (clean !== name) say(`hostname ${JSON.stringify(name)} is not a valid DNS label: using ${JSON.stringify(clean)}`);
  return clean;
}

/** The routing fields of an up request, from the flags given (absent flags are left out). */
export function routingFlags(f: UpFlags): Pick<UpRequest, 'advertiseExitNode' | 'advertiseRoutes' | 'exitNode' | 'exitNodeAllowLanAccess' | 'acceptRoutes'> {
  let routes: string[] | undefined;
  if (f.advertiseRoutes !== undefined) {
    try {
      routes = parseRouteList(f.advertiseRoutes);
    } catch (e) {
      throw new CliError(`--advertise-routes: ${(e as Error).message}`);
    }
  }
  if (f.exitNode !== undefined && f.exitNode.trim() && !/^[A-Za-z0-9.:_-]{1,253}$/.test(f.exitNode.trim())) {
    throw new CliError(`bad --exit-node ${JSON.stringify(f.exitNode)}: give a tailnet IP or a hostname`);
  }
  return {
    ...(f.advertiseExitNode !== undefined ? { advertiseExitNode: f.advertiseExitNode } : {}),
    ...(routes !== undefined ? { advertiseRoutes: routes } : {}),
    ...(f.exitNode !== undefined ? { exitNode: f.exitNode.trim() } : {}),
    ...(f.exitNodeAllowLanAccess !== undefined ? { exitNodeAllowLanAccess: f.exitNodeAllowLanAccess } : {}),
    ...(f.acceptRoutes !== undefined ? { acceptRoutes: f.acceptRoutes } : {}),
  };
}

/** `meshd up`. */
export async function upCommand(socket: string, f: UpFlags): Promise<void> {
  if (!f.loginServer) throw new CliError('--login-server is required: the URL of your Headscale server, e.g. https://hs.example.com');
  let url: string;
  try {
    url = checkLoginServer(f.loginServer);
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  let timeoutMs: number;
  try {
    timeoutMs = f.timeout ? parseDuration(f.timeout) : 120_000;
  } catch (e) {
    throw new CliError(`--timeout: ${(e as Error).message}`);
  }
  const hostname = checkHostname(f.hostname, (l) => console.error(`note: ${l}`));
  const tags = parseTags(f.advertiseTags);
  const waitFor = f.waitFor !== undefined ? parseHosts([f.waitFor]) : [];
  const retries = Number(f.retry ?? '0');
  if (!Number.isInteger(retries) || retries < 0 || retries > 100) throw new CliError(`bad --retry ${JSON.stringify(f.retry)}: want a count from 0 to 100`);
  const authKey = readAuthKey(f.authkey);
  const routing = routingFlags(f);
  if (checkDaemonFlags(f).tun !== USERSPACE_TUN) requireRoot('meshd up');

  const client = new LocalApiClient(socket);
  const tty = process.stderr.isTTY && !f.json;
  const req: UpRequest = {
    loginServer: url, timeoutMs, ...(authKey ? { authKey } : {}), ...(hostname ? { hostname } : {}),
    ...(f.caFile ? { caFile: f.caFile } : {}), ...(tags ? { advertiseTags: tags } : {}), ...routing,
    ...(f.acceptDns !== undefined ? { acceptDns: f.acceptDns } : {}),
  };
  const progress = (msg: string): void => {
    if (msg.startsWith(AUTH_URL_PROGRESS)) {
      // Always shown: someone has to open it. --json prints it as a JSON line on stdout.
      const authUrl = msg.slice(AUTH_URL_PROGRESS.length);
      if (f.json) console.log(JSON.stringify({ AuthURL: authUrl }));
      else console.error(`To authenticate, visit:\n\n\t${authUrl}\n`);
    } else if (tty) process.stderr.write(`${msg}\n`);
  };
  let t0 = Date.now();
  let st: Status | undefined;
  timeline('cli: up starts');
  for (let attempt = 0; !st; attempt++) {
    let started = false;
    let child: ChildProcess | undefined;
    t0 = Date.now();
    try {
      // An agent bin/meshd.js started for this `up` is adopted (it may answer on the socket already).
      if (earlyAgent || !(await socketAnswers(socket))) {
        child = await startAgent(socket, f, { loginServer: url, ...(f.caFile ? { caFile: f.caFile } : {}) }, req, progress);
        started = true;
      }
      st = await client.up(req, progress);
      letGo(child);
    } catch (e) {
      if (started) await client.shutdown().catch(() => {});
      letGo(child);
      const retryable = (e instanceof LocalApiError && e.retryable) || (e instanceof CliError && /did not start/.test(e.message));
      const msg = e instanceof LocalApiError || e instanceof CliError ? e.message : (e as Error).message;
      if (retryable && attempt < retries) {
        const pause = Math.min(10_000, 1000 * 2 ** attempt);
        console.error(`retry: attempt ${attempt + 1} of ${retries + 1} failed: ${msg}; retrying in ${pause / 1000}s`);
        await new Promise((r) => setTimeout(r, pause));
        continue;
      }
      if (e instanceof LocalApiError) throw new CliError(e.message);
      throw e;
    }
  }
  timeline('cli: up answered');
  if (f.json) console.log(JSON.stringify(st, null, 2));
  else console.log(st.self.addresses.join('\n'));
  for (const w of st.self.routing?.health ?? []) console.error(`warning: ${w}`);
  if (waitFor.length) {
    // The wait shares the last attempt's --timeout.
    await waitAndReport(client, waitFor, Math.max(Date.now() + 1000, t0 + timeoutMs), (l) => console.error(l));
  }
}

async function callAgent<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (e instanceof LocalApiError) throw new CliError(e.message);
    throw e;
  }
}

/** `meshd down`. */
export async function downCommand(socket: string): Promise<void> {
  requireRootFor('meshd down', socket);
  await callAgent(() => new LocalApiClient(socket).down());
}

/** `meshd logout`. */
export async function logoutCommand(socket: string): Promise<void> {
  requireRootFor('meshd logout', socket);
  await callAgent(() => new LocalApiClient(socket).logout());
}

/** `meshd status`. */
export async function statusCommand(socket: string, f: { json?: boolean }): Promise<void> {
  const st = await callAgent(() => new LocalApiClient(socket).status());
  if (f.json) { console.log(JSON.stringify(st, null, 2)); return; }
  console.log(formatStatus(st));
}

/** The human table of `meshd status`. */
export function formatStatus(st: Status): string {
  if (st.self.state !== 'Running') return `meshd is ${st.self.state === 'Stopped' ? 'stopped' : 'not connected'} (${st.self.state})`;
  const rows: string[][] = [[st.self.addresses[0] ?? '-', st.self.hostname, 'self', '-', '-']];
  for (const p of st.peers) {
    const path = p.path.direct ? `direct ${p.path.direct}` : p.path.derp ? `relay "${p.path.derp}"` : '-';
    const seen = p.lastHandshake ? `${Math.round((Date.now() - p.lastHandshake) / 1000)}s ago` : 'never';
    const r = p.routing;
    const extra = [r?.exitNode ? 'exit node in use' : r?.exitNodeOption ? 'offers exit node' : '', r?.subnetRoutes.length ? `routes ${r.subnetRoutes.join(',')}` : ''].filter(Boolean).join('; ');
    rows.push([p.addresses[0] ?? '-', p.hostname, p.online ? 'online' : 'offline', path, `handshake ${seen}, rx ${p.rxBytes} tx ${p.txBytes}${extra ? `; ${extra}` : ''}`]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const lines = rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
  if (st.self.tun === USERSPACE_TUN) {
    const px = st.self.proxies ?? {};
    const parts = [px.socks5 ? `SOCKS5 ${px.socks5}` : '', px.http ? `HTTP proxy ${px.http}` : ''].filter(Boolean);
    lines.push(`userspace networking${parts.length ? `: ${parts.join(', ')}` : ' (no proxies)'}`);
  }
  const rt = st.self.routing;
  if (rt) {
    if (rt.advertisedRoutes.length) {
      lines.push(`advertised routes: ${rt.advertisedRoutes.map((x) => `${x} (${rt.approvedRoutes.includes(x) ? 'approved' : 'not approved yet'})`).join(', ')}`);
    }
    if (rt.exitNode) lines.push(`exit node: ${rt.exitNode.hostname ?? rt.exitNode.wanted}${rt.exitNode.active ? '' : ' (not usable: internet traffic is dropped)'}`);
    for (const h of rt.health) lines.push(`warning: ${h}`);
  }
  for (const h of st.self.health ?? []) lines.push(`warning: ${h}`);
  const d = st.self.dns;
  if (d) lines.push(`dns: ${d.acceptDns ? `MagicDNS at 100.100.100.100; host resolver mode ${d.mode}` : 'MagicDNS at 100.100.100.100; host left alone (--accept-dns=false)'}`);
  return lines.join('\n');
}

/** `meshd whois IP`: the node and user behind a tailnet address, as tailscale whois prints it. */
export async function whoisCommand(socket: string, addr: string, f: { json?: boolean }): Promise<void> {
  const w = await callAgent(() => new LocalApiClient(socket).whois(addr));
  if (f.json) { console.log(JSON.stringify(w, null, 2)); return; }
  const lines = [
    'Machine:',
    `  Name:          ${w.node.name || w.node.hostname}${w.node.self ? ' (this node)' : ''}`,
    `  ID:            ${w.node.id}`,
    `  Addresses:     [${w.node.addresses.join(' ')}]`,
  ];
  if (w.node.tags.length) lines.push(`  Tags:          ${w.node.tags.join(', ')}`);
  lines.push('User:', `  Name:     ${w.user.loginName}`, `  ID:       ${w.user.id}`);
  console.log(lines.join('\n'));
}

/** `meshd metrics`: the agent's Prometheus text. */
export async function metricsCommand(socket: string): Promise<void> {
  process.stdout.write(await callAgent(() => new LocalApiClient(socket).metrics()));
}

/** `meshd ip`. */
export async function ipCommand(socket: string, f: { '4'?: boolean; '6'?: boolean }): Promise<void> {
  const st = await callAgent(() => new LocalApiClient(socket).status());
  let addrs = st.self.addresses;
  if (addrs.length === 0) throw new CliError('no tailnet address yet: run meshd up');
  if (f['4']) addrs = addrs.filter((a) => !a.includes(':'));
  if (f['6']) addrs = addrs.filter((a) => a.includes(':'));
  console.log(addrs.join('\n'));
}

/**
 * SOCKS5 credentials (RFC 1929) from MESHD_SOCKS5_USER / MESHD_SOCKS5_PASSWORD in the agent's
 * environment (never argv); both or neither.
 */
export function socksAuthFromEnv(env: NodeJS.ProcessEnv = process.env): { user: string; pass: string } | undefined {
  const user = env.MESHD_SOCKS5_USER, pass = env.MESHD_SOCKS5_PASSWORD;
  if (!user && !pass) return undefined;
  if (!user || !pass) throw new CliError('set both MESHD_SOCKS5_USER and MESHD_SOCKS5_PASSWORD, or neither');
  if (user.length > 255 || pass.length > 255) throw new CliError('MESHD_SOCKS5_USER and MESHD_SOCKS5_PASSWORD are at most 255 bytes (RFC 1929)');
  return { user, pass };
}
