// A SOCKS5 server (RFC 1928) with no-auth and username/password (RFC 1929), CONNECT and UDP
// ASSOCIATE (as tailscale's net/socks5), over any Duplex: the codec is a small incremental parser,
// the dialing and the datagram relay are the caller's.
//
//   greeting  05 NMETHODS METHODS...          -> 05 METHOD (00 none, 02 user/pass, FF none acceptable)
//   auth      01 ULEN UNAME PLEN PASSWD        -> 01 STATUS (00 ok; anything else, then close)
//   request   05 CMD 00 ATYP DST.ADDR DST.PORT -> 05 REP 00 ATYP BND.ADDR BND.PORT
//             CMD 01 CONNECT, 03 UDP ASSOCIATE; ATYP 01 IPv4 (4), 03 domain (len + name), 04 IPv6 (16)
//   UDP datagram to/from BND (RFC 1928 7): 00 00 FRAG ATYP DST.ADDR DST.PORT DATA (FRAG must be 0)
//
// Why not @pondwader/socks5-server (looked at, v1.0.10): it answers an unknown address type by
// closing without the 08 reply, writes a two-byte reply for unsupported commands, offers only one
// of no-auth or user/pass, and has no deadline for clients that say nothing. The framing here is
// 150 lines and gets those right.
import { createSocket } from 'node:dgram';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';

/** Reply codes (RFC 1928 6). */
export const Rep = {
  ok: 0, general: 1, notAllowed: 2, netUnreachable: 3, hostUnreachable: 4, refused: 5, ttlExpired: 6,
  cmdUnsupported: 7, atypUnsupported: 8,
} as const;

/** A parsed CONNECT or UDP ASSOCIATE request. */
export interface SocksRequest {
  host: string;
  port: number;
  /** 'ip' for ATYP 1/4, 'domain' for 3. */
  kind: 'ip' | 'domain';
  /** CONNECT (1) or UDP ASSOCIATE (3). */
  cmd: 'connect' | 'udp';
}

/** Result of feeding bytes to the parser. */
export type SocksStep =
  | { t: 'more' }
  | { t: 'reply'; bytes: Uint8Array; close: boolean }
  | { t: 'auth'; user: string; pass: string }
  | { t: 'request'; req: SocksRequest; rest: Uint8Array }
  | { t: 'error'; reply: Uint8Array | null; reason: string };

/** The server side of one SOCKS5 handshake, without I/O. */
export class SocksHandshake {
  private buf = Buffer.alloc(0);
  private phase: 'greeting' | 'auth' | 'request' | 'done' = 'greeting';
  private readonly wantAuth: boolean;

  constructor(opts: { auth: boolean }) {
    this.wantAuth = opts.auth;
  }

