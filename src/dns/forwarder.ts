// quad-100's forwarder: the names the tailnet does not hold go to upstream resolvers, after
// TS:net/dns/resolver/forwarder.go (dns-netstack-portmap.md 1.7):
//
//   route      the most specific route (most labels; "." last); none or no resolvers -> SERVFAIL (AA=1)
//   race       every resolver of the route in parallel; the first good answer wins
//   transport  UDP (a fresh connected socket per query, so ICMP errors surface); after 2 s without
//              an answer TCP joins in; a truncated UDP answer or a TCP client starts TCP at once;
//              each TCP attempt has 5 s; the whole query 5 s (below)
//   answers    accepted only from the resolver, with the query's ID; upstream SERVFAIL and
//              REFUSED are soft (the race goes on); when every resolver failed: the first SERVFAIL
//              as received if the first failure was one, all REFUSED -> the first REFUSED, else a
//              synthetic SERVFAIL. tailscaled bounds a forward at 10 s and then stays silent; meshd
//              answers SERVFAIL after 5 s without an answer, before a stub resolver's usual 5 s
//              timeout, so clients learn the upstream is dead instead of retrying into silence.
//   size       EDNS size clamped to 4095 when the OPT is last and has no options; the UDP read buffer
//              is 4096 bytes; a UDP client gets TC=1 when the answer exceeds its size (512 without EDNS)
//   limits     at most 256 forwards in flight (more are dropped and counted); quad-100's own
//              addresses never appear as upstreams (config.ts drops them), so nothing loops back.
import { Buffer } from 'node:buffer';
import { createSocket, type Socket } from 'node:dgram';
import { connect, type Socket as TcpSocket } from 'node:net';
import type { Route, Upstream } from './config.ts';
import { Flag, Rcode, writeReply, type Query } from './resolver.ts';
import type { Logf } from '../util/log.ts';

/** Forwarder limits and timers (ms). */
export interface ForwarderOptions {
  log: Logf;
  maxInFlight?: number;
  queryTimeoutMs?: number;
  udpBeforeTcpMs?: number;
  tcpTimeoutMs?: number;
}

/** Largest answer read from upstream over UDP (TS maxResponseBytes + 1). */
const UDP_READ_MAX = 4096;
/** EDNS size advertised upstream at most (TS clampEDNSSize). */
const EDNS_CLAMP = 4095;

/** Counters of the forwarder. */
export interface ForwarderCounters {
  forwards: number;
  answers: number;
  servfailNoRoute: number;
  servfailUpstream: number;
  servfailTimeout: number;
  dropInFlightCap: number;
  udpErrors: number;
  tcpAttempts: number;
  tcpErrors: number;
  badUpstreamAnswers: number;
}

/** Sends queries to upstream resolvers. */
export class Forwarder {
  private readonly log: Logf;
  private readonly maxInFlight: number;
  private readonly queryTimeoutMs: number;
  private readonly udpBeforeTcpMs: number;
  private readonly tcpTimeoutMs: number;
  private inFlight = 0;
  private closed = false;
  private readonly live = new Set<{ close(): void }>();
  readonly counters: ForwarderCounters = {
    forwards: 0, answers: 0, servfailNoRoute: 0, servfailUpstream: 0, servfailTimeout: 0,
    dropInFlightCap: 0, udpErrors: 0, tcpAttempts: 0, tcpErrors: 0, badUpstreamAnswers: 0,
  };

  constructor(opts: ForwarderOptions) {
    this.log = opts.log;
    this.maxInFlight = opts.maxInFlight ?? 256;
    this.queryTimeoutMs = opts.queryTimeoutMs ?? 5_000;
    this.udpBeforeTcpMs = opts.udpBeforeTcpMs ?? 2_000;
    this.tcpTimeoutMs = opts.tcpTimeoutMs ?? 5_000;
  }

  /** Queries in flight now. */
  get pending(): number {
    return this.inFlight;
  }

  /**
   * Forwards `query` (the client's bytes; parsed as `q`) along `route`. Resolves to the answer for
   * the client, or null when it gets none (in-flight cap, closed). Never rejects.
   */
  async forward(query: Uint8Array, q: Query, route: Route | undefined, clientTcp: boolean): Promise<Uint8Array | null> {
    if (this.closed) return null;
    this.counters.forwards++;
    if (!route || route.resolvers.length === 0) {
      this.counters.servfailNoRoute++;
      return writeReply(q, Rcode.SERVFAIL, { raFromRd: false });
    }
    if (this.inFlight >= this.maxInFlight) { this.counters.dropInFlightCap++; return null; }
    this.inFlight++;
    try {
      const out = clampEdns(query);
      const answer = await this.race(out, q, route.resolvers, clientTcp);
      if (answer === null) return null;
      if (!clientTcp) setTcIfTooBig(answer, udpSizeOf(query));
      return answer;
    } finally {
      this.inFlight--;
    }
  }

