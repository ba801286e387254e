// What `meshd up` checks and shows before it talks to an agent, without loading the agent: the CLI
// imports this, and the daemon's modules (control, WireGuard, DNS, netstack) load only in the agent.
import { isIP } from 'node:net';
import { join } from 'node:path';

/** Progress lines of `up` that carry the interactive login URL start with this. */
export const AUTH_URL_PROGRESS = 'auth-url: ';

/** A user-facing agent error with a stable code. */
export class AgentError extends Error {
  readonly code: string;
  readonly retryable: boolean;
  constructor(code: string, message: string, retryable = false) {
    super(message);
    this.name = 'AgentError';
    this.code = code;
    this.retryable = retryable;
  }
}

/** Parses and checks a login server URL; throws AgentError('bad_url') with what to fix. */
export function checkLoginServer(text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new AgentError('bad_url', `bad --login-server ${JSON.stringify(text)}: want a URL like https://headscale.example.com`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new AgentError('bad_url', `bad --login-server ${JSON.stringify(text)}: the scheme must be http or https`);
  }
  if (u.pathname !== '/' || u.search || u.hash) {
    throw new AgentError('bad_url', `bad --login-server ${JSON.stringify(text)}: give only scheme, host and port`);
  }
  return u.origin;
}

/** The --tun value of userspace networking (tailscale's flag value). */
export const USERSPACE_TUN = 'userspace-networking';

/** Parses a proxy listen address: `HOST:PORT`, `[V6]:PORT`, `:PORT` or `PORT` (loopback). Throws TypeError. */
export function parseListenAddr(text: string, flag: string): { host: string; port: number } {
  const t = text.trim();
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(t) ?? /^()()(\d{1,5})$/.exec(t);
  if (!m) throw new TypeError(`bad ${flag} ${JSON.stringify(text)}: want ADDR:PORT, e.g. localhost:1080`);
  const port = Number(m[3]);
  if (port > 65535) throw new TypeError(`bad ${flag} ${JSON.stringify(text)}: port above 65535`);
  let host = m[1] ?? m[2] ?? '';
  if (host === '' || host === 'localhost') host = '127.0.0.1';
  if (isIP(host) === 0) throw new TypeError(`bad ${flag} ${JSON.stringify(text)}: the address must be an IP or localhost`);
  return { host, port };
}

/** The agent's log file in a state dir (Agent.logPath). */
export function agentLogIn(stateDir: string): string {
  return join(stateDir, 'meshd.log');
}
