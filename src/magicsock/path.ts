// Per-peer path choice, without I/O (tailscale wgengine/magicsock/endpoint.go; reference
// data-plane.md 4.3-4.5). The I/O layer tells a PeerPath what happened (a WireGuard packet goes out,
// a pong came back, a ping or call-me-maybe arrived, time passed) with `now` in ms, and the path
// answers with actions: disco pings to send over UDP, call-me-maybe to send over DERP.
//
// Where a WireGuard packet goes (addrForSendLocked):
//   best address confirmed by a pong less than 6.5 s ago  -> UDP to it only
//   best address known but its trust expired              -> UDP to it and DERP
//   no best address                                       -> DERP only
// and, unlike tailscale, while not trusted: an authenticated WireGuard packet from the peer
// arrived over UDP less than HEARD_MS ago -> UDP to its source (instead of the untrusted best
// address) and DERP. A reply then goes back the way the request came even when our trust lapsed
// during an outage: after the peer's link comes back its DERP connection is still being redialled
// and the DERP server hands our reply to its dead old one (chaos `linkdown`).
// Candidates: the peer's endpoints from the map, from its call-me-maybe, and sources of its pings.
import type { Endpoint } from '../net/endpoint.ts';

/** Ping the best address this often while the peer is active (heartbeatInterval). */
export const HEARTBEAT_MS = 3_000;
/** After a pong, use UDP alone this long (trustUDPAddrDuration). */
export const TRUST_UDP_ADDR_MS = 6_500;
/** A ping without a pong after this long is lost (pingTimeoutDuration). */
export const PING_TIMEOUT_MS = 5_000;
/** Least time between pings to one candidate (discoPingInterval). */
export const DISCO_PING_INTERVAL_MS = 5_000;
/** No outbound traffic this long: the session is idle, heartbeats stop (sessionActiveTimeout). */
export const SESSION_ACTIVE_TIMEOUT_MS = 45_000;
/** Re-probe every candidate this often when the direct path is slower than goodEnough (upgradeUDPDirectInterval). */
export const UPGRADE_INTERVAL_MS = 60_000;
/** A direct path at or below this latency is never upgraded (goodEnoughLatency). */
export const GOOD_ENOUGH_LATENCY_MS = 5;
/** Most candidates kept per peer. */
export const MAX_CANDIDATES = 100;
/**
 * Least time between ping-backs to one candidate: a ping from the peer while our path is not
 * trusted is answered with a pong and, at most this often, with a ping of our own (see onPingFrom).
 */
export const PING_BACK_INTERVAL_MS = 1_000;
/**
 * A ping to bestAddr unanswered this long (or 3 round trips, if longer) is overdue. An overdue
 * heartbeat is sent again; if that one is overdue too, at most every DISCO_PING_INTERVAL_MS, our
 * endpoints are re-STUNed and sent to the peer in a call-me-maybe (our own NAT may have moved: the
 * peer's NAT drops what comes from our new address until the peer sends there; two misses in a row
 * as in tailscale's lapse, so a lossy path rarely pays a netcheck). An overdue ping to bestAddr while
 * another candidate answered a ping sent no earlier moves bestAddr there (the peer's NAT moved).
 * Trust itself lapses as in tailscale (6.5 s after the last pong): a lost pong under loss costs no
 * DERP mirroring, but a moved address is found while the old path is still trusted.
 */
export const BEST_OVERDUE_MS = 500;
/**
 * A UDP address an authenticated WireGuard packet from the peer came from is used this long while
 * the path is not trusted (tailscale trusts a WireGuard-only peer's source 5 s the same way).
 */
export const HEARD_MS = 5_000;
/** Most pings awaiting a pong per peer. */
const MAX_PENDING_PINGS = 256;

/** Where one WireGuard packet goes: a bit set. */
export const Route = { none: 0, udp: 1, derp: 2, both: 3 } as const;
/** One of {@link Route}. */
export type Route = (typeof Route)[keyof typeof Route];

/** What a PeerPath asks the I/O layer to do. */
export type PathAction =
  | { kind: 'ping'; to: Endpoint; txId: Uint8Array }
  | { kind: 'call-me-maybe'; restun?: boolean };

