// magicsock: the one UDP socket shared by WireGuard, disco and STUN, plus DERP, as tailscale's
// wgengine/magicsock does it (reference data-plane.md 4, 5.5, 6). It owns the socket (a UdpBind) and
// is the data plane's Bind (src/net/bind.ts): the WireGuard device runner above calls send() and
// flush(); magicsock keeps every received datagram that is not WireGuard (STUN answers, disco) for
// itself, sends each WireGuard packet addressed to a peer's PeerEndpoint over UDP to the peer's best
// address, over DERP, or both, as the peer's PeerPath decides (route()), and hands WireGuard packets
// that arrived over DERP up through the BindReceiver. Calls go one way: runner -> magicsock -> socket.
//
// DERP: one client per region, the home region always connected (NotePreferred), others dialled
// when a peer needs them and closed after 60 s unused. Home region and our endpoints come from
// netcheck (STUN from the WireGuard socket) every 20-26 s and are reported through onReport.
import { randomBytes, randomInt } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { boxBefore, publicKeyOf } from '../crypto/box.ts';
import { DerpClient } from '../derp/client.ts';
import { decodeDisco, encodeDisco, looksLikeDisco, type DiscoMessage } from '../disco/disco.ts';
import { bindingRequest, isStunPacket, parseBindingResponse } from '../stun/stun.ts';
import { EndpointType, type DERPMap, type DERPNode, type DERPRegion } from '../control/wire.ts';
import type { NodeInfo } from '../control/netmap.ts';
import type { Endpoint, Endpoints } from '../net/endpoint.ts';
import { UdpBind, type Bind, type BindReceiver } from '../net/bind.ts';
import type { RxBatch } from '../net/batch.ts';
import { netInfoOf, pickHome, planProbes, ReportBuilder, ReportHistory, STUN_TIMEOUT_MS, type NetReport } from '../netcheck/netcheck.ts';
import { measureAllHttps } from '../netcheck/https.ts';
import { PeerPath, Route, type PathAction } from './path.ts';
import { PeerEndpoint } from './peer-endpoint.ts';
import { trace, type Logf } from '../util/log.ts';
import { timeline, timelineOn } from '../util/timeline.ts';
import type { TcpDialer } from '../net/tcp.ts';

/** Close a non-home DERP connection unused this long (derpInactiveCleanupTime). */
export const DERP_INACTIVE_MS = 60_000;
/** Packets queued per DERP region while it connects (derpWriteQueueDepth). */
export const DERP_QUEUE_DEPTH = 32;
/** Own endpoints older than this are re-STUNed before a call-me-maybe (endpointsFreshEnoughDuration). */
export const ENDPOINTS_FRESH_MS = 27_000;
/** A path's re-STUN request (its heartbeat went unanswered) is skipped if netcheck ran this recently: many peers going quiet at once cost one netcheck. */
export const RESTUN_MIN_MS = 2_000;
/** Budget of the HTTPS latency checks when UDP is blocked (netcheck's remaining report time). */
const HTTPS_LATENCY_TIMEOUT_MS = 2_000;
/** A region we got a DERP packet from this recently is reachable (PreferredDERPFrameTime). */
const DERP_HEARD_RECENTLY_MS = 8_000;
/** Timer resolution of heartbeats and cleanups. */
const TICK_MS = 250;
/**
 * MESHD_PKTLOG=1: one log line per WireGuard packet that is not bulk data (handshakes, keepalives,
 * data under 200 bytes: pings, pure ACKs), per disco message and per DERP queue event, with where
 * it went (UDP address, DERP sent or queued). For following a packet through an outage; off by
 * default (one boolean test per packet).
 */
const PKTLOG = process.env.MESHD_PKTLOG === '1';

/** The socket under magicsock: its own UdpBind, or a fake in tests. */
export interface MagicIo {
  /** The interner the socket uses for source addresses. */
  readonly endpoints: Endpoints;
  /** Sends one datagram from the WireGuard socket; false when the kernel refused it. */
  sendDatagram(data: Uint8Array, to: Endpoint): boolean;
  /** Gives a WireGuard packet that arrived over DERP to the device, as if from `from`. */
  receiveWireGuard(buf: Uint8Array, off: number, len: number, from: Endpoint): void;
  /** The socket's port. */
  readonly listenPort: number;
}

/** Options for {@link MagicSock}. */
export interface MagicSockOptions {
  /** The UDP socket to open and own (port 0 = random), or `io`, a stand-in for it (tests). */
  socket?: { port: number; fwmark?: number; mtu: number };
  io?: MagicIo;
  nodePrivate: Uint8Array;
  discoPrivate: Uint8Array;
  log: Logf;
  /** Speak plain HTTP to DERP servers (lab only; tailscale's TS_DEBUG_USE_DERP_HTTP). */
  derpHttp: boolean;
  /** Our local interface endpoints ("ip:port"), asked for at every report. */
  localEndpoints: () => string[];
  /** Our port-mapped endpoint ("ip:port"), if the router gave us one (src/portmapper). */
  portMapped?: () => string | undefined;
  /** Called when our endpoints or NetInfo changed and should go to control. */
  onReport: (endpoints: { addr: string; type: EndpointType }[], netInfo: Record<string, unknown>) => void;
  /** Monotonic clock, ms. */
  now?: () => number;
  /** Makes DERP's TCP connections (the agent's carry SO_MARK: src/net/tcp.ts). */
  derpDial?: TcpDialer;
}

