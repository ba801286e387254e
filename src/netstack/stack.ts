// The userspace TCP/IP stack, sans-I/O: IP packets in through input() (from the tunnel), IP packets
// out through opts.output (to the tunnel), time from opts.now, timers polled by tick(). It
// demultiplexes to TCP connections (tcp.ts), UDP bindings, and answers ICMP/ICMPv6 echo for its
// own addresses. Junk is dropped and counted in `counters`, never thrown.
//
// Demux: connections live in a hash table keyed by the 4-tuple (chained through Tcb.next), so a
// lookup allocates nothing. Passive opens go to a listener for (address, port), else to the
// default handler `onTcp` (held until it accepts or rejects, as tailscaled dials the backend
// before answering the SYN), else get a RST. Half-open connections are bounded (drop-oldest).
//
// Initial sequence numbers follow RFC 6528 (a 4 µs clock plus a keyed hash of the 4-tuple), so a
// new connection on a 4-tuple the peer still holds in TIME-WAIT starts above the old one and is
// accepted (RFC 9293 3.4.1; Linux checks exactly this), instead of drawing a challenge ACK, our RST
// and a 1 s SYN retransmission. Ephemeral ports go round the range from a random start (as Linux's
// port selection does, RFC 6056 3.3.4), so a port comes back only after the whole range was used.
import { hash, randomFillSync } from 'node:crypto';
import { IpDrop, IpHeader, Proto, addrEq, addrHash, fold, formatAddr, ipHeaderLen, parseAddr, pseudoSum, sum16, writeIpHeader } from './ip.ts';
import { F, SegDrop, TcpSeg, put32, writeTcpHeader } from './segment.ts';
import { BufferBudget } from './budget.ts';
import { DEFAULT_TCP, Opt, S, Tcb, type TcpConfig, type TcpHandler, type TcpHost } from './tcp.ts';

/** Ephemeral ports for active opens: 32768-60999, Linux's default ip_local_port_range. */
const EPHEMERAL_FIRST = 32768;
const EPHEMERAL_COUNT = 28232;

/** Limits on what the stack holds. */
export interface NetstackLimits {
  /** Most TCP connections in any state (new SYNs beyond it are refused). */
  maxConns: number;
  /** Most passive connections in SYN-RECEIVED (SYN flood bound; the oldest is dropped). */
  maxHalfOpen: number;
}

/**
 * Where TCP segments may be built in place (the data plane's outgoing batch), saving the copy
 * from the stack's scratch packet: reserve() gives room for one packet in `buf`, commit() takes it.
 */
export interface PacketSink {
  /** Offset in `buf` of room for one packet of up to `max` bytes (valid until commit), or -1 when there is none. */
  reserve(max: number): number;
  /** The buffer the last reserve() points into. */
  readonly buf: Uint8Array;
  /** The reserved packet is `len` bytes long. */
  commit(len: number): void;
}

/** Options for {@link Netstack}. */
export interface NetstackOptions {
  /** Milliseconds on a monotonic clock. */
  now: () => number;
  /** Takes one IP packet for the tunnel; buf is reused after return. */
  output: (buf: Uint8Array, off: number, len: number) => void;
  /** Builds TCP segments in place here instead of handing them to output (which still takes the rest). */
  sink?: PacketSink;
  /** Link MTU (the tailnet's 1280). */
  mtu?: number;
  tcp?: Partial<TcpConfig>;
  limits?: Partial<NetstackLimits>;
  /** Random bytes (tests make it deterministic). */
  random?: (out: Uint8Array) => void;
}

/** A UDP datagram handed to a handler; reused, valid only during the call. */
export class UdpDatagram {
  family: 4 | 6 = 4;
  readonly src = new Uint8Array(16);
  readonly dst = new Uint8Array(16);
  srcPort = 0;
  dstPort = 0;
  buf: Uint8Array = new Uint8Array(0);
  off = 0;
  len = 0;
}

/** Takes UDP datagrams. */
export type UdpHandler = (d: UdpDatagram) => void;

interface Listener {
  family: 0 | 4 | 6;
  addr: Uint8Array;
  port: number;
  /** Called with the connection once established (accept mode) or at the SYN (hold mode). */
  onConn: (c: Tcb) => void;
  hold: boolean;
}