/** Why a ping was sent; a CLI ping wants to hear about its pong. */
export type PingPurpose = 'discovery' | 'heartbeat' | 'cli';

interface Candidate {
  ep: Endpoint;
  lastPing: number;
  /** Latency of the latest pong, ms; Infinity before one. */
  latency: number;
  fromMap: boolean;
  fromCallMeMaybe: boolean;
  /** Last time the peer pinged us from here (runtime-learned candidate). */
  lastPingFrom: number;
  /** Last ping-back to here (onPingFrom). */
  lastPingBack: number;
  /** When the latest pong from here arrived, and when the ping it answered was sent. */
  lastPong: number;
  lastPongPingAt: number;
}

interface SentPing { to: Endpoint; at: number; purpose: PingPurpose }

/** A pong matched to its ping. */
export interface PongResult { to: Endpoint; latencyMs: number; purpose: PingPurpose; becameBest: boolean }

/** Counters of one path, always on. */
export interface PathCounters {
  pingsSent: number;
  pongsReceived: number;
  pingsTimedOut: number;
  callMeMaybeSent: number;
  callMeMaybeReceived: number;
  unknownPongs: number;
  /** bestAddr moved to another candidate because it stopped answering while that one answered. */
  failovers: number;
  /** Times the trust in bestAddr ran out while it was kept (seen at a tick): packets then go both ways. */
  lapses: number;
}

/**
 * betterAddr (endpoint.go): does a (latency la) beat b (latency lb)? The faster gets up to 100
 * points for its advantage; private addresses +20, IPv6 +10, loopback +50; ties keep b.
 */
export function betterAddr(a: Endpoint, la: number, b: Endpoint | undefined, lb: number): boolean {
  if (b === undefined) return true;
  if (a.key === b.key) return false;
  let pa = 0, pb = 0;
  if (la < lb) pa += 100 - (100 * la) / lb;
  else if (lb < la) pb += 100 - (100 * lb) / la;
  pa += addrPoints(a);
  pb += addrPoints(b);
  if (pa <= 1 && pb === 0) return false;
  return pa > pb;
}

function addrPoints(e: Endpoint): number {
  let p = 0;
  if (e.family === 6) p += 10;
  if (e.ip.startsWith('127.') || e.ip === '::1') p += 50;
  else if (isPrivate(e.ip)) p += 20;
  return p;
}

function isPrivate(ip: string): boolean {
  if (ip.startsWith('10.') || ip.startsWith('192.168.')) return true;
  const m = /^172\.(\d+)\./.exec(ip);
  if (m && Number(m[1]) >= 16 && Number(m[1]) <= 31) return true;
  return /^f[cd][0-9a-f]{2}:/i.test(ip);
}

function txKey(txId: Uint8Array): string {
  return Buffer.from(txId.buffer, txId.byteOffset, txId.length).toString('hex');
}

/** The path state of one peer: candidates, best address, trust, outstanding pings. */
export class PeerPath {
  /** Best UDP address, undefined while only DERP is known to work. */
  bestAddr: Endpoint | undefined;
  /** Latency of bestAddr, ms. */
  bestLatency = Infinity;
  /** Until when bestAddr is used without DERP. */
  trustUntil = -Infinity;
  /** Counters. */
  readonly counters: PathCounters = { pingsSent: 0, pongsReceived: 0, pingsTimedOut: 0, callMeMaybeSent: 0, callMeMaybeReceived: 0, unknownPongs: 0, failovers: 0, lapses: 0 };
  private readonly candidates = new Map<string, Candidate>();
  private readonly pings = new Map<string, SentPing>();
  private readonly newTxId: () => Uint8Array;
  private lastSend = -Infinity;
  private lastFullPing = -Infinity;
  private lastCallMeMaybe = -Infinity;
  private nextHeartbeat = Infinity;
  /** Earliest time a discovery round could ping anyone (skips the scan on the hot path). */
  private nextDiscovery = -Infinity;
  /** A candidate other than bestAddr that answered while bestAddr was trusted (see failover). */
  private standby: Candidate | undefined;
  /** The latest heartbeat to bestAddr while it has no pong, and the re-sent one (see BEST_OVERDUE_MS). */
  private heartbeatPending: SentPing | undefined;
  private reprobePending: SentPing | undefined;
  /** Whether bestAddr was trusted at the last tick (counts lapses). */
  private trustedAtTick = false;
  /** Source of the latest authenticated WireGuard packet over UDP, and when it was noted (onHeard). */
  private heardAddr: Endpoint | undefined;
  private heardAt = -Infinity;