/** A peer's path as status shows it. */
export interface PathStatus { direct: string | null; derp: string | null; latencyMs: number | null }

/** The answer to a disco ping from the CLI. */
export interface PingResult { via: 'direct' | 'derp'; endpoint: string | null; region: number; regionCode: string; latencyMs: number }

interface MagicPeer {
  readonly id: number;
  readonly vep: PeerEndpoint;
  readonly path: PeerPath;
  nodeKey: Uint8Array;
  nodeHex: string;
  discoHex: string;
  /** The peer's disco public key (undefined: none). */
  discoKey: Uint8Array | undefined;
  /** The NaCl box key with it, computed on first use (sharedOf): a map of thousands of peers must not stall forwarding. */
  shared: Uint8Array | undefined;
  name: string;
  homeDERP: number;
  /** Region we last heard from this peer on. */
  lastDerpRegion: number;
}

interface DerpConn { region: number; client: DerpClient; queue: { dst: Uint8Array; data: Uint8Array }[]; lastUsed: number }

interface CliPing { peer: MagicPeer; at: number; resolve: (r: PingResult | undefined) => void }

/** Always-on counters. */
export interface MagicCounters {
  rxDisco: number; rxDiscoDerp: number; rxStun: number; rxWgDerp: number; txWgDerp: number;
  dropJunk: number; dropDiscoUnknownSender: number; dropDiscoBadBox: number; dropDiscoOther: number;
  dropDerpUnknownPeer: number; dropDerpNoRegion: number; dropDerpQueueFull: number;
  pongsSent: number; netchecks: number;
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.length).toString('hex');
}

/** The UDP+DERP multiplexer of one running node, and the Bind of its data plane. */
export class MagicSock implements Bind {
  /** Our disco public key. */
  readonly discoPublic: Uint8Array;
  /** Counters. */
  readonly counters: MagicCounters = {
    rxDisco: 0, rxDiscoDerp: 0, rxStun: 0, rxWgDerp: 0, txWgDerp: 0, dropJunk: 0, dropDiscoUnknownSender: 0,
    dropDiscoBadBox: 0, dropDiscoOther: 0, dropDerpUnknownPeer: 0, dropDerpNoRegion: 0, dropDerpQueueFull: 0,
    pongsSent: 0, netchecks: 0,
  };
  private readonly opts: MagicSockOptions;
  private readonly io: MagicIo;
  private readonly log: Logf;
  private readonly now: () => number;
  private readonly nodePublic: Uint8Array;
  private readonly byNode = new Map<string, MagicPeer>();
  private readonly byDisco = new Map<string, MagicPeer>();
  private readonly byId = new Map<number, MagicPeer>();
  private nextId = 1;
  private readonly actions: PathAction[] = [];
  private derpMap: DERPMap | undefined;
  private readonly derps = new Map<number, DerpConn>();
  private home = 0;
  private report: NetReport | undefined;
  private reportAt = -Infinity;
  /** 5 min of reports, for the home choice (netcheck.ts ReportHistory). */
  private readonly history = new ReportHistory();
  /** When a packet last came from each DERP region (the old home counts as reachable for 8 s). */
  private readonly derpHeard = new Map<number, number>();
  private netcheckRun: ReportBuilder | undefined;
  private netcheckPromise: Promise<NetReport | undefined> | undefined;
  private netcheckTimers: NodeJS.Timeout[] = [];
  /** The running netcheck's end condition, checked at each STUN answer. */
  private netcheckCheck: (() => void) | undefined;
  private nextNetcheck: NodeJS.Timeout | undefined;
  private readonly ticker: NodeJS.Timeout;
  private readonly cliPings = new Map<string, CliPing>();
  private lastReported = '';
  private closed = false;
  private homeWaiters: ((ok: boolean) => void)[] = [];
  /** The socket, when magicsock opened it. */
  private readonly udp: UdpBind | undefined;
  /** The device runner, once open() was called. */
  private recv: BindReceiver | undefined;

  constructor(opts: MagicSockOptions) {
    this.opts = opts;
    if (opts.io) {
      this.io = opts.io;
    } else {
      if (!opts.socket) throw new TypeError('MagicSock needs socket or io');
      const udp = new UdpBind({ port: opts.socket.port, fwmark: opts.socket.fwmark ?? 0, mtu: opts.socket.mtu, log: opts.log });
      this.udp = udp;
      this.io = {
        endpoints: udp.endpoints,
        sendDatagram: (data, to) => udp.sendTo(data, to),
        receiveWireGuard: (buf, off, len, from) => this.recv?.receiveOne(buf, off, len, from),
        get listenPort() { return udp.port; },
      };
    }
    this.log = opts.log;
    this.now = opts.now ?? (() => performance.now());
    this.nodePublic = publicKeyOf(opts.nodePrivate);
    this.discoPublic = publicKeyOf(opts.discoPrivate);
    this.ticker = setInterval(() => this.tick(), TICK_MS);
    this.ticker.unref();
  }

  /** The DERP map in use. */
  get derpRegions(): DERPRegion[] {
    return regionsOf(this.derpMap);
  }

  /** Our home DERP region (0 until netcheck chose one). */
  get homeRegion(): number {
    return this.home;
  }