const COUNTER_NAMES = [
  'rxPackets', 'txPackets', 'dropIpShort', 'dropIpBadHeader', 'dropIpBadChecksum', 'dropIpVersion', 'dropFragment',
  'dropUnsupportedProto', 'dropNotLocal', 'dropTcpShort', 'dropTcpBadChecksum', 'dropTcpBadOptions', 'dropNoConn',
  'dropUdpShort', 'dropUdpBadChecksum', 'dropUdpNoListener', 'dropIcmp', 'icmpEchoReplies', 'rstOut', 'rstIn',
  'synFloodDrop', 'synRefusedFull', 'synNoListener', 'dropOutOfWindow', 'challengeAck', 'retransmits', 'fastRetransmit',
  'rtoExpired', 'dropOooFull', 'windowProbes', 'zeroWindowAbort', 'keepaliveProbes', 'keepaliveTimeout', 'acceptTimeout',
  'dropTooBig', 'dropOutputFull', 'connsOpened', 'connsAccepted',
  'bufPressure', 'bufGrowDenied', 'bufWindowClamped', 'bufWriteClamped',
] as const;

/** A TCP/IP stack for a set of local addresses. */
export class Netstack implements TcpHost {
  readonly cfg: TcpConfig;
  readonly limits: NetstackLimits;
  readonly mtu: number;
  readonly counters: Record<string, number> = Object.fromEntries(COUNTER_NAMES.map((n) => [n, 0]));
  /** What all TCP connections hold or were promised, against cfg.memPressure and cfg.memHard (budget.ts). */
  readonly budget: BufferBudget;
  /** Accept TCP and UDP to any destination (exit node, subnet router); ICMP echo stays local-only. */
  promiscuous = false;
  /** Passive opens no listener takes: held SYN-RECEIVED connections (accept() or reject() them). */
  onTcp: ((c: Tcb) => void) | undefined;
  /** UDP to ports nothing is bound to (and, when promiscuous, to other addresses). */
  onUdp: UdpHandler | undefined;
  /** Earliest timer deadline known (ms), Infinity when none. */
  wakeAt = Infinity;

  private readonly clock: () => number;
  private readonly out: (buf: Uint8Array, off: number, len: number) => void;
  private readonly sink: PacketSink | undefined;
  private readonly random: (out: Uint8Array) => void;
  private readonly table = new Map<number, Tcb>();
  private conns = 0;
  private readonly halfOpen = new Set<Tcb>();
  private readonly timed = new Set<Tcb>();
  private readonly dirtyList: Tcb[] = [];
  private readonly listeners = new Map<number, Listener[]>();
  private readonly udpBound = new Map<number, UdpHandler>();
  private local4: Uint8Array[] = [];
  private local6: Uint8Array[] = [];
  /** Service addresses (e.g. 100.100.100.100), kept across setAddresses. */
  private service: string[] = [];
  private nodeAddrs: string[] = [];
  private readonly ip = new IpHeader();
  private readonly seg = new TcpSeg();
  private readonly dgram = new UdpDatagram();
  private readonly pkt: Uint8Array;
  private readonly opts = new Uint8Array(40);
  private readonly sack = new Uint32Array(8);
  private readonly rnd = new Uint32Array(64);
  private rndLeft = 0;
  private readonly tmpA = new Uint8Array(16);
  /** RFC 6528's secret key for F(4-tuple). */
  private readonly issKey = new Uint8Array(16);
  /** The hash's input: the key, then the 4-tuple. */
  private readonly issIn = new Uint8Array(52);
  /** Next ephemeral port to try (offset into EPHEMERAL_COUNT). */
  private nextPort: number;
  private nextUdpPort: number;