  /** Adds bytes; returns the next step (call again with an empty chunk until 'more'). */
  feed(chunk: Uint8Array): SocksStep {
    if (chunk.length > 0) this.buf = this.buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.buf, chunk]);
    if (this.buf.length > 1024) return { t: 'error', reply: null, reason: 'handshake larger than 1 KiB' };
    const b = this.buf;
    switch (this.phase) {
      case 'greeting': {
        if (b.length < 2) return { t: 'more' };
        if (b[0] !== 5) return { t: 'error', reply: null, reason: `not SOCKS5 (version byte ${b[0]})` };
        const n = b[1]!;
        if (b.length < 2 + n) return { t: 'more' };
        const methods = b.subarray(2, 2 + n);
        this.buf = b.subarray(2 + n);
        const want = this.wantAuth ? 2 : 0;
        if (n === 0 || !methods.includes(want)) {
          this.phase = 'done';
          return { t: 'error', reply: Uint8Array.of(5, 0xff), reason: this.wantAuth ? 'client offers no username/password method' : 'client does not offer no-auth' };
        }
        this.phase = this.wantAuth ? 'auth' : 'request';
        return { t: 'reply', bytes: Uint8Array.of(5, want), close: false };
      }
      case 'auth': {
        if (b.length < 2) return { t: 'more' };
        if (b[0] !== 1) { this.phase = 'done'; return { t: 'error', reply: Uint8Array.of(1, 1), reason: `bad auth version ${b[0]}` }; }
        const ul = b[1]!;
        if (b.length < 3 + ul) return { t: 'more' };
        const pl = b[2 + ul]!;
        if (b.length < 3 + ul + pl) return { t: 'more' };
        const user = b.subarray(2, 2 + ul).toString('utf8');
        const pass = b.subarray(3 + ul, 3 + ul + pl).toString('utf8');
        this.buf = b.subarray(3 + ul + pl);
        this.phase = 'request';
        return { t: 'auth', user, pass };
      }
      case 'request': {
        if (b.length < 5) return { t: 'more' };
        if (b[0] !== 5) { this.phase = 'done'; return { t: 'error', reply: reply(Rep.general), reason: `bad request version ${b[0]}` }; }
        const cmd = b[1]!, atyp = b[3]!;
        let alen: number, hostOff = 4;
        if (atyp === 1) alen = 4;
        else if (atyp === 4) alen = 16;
        else if (atyp === 3) { alen = b[4]!; hostOff = 5; if (alen === 0) { this.phase = 'done'; return { t: 'error', reply: reply(Rep.general), reason: 'empty domain name' }; } }
        else { this.phase = 'done'; return { t: 'error', reply: reply(Rep.atypUnsupported), reason: `address type ${atyp} unsupported` }; }
        const end = hostOff + alen + 2;
        if (b.length < end) return { t: 'more' };
        if (cmd !== 1 && cmd !== 3) { this.phase = 'done'; return { t: 'error', reply: reply(Rep.cmdUnsupported), reason: `command ${cmd} unsupported (CONNECT and UDP ASSOCIATE only)` }; }
        const host = addrText(atyp, b.subarray(hostOff, hostOff + alen));
        if (host === null) { this.phase = 'done'; return { t: 'error', reply: reply(Rep.hostUnreachable), reason: `bad domain name ${JSON.stringify(b.subarray(hostOff, hostOff + alen).toString('latin1'))}` }; }
        const port = (b[end - 2]! << 8) | b[end - 1]!;
        const rest = b.subarray(end);
        this.buf = Buffer.alloc(0);
        this.phase = 'done';
        return { t: 'request', req: { host, port, kind: atyp === 3 ? 'domain' : 'ip', cmd: cmd === 1 ? 'connect' : 'udp' }, rest };
      }
      default:
        return { t: 'more' };
    }
  }
}

/** An address field as text (ATYP 1, 3 or 4), or null for a domain name with characters a name cannot have. */
function addrText(atyp: number, a: Uint8Array): string | null {
  if (atyp === 1) return `${a[0]}.${a[1]}.${a[2]}.${a[3]}`;
  if (atyp === 4) return ipv6Text(a);
  const host = Buffer.from(a.buffer, a.byteOffset, a.length).toString('latin1');
  return /^[A-Za-z0-9._-]+$/.test(host) || isIP(host) !== 0 ? host : null;
}

/** A datagram of a UDP association (RFC 1928 7), parsed in place. */
export interface SocksUdpDatagram {
  host: string;
  port: number;
  /** The payload (a view into the datagram). */
  data: Uint8Array;
}

/** Parses a client's UDP datagram; a string says why it is dropped (fragments are not supported, as in tailscale). */
export function parseUdpDatagram(b: Uint8Array): SocksUdpDatagram | string {
  if (b.length < 4) return 'datagram shorter than its header';
  if (b[0] !== 0 || b[1] !== 0) return 'reserved bytes not zero';
  if (b[2] !== 0) return `fragment ${b[2]} (fragmentation is not supported)`;
  const atyp = b[3]!;
  let alen: number, hostOff = 4;
  if (atyp === 1) alen = 4;
  else if (atyp === 4) alen = 16;
  else if (atyp === 3) { if (b.length < 5) return 'datagram shorter than its header'; alen = b[4]!; hostOff = 5; if (alen === 0) return 'empty domain name'; }
  else return `address type ${atyp} unsupported`;
  const end = hostOff + alen + 2;
  if (b.length < end) return 'datagram shorter than its header';
  const host = addrText(atyp, b.subarray(hostOff, hostOff + alen));
  if (host === null) return 'bad domain name';
  return { host, port: (b[end - 2]! << 8) | b[end - 1]!, data: b.subarray(end) };
}