  /** The latest netcheck report. */
  get lastReport(): NetReport | undefined {
    return this.report;
  }

  // ---- peers ---------------------------------------------------------------------------------

  /** Creates or updates a peer from the network map; returns the endpoint to give WireGuard. */
  upsertPeer(n: NodeInfo): PeerEndpoint {
    const nodeHex = hex(n.nodeKey);
    let p = this.byNode.get(nodeHex);
    if (p === undefined) {
      const id = this.nextId++;
      p = {
        id, vep: new PeerEndpoint(id, nodeHex), path: new PeerPath(() => new Uint8Array(randomBytes(12))),
        nodeKey: n.nodeKey.slice(), nodeHex, discoHex: '', discoKey: undefined, shared: undefined, name: '', homeDERP: 0, lastDerpRegion: 0,
      };
      this.byNode.set(nodeHex, p);
      this.byId.set(id, p);
    }
    p.name = n.hostname || n.name.split('.')[0] || '';
    p.homeDERP = n.homeDERP;
    const discoHex = n.discoKey ? hex(n.discoKey) : '';
    if (discoHex !== p.discoHex) {
      if (p.discoHex) this.byDisco.delete(p.discoHex);
      p.discoHex = discoHex;
      p.discoKey = n.discoKey ? n.discoKey.slice() : undefined;
      p.shared = undefined; // one X25519 per peer, computed lazily by sharedOf
      if (discoHex) this.byDisco.set(discoHex, p);
      // A new disco key means the peer restarted: what we knew about its paths is stale.
      p.path.bestAddr = undefined;
      p.path.trustUntil = -Infinity;
    }
    const eps: Endpoint[] = [];
    for (const e of n.endpoints) {
      try { eps.push(this.io.endpoints.parse(e)); } catch { /* skip a malformed endpoint */ }
    }
    p.path.setMapEndpoints(eps);
    return p.vep;
  }

  /** Forgets peers whose node keys (hex) are not in `keep`. */
  retainPeers(keep: ReadonlySet<string>): void {
    for (const [k, p] of this.byNode) {
      if (keep.has(k)) continue;
      this.byNode.delete(k);
      this.byId.delete(p.id);
      if (p.discoHex) this.byDisco.delete(p.discoHex);
    }
  }

  /** The path to a peer (by node key) for status. */
  pathOf(nodeKey: Uint8Array): PathStatus | undefined {
    const p = this.byNode.get(hex(nodeKey));
    if (!p) return undefined;
    const now = this.now();
    const region = this.regionFor(p);
    // Direct means what tailscale's CurAddr means: a UDP address confirmed by a pong less than
    // 6.5 s ago (bestAddr trusted), the only case where packets go over UDP alone.
    const trusted = p.path.trusted(now);
    return {
      direct: trusted ? p.path.bestAddr!.key : null,
      derp: !trusted && region ? this.regionName(region) : null,
      latencyMs: trusted ? p.path.bestLatency : null,
    };
  }

  private regionName(region: number): string {
    const r = this.derpMap?.Regions?.[String(region)];
    return r?.RegionCode || String(region);
  }

  // ---- Bind: the device runner's socket ------------------------------------------------------

  get endpoints(): Endpoints {
    return this.io.endpoints;
  }

  get port(): number {
    return this.io.listenPort;
  }

  get mark(): number {
    return this.udp?.mark ?? 0;
  }

  /** Starts handing WireGuard datagrams (from the socket and from DERP) to `recv`. */
  open(recv: BindReceiver): void {
    this.recv = recv;
    this.udp?.open({
      receiveBatch: (b) => this.demux(b, recv),
      receiveOne: (buf, off, len, from) => recv.receiveOne(buf, off, len, from),
    });
  }

  /** Keeps STUN and disco datagrams (length set to 0 in the batch), hands the rest up. */
  private demux(b: RxBatch, recv: BindReceiver): void {
    const buf = b.buf, lens = b.lens;
    for (let i = 0; i < b.count; i++) {
      const off = b.offset(i), len = lens[i]!;
      // WireGuard: type 1-4 then three zero bytes; anything else is STUN, disco or junk.
      if (len < 4 || buf[off]! - 1 >>> 0 > 3 || buf[off + 1] !== 0 || buf[off + 2] !== 0 || buf[off + 3] !== 0) {
        this.receiveOther(buf, off, len, b.endpoint(i));
        lens[i] = 0;
      } else {
        if (timelineOn) this.markWg(`in udp ${b.endpoint(i).key}`, buf[off]!);
        if (PKTLOG && (len < 200 || buf[off] !== 4)) this.log(`pkt in udp ${b.endpoint(i).key} wg${buf[off]} len ${len} ${pktCtr(buf, off, len)}`);
      }
    }
    recv.receiveBatch(b);
  }

  bind(port: number, force = false): void {
    this.udp?.bind(port, force);
  }

  setMark(mark: number): void {
    this.udp?.setMark(mark);
  }

  shareBuffer(buf: Uint8Array): void {
    this.udp?.shareBuffer(buf);
  }

  /** Queues a WireGuard datagram: to a PeerEndpoint it goes where route() says, to an address as it is. */
  send(buf: Uint8Array, off: number, len: number, to: Endpoint): void {
    let ep: Endpoint | null = to;
    if (to instanceof PeerEndpoint) ep = this.route(to, buf, off, len);
    if (ep === null) return;
    if (this.udp) this.udp.send(buf, off, len, ep);
    else this.io.sendDatagram(buf.slice(off, off + len), ep);
  }