  constructor(o: NetstackOptions) {
    this.clock = o.now;
    this.out = o.output;
    this.sink = o.sink;
    this.mtu = o.mtu ?? 1280;
    this.cfg = { ...DEFAULT_TCP, ...o.tcp };
    this.budget = new BufferBudget({ pressure: this.cfg.memPressure, hard: this.cfg.memHard }, this.counters);
    // Gauges among the counters (read when status or a test looks, nothing written per packet).
    const b = this.budget;
    Object.defineProperty(this.counters, 'bufBytes', { enumerable: true, get: () => b.used });
    Object.defineProperty(this.counters, 'bufBytesPeak', { enumerable: true, get: () => b.peak });
    this.limits = { maxConns: 16384, maxHalfOpen: 1024, ...o.limits };
    this.random = o.random ?? ((b) => { randomFillSync(b); });
    this.pkt = new Uint8Array(this.mtu + 64);
    this.random(this.issKey);
    this.nextPort = this.rand32() % EPHEMERAL_COUNT;
    this.nextUdpPort = this.rand32() % EPHEMERAL_COUNT;
  }

  /**
   * RFC 6528 3: ISN = M + F(localip, localport, remoteip, remoteport, secretkey), M a 4 µs timer
   * and F a keyed hash (SHA-256 of key and 4-tuple, truncated; RFC 6528 suggests MD5 the same way). Called once per connection, not per packet.
   */
  private issFor(local: Uint8Array, lOff: number, lPort: number, remote: Uint8Array, rOff: number, rPort: number): number {
    const b = this.issIn;
    b.set(this.issKey, 0);
    b.set(local.subarray(lOff, lOff + 16), 16);
    b.set(remote.subarray(rOff, rOff + 16), 32);
    b[48] = lPort >> 8; b[49] = lPort & 255; b[50] = rPort >> 8; b[51] = rPort & 255;
    // One-shot crypto.hash: half the cost of a Hash object per connection.
    const f = (hash('sha256', b, 'buffer') as Buffer).readUInt32BE(0);
    return (f + Math.floor(this.clock() * 250)) >>> 0;
  }

  /** Current time (TcpHost): the held time inside holdClock()/releaseClock(), else the clock's. */
  get now(): number {
    return this.heldNow >= 0 ? this.heldNow : this.clock();
  }

  private heldNow = -1;

  /** Reads the clock once and uses that time until releaseClock() (a batch of input: one clock read, not several per segment). */
  holdClock(): void {
    this.heldNow = this.clock();
  }

  releaseClock(): void {
    this.heldNow = -1;
  }

  /** Connections in the table (any state). */
  get connectionCount(): number {
    return this.conns;
  }

  /** Half-open passive connections. */
  get halfOpenCount(): number {
    return this.halfOpen.size;
  }

  /** Sets the local addresses (`100.64.0.1`, `100.64.0.1/32`, `fd7a:...::1/128`). */
  setAddresses(addrs: readonly string[]): void {
    this.nodeAddrs = [...addrs];
    const v4: Uint8Array[] = [], v6: Uint8Array[] = [];
    for (const a of [...addrs, ...this.service]) {
      const b = new Uint8Array(16);
      const f = parseAddr(a.split('/')[0]!, b);
      if (f === 4) v4.push(b); else if (f === 6) v6.push(b);
    }
    this.local4 = v4;
    this.local6 = v6;
  }

  /** Adds a service address the stack answers for besides the node's own (kept across setAddresses). */
  addServiceAddress(addr: string): void {
    if (parseAddr(addr, new Uint8Array(16)) === 0) throw new TypeError(`addServiceAddress: bad address ${JSON.stringify(addr)}`);
    if (!this.service.includes(addr)) this.service.push(addr);
    this.setAddresses(this.nodeAddrs);
  }

  /** The first local address of a family (16-byte slot), or undefined. */
  localAddress(family: 4 | 6): Uint8Array | undefined {
    return family === 4 ? this.local4[0] : this.local6[0];
  }

  /** True when buf[off..] is one of our addresses. */
  isLocal(family: 4 | 6, buf: Uint8Array, off: number): boolean {
    const list = family === 4 ? this.local4 : this.local6;
    for (const a of list) if (addrEq(family, a, 0, buf, off)) return true;
    return false;
  }

  // ---- input -----------------------------------------------------------------------------------

