// The local API: how the CLI talks to the agent. HTTP/1.1 over a unix socket that only root can
// use (directory 0700, socket 0600). Requests and responses are JSON; `POST /v0/up` streams
// newline-delimited JSON progress events and ends with a result event.
//
//   GET  /v0/status           -> Status
//   POST /v0/up   UpRequest   -> {"progress": "..."}* then {"result": Status} | {"error": ApiError}
//   POST /v0/down             -> {"ok": true}
//   POST /v0/logout           -> {"ok": true}
//   POST /v0/shutdown         -> {"ok": true}   (the agent exits)
//   POST /v0/ping  PingRequest -> PingReply     (one disco ping)
//   POST /v0/netcheck         -> NetcheckReport
//   GET  /v0/dns/status       -> DnsStatus   (MagicDNS: what the map says, what the host got)
//   POST /v0/dns/query {name,type} -> {bytes (base64 DNS answer), resolvers}
//   POST /v0/whois {addr}     -> WhoisReply
//   GET  /v0/metrics          -> Prometheus text (src/daemon/metrics.ts)
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { listenUnix, removeSocket } from '../util/unixsocket.ts';
import type { PeerRouting, SelfRouting } from './routing.ts';
import type { DnsStatus } from '../dns/service.ts';
export { socketAnswers } from '../util/unixsocket.ts';

/** A peer as `meshd status` shows it. */
export interface PeerStatus {
  hostname: string;
  publicKey: string;
  addresses: string[];
  online: boolean;
  /** Current path: a direct "ip:port", a DERP region, or none. */
  path: { direct: string | null; derp: string | null };
  /** Unix ms of the latest WireGuard handshake, 0 = never. */
  lastHandshake: number;
  rxBytes: number;
  txBytes: number;
  /** Exit node and subnet routes of the peer. */
  routing?: PeerRouting;
}

/** The agent's state as `meshd status --json` prints it. */
export interface Status {
  self: {
    hostname: string;
    addresses: string[];
    state: 'NoState' | 'NeedsLogin' | 'Starting' | 'Running' | 'Stopped';
    controlURL: string | null;
    publicKey: string | null;
    /** ACL tags of this node (from control). */
    tags?: string[];
    /** Health warnings (no UDP, no home DERP, control unreachable, key expiry); routing's are in routing.health. */
    health?: string[];
    /** Advertised/approved routes, exit node in use, packet filter, health warnings. */
    routing?: SelfRouting;
    /** MagicDNS: --accept-dns and how the host's resolver is configured (direct, systemd-resolved, none). */
    dns?: { acceptDns: boolean; mode: string };
    /** TUN device name, or `userspace-networking`. */
    tun?: string;
    /** Proxy listen addresses in userspace mode. */
    proxies?: { socks5?: string; http?: string };
    /** magicsock and DERP counters (disco, STUN, DERP packets, drops by reason), when running. */
    counters?: Record<string, number>;
  };
  peers: PeerStatus[];
}

/** Arguments of `ping` (a disco ping, like `tailscale ping`). */
export interface PingRequest {
  /** Tailnet IP, hostname or nodekey of the peer. */
  peer: string;
  timeoutMs: number;
}

/** One pong. */
export interface PingReply {
  /** The peer's name and first tailnet address. */
  name: string;
  ip: string;
  /** 'direct' (UDP) or 'derp'. */
  via: 'direct' | 'derp';
  /** The peer's address for a direct pong. */
  endpoint: string | null;
  /** DERP region ID and code for a pong via DERP. */
  region: number;
  regionCode: string;
  latencyMs: number;
}

/** `meshd whois --json`: the node holding a tailnet address and its owner (as tailscale whois). */
export interface WhoisReply {
  node: { id: number; name: string; hostname: string; addresses: string[]; tags: string[]; self: boolean; keyExpiry: string | null };
  user: { id: number; loginName: string; displayName: string };
}