  flush(): void {
    this.udp?.flush();
  }

  pauseGso(paused: boolean): void {
    this.udp?.pauseGso(paused);
  }

  socketCounters(): Record<string, number> {
    return this.udp?.socketCounters() ?? {};
  }

  // ---- WireGuard out -------------------------------------------------------------------------

  /**
   * Routes a WireGuard packet for `to` (a PeerEndpoint): returns the UDP endpoint to send it to, or
   * null when it goes over DERP only (sent here, copied) or nowhere. The hot path when the direct
   * path is trusted: one map lookup and a comparison.
   */
  route(to: PeerEndpoint, buf: Uint8Array, off: number, len: number): Endpoint | null {
    const p = this.byId.get(to.id);
    if (p === undefined) return null;
    const actions = this.actions;
    const now = this.now();
    const heard = to.heard;
    if (heard !== undefined) { to.heard = undefined; p.path.onHeard(heard, now); }
    const r = p.path.noteSend(now, actions);
    if (timelineOn) this.markWg(`out to ${p.name} ${r & Route.derp ? 'derp' : ''}${r & Route.udp ? ' udp' : ''}`, buf[off]!);
    if (PKTLOG && (len < 200 || buf[off] !== 4)) this.log(`pkt out ${p.name} wg${buf[off]} len ${len} ${pktCtr(buf, off, len)} route ${r & Route.udp ? `udp ${p.path.udpAddr(now)?.key}` : ''}${r & Route.derp ? ' derp' : ''}${r === Route.none ? 'none' : ''}`);
    // The packet goes to DERP before the call-me-maybe, as tailscale's (asynchronous) one does: a
    // peer that gets the call-me-maybe first pings us and then, answering the packet, finds nothing
    // left to ping and sends us no call-me-maybe of its own.
    if (r & Route.derp) this.sendDerp(p, buf.subarray(off, off + len));
    if (actions.length > 0) this.runActions(p);
    return (r & Route.udp) !== 0 ? p.path.udpAddr(now) ?? null : null;
  }

  /** MESHD_TIMELINE: the first WireGuard message of each type and direction. */
  private markWg(what: string, type: number): void {
    const k = type === 0 ? what.slice(0, what.indexOf(' in ') + 8) : `${what.slice(0, 3)}${type}`;
    if (this.wgMarked.has(k)) return;
    this.wgMarked.add(k);
    timeline(type === 0 ? what : `wg ${['', 'initiation', 'response', 'cookie', 'data'][type] ?? type} ${what}`);
  }

  private readonly wgMarked = new Set<string>();

  private runActions(p: MagicPeer): void {
    const actions = this.actions;
    for (let i = 0; i < actions.length; i++) {
      const a = actions[i]!;
      if (a.kind === 'ping') this.sendDiscoUdp(p, { type: 'ping', txId: a.txId, nodeKey: this.nodePublic, padding: 0 }, a.to);
      else this.sendCallMeMaybe(p, a.restun === true);
    }
    actions.length = 0;
  }

  /** The disco box key with p, computed on first use (undefined when p has no disco key). */
  private sharedOf(p: MagicPeer): Uint8Array | undefined {
    if (p.shared === undefined && p.discoKey !== undefined) p.shared = boxBefore(p.discoKey, this.opts.discoPrivate);
    return p.shared;
  }

  private sendDiscoUdp(p: MagicPeer, msg: DiscoMessage, to: Endpoint): void {
    const shared = this.sharedOf(p);
    if (!shared) return;
    if (PKTLOG) this.log(`pkt disco ${msg.type} out udp ${to.key} to ${p.name}`);
    if (!this.io.sendDatagram(encodeDisco(msg, this.discoPublic, shared), to) && msg.type === 'ping') p.path.onPingSendFailed(msg.txId);
  }

  private sendDiscoDerp(p: MagicPeer, msg: DiscoMessage, region = this.regionFor(p)): void {
    const shared = this.sharedOf(p);
    if (!shared) return;
    if (PKTLOG) this.log(`pkt disco ${msg.type} out derp-${region} to ${p.name}`);
    this.sendDerp(p, encodeDisco(msg, this.discoPublic, shared), region);
  }

  private sendCallMeMaybe(p: MagicPeer, restun = false): void {
    // Our endpoints must be fresh for the peer to reach us: re-STUN first when they are old, or
    // when the path asks (its heartbeat went unanswered: our NAT may have a new address).
    const age = this.now() - this.reportAt;
    if (this.derpMap && (age > ENDPOINTS_FRESH_MS || (restun && age > RESTUN_MIN_MS))) {
      void this.netcheck().then(() => this.sendCallMeMaybeNow(p));
      return;
    }
    this.sendCallMeMaybeNow(p);
  }

  private sendCallMeMaybeNow(p: MagicPeer): void {
    const eps: Endpoint[] = [];
    for (const e of this.ourEndpoints()) {
      try { eps.push(this.io.endpoints.parse(e.addr)); } catch { /* skip */ }
    }
    this.sendDiscoDerp(p, { type: 'call-me-maybe', endpoints: eps });
  }

  // ---- DERP ----------------------------------------------------------------------------------