  /** Processes one IP packet from the tunnel. Never throws. Call endBatch() after a batch. */
  input(buf: Uint8Array, off: number, len: number): void {
    const c = this.counters;
    c.rxPackets!++;
    const ip = this.ip;
    const r = ip.parse(buf, off, len);
    if (r !== IpDrop.ok) {
      switch (r) {
        case IpDrop.short: c.dropIpShort!++; break;
        case IpDrop.badHeader: c.dropIpBadHeader!++; break;
        case IpDrop.badChecksum: c.dropIpBadChecksum!++; break;
        case IpDrop.fragment: c.dropFragment!++; break;
        case IpDrop.unsupported: c.dropUnsupportedProto!++; break;
        default: c.dropIpVersion!++; break;
      }
      return;
    }
    const local = this.isLocal(ip.family, buf, ip.dstOff);
    if (ip.proto === Proto.TCP) {
      if (!local && !this.promiscuous) { c.dropNotLocal!++; return; }
      this.inputTcp(buf);
    } else if (ip.proto === Proto.UDP) {
      if (!local && !this.promiscuous) { c.dropNotLocal!++; return; }
      this.inputUdp(buf);
    } else if ((ip.proto === Proto.ICMP && ip.family === 4) || (ip.proto === Proto.ICMPv6 && ip.family === 6)) {
      if (!local) { c.dropNotLocal!++; return; }
      this.inputIcmp(buf);
    } else {
      c.dropUnsupportedProto!++;
    }
  }

  /** Sends the ACKs the last batch of input made due (one per connection, not one per segment). */
  endBatch(): void {
    const list = this.dirtyList;
    for (let i = 0; i < list.length; i++) list[i]!.flushAck();
    list.length = 0;
  }

  private key(family: number, local: Uint8Array, lOff: number, lPort: number, remote: Uint8Array, rOff: number, rPort: number): number {
    return (addrHash(family as 4 | 6, remote, rOff) ^ Math.imul((rPort << 16) | lPort, 0x9e3779b1) ^ (addrHash(family as 4 | 6, local, lOff) >>> 3) ^ family) >>> 0;
  }

  private lookup(family: 4 | 6, buf: Uint8Array, localOff: number, lPort: number, remoteOff: number, rPort: number, key: number): Tcb | undefined {
    for (let t = this.table.get(key); t !== undefined; t = t.next) {
      if (t.family === family && t.localPort === lPort && t.remotePort === rPort &&
        addrEq(family, t.remoteAddr, 0, buf, remoteOff) && addrEq(family, t.localAddr, 0, buf, localOff)) return t;
    }
    return undefined;
  }

  private insert(t: Tcb): void {
    t.next = this.table.get(t.key);
    this.table.set(t.key, t);
    this.conns++;
  }

  private remove(t: Tcb): void {
    let p = this.table.get(t.key);
    if (p === t) {
      if (t.next) this.table.set(t.key, t.next); else this.table.delete(t.key);
      this.conns--;
    } else {
      for (; p !== undefined; p = p.next) {
        if (p.next === t) { p.next = t.next; this.conns--; break; }
      }
    }
    t.next = undefined;
  }

  private inputTcp(buf: Uint8Array): void {
    const ip = this.ip, s = this.seg, c = this.counters;
    const r = s.parse(buf, ip.l4Off, ip.l4Len, ip.family, ip.srcOff, ip.dstOff);
    if (r !== SegDrop.ok) {
      if (r === SegDrop.badChecksum) c.dropTcpBadChecksum!++;
      else if (r === SegDrop.badOptions) c.dropTcpBadOptions!++;
      else c.dropTcpShort!++;
      return;
    }
    const key = this.key(ip.family, buf, ip.dstOff, s.dstPort, buf, ip.srcOff, s.srcPort);
    const t = this.lookup(ip.family, buf, ip.dstOff, s.dstPort, ip.srcOff, s.srcPort, key);
    if (t !== undefined) {
      // A new SYN for a connection in TIME-WAIT may reopen it (RFC 9293 3.6.1).
      if (t.state === S.TIME_WAIT && (s.flags & (F.SYN | F.ACK | F.RST)) === F.SYN && ((s.seq - t.rcvNxt) | 0) > 0) {
        t.release(null);
      } else {
        t.input(s);
        return;
      }
    }
    this.inputClosed(buf, key);
  }