/** `meshd netcheck --json`. */
export interface NetcheckReport {
  udp: boolean;
  globalV4: string | null;
  globalV6: string | null;
  mappingVariesByDestIP: boolean | null;
  /** Port-mapping services the gateway answered for (UPnP, NAT-PMP, PCP); null when not checked. */
  portMapping?: string[] | null;
  /** Our port-mapped address, if any. */
  portMapped?: string | null;
  preferredDERP: number;
  /** Latency by region ID (ms), with the region's name. */
  regions: { id: number; code: string; name: string; latencyMs: number | null; via?: 'stun' | 'https' }[];
}

/** Arguments of `up`, as the CLI sends them (the auth key travels only over this socket). */
export interface UpRequest {
  loginServer: string;
  authKey?: string;
  hostname?: string;
  caFile?: string;
  timeoutMs: number;
  /** Routing flags; absent ones keep their current value. */
  advertiseExitNode?: boolean;
  advertiseRoutes?: string[];
  /** Exit node IP or hostname; "" clears it. */
  exitNode?: string;
  exitNodeAllowLanAccess?: boolean;
  acceptRoutes?: boolean;
  /** --accept-dns; absent keeps the current value (default true). */
  acceptDns?: boolean;
  /** ACL tags this node must carry (`--advertise-tags`). */
  advertiseTags?: string[];
}

/** An error with a stable code and a one-line message saying what to do. */
export interface ApiError {
  code: string;
  message: string;
  retryable?: boolean;
}

/** What the local API serves. */
export interface LocalBackend {
  status(): Status;
  /** True when the agent will exit after down/logout (it was started by up). */
  readonly exitsWhenDown: boolean;
  up(req: UpRequest, progress: (msg: string) => void): Promise<Status>;
  down(): Promise<void>;
  logout(): Promise<void>;
  shutdown(): Promise<void>;
  /** A disco ping to a peer; rejects with a code when the peer is unknown or does not answer. */
  ping?(req: PingRequest): Promise<PingReply>;
  /** Runs a netcheck now. */
  netcheck?(): Promise<NetcheckReport>;
  /** MagicDNS configuration and host state. */
  dnsStatus?(): DnsStatus;
  /** Asks quad-100 (as `tailscale dns query`). */
  dnsQuery?(name: string, type: string): Promise<{ bytes: string; resolvers: string[] }>;
  /** Prometheus text exposition of the agent's metrics. */
  metrics?(): string;
  /** Which node holds a tailnet address. */
  whois?(req: { addr: string }): WhoisReply;
}

/** Max request body (an up request is small). */
const MAX_BODY = 64 * 1024;

/** Serves the local API on a unix socket. */
export class LocalApiServer {
  private server: Server | undefined;
  readonly path: string;
  private readonly backend: LocalBackend;

  constructor(path: string, backend: LocalBackend) {
    this.path = path;
    this.backend = backend;
  }

  /** Listens; refuses when another agent answers on the socket, replaces a stale file. */
  async listen(): Promise<void> {
    const server = createServer((req, res) => { void this.handle(req, res); });
    await listenUnix(server, this.path, { dirMode: 0o700, mode: 0o600, inUse: `another meshd agent is running on ${this.path}` });
    this.server = server;
  }