  /** The peer's home region, else where we last heard from it, else ours, else the first region (before netcheck). */
  private regionFor(p: MagicPeer): number {
    return p.homeDERP || p.lastDerpRegion || this.home || (regionsOf(this.derpMap).find((r) => !r.NoMeasureNoHome)?.RegionID ?? 0);
  }

  private sendDerp(p: MagicPeer, data: Uint8Array, region = this.regionFor(p)): void {
    if (trace.enabled) trace(`derp out to ${p.name} region ${region}: ${data.length} bytes type ${data[0]}`);
    if (!region) { this.counters.dropDerpNoRegion++; return; }
    const c = this.derpConn(region);
    if (!c) { this.counters.dropDerpNoRegion++; return; }
    c.lastUsed = this.now();
    this.counters.txWgDerp++;
    if (c.client.connected && c.queue.length === 0) { c.client.send(p.nodeKey, data); return; }
    if (PKTLOG) this.log(`pkt derp-${region} queued (${c.client.state}, ${c.queue.length} waiting) to ${p.name} type ${data[0]} len ${data.length}`);
    if (c.queue.length >= DERP_QUEUE_DEPTH) { c.queue.shift(); this.counters.dropDerpQueueFull++; }
    c.queue.push({ dst: p.nodeKey, data: data.slice() });
    // A packet waits: reconnect now, not when the backoff (grown to seconds in an outage) ends.
    c.client.dialSoon();
  }

  private derpConn(region: number): DerpConn | undefined {
    let c = this.derps.get(region);
    if (c) return c;
    const r = this.derpMap?.Regions?.[String(region)];
    if (!r || this.closed) return undefined;
    const node = r.Nodes.find((n) => !n.STUNOnly);
    if (!node) return undefined;
    const client = new DerpClient({
      url: derpUrl(node, this.opts.derpHttp),
      privateKey: this.opts.nodePrivate,
      allowInsecureHttp: this.opts.derpHttp,
      ...(node.IPv4 && isIP(node.IPv4) ? { connectAddress: node.IPv4 } : {}),
      ...(node.CertName ? { certName: node.CertName } : {}),
      ...(node.InsecureForTests ? { tls: { rejectUnauthorized: false } } : {}),
      preferred: region === this.home,
      appName: 'meshd',
      ...(this.opts.derpDial ? { dial: this.opts.derpDial } : {}),
      log: (m) => this.log(`derp-${region}: ${m}`),
    });
    const conn: DerpConn = { region, client, queue: [], lastUsed: this.now() };
    timeline(`derp-${region} dialing`);
    client.on('packet', (src, data) => this.onDerpPacket(region, src, data));
    client.on('connected', () => {
      this.log(`derp-${region}: connected${region === this.home ? ' (home)' : ''}`);
      timeline(`derp-${region} connected${region === this.home ? ' (home)' : ''}`);
      this.checkHomeWaiters();
      const q = conn.queue.splice(0);
      if (PKTLOG) this.log(`pkt derp-${region} connected: sending ${q.length} queued`);
      for (const m of q) client.send(m.dst, m.data);
    });
    client.on('peer-gone', (peer) => {
      const p = this.byNode.get(hex(peer));
      if (p && p.lastDerpRegion === region) p.lastDerpRegion = 0;
    });
    this.derps.set(region, conn);
    client.start();
    return conn;
  }

  private onDerpPacket(region: number, src: Uint8Array, dataIn: Uint8Array): void {
    // A plain Uint8Array view: DERP hands out Buffers, whose slice() does not copy.
    const data = new Uint8Array(dataIn.buffer, dataIn.byteOffset, dataIn.length);
    const p = this.byNode.get(hex(src));
    if (looksLikeDisco(data)) {
      this.counters.rxDiscoDerp++;
      this.handleDisco(data, undefined, region, p);
      return;
    }
    this.derpHeard.set(region, this.now());
    if (p === undefined) { this.counters.dropDerpUnknownPeer++; return; }
    if (trace.enabled) trace(`derp in from ${p.name}: ${data.length} bytes type ${data[0]}`);
    p.lastDerpRegion = region;
    this.counters.rxWgDerp++;
    if (timelineOn) this.markWg(`in derp from ${p.name}`, data[0]!);
    if (PKTLOG && (data.length < 200 || data[0] !== 4)) this.log(`pkt in derp-${region} from ${p.name} wg${data[0]} len ${data.length} ${pktCtr(data, 0, data.length)}`);
    this.io.receiveWireGuard(data, 0, data.length, p.vep);
  }

  /** Sets the DERP map (from control); connects home once netcheck has chosen it. */
  setDerpMap(map: DERPMap | undefined): void {
    if (!map) return;
    const first = this.derpMap === undefined;
    this.derpMap = map;
    for (const [region, c] of this.derps) {
      if (!map.Regions?.[String(region)]) { c.client.close(); this.derps.delete(region); }
    }
    if (!first) return;
    timeline('derp map set: netcheck starts');
    void this.netcheck();
    // A map with one region leaves netcheck nothing to choose (pickHome falls back to the only
    // region even without any latency), so the home connection need not wait for it: on a busy
    // first map that wait was ~8 ms of `up` and of the first packet to a peer.
    const only = soleHomeRegion(map);
    if (this.home === 0 && only !== 0) {
      this.home = only;
      this.log(`home DERP region ${only} (the map's only region)`);
      this.derpConn(only);
    }
  }