  /** A segment for no connection: LISTEN processing or a RST (RFC 9293 3.10.7.1-2). */
  private inputClosed(buf: Uint8Array, key: number): void {
    const ip = this.ip, s = this.seg, c = this.counters;
    const flags = s.flags;
    if (flags & F.RST) { c.dropNoConn!++; return; }
    if (flags & F.ACK) { c.dropNoConn!++; this.rstFor(buf, s.ack, 0, F.RST); return; }
    if (!(flags & F.SYN)) { c.dropNoConn!++; return; }
    const segLen = s.dataLen + 1 + (flags & F.FIN ? 1 : 0);
    const l = this.findListener(ip.family, buf, ip.dstOff, s.dstPort);
    if (l === undefined && this.onTcp === undefined) {
      c.synNoListener!++;
      this.rstFor(buf, 0, (s.seq + segLen) >>> 0, F.RST | F.ACK);
      return;
    }
    if (this.conns >= this.limits.maxConns) { c.synRefusedFull!++; return; }
    if (this.halfOpen.size >= this.limits.maxHalfOpen) {
      // SYN flood: forget the oldest half-open connection (no RST: it is most likely spoofed).
      const oldest = this.halfOpen.values().next().value;
      if (oldest) { c.synFloodDrop!++; oldest.release(null); }
    }
    const t = new Tcb(this, ip.family, this.copyAddr(buf, ip.dstOff, ip.family, new Uint8Array(16)), s.dstPort,
      this.copyAddr(buf, ip.srcOff, ip.family, this.tmpA), s.srcPort, key, this.mtu);
    this.insert(t);
    this.halfOpen.add(t);
    const hold = l === undefined || l.hold;
    t.openPassive(s, this.issFor(t.localAddr, 0, t.localPort, t.remoteAddr, 0, t.remotePort), hold);
    if (l !== undefined && !l.hold) t.user = l;
    if (hold) {
      (l?.onConn ?? this.onTcp!)(t);
    }
  }

  private findListener(family: 4 | 6, buf: Uint8Array, dstOff: number, port: number): Listener | undefined {
    const ls = this.listeners.get(port);
    if (ls === undefined) return undefined;
    let any: Listener | undefined;
    for (const l of ls) {
      if (l.family === 0) any ??= l;
      else if (l.family === family && addrEq(family, l.addr, 0, buf, dstOff)) return l;
    }
    return any;
  }

  private copyAddr(buf: Uint8Array, off: number, family: 4 | 6, out: Uint8Array): Uint8Array {
    out.fill(0);
    const n = family === 4 ? 4 : 16;
    for (let i = 0; i < n; i++) out[i] = buf[off + i]!;
    return out;
  }

  private rand32(): number {
    if (this.rndLeft === 0) { this.random(new Uint8Array(this.rnd.buffer)); this.rndLeft = this.rnd.length; }
    return this.rnd[--this.rndLeft]! >>> 0;
  }

  /** A RST for the segment in this.seg/this.ip without a connection. */
  private rstFor(buf: Uint8Array, seq: number, ack: number, flags: number): void {
    const ip = this.ip, s = this.seg, p = this.pkt;
    const family = ip.family;
    const src = this.copyAddr(buf, ip.dstOff, family, new Uint8Array(16));
    const dst = this.copyAddr(buf, ip.srcOff, family, new Uint8Array(16));
    const hl = ipHeaderLen(family);
    writeIpHeader(p, 0, family, Proto.TCP, src, dst, 20);
    writeTcpHeader(p, hl, family, src, dst, s.dstPort, s.srcPort, seq, ack, flags, 0, this.opts, 0, 0);
    this.counters.rstOut!++;
    this.send(p, hl + 20);
  }

  private send(p: Uint8Array, len: number): void {
    this.counters.txPackets!++;
    this.out(p, 0, len);
  }

  // ---- TcpHost ---------------------------------------------------------------------------------