  private race(query: Uint8Array, q: Query, resolvers: readonly Upstream[], clientTcp: boolean): Promise<Uint8Array | null> {
    return new Promise((resolve) => {
      let done = false, remaining = resolvers.length;
      const failures: Uint8Array[] = [];
      let firstFail: 'servfail' | 'refused' | 'error' | undefined;
      const cleanups: (() => void)[] = [];
      const finish = (v: Uint8Array | null) => {
        if (done) return;
        done = true;
        clearTimeout(deadline);
        for (const c of cleanups) c();
        resolve(v);
      };
      const deadline = setTimeout(() => {
        this.counters.servfailTimeout++;
        finish(this.closed ? null : writeReply(q, Rcode.SERVFAIL, { raFromRd: false }));
      }, this.queryTimeoutMs);
      const onResult = (r: Uint8Array | Error) => {
        if (done) return;
        if (!(r instanceof Error)) {
          const rcode = r[3]! & 0xf;
          if (rcode !== Rcode.SERVFAIL && rcode !== Rcode.REFUSED) { this.counters.answers++; finish(r); return; }
          failures.push(r);
          firstFail ??= rcode === Rcode.SERVFAIL ? 'servfail' : 'refused';
        } else {
          firstFail ??= 'error';
        }
        if (--remaining > 0) return;
        this.counters.servfailUpstream++;
        const refusedOnly = failures.length === resolvers.length && failures.every((f) => (f[3]! & 0xf) === Rcode.REFUSED);
        if (refusedOnly) finish(failures[0]!);
        else if (firstFail === 'servfail') finish(failures.find((f) => (f[3]! & 0xf) === Rcode.SERVFAIL)!);
        else finish(writeReply(q, Rcode.SERVFAIL, { raFromRd: false }));
      };
      for (const u of resolvers) cleanups.push(this.ask(u, query, q.id, clientTcp, onResult));
    });
  }

  /** One resolver: UDP, then TCP as the rules say; calls back once with an answer or an Error. Returns a canceller. */
  private ask(u: Upstream, query: Uint8Array, id: number, clientTcp: boolean, cb: (r: Uint8Array | Error) => void): () => void {
    let settled = false, udpDone = false, tcpFailed = false, tcpStarted = false;
    let udp: Socket | undefined, tcp: TcpSocket | undefined;
    let truncated: Uint8Array | undefined;
    const closeUdp = () => { const s = udp; udp = undefined; if (s) { try { s.close(); } catch { /* closed */ } } };
    const cancel = () => { clearTimeout(tcpTimer); closeUdp(); tcp?.destroy(); tcp = undefined; };
    const settle = (r: Uint8Array | Error) => { if (!settled) { settled = true; cancel(); this.live.delete(closer); cb(r); } };
    // Both transports have given up: a truncated UDP answer beats an error.
    const maybeFail = (e: Error) => { if (udpDone && (tcpFailed || !tcpStarted)) settle(truncated ?? e); };
    const startTcp = () => {
      if (tcpStarted || settled || this.closed) return;
      tcpStarted = true;
      this.counters.tcpAttempts++;
      tcp = tcpQuery(u, query, id, this.tcpTimeoutMs, (r) => {
        tcp = undefined;
        if (!(r instanceof Error)) { settle(r); return; }
        tcpFailed = true;
        this.counters.tcpErrors++;
        maybeFail(r);
      });
    };
    const udpFail = (e: Error) => {
      closeUdp();
      udpDone = true;
      this.counters.udpErrors++;
      startTcp();
      maybeFail(e);
    };
    if (clientTcp) startTcp();
    const s = createSocket(u.ip.includes(':') ? 'udp6' : 'udp4');
    udp = s;
    s.on('error', (e) => { if (udp === s) udpFail(e); });
    s.on('message', (msg) => {
      if (udp !== s) return;
      if (msg.length < 12 || ((msg[0]! << 8) | msg[1]!) !== id || (msg[2]! & 0x80) === 0) { this.counters.badUpstreamAnswers++; return; }
      if ((msg[2]! & (Flag.TC >> 8)) !== 0) {
        truncated = new Uint8Array(msg);
        closeUdp();
        udpDone = true;
        startTcp();
        return;
      }
      settle(new Uint8Array(msg));
    });
    s.connect(u.port, u.ip, () => {
      if (udp !== s) return;
      s.send(query, (e) => { if (e && udp === s) udpFail(e); });
    });
    const tcpTimer = setTimeout(startTcp, this.udpBeforeTcpMs);
    const closer = { close: () => { settled = true; cancel(); } };
    this.live.add(closer);
    return () => { this.live.delete(closer); settled = true; cancel(); };
  }

  /** Stops every query in flight (they get no answer). */
  close(): void {
    this.closed = true;
    for (const c of this.live) c.close();
    this.live.clear();
  }
}

