// TS2021: the Noise-over-HTTP transport to a Tailscale control server (TS:control/controlhttp,
// TS:control/ts2021, HS:hscontrol/noise.go). Reference: control-plane.md sections 1 and 2.
//
//   1. GET <server>/key?v=<capver>  → {"legacyPublicKey":"mkey:0…","publicKey":"mkey:<hex>"}
//   2. POST /ts2021 HTTP/1.1
//        Upgrade: tailscale-control-protocol
//        Connection: upgrade
//        X-Tailscale-Handshake: base64(101-byte Noise initiation)
//      ← HTTP/1.1 101 Switching Protocols, Upgrade: tailscale-control-protocol
//   3. ← 51-byte Noise response (or a type-3 error frame), then transport records both ways.
//   4. The server's decrypted stream starts with the early payload (noise/early.ts), then HTTP/2.
//   5. HTTP/2 with prior knowledge over the NoiseConn.
// TLS (https:// URLs): no ALPN is offered (HTTP/2 cannot switch protocols), and certificates are
// verified against the system roots plus an optional CA file, for /key and for the upgrade alike.
// (Tailscale's Go client only logs certificate errors on the upgrade, since Noise authenticates the
// server; it verifies /key, so a server that works with it works here.)
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import { readFileSync } from 'node:fs';
import { connect as tlsConnect, rootCertificates } from 'node:tls';
import { isIP } from 'node:net';
import type { TcpDialer } from '../net/tcp.ts';
import type { Duplex } from 'node:stream';
import { parseMachinePublic, isZeroKey, type MachinePublic, type PrivateKey } from './keys.ts';
import { clientHandshake, responseLength, HEADER_LEN } from './noise/handshake.ts';
import { NoiseConn } from './noise/conn.ts';
import type { EarlyNoise } from './noise/early.ts';

/** The Upgrade header value both sides use. */
export const UPGRADE_PROTOCOL = 'tailscale-control-protocol';
/** The path of the Noise upgrade. */
export const UPGRADE_PATH = '/ts2021';
/** The header carrying the base64 initiation. */
export const HANDSHAKE_HEADER = 'X-Tailscale-Handshake';

/** How to reach the server. */
export interface ServerEndpoint {
  /** `http://host[:port]` or `https://host[:port]` (a path is ignored). */
  url: string;
  /** Extra CA certificate file (PEM) trusted besides the system roots, for https. */
  caFile?: string;
  /** Per-step timeout in milliseconds (connect, upgrade, handshake); default 15 s. */
  timeoutMs?: number;
  /** Makes the TCP connections (the agent's carry SO_MARK, src/net/tcp.ts); default Node's own. */
  dial?: TcpDialer;
}