  /** Builds and sends one segment of connection t (TcpHost.emit). */
  emit(t: Tcb, flags: number, seq: number, at: number, len: number, opt: number): void {
    const p = this.pkt, o = this.opts;
    const family = t.family;
    let ol = 0;
    if (opt === Opt.syn) {
      const active = t.state === S.SYN_SENT;
      o[0] = 2; o[1] = 4; o[2] = t.ourMss >> 8; o[3] = t.ourMss & 255; ol = 4;
      if (active || t.rcvShift > 0 || t.sndShift > 0) { o[ol] = 1; o[ol + 1] = 3; o[ol + 2] = 3; o[ol + 3] = this.cfg.wscale; ol += 4; }
      if (active || t.sackOk) { o[ol] = 1; o[ol + 1] = 1; o[ol + 2] = 4; o[ol + 3] = 2; ol += 4; }
    } else if (opt === Opt.sack) {
      const n = t.sackBlocks(this.sack);
      if (n > 0) {
        o[0] = 1; o[1] = 1; o[2] = 5; o[3] = 2 + 8 * n; ol = 4;
        for (let i = 0; i < 2 * n; i++) { put32(o, ol, this.sack[i]!); ol += 4; }
      }
    }
    const hl = ipHeaderLen(family);
    const tcpLen = 20 + ol + len;
    if (hl + tcpLen > p.length) { this.counters.dropTooBig!++; return; }
    let out = p, base = 0;
    const sink = this.sink;
    if (sink !== undefined) {
      base = sink.reserve(hl + tcpLen);
      if (base < 0) { this.counters.dropOutputFull!++; return; }
      out = sink.buf;
    }
    if (len > 0) t.snd.copyOut(at, out, base + hl + 20 + ol, len);
    const wnd = flags & F.RST ? 0 : t.windowField((flags & F.SYN) !== 0);
    writeIpHeader(out, base, family, Proto.TCP, t.localAddr, t.remoteAddr, tcpLen);
    writeTcpHeader(out, base + hl, family, t.localAddr, t.remoteAddr, t.localPort, t.remotePort, seq, t.rcvNxt, flags, wnd, o, ol, len);
    if (flags & F.RST) this.counters.rstOut!++;
    if (sink !== undefined) { this.counters.txPackets!++; sink.commit(hl + tcpLen); } else this.send(p, hl + tcpLen);
  }

  /** TcpHost.wake. */
  wake(t: Tcb, at: number): void {
    this.timed.add(t);
    if (at < this.wakeAt) this.wakeAt = at;
  }

  /** TcpHost.release. */
  release(t: Tcb): void {
    this.remove(t);
    this.halfOpen.delete(t);
    this.timed.delete(t);
  }

  /** TcpHost.accepted. */
  accepted(t: Tcb): void {
    this.halfOpen.delete(t);
    this.counters.connsAccepted!++;
    const l = t.user as Listener | undefined;
    if (l !== undefined && !l.hold) { t.user = undefined; l.onConn(t); }
  }

  /** TcpHost.dirty. */
  dirty(t: Tcb): void {
    if (t.inDirty) return;
    t.inDirty = true;
    this.dirtyList.push(t);
  }

  /** Runs due timers; call when now >= wakeAt. */
  tick(): void {
    const now = this.now;
    let next = Infinity;
    for (const t of this.timed) {
      let at = t.nextTimer();
      if (at !== 0 && at <= now) { t.runTimers(now); at = t.closed ? 0 : t.nextTimer(); }
      if (at === 0) this.timed.delete(t);
      else if (at < next) next = at;
    }
    this.wakeAt = next;
    this.endBatch();
  }

  // ---- TCP API ---------------------------------------------------------------------------------

  /**
   * Listens on `port` (at `addr`, or every local address when addr is undefined). With hold, the
   * callback gets the connection at its SYN and must accept(handler) or reject() it; otherwise it
   * gets established connections (set c.handler in the callback).
   */
  listen(port: number, onConn: (c: Tcb) => void, opts: { addr?: string; hold?: boolean } = {}): () => void {
    const addr = new Uint8Array(16);
    const family = opts.addr === undefined ? 0 : parseAddr(opts.addr, addr);
    if (opts.addr !== undefined && family === 0) throw new TypeError(`listen: bad address ${JSON.stringify(opts.addr)}`);
    const l: Listener = { family, addr, port, onConn, hold: opts.hold ?? false };
    const ls = this.listeners.get(port) ?? [];
    ls.push(l);
    this.listeners.set(port, ls);
    return () => {
      const cur = this.listeners.get(port);
      if (!cur) return;
      const i = cur.indexOf(l);
      if (i >= 0) cur.splice(i, 1);
      if (cur.length === 0) this.listeners.delete(port);
    };
  }