/** One query over TCP with 2-byte framing (RFC 7766); calls back once. */
function tcpQuery(u: Upstream, query: Uint8Array, id: number, timeoutMs: number, cb: (r: Uint8Array | Error) => void): TcpSocket {
  let done = false;
  const end = (r: Uint8Array | Error) => { if (!done) { done = true; clearTimeout(timer); sock.destroy(); cb(r); } };
  const sock = connect({ host: u.ip, port: u.port });
  const timer = setTimeout(() => end(new Error(`tcp ${u.text}: no answer within ${timeoutMs} ms`)), timeoutMs);
  let buf: Buffer = Buffer.alloc(0);
  sock.on('connect', () => {
    const framed = Buffer.allocUnsafe(query.length + 2);
    framed.writeUInt16BE(query.length, 0);
    framed.set(query, 2);
    sock.write(framed);
  });
  sock.on('data', (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
    if (buf.length > 2 + 65535) { end(new Error(`tcp ${u.text}: oversized answer`)); return; }
    if (buf.length < 2) return;
    const n = buf.readUInt16BE(0);
    if (buf.length < 2 + n) return;
    const msg = new Uint8Array(buf.subarray(2, 2 + n));
    if (n < 12 || ((msg[0]! << 8) | msg[1]!) !== id) { end(new Error(`tcp ${u.text}: answer with the wrong ID`)); return; }
    end(msg);
  });
  sock.on('error', (e) => end(e));
  sock.on('close', () => end(new Error(`tcp ${u.text}: closed without an answer`)));
  return sock;
}

/** Finds the OPT record when it is the last record of a query: [offset of its class field, rdlen]; undefined otherwise. */
function lastOpt(q: Uint8Array): { classAt: number; rdlen: number } | undefined {
  // An OPT RR has the root name (one 0 byte): 0, type 41, class = UDP size, TTL, rdlen, rdata.
  const arcount = (q[10]! << 8) | q[11]!;
  if (arcount === 0 || q.length < 12 + 11) return undefined;
  for (let rdlen = 0; rdlen <= 0xffff && 11 + rdlen <= q.length - 12; rdlen++) {
    const at = q.length - 11 - rdlen;
    if (q[at] === 0 && q[at + 1] === 0 && q[at + 2] === 41 && ((q[at + 9]! << 8) | q[at + 10]!) === rdlen) return { classAt: at + 3, rdlen };
    if (rdlen > 0) break; // TS clamps only option-less OPTs
  }
  return undefined;
}

/** The query with its EDNS size clamped to 4095 (a copy only when it changes). */
export function clampEdns(q: Uint8Array): Uint8Array {
  const opt = lastOpt(q);
  if (!opt) return q;
  const size = (q[opt.classAt]! << 8) | q[opt.classAt + 1]!;
  if (size <= EDNS_CLAMP) return q;
  const out = new Uint8Array(q);
  out[opt.classAt] = EDNS_CLAMP >> 8;
  out[opt.classAt + 1] = EDNS_CLAMP & 0xff;
  return out;
}

/**
 * The UDP answer size a client accepts: the size of the first well-formed OPT record in the
 * additional section (at least 512), else 512 (RFC 6891 6.2.5). Walks the records without decoding them:
 * dns-packet, used here before, spent ~65 ms on a 57-byte query claiming 62,976 additional
 * records (found by scripts/fuzz.mjs); each step here consumes bytes, so the walk is bounded by
 * the query's length.
 */
export function udpSizeOf(q: Uint8Array): number {
  if (q.length < 12) return 512;
  const count = (at: number): number => (q[at]! << 8) | q[at + 1]!;
  const qd = count(4), an = count(6), ns = count(8), ar = count(10);
  if (ar === 0) return 512;
  let off = 12;
  for (let i = 0; i < qd; i++) {
    off = skipName(q, off) + 4;
    if (off < 4 || off > q.length) return 512;
  }
  for (let i = 0; i < an + ns + ar; i++) {
    const at = skipName(q, off);
    if (at < 0 || at + 10 > q.length) return 512;
    const next = at + 10 + count(at + 8);
    if (next > q.length) return 512;
    // OPT (RFC 6891 6.1.2): owner is the root, CLASS is the requestor's UDP payload size.
    if (i >= an + ns && count(at) === 41 && at === off + 1) return Math.max(512, count(at + 2));
    off = next;
  }
  return 512;
}

/** Offset just past the (possibly compressed) name at `off`, or -1 when it is malformed or cut short. */
function skipName(b: Uint8Array, off: number): number {
  for (let p = off; p < b.length;) {
    const len = b[p]!;
    if (len === 0) return p + 1;
    if ((len & 0xc0) === 0xc0) return p + 2 <= b.length ? p + 2 : -1;
    if ((len & 0xc0) !== 0) return -1;
    p += 1 + len;
  }
  return -1;
}

/** Sets TC when an answer is larger than the client takes (nothing is cut, as tailscaled does). */
export function setTcIfTooBig(answer: Uint8Array, max: number): void {
  if (answer.length > max && answer.length >= 12) answer[2]! |= Flag.TC >> 8;
}