  constructor(newTxId: () => Uint8Array) {
    this.newTxId = newTxId;
  }

  /** Whether bestAddr is confirmed (WireGuard goes over UDP alone). */
  trusted(now: number): boolean {
    return this.bestAddr !== undefined && now < this.trustUntil;
  }

  /** Candidate endpoints, as text. */
  candidateKeys(): string[] {
    return [...this.candidates.keys()];
  }

  /** Replaces the candidates that came from the network map. */
  setMapEndpoints(eps: readonly Endpoint[]): void {
    const want = new Set(eps.map((e) => e.key));
    for (const [k, c] of this.candidates) {
      if (c.fromMap && !want.has(k)) {
        c.fromMap = false;
        this.dropIfOrphan(k, c);
      }
    }
    for (const e of eps) this.candidate(e).fromMap = true;
  }

  private dropIfOrphan(k: string, c: Candidate): void {
    if (c.fromMap || c.fromCallMeMaybe || c.lastPingFrom > -Infinity) return;
    this.candidates.delete(k);
    if (this.bestAddr?.key === k) this.clearBest();
  }

  private candidate(e: Endpoint): Candidate {
    let c = this.candidates.get(e.key);
    if (c === undefined) {
      if (this.candidates.size >= MAX_CANDIDATES) this.pruneOne();
      c = { ep: e, lastPing: -Infinity, latency: Infinity, fromMap: false, fromCallMeMaybe: false, lastPingFrom: -Infinity, lastPingBack: -Infinity, lastPong: -Infinity, lastPongPingAt: -Infinity };
      this.candidates.set(e.key, c);
      this.nextDiscovery = -Infinity;
    }
    return c;
  }

  private pruneOne(): void {
    for (const [k, c] of this.candidates) {
      if (!c.fromMap && this.bestAddr?.key !== k) { this.candidates.delete(k); return; }
    }
  }

  private clearBest(): void {
    this.standby = undefined;
    this.heartbeatPending = undefined;
    this.reprobePending = undefined;
    this.bestAddr = undefined;
    this.bestLatency = Infinity;
    this.trustUntil = -Infinity;
  }

  /**
   * A WireGuard packet is about to go out (endpoint.send): returns where it goes and, when the
   * direct path is not trusted, starts discovery. Cheap when trusted: no scan, no allocation.
   */
  noteSend(now: number, out: PathAction[]): Route {
    this.lastSend = now;
    // Heartbeats start with traffic whether or not the path is trusted yet: it may have become
    // trusted before our first send (the peer pinged first), and must not lapse while we send.
    if (this.nextHeartbeat === Infinity) this.nextHeartbeat = now + HEARTBEAT_MS;
    if (this.bestAddr !== undefined && now < this.trustUntil) return Route.udp;
    if (now >= this.nextDiscovery) this.discover(now, out, true);
    return this.bestAddr === undefined && !(now - this.heardAt < HEARD_MS) ? Route.derp : Route.both;
  }

  /**
   * The UDP address for a packet noteSend routed over UDP: the trusted bestAddr; else where the
   * peer's authenticated packets came from in the last HEARD_MS; else the untrusted bestAddr.
   */
  udpAddr(now: number): Endpoint | undefined {
    if (this.bestAddr !== undefined && now < this.trustUntil) return this.bestAddr;
    if (this.heardAddr !== undefined && now - this.heardAt < HEARD_MS) return this.heardAddr;
    return this.bestAddr;
  }

  /** An authenticated WireGuard packet from the peer arrived over UDP from `from` (by `now`). */
  onHeard(from: Endpoint, now: number): void {
    this.heardAddr = from;
    this.heardAt = now;
  }