  /** Opens a connection to dst:port from our address of that family; throws TypeError on bad input. */
  connect(dst: string, port: number, handler: TcpHandler, src?: string, localPort?: number): Tcb {
    const d = new Uint8Array(16);
    const family = parseAddr(dst, d);
    if (family === 0) throw new TypeError(`connect: ${JSON.stringify(dst)} is not an IP address`);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new TypeError(`connect: bad port ${port}`);
    let s: Uint8Array | undefined;
    if (src !== undefined) { s = new Uint8Array(16); if (parseAddr(src, s) !== family) throw new TypeError(`connect: bad source ${src}`); }
    else s = this.localAddress(family);
    if (s === undefined) throw new TypeError(`connect: this node has no IPv${family} tailnet address`);
    if (this.conns >= this.limits.maxConns) throw new TypeError('connect: too many connections');
    let lport = 0, key = 0;
    const tries = localPort === undefined ? EPHEMERAL_COUNT : 1;
    for (let i = 0; i < tries; i++) {
      let cand = localPort ?? 0;
      if (localPort === undefined) {
        cand = EPHEMERAL_FIRST + this.nextPort;
        this.nextPort = (this.nextPort + 1) % EPHEMERAL_COUNT;
      }
      const k = this.key(family, s, 0, cand, d, 0, port);
      if (this.lookup(family, this.joinAddrs(family, s, d), 0, cand, 16, port, k) === undefined) { lport = cand; key = k; break; }
    }
    if (lport === 0) throw new TypeError('connect: no free local port');
    const t = new Tcb(this, family, s, lport, d, port, key, this.mtu);
    t.handler = handler;
    this.insert(t);
    this.counters.connsOpened!++;
    t.openActive(this.issFor(s, 0, lport, d, 0, port));
    return t;
  }

  private readonly joined = new Uint8Array(32);
  private joinAddrs(family: 4 | 6, a: Uint8Array, b: Uint8Array): Uint8Array {
    void family;
    this.joined.set(a.subarray(0, 16), 0);
    this.joined.set(b.subarray(0, 16), 16);
    return this.joined;
  }

  // ---- UDP -------------------------------------------------------------------------------------

  /** Takes UDP datagrams to a free ephemeral port (in turn, as TCP's); undefined when all are bound. */
  bindUdpEphemeral(h: UdpHandler): { port: number; close: () => void } | undefined {
    for (let i = 0; i < EPHEMERAL_COUNT; i++) {
      const port = EPHEMERAL_FIRST + this.nextUdpPort;
      this.nextUdpPort = (this.nextUdpPort + 1) % EPHEMERAL_COUNT;
      if (!this.udpBound.has(port)) return { port, close: this.bindUdp(port, h) };
    }
    return undefined;
  }

  /** Takes UDP datagrams to `port` on any local address. */
  bindUdp(port: number, h: UdpHandler): () => void {
    this.udpBound.set(port, h);
    return () => { if (this.udpBound.get(port) === h) this.udpBound.delete(port); };
  }

  private inputUdp(buf: Uint8Array): void {
    const ip = this.ip, c = this.counters;
    const off = ip.l4Off;
    if (ip.l4Len < 8) { c.dropUdpShort!++; return; }
    const ulen = (buf[off + 4]! << 8) | buf[off + 5]!;
    if (ulen < 8 || ulen > ip.l4Len) { c.dropUdpShort!++; return; }
    const csum = (buf[off + 6]! << 8) | buf[off + 7]!;
    if (csum !== 0 || ip.family === 6) {
      if (fold(sum16(buf, off, ulen, pseudoSum(ip.family, buf, ip.srcOff, buf, ip.dstOff, Proto.UDP, ulen))) !== 0) { c.dropUdpBadChecksum!++; return; }
    }
    const d = this.dgram;
    d.family = ip.family;
    this.copyAddr(buf, ip.srcOff, ip.family, d.src);
    this.copyAddr(buf, ip.dstOff, ip.family, d.dst);
    d.srcPort = (buf[off]! << 8) | buf[off + 1]!;
    d.dstPort = (buf[off + 2]! << 8) | buf[off + 3]!;
    d.buf = buf;
    d.off = off + 8;
    d.len = ulen - 8;
    const h = this.isLocal(ip.family, buf, ip.dstOff) ? this.udpBound.get(d.dstPort) ?? this.onUdp : this.onUdp;
    if (h === undefined) { c.dropUdpNoListener!++; return; }
    h(d);
  }