/** Builds a datagram for the client: the header with the sender's address (an IP), then data. */
export function writeUdpDatagram(host: string, port: number, data: Uint8Array): Buffer {
  const r = reply(0, host, port); // 05 00 00 ATYP ADDR PORT: the same layout after the first 3 bytes
  const out = Buffer.allocUnsafe(r.length + data.length);
  out.set(r, 0);
  out[0] = 0; out[1] = 0; out[2] = 0;
  out.set(data, r.length);
  return out;
}

function ipv6Text(a: Uint8Array): string {
  const g: string[] = [];
  for (let i = 0; i < 16; i += 2) g.push(((a[i]! << 8) | a[i + 1]!).toString(16));
  return g.join(':');
}

/** A reply with BND = the given address (default 0.0.0.0:0). */
export function reply(rep: number, bindHost = '0.0.0.0', bindPort = 0): Uint8Array {
  const v = isIP(bindHost);
  if (v === 6) {
    const out = Buffer.alloc(22);
    out[0] = 5; out[1] = rep; out[3] = 4;
    const parts = expand6(bindHost);
    for (let i = 0; i < 8; i++) out.writeUInt16BE(parts[i]!, 4 + 2 * i);
    out.writeUInt16BE(bindPort, 20);
    return out;
  }
  const out = Buffer.alloc(10);
  out[0] = 5; out[1] = rep; out[3] = 1;
  const p = (v === 4 ? bindHost : '0.0.0.0').split('.').map(Number);
  for (let i = 0; i < 4; i++) out[4 + i] = p[i]!;
  out.writeUInt16BE(bindPort, 8);
  return out;
}

function expand6(s: string): number[] {
  const [h, t] = s.split('::') as [string, string | undefined];
  const head = h ? h.split(':') : [];
  const tail = t ? t.split(':') : [];
  const mid = new Array<string>(8 - head.length - tail.length).fill('0');
  return [...head, ...(t === undefined ? [] : mid), ...tail].map((x) => parseInt(x, 16) || 0);
}

/** How a dial failed, mapped to a SOCKS reply. */
export function repForError(e: unknown): number {
  const code = (e as { code?: string }).code ?? '';
  switch (code) {
    case 'ECONNREFUSED': return Rep.refused;
    case 'ENOTFOUND': case 'EAI_AGAIN': case 'EHOSTUNREACH': case 'ETIMEDOUT': return Rep.hostUnreachable;
    case 'ENETUNREACH': case 'ENOROUTE': return Rep.netUnreachable;
    case 'EPERM': case 'EACCES': return Rep.notAllowed;
    default: return Rep.general;
  }
}

/** One UDP association's way out (RFC 1928 7): datagrams to targets, replies back through onReply. */
export interface UdpAssociation {
  /** Sends data to host:port (a name is resolved the tailnet's way); failures are dropped and counted. */
  send(host: string, port: number, data: Uint8Array): void;
  close(): void;
}

/**
 * An upstream connection that relays with the client's socket by itself, both ways
 * (src/netstack/relay.ts TcpRelay: a netstack connection without node:stream).
 */
export interface RelayUpstream {
  relayWith(sock: Duplex): void;
  /** Bytes for the target before the relay starts. */
  write(chunk: Uint8Array | string): unknown;
  /** Drops the connection (the client went away first). */
  destroy(): unknown;
}

/** What a dial gives a proxy: a stream, or a connection that relays by itself; the local address goes into replies. */
export type ProxyUpstream = (Duplex | RelayUpstream) & { localAddress?: string | undefined; localPort?: number | undefined };

/** What a proxy needs to reach a target. */
export interface ProxyDialer {
  /** Connects to host:port (a name is resolved the tailnet's way); rejects with an error carrying `code`. */
  dial(host: string, port: number): Promise<ProxyUpstream>;
  /** Opens a UDP association; replies from targets come to onReply (sender as an IP). Absent: UDP ASSOCIATE is refused. */
  associateUdp?(onReply: (host: string, port: number, data: Uint8Array) => void): UdpAssociation;
}