  /** Stops listening and removes the socket. */
  async close(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
    removeSocket(this.path);
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const send = (code: number, body: unknown) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify(body)}\n`);
    };
    try {
      const url = req.url ?? '';
      if (req.method === 'GET' && url === '/v0/status') return send(200, this.backend.status());
      if (req.method === 'GET' && url === '/v0/dns/status') {
        if (!this.backend.dnsStatus) return send(404, { error: { code: 'not_found', message: 'this agent has no MagicDNS' } });
        return send(200, this.backend.dnsStatus());
      }
      if (req.method === 'GET' && url === '/v0/metrics' && this.backend.metrics) {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' });
        res.end(this.backend.metrics());
        return;
      }
      if (req.method !== 'POST') return send(404, { error: { code: 'not_found', message: `no such endpoint ${req.method} ${url}` } });
      const body = await readBody(req);
      switch (url) {
        case '/v0/up': {
          res.writeHead(200, { 'content-type': 'application/x-ndjson' });
          try {
            const result = await this.backend.up(JSON.parse(body) as UpRequest, (msg) => res.write(`${JSON.stringify({ progress: msg })}\n`));
            res.end(`${JSON.stringify({ result })}\n`);
          } catch (e) {
            res.end(`${JSON.stringify({ error: toApiError(e) })}\n`);
          }
          return;
        }
        // `exiting` tells the CLI to wait for `pid` to be gone before it returns.
        case '/v0/down': await this.backend.down(); return send(200, { ok: true, exiting: this.backend.exitsWhenDown, pid: process.pid });
        case '/v0/logout': await this.backend.logout(); return send(200, { ok: true, exiting: this.backend.exitsWhenDown, pid: process.pid });
        case '/v0/ping':
          if (!this.backend.ping) return send(404, { error: { code: 'not_found', message: 'this agent cannot ping' } });
          return send(200, await this.backend.ping(JSON.parse(body) as PingRequest));
        case '/v0/whois':
          if (!this.backend.whois) return send(404, { error: { code: 'not_found', message: 'this agent cannot whois' } });
          return send(200, this.backend.whois(JSON.parse(body) as { addr: string }));
        case '/v0/netcheck':
          if (!this.backend.netcheck) return send(404, { error: { code: 'not_found', message: 'this agent cannot netcheck' } });
          return send(200, await this.backend.netcheck());
        case '/v0/dns/query': {
          if (!this.backend.dnsQuery) return send(404, { error: { code: 'not_found', message: 'this agent has no MagicDNS' } });
          const q = JSON.parse(body) as { name?: unknown; type?: unknown };
          if (typeof q.name !== 'string' || typeof q.type !== 'string') return send(400, { error: { code: 'bad_request', message: 'want {"name": "...", "type": "A"}' } });
          return send(200, await this.backend.dnsQuery(q.name, q.type));
        }
        case '/v0/shutdown':
          send(200, { ok: true, exiting: true, pid: process.pid });
          await this.backend.shutdown();
          return;
        default: return send(404, { error: { code: 'not_found', message: `no such endpoint ${url}` } });
      }
    } catch (e) {
      if (!res.headersSent) send(500, { error: toApiError(e) });
      else res.end();
    }
  }
}

/** Converts any thrown value into an ApiError (errors with a string `code` keep it). */
export function toApiError(e: unknown): ApiError {
  const err = e as { code?: unknown; message?: unknown; retryable?: unknown };
  return {
    code: typeof err.code === 'string' ? err.code : 'internal',
    message: typeof err.message === 'string' ? err.message : String(e),
    ...(typeof err.retryable === 'boolean' ? { retryable: err.retryable } : {}),
  };
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      body += d;
      if (body.length > MAX_BODY) { reject(new Error('request too large')); req.destroy(); }
    });
    req.on('end', () => resolve(body));
    req.on('error', reject);
  });
}

/** Error from the local API client, carrying the agent's code. */
export class LocalApiError extends Error {
  readonly code: string;
  /** The agent's word on whether trying again can help. */
  readonly retryable: boolean;
  constructor(code: string, message: string, retryable = false) {
    super(message);
    this.name = 'LocalApiError';
    this.code = code;
    this.retryable = retryable;
  }
}

/** Client side of the local API. */
export class LocalApiClient {
  readonly path: string;
  constructor(path: string) {
    this.path = path;
  }

  private call(method: string, url: string, body: unknown, onLine?: (obj: Record<string, unknown>) => void, timeoutMs = 30_000): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.path, method, path: url, headers: { 'content-type': 'application/json' } }, (res) => {
        let buf = '';
        let last: Record<string, unknown> = {};
        res.setEncoding('utf8');
        res.on('data', (d: string) => {
          buf += d;
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (!line.trim()) continue;
            last = JSON.parse(line) as Record<string, unknown>;
            onLine?.(last);
          }
        });
        res.on('end', () => {
          clearTimeout(timer);
          const err = last.error as ApiError | undefined;
          if (err) reject(new LocalApiError(err.code, err.message, err.retryable ?? false));
          else resolve(last);
        });
      });
      const timer = setTimeout(() => { req.destroy(new LocalApiError('timeout', `the agent did not answer ${url} within ${timeoutMs} ms`)); }, timeoutMs);
      req.on('error', (e: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') reject(new LocalApiError('not_running', `no meshd agent answers on ${this.path}: start one with meshd up (or meshd daemon)`));
        else if (e.code === 'EACCES') reject(new LocalApiError('permission', `cannot use ${this.path}: the local API is root-only, run with sudo`));
        else reject(e);
      });
      if (body !== undefined) req.end(JSON.stringify(body));
      else req.end();
    });
  }

  /** The agent's status. */
  async status(): Promise<Status> {
    return (await this.call('GET', '/v0/status', undefined)) as unknown as Status;
  }

  /** Logs in and brings the tailnet up; `progress` gets each step. */
  async up(req: UpRequest, progress: (msg: string) => void): Promise<Status> {
    const r = await this.call('POST', '/v0/up', req, (o) => { if (typeof o.progress === 'string') progress(o.progress); }, req.timeoutMs + 10_000);
    return r.result as Status;
  }

  /** Disconnects, keeping the identity (an agent started by up exits; this waits for that). */
  async down(): Promise<void> {
    await waitExit(await this.call('POST', '/v0/down', {}));
  }

  /** Logs out and forgets the identity (an agent started by up exits; this waits for that). */
  async logout(): Promise<void> {
    await waitExit(await this.call('POST', '/v0/logout', {}));
  }

  /** One disco ping to a peer. */
  async ping(req: PingRequest): Promise<PingReply> {
    return (await this.call('POST', '/v0/ping', req, undefined, req.timeoutMs + 5_000)) as unknown as PingReply;
  }

  /** The agent's metrics as Prometheus text. */
  metrics(): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.path, method: 'GET', path: '/v0/metrics', timeout: 10_000 }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => { text += d; });
        res.on('end', () => {
          if (res.statusCode === 200) resolve(text);
          else reject(new LocalApiError('not_found', 'this agent serves no metrics: upgrade it'));
        });
      });
      req.on('timeout', () => req.destroy(new LocalApiError('timeout', 'the agent did not answer /v0/metrics within 10 s')));
      req.on('error', (e: NodeJS.ErrnoException) => {
        if (e instanceof LocalApiError) reject(e);
        else if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') reject(new LocalApiError('not_running', `no meshd agent answers on ${this.path}: start one with meshd up (or meshd daemon)`));
        else if (e.code === 'EACCES') reject(new LocalApiError('permission', `cannot use ${this.path}: the local API is root-only, run with sudo`));
        else reject(e);
      });
      req.end();
    });
  }

  /** Which node holds a tailnet address. */
  async whois(addr: string): Promise<WhoisReply> {
    return (await this.call('POST', '/v0/whois', { addr })) as unknown as WhoisReply;
  }

  /** A fresh netcheck report. */
  async netcheck(): Promise<NetcheckReport> {
    return (await this.call('POST', '/v0/netcheck', {}, undefined, 15_000)) as unknown as NetcheckReport;
  }

  /** MagicDNS status. */
  async dnsStatus(): Promise<DnsStatus> {
    return (await this.call('GET', '/v0/dns/status', undefined)) as unknown as DnsStatus;
  }

  /** One query through quad-100. */
  async dnsQuery(name: string, type: string): Promise<{ bytes: string; resolvers: string[] }> {
    return (await this.call('POST', '/v0/dns/query', { name, type }, undefined, 15_000)) as unknown as { bytes: string; resolvers: string[] };
  }

  /** Asks the agent to exit and waits until it has. */
  async shutdown(): Promise<void> {
    await waitExit(await this.call('POST', '/v0/shutdown', {}));
  }
}

/** Waits (at most 10 s) for an exiting agent's process to be gone. */
async function waitExit(reply: Record<string, unknown>): Promise<void> {
  if (reply.exiting !== true || typeof reply.pid !== 'number') return;
  const pid = reply.pid;
  for (let i = 0; i < 200; i++) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new LocalApiError('exit_timeout', `the agent (pid ${pid}) did not exit within 10 s: kill it with kill ${pid}`);
}