  /** Sends a UDP datagram (addresses as 16-byte slots); false when too big for the MTU. */
  sendUdp(family: 4 | 6, src: Uint8Array, srcPort: number, dst: Uint8Array, dstPort: number, data: Uint8Array, off: number, len: number): boolean {
    const hl = ipHeaderLen(family), p = this.pkt;
    if (hl + 8 + len > this.mtu) { this.counters.dropTooBig!++; return false; }
    const u = hl;
    p[u] = srcPort >> 8; p[u + 1] = srcPort & 255; p[u + 2] = dstPort >> 8; p[u + 3] = dstPort & 255;
    p[u + 4] = (8 + len) >> 8; p[u + 5] = (8 + len) & 255; p[u + 6] = 0; p[u + 7] = 0;
    p.set(data.subarray(off, off + len), u + 8);
    let cs = fold(sum16(p, u, 8 + len, pseudoSum(family, src, 0, dst, 0, Proto.UDP, 8 + len)));
    if (cs === 0) cs = 0xffff;
    p[u + 6] = cs >> 8; p[u + 7] = cs & 255;
    writeIpHeader(p, 0, family, Proto.UDP, src, dst, 8 + len);
    this.send(p, hl + 8 + len);
    return true;
  }

  // ---- ICMP ------------------------------------------------------------------------------------

  /** Echo requests to our addresses get replies (RFC 792, RFC 4443 4.2); the rest is dropped. */
  private inputIcmp(buf: Uint8Array): void {
    const ip = this.ip, c = this.counters;
    const off = ip.l4Off, len = ip.l4Len;
    if (len < 8) { c.dropIcmp!++; return; }
    const v6 = ip.family === 6;
    const sum = v6 ? fold(sum16(buf, off, len, pseudoSum(6, buf, ip.srcOff, buf, ip.dstOff, Proto.ICMPv6, len))) : fold(sum16(buf, off, len));
    if (sum !== 0) { c.dropIcmp!++; return; }
    if (buf[off] !== (v6 ? 128 : 8) || buf[off + 1] !== 0) { c.dropIcmp!++; return; }
    const hl = ipHeaderLen(ip.family);
    if (hl + len > this.pkt.length) { c.dropTooBig!++; return; }
    const p = this.pkt;
    const src = this.copyAddr(buf, ip.dstOff, ip.family, new Uint8Array(16));
    const dst = this.copyAddr(buf, ip.srcOff, ip.family, this.tmpA);
    p.set(buf.subarray(off, off + len), hl);
    p[hl] = v6 ? 129 : 0;
    p[hl + 2] = 0; p[hl + 3] = 0;
    const cs = v6 ? fold(sum16(p, hl, len, pseudoSum(6, src, 0, dst, 0, Proto.ICMPv6, len))) : fold(sum16(p, hl, len));
    p[hl + 2] = cs >> 8; p[hl + 3] = cs & 255;
    writeIpHeader(p, 0, ip.family, v6 ? Proto.ICMPv6 : Proto.ICMP, src, dst, len);
    c.icmpEchoReplies!++;
    this.send(p, hl + len);
  }

  /** Aborts every connection (RST to synchronized peers). */
  close(): void {
    const all: Tcb[] = [];
    for (const head of this.table.values()) for (let t: Tcb | undefined = head; t; t = t.next) all.push(t);
    for (const t of all) t.abort();
    this.listeners.clear();
    this.udpBound.clear();
  }
}

/** Text form of a connection's addresses (for logs and proxies). */
export function connAddrs(t: Tcb): { local: string; localPort: number; remote: string; remotePort: number } {
  return { local: formatAddr(t.family, t.localAddr), localPort: t.localPort, remote: formatAddr(t.family, t.remoteAddr), remotePort: t.remotePort };
}