  /** Pings every candidate not pinged within DISCO_PING_INTERVAL_MS; call-me-maybe if any went out. */
  private discover(now: number, out: PathAction[], withCallMeMaybe: boolean): void {
    let sent = 0;
    let next = Infinity;
    for (const c of this.candidates.values()) {
      if (now - c.lastPing >= DISCO_PING_INTERVAL_MS) {
        this.ping(c, now, 'discovery', out);
        sent++;
      }
      next = Math.min(next, c.lastPing + DISCO_PING_INTERVAL_MS);
    }
    this.nextDiscovery = next;
    this.lastFullPing = now;
    // With no candidate at all a call-me-maybe still lets the peer ping us (we may have a public address).
    if (withCallMeMaybe && (sent > 0 || this.candidates.size === 0)) {
      this.callMeMaybe(now, out);
      if (this.candidates.size === 0) this.nextDiscovery = now + DISCO_PING_INTERVAL_MS;
    }
  }

  private callMeMaybe(now: number, out: PathAction[]): void {
    out.push({ kind: 'call-me-maybe' });
    this.counters.callMeMaybeSent++;
    this.lastCallMeMaybe = now;
  }

  private ping(c: Candidate, now: number, purpose: PingPurpose, out: PathAction[]): SentPing {
    c.lastPing = now;
    const txId = this.newTxId();
    if (this.pings.size >= MAX_PENDING_PINGS) this.expirePings(now, true);
    const sp: SentPing = { to: c.ep, at: now, purpose };
    this.pings.set(txKey(txId), sp);
    this.counters.pingsSent++;
    out.push({ kind: 'ping', to: c.ep, txId });
    return sp;
  }

  /** How long a ping to bestAddr may go unanswered before it is overdue. */
  private overdueMs(otherLatency = 0): number {
    return Math.max(BEST_OVERDUE_MS, 3 * Math.max(otherLatency, this.bestLatency === Infinity ? 0 : this.bestLatency));
  }

  /** A ping for `meshd ping`: to bestAddr if any, else to every candidate. Returns the txids. */
  cliPing(now: number, out: PathAction[]): Uint8Array[] {
    const txIds: Uint8Array[] = [];
    const targets = this.bestAddr !== undefined ? [this.candidate(this.bestAddr)] : [...this.candidates.values()];
    for (const c of targets) {
      const before = out.length;
      this.ping(c, now, 'cli', out);
      const a = out[before];
      if (a?.kind === 'ping') txIds.push(a.txId);
    }
    return txIds;
  }

  /** A pong arrived over UDP (handlePongConnLocked); undefined when it answers no ping of ours. */
  onPong(txId: Uint8Array, now: number): PongResult | undefined {
    const k = txKey(txId);
    const sp = this.pings.get(k);
    if (sp === undefined) {
      this.counters.unknownPongs++;
      return undefined;
    }
    this.pings.delete(k);
    if (sp === this.heartbeatPending) this.heartbeatPending = undefined;
    if (sp === this.reprobePending) this.reprobePending = undefined;
    this.counters.pongsReceived++;
    const latency = Math.max(0, now - sp.at);
    const c = this.candidates.get(sp.to.key);
    if (c !== undefined) {
      c.latency = latency;
      c.lastPong = now;
      c.lastPongPingAt = sp.at;
    }
    let becameBest = false;
    if (this.bestAddr === undefined || now >= this.trustUntil || betterAddr(sp.to, latency, this.bestAddr, this.bestLatency)) {
      becameBest = this.bestAddr?.key !== sp.to.key;
      this.bestAddr = sp.to;
    }
    if (this.bestAddr.key === sp.to.key) {
      this.bestLatency = latency;
      this.trustUntil = now + TRUST_UDP_ADDR_MS;
    } else if (c !== undefined) {
      this.standby = c;
      if (this.failover(now)) becameBest = true;
    }
    return { to: sp.to, latencyMs: latency, purpose: sp.purpose, becameBest };
  }