/** Counters of a proxy server. */
export interface ProxyCounters {
  accepted: number;
  connected: number;
  failed: number;
  badRequest: number;
  authFailed: number;
  idleTimeout: number;
  active: number;
  /** UDP associations opened, datagrams relayed each way, datagrams dropped (bad header, wrong sender, fragments). */
  udpAssociations: number;
  udpOut: number;
  udpIn: number;
  udpDropped: number;
}

export function newProxyCounters(): ProxyCounters {
  return { accepted: 0, connected: 0, failed: 0, badRequest: 0, authFailed: 0, idleTimeout: 0, active: 0, udpAssociations: 0, udpOut: 0, udpIn: 0, udpDropped: 0 };
}

/** `a` then `b` in one buffer (`a` may be empty). */
function joined(a: Uint8Array | undefined, b: Uint8Array): Uint8Array {
  if (a === undefined) return b;
  const out = Buffer.allocUnsafe(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

/**
 * Serves one SOCKS5 client on `sock`: handshake (bounded by handshakeMs), dial, then relay.
 *
 * A reply (method, auth) is held while the client's next message is already buffered and goes out
 * in one write with the next reply: a client that sends greeting and CONNECT together (as
 * scripts/socks-load.mjs, many libraries) gets the method and CONNECT replies in one segment, one
 * host socket write per connection fewer (that write was ~5% of the proxy's CPU in a connection
 * storm). A client that waits for each reply gets it at once, as before.
 */
export function serveSocks(sock: Duplex & { setTimeout?: (ms: number, cb?: () => void) => unknown }, dialer: ProxyDialer,
  opts: { auth?: { user: string; pass: string } | undefined; handshakeMs?: number; counters: ProxyCounters; log?: (l: string) => void }): void {
  const c = opts.counters;
  c.accepted++;
  c.active++;
  let done = false;
  const hs = new SocksHandshake({ auth: opts.auth !== undefined });
  const timer = setTimeout(() => { if (!done) { c.idleTimeout++; sock.destroy(); } }, opts.handshakeMs ?? 15_000);
  /** Replies not written yet (see above). */
  let held: Uint8Array | undefined;
  const fail = (bytes: Uint8Array | null, why: string, counter: 'badRequest' | 'authFailed' | 'failed'): void => {
    done = true;
    clearTimeout(timer);
    c[counter]++;
    opts.log?.(`socks5: ${why}`);
    if (bytes) sock.end(joined(held, bytes)); else sock.destroy();
    held = undefined;
  };
  const onData = (chunk: Buffer): void => {
    let step = hs.feed(chunk);
    for (let guard = 0; guard < 8; guard++) {
      if (step.t === 'more') {
        if (held !== undefined) { sock.write(held); held = undefined; }
        return;
      }
      if (step.t === 'error') { sock.off('data', onData); fail(step.reply, step.reason, 'badRequest'); return; }
      if (step.t === 'reply') { held = joined(held, step.bytes); step = hs.feed(EMPTY); continue; }
      if (step.t === 'auth') {
        const ok = opts.auth !== undefined && step.user === opts.auth.user && step.pass === opts.auth.pass;
        if (!ok) { sock.off('data', onData); fail(Uint8Array.of(1, 1), 'username/password rejected', 'authFailed'); return; }
        held = joined(held, AUTH_OK);
        step = hs.feed(EMPTY);
        continue;
      }
      // request
      sock.off('data', onData);
      sock.pause();
      const { req, rest } = step;
      clearTimeout(timer);
      if (req.cmd === 'udp') {
        if (dialer.associateUdp === undefined) { fail(reply(Rep.cmdUnsupported), 'UDP ASSOCIATE unsupported here', 'badRequest'); return; }
        done = true;
        const first = held;
        held = undefined;
        associate(sock, dialer.associateUdp.bind(dialer), c, opts.log, first);
        return;
      }
      dialer.dial(req.host, req.port).then((up) => {
        if (sock.destroyed) { up.destroy(); return; }
        done = true;
        c.connected++;
        sock.write(joined(held, reply(Rep.ok, up.localAddress ?? '0.0.0.0', up.localPort ?? 0)));
        held = undefined;
        if (rest.length > 0) up.write(rest);
        relay(sock, up);
      }, (e: unknown) => {
        fail(reply(repForError(e)), `CONNECT ${req.host}:${req.port}: ${(e as Error).message}`, 'failed');
      });
      return;
    }
  };
  sock.on('data', onData);
  sock.on('error', () => { done = true; clearTimeout(timer); });
  sock.once('close', () => { c.active--; clearTimeout(timer); });
}

const EMPTY = new Uint8Array(0);
const AUTH_OK = Uint8Array.of(1, 0);

/**
 * UDP ASSOCIATE (RFC 1928 7): a UDP socket on the control connection's local address relays the
 * client's datagrams (only from the control connection's peer address, the first source port
 * sticks) and sends replies back with the sender's address in front. The association ends with
 * the control connection, as the RFC says.
 */
function associate(sock: Duplex, open: NonNullable<ProxyDialer['associateUdp']>, c: ProxyCounters, log: ((l: string) => void) | undefined, held: Uint8Array | undefined): void {
  const s = sock as Duplex & { localAddress?: string; remoteAddress?: string };
  const local = s.localAddress ?? '127.0.0.1';
  const peer = s.remoteAddress;
  const u = createSocket(isIP(local) === 6 ? 'udp6' : 'udp4');
  let client: { address: string; port: number } | undefined;
  let closed = false;
  const assoc = open((host, port, data) => {
    if (closed || client === undefined) { c.udpDropped++; return; }
    c.udpIn++;
    u.send(writeUdpDatagram(host, port, data), client.port, client.address);
  });
  const end = (): void => {
    if (closed) return;
    closed = true;
    assoc.close();
    try { u.close(); } catch { /* not bound yet */ }
    sock.destroy();
  };
  u.on('message', (msg, from) => {
    if (from.address !== peer || (client !== undefined && client.port !== from.port)) { c.udpDropped++; return; }
    client ??= { address: from.address, port: from.port };
    const d = parseUdpDatagram(msg);
    if (typeof d === 'string') { c.udpDropped++; return; }
    c.udpOut++;
    assoc.send(d.host, d.port, d.data);
  });
  u.on('error', (e) => { log?.(`socks5: UDP association: ${e.message}`); end(); });
  u.bind(0, local, () => {
    if (closed) return;
    c.udpAssociations++;
    const a = u.address();
    sock.write(joined(held, reply(Rep.ok, a.address, a.port)));
  });
  // The control connection carries nothing more; its end ends the association.
  sock.on('data', () => {});
  sock.on('end', end);
  sock.on('close', end);
  sock.on('error', end);
  sock.resume();
}

/** A stream that can write what it receives into a sink itself (src/netstack/stream.ts TcpStream). */
interface SendsTo { sendTo(sink: Duplex): void }
const hasSendTo = (d: Duplex): d is Duplex & SendsTo => typeof (d as Partial<SendsTo>).sendTo === 'function';
/** Relays with a socket by itself, both ways (TcpRelay, TcpStream.relayWith). */
const hasRelayWith = (d: Duplex | RelayUpstream): d is RelayUpstream => typeof (d as Partial<RelayUpstream>).relayWith === 'function';

/** Copies both ways until both directions ended; an error on either side tears both down. */
export function relay(a: Duplex, b: Duplex | RelayUpstream): void {
  // A netstack connection relays with the client's socket itself, without stream machinery.
  if (hasRelayWith(b)) { b.relayWith(a); return; }
  // A netstack stream writes what it receives straight into the other side (TcpStream.sendTo).
  if (hasSendTo(b)) b.sendTo(a); else b.pipe(a);
  if (hasSendTo(a)) a.sendTo(b); else a.pipe(b);
  const kill = (): void => { a.destroy(); b.destroy(); };
  a.on('error', kill);
  b.on('error', kill);
  a.on('close', () => { if (!b.writableEnded) b.destroy(); });
  b.on('close', () => { if (!a.writableEnded) a.destroy(); });
  a.resume();
}