  /**
   * Resolves true once a home region is chosen and its DERP connection is up, false after
   * timeoutMs. tailscaled turns Running only with a live DERP connection, so a peer that pings
   * right after `up` finds our home region in its map; `up` waits for this too.
   */
  waitHomeDerp(timeoutMs: number): Promise<boolean> {
    if (this.homeConnected()) return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const w = (ok: boolean) => { clearTimeout(t); resolve(ok); };
      const t = setTimeout(() => { this.homeWaiters = this.homeWaiters.filter((x) => x !== w); resolve(false); }, timeoutMs);
      this.homeWaiters.push(w);
    });
  }

  private homeConnected(): boolean {
    return this.home !== 0 && this.derps.get(this.home)?.client.connected === true;
  }

  private checkHomeWaiters(): void {
    if (this.homeWaiters.length === 0 || !this.homeConnected()) return;
    for (const w of this.homeWaiters.splice(0)) w(true);
  }

  // ---- UDP in --------------------------------------------------------------------------------

  /** A datagram that is not WireGuard arrived on the socket (STUN, disco or junk). buf is reused after return. */
  receiveOther(buf: Uint8Array, off: number, len: number, from: Endpoint): void {
    const pkt = buf.subarray(off, off + len);
    if (isStunPacket(pkt)) {
      this.counters.rxStun++;
      this.onStun(pkt);
      return;
    }
    if (looksLikeDisco(pkt)) {
      this.counters.rxDisco++;
      this.handleDisco(pkt, from, 0, undefined);
      return;
    }
    this.counters.dropJunk++;
  }

  private handleDisco(pkt: Uint8Array, from: Endpoint | undefined, region: number, derpSrc: MagicPeer | undefined): void {
    const d = decodeDisco(pkt, (sender) => { const q = this.byDisco.get(hex(sender)); return q && this.sharedOf(q); }, this.io.endpoints);
    if (!d.ok) {
      if (d.error === 'unknown-sender') this.counters.dropDiscoUnknownSender++;
      else if (d.error === 'bad-box') this.counters.dropDiscoBadBox++;
      else this.counters.dropDiscoOther++;
      return;
    }
    const p = this.byDisco.get(hex(d.sender));
    if (!p) return;
    const now = this.now();
    const m = d.msg;
    if (from === undefined && derpSrc !== p) {
      // Over DERP the source node key must be the node with this disco key.
      this.counters.dropDiscoOther++;
      return;
    }
    if (from === undefined) p.lastDerpRegion = region;
    if (timelineOn) this.markWg(`disco ${m.type} in ${from ? `udp ${from.key}` : 'derp'} from ${p.name}`, 0);
    if (PKTLOG) this.log(`pkt disco ${m.type} in ${from ? `udp ${from.key}` : `derp-${region}`} from ${p.name}`);
    switch (m.type) {
      case 'ping':
        if (from !== undefined) {
          this.sendDiscoUdp(p, { type: 'pong', txId: m.txId, src: from }, from);
          p.path.onPingFrom(from, now, this.actions);
          if (this.actions.length > 0) this.runActions(p);
        } else {
          // The pong's source for a DERP ping is the DERP magic address, as tailscale reports it.
          this.sendDiscoDerp(p, { type: 'pong', txId: m.txId, src: this.io.endpoints.of('127.3.3.40', region) }, region);
        }
        this.counters.pongsSent++;
        return;
      case 'pong': {
        const k = hex(m.txId);
        const cli = this.cliPings.get(k);
        if (from !== undefined) {
          const r = p.path.onPong(m.txId, now);
          if (r?.becameBest) { this.log(`${p.name}: direct path ${r.to.key} (${r.latencyMs.toFixed(1)} ms)`); timeline(`direct path to ${p.name}`); }
        }
        if (cli) {
          this.cliPings.delete(k);
          const derpRegion = from === undefined ? region : 0;
          cli.resolve({
            via: from === undefined ? 'derp' : 'direct', endpoint: from?.key ?? null, region: derpRegion,
            regionCode: derpRegion ? this.regionName(derpRegion) : '', latencyMs: now - cli.at,
          });
        }
        return;
      }
      case 'call-me-maybe':
        if (from !== undefined) return; // only accepted via DERP
        p.path.onCallMeMaybe(m.endpoints, now, this.actions);
        this.runActions(p);
        return;
      default:
        return; // peer relay messages: not implemented, ignored as tailscale ignores unknown types
    }
  }

  // ---- CLI ping ------------------------------------------------------------------------------

  /** A disco ping to a peer (by node key hex or tailnet IP lookup done by the caller); resolves on the first pong. */
  ping(nodeKey: Uint8Array, timeoutMs: number): Promise<PingResult | undefined> {
    const p = this.byNode.get(hex(nodeKey));
    if (!p || !this.sharedOf(p)) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const now = this.now();
      const keys: string[] = [];
      const done = (r: PingResult | undefined) => { clearTimeout(timer); for (const k of keys) this.cliPings.delete(k); resolve(r); };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      const txIds = p.path.cliPing(now, this.actions);
      this.runActions(p);
      if (!p.path.trusted(now)) {
        const tx = new Uint8Array(randomBytes(12));
        txIds.push(tx);
        this.sendDiscoDerp(p, { type: 'ping', txId: tx, nodeKey: this.nodePublic, padding: 0 });
      }
      for (const tx of txIds) {
        const k = hex(tx);
        keys.push(k);
        this.cliPings.set(k, { peer: p, at: now, resolve: done });
      }
    });
  }

  // ---- netcheck and endpoints ----------------------------------------------------------------

  /** Runs a netcheck now: STUN to every region from the WireGuard socket; then picks home and reports. */
  netcheck(): Promise<NetReport | undefined> {
    if (this.closed) return Promise.resolve(undefined);
    this.netcheckPromise ??= this.runNetcheck().finally(() => { this.netcheckPromise = undefined; });
    return this.netcheckPromise;
  }

  private async runNetcheck(): Promise<NetReport | undefined> {
    const map = this.derpMap;
    const probes = planProbes(map);
    const run = new ReportBuilder();
    this.netcheckRun = run;
    this.counters.netchecks++;
    const start = this.now();
    const targets = new Map<string, Endpoint>();
    for (const pr of probes) {
      const key = `${pr.host}:${pr.port}`;
      if (targets.has(key)) continue;
      try {
        const ip = isIP(pr.host) ? pr.host : (await lookup(pr.host, { family: 4 })).address;
        targets.set(key, this.io.endpoints.of(ip, pr.port));
      } catch (e) {
        this.log(`netcheck: cannot resolve ${pr.host}: ${(e as Error).message}`);
      }
    }
    await new Promise<void>((resolve) => {
      for (const pr of probes) {
        const to = targets.get(`${pr.host}:${pr.port}`);
        if (!to) continue;
        const send = (): void => {
          const req = bindingRequest();
          run.sentProbe(hex(req.subarray(8, 20)), pr.region, pr.host, this.now());
          this.io.sendDatagram(req, to);
          if (timelineOn) timeline(`netcheck: STUN to ${to.key} (delay ${pr.delayMs})`);
        };
        // The first try goes now, not after a timer: the first map's host configuration runs
        // right after setDerpMap and would hold a zero-delay timer back for tens of ms.
        if (pr.delayMs === 0) send();
        else this.netcheckTimers.push(setTimeout(send, pr.delayMs));
      }
      const regions = new Set(probes.map((p) => p.region)).size;
      // Done when every region answered, some time after three did (ReportBuilder.stopAt), or at the
      // STUN timeout: checked at each answer and every 50 ms.
      const full = this.report === undefined;
      let done = false;
      const check = (): void => {
        const now = this.now();
        if (done || !(now >= run.stopAt(regions, full) || now - start >= STUN_TIMEOUT_MS || this.closed)) return;
        done = true;
        clearInterval(poll);
        this.netcheckCheck = undefined;
        resolve();
      };
      const poll = setInterval(check, 50);
      this.netcheckTimers.push(poll);
      this.netcheckCheck = check;
    });
    for (const t of this.netcheckTimers) clearTimeout(t);
    this.netcheckTimers = [];
    this.netcheckRun = undefined;
    if (this.closed) return undefined;
    const report = run.report();
    if (!report.udp && map) {
      // UDP got no answer: DERP latency over HTTPS, as tailscale measures it (netcheck/https.ts).
      const res = await measureAllHttps(regionsOf(map), { http: this.opts.derpHttp, timeoutMs: HTTPS_LATENCY_TIMEOUT_MS, now: this.now });
      if (this.closed) return undefined;
      report.httpsLatency = new Set();
      for (const r of res) {
        if (r.ok) { report.regionLatency.set(r.region, r.ms); report.httpsLatency.add(r.region); }
        else this.log(`netcheck: HTTPS latency of region ${r.region}: ${r.error}`);
      }
    }
    this.report = report;
    this.reportAt = this.now();
    timeline(`netcheck done (${Math.round(this.reportAt - start)} ms)`);
    this.history.add(report.regionLatency, this.reportAt);
    const oldHome = this.home;
    this.home = pickHome(map, report.regionLatency, oldHome, {
      bestRecent: this.history.bestRecent(),
      oldHeardRecently: this.reportAt - (this.derpHeard.get(oldHome) ?? -Infinity) < DERP_HEARD_RECENTLY_MS,
    });
    if (this.home !== oldHome) {
      this.log(`home DERP region ${this.home}${oldHome ? ` (was ${oldHome})` : ''}`);
      this.derps.get(oldHome)?.client.notePreferred(false);
      const c = this.derpConn(this.home);
      c?.client.notePreferred(true);
    }
    this.checkHomeWaiters();
    this.maybeReport();
    this.scheduleNetcheck();
    return report;
  }

  private scheduleNetcheck(): void {
    clearTimeout(this.nextNetcheck);
    if (this.closed) return;
    this.nextNetcheck = setTimeout(() => { void this.netcheck(); }, randomInt(20_000, 26_000));
    this.nextNetcheck.unref();
  }

  private onStun(pkt: Uint8Array): void {
    const run = this.netcheckRun;
    if (!run) return;
    const r = parseBindingResponse(pkt, this.io.endpoints);
    if (timelineOn) timeline(`netcheck: STUN answer ${r.ok ? r.endpoint.key : 'bad'}`);
    if (r.ok && run.onResponse(hex(r.txId), r.endpoint, this.now())) this.netcheckCheck?.();
  }

  /** Our endpoints in report order: port-mapped (type 3), STUN-discovered (type 2), then local addresses (type 1). */
  ourEndpoints(): { addr: string; type: EndpointType }[] {
    const out: { addr: string; type: EndpointType }[] = [];
    const seen = new Set<string>();
    const add = (addr: string, type: EndpointType) => { if (!seen.has(addr)) { seen.add(addr); out.push({ addr, type }); } };
    const mapped = this.opts.portMapped?.();
    if (mapped) add(mapped, EndpointType.portmapped);
    const r = this.report;
    if (r?.globalV4) add(r.globalV4.key, EndpointType.stun);
    if (r?.globalV6) add(r.globalV6.key, EndpointType.stun);
    for (const e of this.opts.localEndpoints()) add(e, EndpointType.local);
    return out;
  }

  /** Reports endpoints and NetInfo through onReport when they changed. */
  maybeReport(force = false): void {
    const eps = this.ourEndpoints();
    const ni = this.report ? netInfoOf(this.report, this.home) : { PreferredDERP: this.home };
    const text = JSON.stringify([eps, ni.PreferredDERP, ni.WorkingUDP ?? null, ni.MappingVariesByDestIP ?? null]);
    if (!force && text === this.lastReported) return;
    this.lastReported = text;
    timeline(`endpoints reported: ${eps.length}, home ${String(ni.PreferredDERP)}`);
    this.opts.onReport(eps, ni);
  }

  /** Makes the next maybeReport send even if nothing changed (after a failed report). */
  reportFailed(): void {
    this.lastReported = '';
  }

  private tick(): void {
    if (this.closed) return;
    const now = this.now();
    for (const p of this.byNode.values()) {
      // Where the peer's packets came from, noted within a tick even when we send nothing.
      const heard = p.vep.heard;
      if (heard !== undefined) { p.vep.heard = undefined; p.path.onHeard(heard, now); }
      const best = p.path.bestAddr;
      p.path.tick(now, this.actions);
      if (p.path.bestAddr !== best && p.path.bestAddr !== undefined) this.log(`${p.name}: direct path ${p.path.bestAddr.key} (the old one stopped answering)`);
      if (this.actions.length > 0) this.runActions(p);
    }
    for (const [region, c] of this.derps) {
      if (region !== this.home && now - c.lastUsed > DERP_INACTIVE_MS) {
        this.log(`derp-${region}: closing, unused for ${DERP_INACTIVE_MS / 1000} s`);
        c.client.close();
        this.derps.delete(region);
      }
    }
  }

  /** magicsock counters plus each DERP region's (prefixed derpN.) and the paths' summed. */
  allCounters(): Record<string, number> {
    const out: Record<string, number> = { ...this.counters };
    for (const c of this.derps.values()) {
      for (const [k, v] of Object.entries(c.client.counters)) out[`derp${c.region}.${k}`] = v;
    }
    for (const p of this.byNode.values()) {
      for (const [k, v] of Object.entries(p.path.counters)) out[`paths.${k}`] = (out[`paths.${k}`] ?? 0) + v;
    }
    return out;
  }

  /** DERP counters by region, for status and tests. */
  derpStatus(): { region: number; connected: boolean; home: boolean }[] {
    return [...this.derps.values()].map((c) => ({ region: c.region, connected: c.client.connected, home: c.region === this.home }));
  }

  /** Stops timers and closes DERP connections. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.ticker);
    clearTimeout(this.nextNetcheck);
    for (const t of this.netcheckTimers) clearTimeout(t);
    for (const c of this.derps.values()) c.client.close();
    this.derps.clear();
    for (const c of this.cliPings.values()) c.resolve(undefined);
    this.cliPings.clear();
    for (const w of this.homeWaiters.splice(0)) w(false);
    this.udp?.close();
  }
}

/** MESHD_PKTLOG: a transport message's receiver index and counter, or the handshake's sender index. */
function pktCtr(b: Uint8Array, off: number, len: number): string {
  if (len < 16) return '';
  const idx = (b[off + 4]! | (b[off + 5]! << 8) | (b[off + 6]! << 16) | (b[off + 7]! << 24)) >>> 0;
  if (b[off] !== 4) return `idx ${idx}`;
  const lo = (b[off + 8]! | (b[off + 9]! << 8) | (b[off + 10]! << 16) | (b[off + 11]! << 24)) >>> 0;
  return `rx-idx ${idx} ctr ${lo}`;
}

/** The DERP URL of a node: https://HostName[:DERPPort]/derp, or plain http (port 3340 by default) when asked. */
export function derpUrl(n: DERPNode, http: boolean): string {
  const host = n.HostName.includes(':') ? `[${n.HostName}]` : n.HostName;
  const port = n.DERPPort || (http ? 3340 : 443);
  return `${http ? 'http' : 'https'}://${host}:${port}/derp`;
}

/** The regions of a DERP map, sorted by ID. */
export function regionsOf(map: DERPMap | undefined): DERPRegion[] {
  return Object.values(map?.Regions ?? {}).filter((r): r is DERPRegion => !!r).sort((a, b) => a.RegionID - b.RegionID);
}

/** The one region a map offers as a home (a non-STUN-only node, not NoMeasureNoHome), or 0 when the map has any other region. */
export function soleHomeRegion(map: DERPMap): number {
  const regions = regionsOf(map);
  if (regions.length !== 1) return 0;
  const r = regions[0]!;
  return !r.NoMeasureNoHome && r.Nodes.some((n) => !n.STUNOnly) ? r.RegionID : 0;
}