  /**
   * Moves bestAddr to the standby candidate when bestAddr has a ping that is overdue, sent no later
   * than the standby's answered ping and after bestAddr's latest pong: the peer was reachable at the
   * standby after bestAddr went quiet. Returns whether it moved.
   */
  private failover(now: number): boolean {
    const s = this.standby;
    const best = this.bestAddr;
    if (s === undefined || best === undefined) return false;
    if (s.ep.key === best.key || now - s.lastPong >= TRUST_UDP_ADDR_MS || this.candidates.get(s.ep.key) !== s) {
      this.standby = undefined;
      return false;
    }
    const bestPong = this.candidates.get(best.key)?.lastPong ?? -Infinity;
    const overdue = this.overdueMs(s.latency);
    let due = false;
    for (const sp of this.pings.values()) {
      if (sp.to.key === best.key && sp.at > bestPong && sp.at <= s.lastPongPingAt && now - sp.at >= overdue) { due = true; break; }
    }
    if (!due) return false;
    this.standby = undefined;
    this.bestAddr = s.ep;
    this.bestLatency = s.latency;
    this.trustUntil = s.lastPong + TRUST_UDP_ADDR_MS;
    this.counters.failovers++;
    return true;
  }

  /**
   * The peer pinged us over UDP from `from`: remember the address as a candidate, and while our own
   * path is not trusted, ping it back at once (at most every PING_BACK_INTERVAL_MS per address).
   * Its ping crossing our NAT proves its NAT now lets our packets through from `from`, so our ping
   * gets there even if the one we sent before (at discovery) died at its NAT. tailscale waits for
   * the peer's call-me-maybe or for its own 5 s retry instead; when the call-me-maybe reached the
   * peer before its first WireGuard packet to us, it sends none back and the retry costs 5 s.
   */
  onPingFrom(from: Endpoint, now: number, out?: PathAction[]): void {
    const c = this.candidate(from);
    c.lastPingFrom = now;
    if (out === undefined || now - c.lastPingBack < PING_BACK_INTERVAL_MS) return;
    const best = this.bestAddr;
    if (this.trusted(now)) {
      // The peer's pings come from elsewhere than where we send (its heartbeat goes to its own
      // bestAddr, from the one socket it has): its NAT may have a new mapping, the old one dead
      // (roaming, a flushed mapping remade on another port) while our trust runs on for up to
      // 6.5 s. Ping both now; if only `from` answers, failover moves bestAddr there.
      if (best!.key === from.key) return;
      c.lastPingBack = now;
      this.ping(c, now, 'discovery', out);
      this.ping(this.candidate(best!), now, 'heartbeat', out);
      return;
    }
    c.lastPingBack = now;
    this.ping(c, now, 'discovery', out);
  }

  /** The peer's call-me-maybe (via DERP): its endpoints replace the earlier ones; ping all now. */
  onCallMeMaybe(eps: readonly Endpoint[], now: number, out: PathAction[]): void {
    this.counters.callMeMaybeReceived++;
    const want = new Set<string>();
    for (const e of eps) {
      if (e.family === 6 && /^fe80:/i.test(e.ip)) continue;
      want.add(e.key);
      this.candidate(e).fromCallMeMaybe = true;
    }
    for (const [k, c] of this.candidates) {
      if (c.fromCallMeMaybe && !want.has(k)) {
        c.fromCallMeMaybe = false;
        this.dropIfOrphan(k, c);
      }
    }
    for (const c of this.candidates.values()) c.lastPing = -Infinity;
    this.discover(now, out, false);
    // Answer with a call-me-maybe of our own (at most one per DISCO_PING_INTERVAL_MS, so two meshd
    // never bounce them): the pings just sent opened our NAT towards the peer, and a call-me-maybe
    // makes it ping us now instead of at its next heartbeat or 5 s retry. tailscale never answers
    // one; this is what makes meshd as responder go direct in a round trip.
    if (!this.trusted(now) && now - this.lastCallMeMaybe >= DISCO_PING_INTERVAL_MS) this.callMeMaybe(now, out);
  }

  /**
   * A ping could not be sent (the kernel refused it: socket buffer full past the wait budget, no
   * route): forget it, as tailscale's forgetDiscoPing does. The path is kept: a send error says
   * nothing about the peer, and under a heavy transfer a full socket buffer would otherwise drop a
   * working bestAddr and put every packet on DERP.
   */
  onPingSendFailed(txId: Uint8Array): void {
    const sp = this.pings.get(txKey(txId));
    if (sp !== undefined && sp === this.heartbeatPending) this.heartbeatPending = undefined;
    if (sp !== undefined && sp === this.reprobePending) this.reprobePending = undefined;
    this.pings.delete(txKey(txId));
  }