/** A transport-level failure; `stage` says where it happened. */
export class TransportError extends Error {
  /** Which step failed. */
  readonly stage: 'connect' | 'key' | 'upgrade' | 'handshake' | 'http2';
  /** True when no TCP connection could be made at all. */
  readonly unreachable: boolean;
  /** True when the server's TLS certificate was not trusted. */
  readonly tlsUntrusted: boolean;
  constructor(stage: TransportError['stage'], message: string, opts: { unreachable?: boolean; tlsUntrusted?: boolean; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'TransportError';
    this.stage = stage;
    this.unreachable = opts.unreachable ?? false;
    this.tlsUntrusted = opts.tlsUntrusted ?? false;
  }
}

const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET']);
const TLS_CODES = /^(ERR_TLS_CERT|CERT_|DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT)/;

function tlsOptions(ep: ServerEndpoint): { ca?: string[] } {
  if (!ep.caFile) return {};
  return { ca: [...rootCertificates, readFileSync(ep.caFile, 'utf8')] };
}

/** How a request reaches the server: a fresh connection of Node's, or one from ep.dial (TLS on top for https). */
function connectOptions(ep: ServerEndpoint, u: URL): https.RequestOptions {
  const dial = ep.dial;
  if (!dial) return { agent: false, ...tlsOptions(ep) };
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1');
  const port = Number(u.port || (u.protocol === 'https:' ? 443 : 80));
  return {
    createConnection: () => {
      const raw = dial(host, port);
      if (u.protocol !== 'https:') return raw;
      // host: the name (or IP) the certificate must match, not the socket's mapped address.
      return tlsConnect({ socket: raw, host, ...(isIP(host) ? {} : { servername: host }), ALPNProtocols: ['http/1.1'], ...tlsOptions(ep) });
    },
  };
}

function parseServerUrl(raw: string): URL {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new TransportError('connect', `control server URL ${JSON.stringify(raw)} is not a URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new TransportError('connect', `control server URL must start with http:// or https://, got ${u.protocol}`);
  }
  return u;
}

function netError(stage: TransportError['stage'], u: URL, e: unknown): TransportError {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  if (TLS_CODES.test(code)) {
    return new TransportError(stage, `TLS certificate of ${u.origin} is not trusted: ${(e as Error).message}`, { tlsUntrusted: true, cause: e });
  }
  return new TransportError(stage, `cannot reach control server ${u.origin}: ${(e as Error).message}`, { unreachable: UNREACHABLE_CODES.has(code), cause: e });
}

/** Fetches the server's Noise public key with GET /key?v=capver (plain HTTP(S), not Noise). */
export async function fetchServerKey(ep: ServerEndpoint, capVer: number): Promise<MachinePublic> {
  const u = parseServerUrl(ep.url);
  const keyUrl = new URL(`/key?v=${capVer}`, u.origin);
  const mod = u.protocol === 'https:' ? https : http;
  const timeout = ep.timeoutMs ?? 15_000;
  const body = await new Promise<string>((resolve, reject) => {
    const req = mod.get(keyUrl, { ...connectOptions(ep, u), timeout }, (res) => {
      const parts: Buffer[] = [];
      let n = 0;
      res.on('data', (c: Buffer) => {
        n += c.length;
        if (n > 64 * 1024) { req.destroy(new Error('/key response too large')); return; }
        parts.push(c);
      });
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8');
        if (res.statusCode !== 200) reject(new TransportError('key', `GET /key: HTTP ${res.statusCode}: ${text.trim().slice(0, 200)}`));
        else resolve(text);
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeout} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (e) => reject(e instanceof TransportError ? e : netError('key', u, e)));
  });
  let parsed: { publicKey?: unknown };
  try {
    parsed = JSON.parse(body) as { publicKey?: unknown };
  } catch {
    throw new TransportError('key', `GET /key: not JSON (is ${u.origin} a Tailscale control server?)`);
  }
  if (typeof parsed.publicKey !== 'string') throw new TransportError('key', 'GET /key: no publicKey in the answer');
  const key = parseMachinePublic(parsed.publicKey);
  if (isZeroKey(key)) throw new TransportError('key', 'GET /key: control server is too old (no Noise key)');
  return key;
}

/** A live Noise connection with HTTP/2 on it. */
export interface ControlConnection {
  /** The HTTP/2 session; requests go here. */
  readonly session: http2.ClientHttp2Session;
  /** The Noise stream under it. */
  readonly noise: NoiseConn;
  /** The early payload, when the server sent one before HTTP/2. */
  readonly early: Promise<EarlyNoise | undefined>;
  /** Closes everything. */
  close(): void;
}

/** Options for {@link dialControl}. */
export interface DialOptions extends ServerEndpoint {
  /** The server's Noise key (from /key, or pinned). */
  serverKey: MachinePublic;
  /** Our machine private key. */
  machinePrivate: PrivateKey;
  /** Capability version, also the Noise protocol version. */
  capVer: number;
}

/** Reads exactly n bytes from a socket, starting with `head`; resolves with them and the rest. */
function readExactly(sock: Duplex, head: Uint8Array, want: (have: Uint8Array) => number, timeoutMs: number): Promise<{ msg: Uint8Array; rest: Uint8Array }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.from(head);
    const cleanup = (): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('end', onEnd);
      sock.off('error', onErr);
      sock.off('close', onEnd);
    };
    const check = (): boolean => {
      let n = want(buf);
      if (buf.length < n) return false;
      n = want(buf);
      if (buf.length < n) return false;
      cleanup();
      sock.pause();
      resolve({ msg: new Uint8Array(buf.subarray(0, n)), rest: new Uint8Array(buf.subarray(n)) });
      return true;
    };
    const onData = (c: Buffer): void => {
      buf = Buffer.concat([buf, c]);
      check();
    };
    const onEnd = (): void => {
      cleanup();
      reject(new TransportError('handshake', 'control server closed the connection during the Noise handshake (capability version refused, or wrong server key)'));
    };
    const onErr = (e: Error): void => {
      cleanup();
      reject(new TransportError('handshake', `Noise handshake: ${e.message}`, { cause: e }));
    };
    const timer = setTimeout(() => {
      cleanup();
      sock.destroy();
      reject(new TransportError('handshake', `no Noise handshake response within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('data', onData);
    sock.on('end', onEnd);
    sock.on('close', onEnd);
    sock.on('error', onErr);
    if (!check()) sock.resume();
  });
}

/** Sends the HTTP/1.1 upgrade carrying the initiation; resolves with the raw socket after 101. */
function upgrade(ep: DialOptions, initiation: Uint8Array): Promise<{ socket: Duplex; head: Uint8Array }> {
  const u = parseServerUrl(ep.url);
  const mod = u.protocol === 'https:' ? https : http;
  const timeout = ep.timeoutMs ?? 15_000;
  return new Promise((resolve, reject) => {
    const req = mod.request(new URL(UPGRADE_PATH, u.origin), {
      method: 'POST',
      timeout,
      ...connectOptions(ep, u),
      headers: {
        Upgrade: UPGRADE_PROTOCOL,
        Connection: 'upgrade',
        [HANDSHAKE_HEADER]: Buffer.from(initiation).toString('base64'),
      },
    });
    req.on('upgrade', (res, socket, head) => {
      req.setTimeout(0);
      const up = String(res.headers.upgrade ?? '').toLowerCase();
      if (up !== UPGRADE_PROTOCOL) {
        socket.destroy();
        reject(new TransportError('upgrade', `control server upgraded to ${JSON.stringify(up)}, not ${UPGRADE_PROTOCOL}`));
        return;
      }
      // The request's idle timeout must not follow the socket into its long-lived Noise life.
      socket.setTimeout(0);
      socket.setNoDelay(true);
      resolve({ socket, head: new Uint8Array(head) });
    });
    req.on('response', (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => { if (parts.length < 16) parts.push(c); });
      res.on('end', () => {
        const text = Buffer.concat(parts).toString('utf8').trim().slice(0, 200);
        reject(new TransportError('upgrade', `POST ${UPGRADE_PATH}: expected 101, got HTTP ${res.statusCode}${text ? `: ${text}` : ''}`));
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error(`no answer within ${timeout} ms`), { code: 'ETIMEDOUT' })));
    req.on('error', (e) => reject(netError('connect', u, e)));
    req.end();
  });
}

/**
 * Dials the control server: upgrade, Noise IK, early payload, then HTTP/2 with prior knowledge.
 * Throws TransportError; a HandshakeRefusedError or an authentication failure becomes stage
 * 'handshake'.
 */
export async function dialControl(opts: DialOptions): Promise<ControlConnection> {
  const u = parseServerUrl(opts.url);
  const timeout = opts.timeoutMs ?? 15_000;
  const hs = clientHandshake({ machinePrivate: opts.machinePrivate, serverPublic: opts.serverKey, version: opts.capVer });
  const { socket, head } = await upgrade(opts, hs.initiation);
  let keys;
  let rest: Uint8Array;
  try {
    const r = await readExactly(socket, head, (b) => (b.length < HEADER_LEN ? HEADER_LEN : responseLength(b)), timeout);
    rest = r.rest;
    keys = hs.finish(r.msg);
  } catch (e) {
    socket.destroy();
    if (e instanceof TransportError) throw e;
    throw new TransportError('handshake', `Noise handshake with ${u.origin} failed: ${(e as Error).message}`, { cause: e });
  }
  const noise = new NoiseConn(socket, keys, { initial: rest, stripEarlyPayload: true });
  const early = new Promise<EarlyNoise | undefined>((resolve) => {
    noise.once('earlyPayload', (p: EarlyNoise) => resolve(p));
    noise.once('close', () => resolve(noise.earlyPayload));
  });
  socket.resume();
  // Node sets :scheme from the authority's protocol; Go's server accepts http or https.
  const session = http2.connect(u.origin, {
    createConnection: () => noise,
    settings: { enablePush: false },
  });
  session.on('error', () => { /* surfaced per request; the owner watches 'close' */ });
  return {
    session,
    noise,
    early,
    close() {
      session.destroy();
      noise.destroy();
    },
  };
}
