// Serves the configuration protocol (protocol.ts) on a unix socket, like wireguard-go's
// /var/run/wireguard/IFNAME.sock, so that `wg set`, `wg show` and `wg showconf` work unchanged.
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { listenUnix, removeSocket } from '../util/unixsocket.ts';
import { formatGet, parseSet, UapiErrno, UapiError, type UapiSet, type UapiState } from './protocol.ts';

/** What the server configures: the WireGuard interface. */
export interface UapiTarget {
  /** Current state for `get`. */
  uapiGet(): UapiState;
  /** Applies a validated set operation; throws UapiError to report an errno. */
  uapiSet(op: UapiSet): void;
  /** meshd's own counters (dropped packets by reason, …), served by the `meshd-counters=1` operation. */
  uapiCounters?(): Record<string, number>;
}

/** Directory where wg looks for userspace interfaces' sockets. */
export const UAPI_DIR = '/var/run/wireguard';

/** Max bytes buffered per connection before a request completes (a config with thousands of peers fits). */
const MAX_REQUEST = 4 * 1024 * 1024;

/** Sends one request to a UAPI socket and returns the reply's key=value lines; throws on errno != 0. */
export function uapiRequest(path: string, request: string, timeoutMs = 5000): Promise<Map<string, string[]>> {
  return new Promise((resolve, reject) => {
    const c = createConnection(path);
    let out = '';
    const timer = setTimeout(() => { c.destroy(); reject(new Error(`${path}: no answer within ${timeoutMs} ms`)); }, timeoutMs);
    c.setEncoding('utf8');
    c.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(e.code === 'ENOENT' || e.code === 'ECONNREFUSED' ? new Error(`no interface answers on ${path}: is it running?`) : e);
    });
    c.on('data', (d: string) => {
      out += d;
      if (!out.endsWith('\n\n')) return;
      clearTimeout(timer);
      c.end();
      const map = new Map<string, string[]>();
      for (const line of out.trim().split('\n')) {
        const eq = line.indexOf('=');
        const k = line.slice(0, eq);
        map.set(k, [...(map.get(k) ?? []), line.slice(eq + 1)]);
      }
      const errno = map.get('errno')?.[0];
      if (errno !== '0') reject(new Error(`${path}: errno=${errno}`));
      else resolve(map);
    });
    c.write(request);
  });
}

/** A UAPI server bound to one socket path. */
export class UapiServer {
  private server: Server | undefined;
  readonly path: string;
  private readonly target: UapiTarget;
  private readonly log: (msg: string) => void;

  constructor(path: string, target: UapiTarget, log: (msg: string) => void = () => {}) {
    this.path = path;
    this.target = target;
    this.log = log;
  }

  /** Listens; a stale socket file is replaced, a live one is an error naming the conflict. */
  async listen(): Promise<void> {
    const server = createServer((sock) => this.handle(sock));
    await listenUnix(server, this.path, { dirMode: 0o755, mode: 0o600, inUse: `${this.path} is in use: another WireGuard process serves this interface (stop it, or pick another name)` });
    this.server = server;
  }

  /** Stops listening and removes the socket file. */
  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) await new Promise<void>((r) => s.close(() => r()));
    removeSocket(this.path);
  }

  private handle(sock: Socket): void {
    let buf = '';
    sock.setEncoding('utf8');
    sock.on('error', () => sock.destroy());
    sock.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > MAX_REQUEST) { sock.destroy(); return; }
      for (;;) {
        const end = buf.indexOf('\n\n');
        // "set=1\n\n" has its op line and blank line adjacent, as does "get=1\n\n".
        if (end < 0) break;
        const request = buf.slice(0, end + 1);
        buf = buf.slice(end + 2);
        const reply = this.answer(request);
        if (reply === null) { sock.destroy(); return; }
        sock.write(reply);
      }
    });
  }

  /** Answers one request (text up to and including its last line's newline). Null closes the connection. */
  answer(request: string): string | null {
    const lines = request.split('\n');
    lines.pop(); // trailing '' after the last newline
    const op = lines.shift();
    try {
      if (op === 'get=1') {
        if (lines.length > 0) throw new UapiError(UapiErrno.invalid, 'trailing data in UAPI get');
        return `${formatGet(this.target.uapiGet())}errno=0\n\n`;
      }
      if (op === 'meshd-counters=1' && this.target.uapiCounters) {
        // Our extension; the wg tool never sends it. Same framing as get.
        const c = this.target.uapiCounters();
        return `${Object.entries(c).map(([k, v]) => `${k}=${v}\n`).join('')}errno=0\n\n`;
      }
      if (op === 'set=1') {
        this.target.uapiSet(parseSet(lines));
        return 'errno=0\n\n';
      }
      this.log(`uapi: invalid operation ${JSON.stringify(op)}`);
      return null;
    } catch (e) {
      const errno = e instanceof UapiError ? e.errno : UapiErrno.unknown;
      this.log(`uapi: ${op ?? ''} failed: ${(e as Error).message}`);
      return `errno=${errno}\n\n`;
    }
  }
}