  private expirePings(now: number, all = false): void {
    for (const [k, sp] of this.pings) {
      if (!all && now - sp.at < PING_TIMEOUT_MS) continue;
      this.pings.delete(k);
      this.counters.pingsTimedOut++;
      // A lost ping to an already untrusted best address: the direct path is gone (discoPingTimeout).
      if (this.bestAddr?.key === sp.to.key && now >= this.trustUntil) this.clearBest();
    }
  }

  /**
   * Timers (heartbeat, endpoint.go): every HEARTBEAT_MS while the peer saw outbound traffic in the
   * last SESSION_ACTIVE_TIMEOUT_MS, ping bestAddr, and do a full round when it is untrusted or
   * slow and a minute has passed. Also expires lost pings and forgets stale ping-learned candidates.
   */
  tick(now: number, out: PathAction[]): void {
    const trusted = this.trusted(now);
    if (this.trustedAtTick && !trusted && this.bestAddr !== undefined) this.counters.lapses++;
    this.trustedAtTick = trusted;
    if (this.standby !== undefined) this.failover(now);
    const hb = this.heartbeatPending;
    if (hb !== undefined && now - hb.at >= this.overdueMs()) {
      // Our heartbeat went unanswered: ask again at once rather than at the next heartbeat.
      this.heartbeatPending = undefined;
      if (this.trusted(now) && hb.to.key === this.bestAddr!.key) this.reprobePending = this.ping(this.candidate(hb.to), now, 'heartbeat', out);
    }
    const rp = this.reprobePending;
    if (rp !== undefined && now - rp.at >= this.overdueMs()) {
      // Unanswered again: tell the peer where we are now. If our NAT moved (roaming), the peer's NAT
      // drops our packets from the new address until the peer sends there; the call-me-maybe, with
      // the endpoints STUN finds now, makes it ping us there.
      this.reprobePending = undefined;
      if (this.trusted(now) && rp.to.key === this.bestAddr!.key && now - this.lastCallMeMaybe >= DISCO_PING_INTERVAL_MS) {
        out.push({ kind: 'call-me-maybe', restun: true });
        this.counters.callMeMaybeSent++;
        this.lastCallMeMaybe = now;
      }
    }
    this.expirePings(now);
    // A kept bestAddr whose trust ran out (packets now mirrored to DERP, at full rate under a bulk
    // transfer): while traffic flows, ping it each overdue interval rather than at the next
    // heartbeat, up to 3 s on, so the first pong ends the mirroring. tailscale waits for the heartbeat.
    if (this.bestAddr !== undefined && this.nextHeartbeat !== Infinity && !this.trusted(now)) {
      const bc = this.candidates.get(this.bestAddr.key);
      if (bc !== undefined && now - bc.lastPing >= this.overdueMs()) this.ping(bc, now, 'heartbeat', out);
    }
    if (now < this.nextHeartbeat) return;
    if (now - this.lastSend > SESSION_ACTIVE_TIMEOUT_MS) {
      this.nextHeartbeat = Infinity;
      for (const [k, c] of this.candidates) {
        if (c.lastPingFrom > -Infinity && now - c.lastPingFrom > SESSION_ACTIVE_TIMEOUT_MS) {
          c.lastPingFrom = -Infinity;
          this.dropIfOrphan(k, c);
        }
      }
      return;
    }
    // On a 3 s grid, as tailscale's timer: the tick (TICK_MS, later under load) would otherwise add
    // its lateness to every interval, and two of them past 3.25 s put the second heartbeat's pong
    // after the 6.5 s trust, so one lost pong lapsed the path where tailscale needs two.
    this.nextHeartbeat = this.nextHeartbeat + HEARTBEAT_MS > now ? this.nextHeartbeat + HEARTBEAT_MS : now + HEARTBEAT_MS;
    if (this.bestAddr !== undefined) {
      const c = this.candidate(this.bestAddr);
      const sp = this.ping(c, now, 'heartbeat', out);
      if (this.heartbeatPending === undefined) this.heartbeatPending = sp;
    }
    const untrusted = !this.trusted(now);
    const slowAndStale = this.bestLatency > GOOD_ENOUGH_LATENCY_MS && now - this.lastFullPing >= UPGRADE_INTERVAL_MS;
    if (untrusted || slowAndStale) this.discover(now, out, true);
  }
}
