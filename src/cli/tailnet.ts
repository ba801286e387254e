// The tailnet commands: daemon, up, down, logout, status, ip. They talk to the agent over the
// local API; `up` starts an agent in the background when none answers.
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Agent, checkLoginServer } from '../daemon/agent.ts';
import { LocalApiClient, LocalApiError, LocalApiServer, socketAnswers, type Status, type UpRequest } from '../daemon/localapi.ts';
import { parseRouteList } from '../daemon/routing.ts';
import { stderrLogger } from '../util/log.ts';
import { CliError } from './errors.ts';
import { parseDuration } from './duration.ts';
import { ROOT_SOCKET } from './paths.ts';
import { USERSPACE_TUN, parseListenAddr } from '../daemon/userspace.ts';

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
  tun?: string;
  port?: string;
  verbose?: boolean;
  exitWhenDown?: boolean;
  socks5Server?: string;
  outboundHttpProxyListen?: string;
}

function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) throw new CliError(`${what} needs root (it creates a TUN device and routes): run it with sudo, or use --tun=userspace-networking`);
}

/** down/logout: root for the system agent; a user's own (userspace) agent answers on a socket the user owns. */
function requireRootFor(what: string, socket: string): void {
  if (socket === ROOT_SOCKET) requireRoot(what);
}

function checkDaemonFlags(f: DaemonFlags): { stateDir: string; tun: string; port: number } {
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
  return { stateDir: f.stateDir ?? DEFAULTS.stateDir, tun, port };
}

/** `meshd daemon`: runs the agent in the foreground until SIGTERM/SIGINT or a shutdown request. */
export async function daemonCommand(socket: string, f: DaemonFlags): Promise<void> {
  const { stateDir, tun, port } = checkDaemonFlags(f);
  const userspace = tun === USERSPACE_TUN;
  if (!userspace) requireRoot('meshd daemon');
  const log = stderrLogger('meshd');
  let exit!: () => void;
  const exited = new Promise<void>((r) => { exit = r; });
  const agent = new Agent({
    stateDir, tunName: tun, port, log, exitWhenDown: f.exitWhenDown ?? false, onExit: () => exit(),
    ...(userspace ? { userspace: { socks5: f.socks5Server, httpProxy: f.outboundHttpProxyListen, socksAuth: socksAuthFromEnv() } } : {}),
  });
  const api = new LocalApiServer(socket, agent);
  try {
    await api.listen();
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  await agent.cleanupStale();
  log(`agent listening on ${socket} (state ${stateDir}, tun ${tun}, port ${port})`);
  if (process.send) process.send('ready');
  if (!f.exitWhenDown) void agent.resume();
  for (const sig of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.once(sig, () => { log(`${sig}: shutting down`); exit(); });
  await exited;
  await agent.teardown();
  await api.close();
  log('stopped');
  // Nothing is left to do; half-closed connections must not keep the process alive.
  process.exit(0);
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

/** Starts `meshd daemon` in the background and waits until it answers; returns when ready. */
async function startAgent(socket: string, f: DaemonFlags): Promise<void> {
  const { stateDir, tun, port } = checkDaemonFlags(f);
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const bin = fileURLToPath(new URL('../../../bin/meshd.js', import.meta.url));
  const logPath = Agent.logPath(stateDir);
  const fd = openSync(logPath, 'a', 0o600);
  const args = [bin, '--socket', socket, 'daemon', '--state-dir', stateDir, '--tun', tun, '--port', String(port), '--exit-when-down'];
  if (f.verbose) args.push('--verbose');
  if (f.socks5Server) args.push('--socks5-server', f.socks5Server);
  if (f.outboundHttpProxyListen) args.push('--outbound-http-proxy-listen', f.outboundHttpProxyListen);
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', fd, fd, 'ipc'] });
  closeSync(fd);
  const outcome = await new Promise<'ready' | number>((resolve) => {
    const t = setTimeout(() => resolve(-1), 15_000);
    child.once('message', (m) => { if (m === 'ready') { clearTimeout(t); resolve('ready'); } });
    child.once('exit', (code) => { clearTimeout(t); resolve(code ?? 1); });
  });
  if (outcome !== 'ready') {
    if (outcome === -1) child.kill('SIGKILL');
    const tail = existsSync(logPath) ? readFileSync(logPath, 'utf8').trim().split('\n').pop() ?? '' : '';
    throw new CliError(`the agent did not start: ${tail.replace(/^.*?meshd: /, '') || `exit status ${outcome}`}`);
  }
  child.disconnect();
  child.unref();
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
  if (f.hostname !== undefined && !/^[A-Za-z0-9][A-Za-z0-9-]{0,62}$/.test(f.hostname)) {
    throw new CliError(`bad --hostname ${JSON.stringify(f.hostname)}: use letters, digits and '-' (at most 63)`);
  }
  const authKey = readAuthKey(f.authkey);
  const routing = routingFlags(f);
  if (checkDaemonFlags(f).tun !== USERSPACE_TUN) requireRoot('meshd up');

  const client = new LocalApiClient(socket);
  let started = false;
  if (!(await socketAnswers(socket))) {
    await startAgent(socket, f);
    started = true;
  }
  const tty = process.stderr.isTTY && !f.json;
  try {
    const st = await client.up(
      { loginServer: url, timeoutMs, ...(authKey ? { authKey } : {}), ...(f.hostname ? { hostname: f.hostname } : {}), ...(f.caFile ? { caFile: f.caFile } : {}), ...routing },
      (msg) => { if (tty) process.stderr.write(`${msg}\n`); },
    );
    if (f.json) console.log(JSON.stringify(st, null, 2));
    else console.log(st.self.addresses.join('\n'));
    for (const w of st.self.routing?.health ?? []) console.error(`warning: ${w}`);
  } catch (e) {
    if (started) await client.shutdown().catch(() => {});
    if (e instanceof LocalApiError) throw new CliError(e.message);
    throw e;
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
  const rt = st.self.routing;
  if (rt) {
    if (rt.advertisedRoutes.length) {
      lines.push(`advertised routes: ${rt.advertisedRoutes.map((x) => `${x} (${rt.approvedRoutes.includes(x) ? 'approved' : 'not approved yet'})`).join(', ')}`);
    }
    if (rt.exitNode) lines.push(`exit node: ${rt.exitNode.hostname ?? rt.exitNode.wanted}${rt.exitNode.active ? '' : ' (not usable: internet traffic is dropped)'}`);
    for (const h of rt.health) lines.push(`warning: ${h}`);
  }
  return lines.join('\n');
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
