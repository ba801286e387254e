// An HTTP proxy for outgoing connections (as tailscaled's --outbound-http-proxy-listen): CONNECT
// host:port tunnels (RFC 9110 9.3.6) and absolute-URI requests (RFC 9112 3.2.2), one request per
// client connection for the latter (forwarded with `Connection: close`, hop-by-hop headers
// dropped). The request head is parsed here, bounded in size and time; nothing else of HTTP is
// interpreted, bodies and responses are relayed as bytes.
import type { Duplex } from 'node:stream';
import { relay, type ProxyCounters, type ProxyDialer } from './socks5.ts';

/** Most bytes of a request head. */
const MAX_HEAD = 16 * 1024;

/** Hop-by-hop headers a proxy must not forward (RFC 9110 7.6.1), plus the proxy's own. */
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding-hop', 'upgrade']);

/** A parsed request head. */
export interface ProxyRequest {
  method: string;
  target: string;
  version: string;
  headers: [string, string][];
  /** Bytes after the head (start of a body, or tunnel data). */
  rest: Uint8Array;
}

/** Parses a request head from buf; undefined when incomplete; throws a one-line Error when malformed. */
export function parseRequestHead(buf: Buffer): ProxyRequest | undefined {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) {
    if (buf.length > MAX_HEAD) throw new Error('request head larger than 16 KiB');
    return undefined;
  }
  if (end > MAX_HEAD) throw new Error('request head larger than 16 KiB');
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^([A-Z]+) (\S+) (HTTP\/1\.[01])$/.exec(lines[0] ?? '');
  if (!m) throw new Error(`malformed request line ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`);
  const headers: [string, string][] = [];
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i <= 0) throw new Error(`malformed header line ${JSON.stringify(l.slice(0, 80))}`);
    headers.push([l.slice(0, i).trim(), l.slice(i + 1).trim()]);
  }
  return { method: m[1]!, target: m[2]!, version: m[3]!, headers, rest: buf.subarray(end + 4) };
}

/** host:port of a CONNECT target (`host:port`, `[v6]:port`); throws when malformed. */
export function parseAuthority(t: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(t);
  if (!m) throw new Error(`bad CONNECT target ${JSON.stringify(t.slice(0, 80))}: want host:port`);
  const port = Number(m[3]);
  if (port < 1 || port > 65535) throw new Error(`bad port in ${JSON.stringify(t)}`);
  return { host: m[1] ?? m[2]!, port };
}

function respond(sock: Duplex, code: number, text: string, body: string, extra: string[] = []): void {
  sock.end(`HTTP/1.1 ${code} ${text}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body) + 1}\r\nConnection: close\r\n${extra.map((h) => `${h}\r\n`).join('')}\r\n${body}\n`);
}

/** Serves one HTTP proxy client on `sock`. */
export function serveHttpProxy(sock: Duplex, dialer: ProxyDialer, opts: { headMs?: number; counters: ProxyCounters; log?: (l: string) => void }): void {
  const c = opts.counters;
  c.accepted++;
  c.active++;
  sock.once('close', () => { c.active--; });
  let buf: Buffer = Buffer.alloc(0);
  let done = false;
  const timer = setTimeout(() => { if (!done) { done = true; c.idleTimeout++; respond(sock, 408, 'Request Timeout', 'no complete request head in time'); } }, opts.headMs ?? 15_000);
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    let req: ProxyRequest | undefined;
    try {
      req = parseRequestHead(buf);
    } catch (e) {
      stop();
      c.badRequest++;
      respond(sock, 400, 'Bad Request', (e as Error).message);
      return;
    }
    if (!req) return;
    stop();
    handle(req);
  };
  const stop = (): void => { done = true; clearTimeout(timer); sock.off('data', onData); sock.pause(); };
  const handle = (req: ProxyRequest): void => {
    let host: string, port: number, head: string | undefined;
    try {
      if (req.method === 'CONNECT') {
        ({ host, port } = parseAuthority(req.target));
      } else {
        let u: URL;
        try { u = new URL(req.target); } catch { throw new Error('bogus RequestURI; must be absolute URL or CONNECT'); }
        if (u.protocol !== 'http:') throw new Error(`only http:// URLs can be proxied without CONNECT, not ${u.protocol}`);
        host = u.hostname.replace(/^\[|\]$/g, '');
        port = u.port ? Number(u.port) : 80;
        const hdrs = req.headers.filter(([k]) => !HOP.has(k.toLowerCase()));
        if (!hdrs.some(([k]) => k.toLowerCase() === 'host')) hdrs.unshift(['Host', u.host]);
        head = `${req.method} ${u.pathname}${u.search} ${req.version}\r\n${hdrs.map(([k, v]) => `${k}: ${v}\r\n`).join('')}Connection: close\r\n\r\n`;
      }
    } catch (e) {
      c.badRequest++;
      respond(sock, 400, 'Bad Request', (e as Error).message);
      return;
    }
    dialer.dial(host, port).then((up) => {
      if (sock.destroyed) { up.destroy(); return; }
      c.connected++;
      if (head === undefined) sock.write('HTTP/1.1 200 OK\r\n\r\n');
      else up.write(head);
      if (req.rest.length > 0) up.write(req.rest);
      relay(sock, up);
    }, (e: unknown) => {
      c.failed++;
      const msg = (e as Error).message.replace(/[\r\n]/g, ' ');
      opts.log?.(`http proxy: ${req.method} ${host}:${port}: ${msg}`);
      respond(sock, 502, 'Bad Gateway', `cannot connect to ${host}:${port}: ${msg}`, [`Meshd-Connect-Error: ${msg}`]);
    });
  };
  sock.on('data', onData);
  sock.on('error', () => { done = true; clearTimeout(timer); });
  sock.on('close', () => { clearTimeout(timer); });
}
