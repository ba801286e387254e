// One TCP connection (RFC 9293), sans-I/O: segments in through input(), segments out through the
// stack (TcpHost), time from host.now, timers as deadlines the stack polls. The application side
// is a TcpHandler object set once (no closures per segment).
//
// What is implemented, with where it comes from:
//   state machine and segment arrival ........ RFC 9293 3.3.2, 3.10.7 (incl. simultaneous open/close)
//   RST/SYN acceptance, challenge ACKs ........ RFC 5961 3-4
//   MSS from the MTU, window scaling ......... RFC 9293 3.7.1, RFC 7323 2
//   SACK: permitted, blocks advertised ........ RFC 2018; the sender keeps a scoreboard and resends
//                                               holes from it (RFC 6675 in spirit) within NewReno
//   RTO ....................................... RFC 6298 (200 ms floor as Linux/gVisor, 120 s cap)
//   congestion control ........................ RFC 5681 + NewReno RFC 6582, IW10 RFC 6928
//   delayed ACKs .............................. RFC 9293 3.8.6.3 (every 2nd segment, 40 ms timer);
//                                               within an input batch one ACK per up to 256
//                                               segments (stretch ACKs, as gVisor per batch)
//   buffer auto-tuning ........................ receive and send buffers grow from 1 MiB to 4 MiB
//                                               (as Linux and gVisor grow theirs; see Tcb.rcvBuf)
//   stack-wide buffer budget .................. Linux's tcp_mem: growth stops under pressure, new
//                                               windows and writes fit the hard limit (budget.ts)
//   zero-window probes, keepalive ............. RFC 9293 3.8.6.1, 3.8.4
//   TIME-WAIT ................................. 2*MSL with MSL 30 s (Linux's 60 s TIME-WAIT)
import { F, type TcpSeg } from './segment.ts';
import { ByteRing } from './ring.ts';
import type { BufferBudget } from './budget.ts';

/** Connection states (RFC 9293 3.3.2). */
export const S = {
  CLOSED: 0, SYN_SENT: 2, SYN_RECEIVED: 3, ESTABLISHED: 4, FIN_WAIT_1: 5, FIN_WAIT_2: 6,
  CLOSE_WAIT: 7, CLOSING: 8, LAST_ACK: 9, TIME_WAIT: 10,
} as const;

/** State names for logs and tests. */
export const STATE_NAMES = ['CLOSED', 'LISTEN', 'SYN-SENT', 'SYN-RECEIVED', 'ESTABLISHED', 'FIN-WAIT-1', 'FIN-WAIT-2',
  'CLOSE-WAIT', 'CLOSING', 'LAST-ACK', 'TIME-WAIT'] as const;

/** Why a connection ended badly. */
export class TcpError extends Error {
  readonly code: 'ECONNREFUSED' | 'ECONNRESET' | 'ETIMEDOUT' | 'ECONNABORTED';
  constructor(code: TcpError['code'], message: string) {
    super(message);
    this.name = 'TcpError';
    this.code = code;
  }
}

/** Tunables (defaults as tailscale configures gVisor where it says, RFC values elsewhere). */
export interface TcpConfig {
  /** Receive buffer at the start: the most unread plus out-of-order bytes held, and the window advertised. */
  rcvBuf: number;
  /** Ceiling of a connection's receive buffer when it grows (see Tcb.rcvBuf). */
  rcvBufMax: number;
  /** Send buffer cap at the start. */
  sndBuf: number;
  /** Ceiling of a connection's send buffer: it grows to twice the congestion window up to this. */
  sndBufMax: number;
  /** Our window scale shift. */
  wscale: number;
  rtoMinMs: number;
  rtoMaxMs: number;
  rtoInitialMs: number;
  synRetries: number;
  dataRetries: number;
  delackMs: number;
  /** Most in-order segments one ACK covers inside an input batch (the batch's end ACKs the rest). */
  ackStretchMax: number;
  timeWaitMs: number;
  finWait2Ms: number;
  keepaliveIdleMs: number;
  keepaliveIntervalMs: number;
  keepaliveCount: number;
  /** Abort when the peer's window stays zero this long and nobody holds the connection. */
  zeroWindowOrphanMs: number;
  /** Abort when the peer's window stays zero this long in any case. */
  zeroWindowMaxMs: number;
  /** Most out-of-order segments held per connection. */
  maxOoo: number;
  /** Stack-wide: above this many bytes held or promised by all connections, no buffer grows (budget.ts). */
  memPressure: number;
  /** Stack-wide: new windows and writes stay within this many bytes (beyond each connection's share, budget.ts). */
  memHard: number;
  /** Least receive buffer a connection keeps past the hard limit, when its share is smaller (Linux's tcp_rmem[0]). */
  rcvBufMin: number;
  /** Least send buffer a connection keeps past the hard limit, when its share is smaller (Linux's tcp_wmem[0]). */
  sndBufMin: number;
}

export const DEFAULT_TCP: TcpConfig = {
  rcvBuf: 1 << 20,
  // tailscale's gVisor: 1 MiB at the start, auto-tuned up to 8 MiB (wgengine/netstack tcpRXBufMaxSize).
  // Ours stops at 4 MiB, as tailscaled's advertised 3-4 MB in bench-netstack's downloads: in the
  // agent the rings between the data plane and the netstack worker hold ~5 MB each way, and what
  // one connection has in flight must fit in them when the other thread is descheduled.
  rcvBufMax: 4 << 20,
  sndBuf: 1 << 20,
  // tailscale's gVisor: 1 MiB at the start, auto-tuned (2 x cwnd) up to 6 MiB (tcpTXBufMaxSize).
  // Ours stops at 4 MiB for the rings' sake (see rcvBufMax): with 6 MiB, uploads overflowed the
  // ring out of the worker (1442 drops, as many retransmissions in 3 x 200 MB on a busy machine).
  sndBufMax: 4 << 20,
  wscale: 7,
  rtoMinMs: 200,
  rtoMaxMs: 120_000,
  rtoInitialMs: 1000,
  synRetries: 6,
  dataRetries: 12,
  delackMs: 40,
  // gVisor (tailscaled) ACKs once per batch of up to 100 GRO'd segments: ~200 MSS per ACK in
  // bench-netstack's downloads. With 32, each ACK let the sender's kernel send ~40 KB, and the peer
  // spent 10-15% more CPU per GB than with tailscaled as the receiver (in its tailscaled, which
  // takes the ACK through the TUN and sends the next burst in the same call).
  ackStretchMax: 256,
  timeWaitMs: 60_000,
  finWait2Ms: 60_000,
  keepaliveIdleMs: 2 * 3600_000,
  keepaliveIntervalMs: 75_000,
  keepaliveCount: 9,
  zeroWindowOrphanMs: 60_000,
  zeroWindowMaxMs: 600_000,
  maxOoo: 1024,
  // Linux sizes tcp_mem from RAM (pressure = 1/16 of it, low 3/4 of that, hard 1.5x). Ours is
  // fixed: 64 MiB lets ~8 connections grow both buffers to 4 MiB (one download needs 4 + 4);
  // 96 MiB (1.5x, as Linux) is the most all connections hold or are promised beyond their shares.
  memPressure: 64 << 20,
  memHard: 96 << 20,
  // Linux guarantees 4 KiB; 16 KiB is ~13 segments at the tailnet's MSS, enough for three
  // duplicate ACKs and fast retransmit while the stack is at its hard limit.
  rcvBufMin: 16 << 10,
  sndBufMin: 16 << 10,
};

/** What the application gets from a connection; methods are called synchronously by the stack. */
export interface TcpHandler {
  /** The handshake finished. */
  onEstablished?(c: Tcb): void;
  /** In-order bytes; buf is reused after return (copy what you keep). */
  onData(c: Tcb, buf: Uint8Array, off: number, len: number): void;
  /** The peer sent FIN: no more data. */
  onEnd(c: Tcb): void;
  /** Room opened in the send buffer. */
  onWritable(c: Tcb): void;
  /** The connection is gone: err null for an orderly end, else why. Called once. */
  onClose(c: Tcb, err: TcpError | null): void;
}

/** What a connection needs from its stack. */
export interface TcpHost {
  /** Current time (ms) of the event being processed. */
  readonly now: number;
  readonly cfg: TcpConfig;
  readonly counters: Record<string, number>;
  /** The stack-wide buffer budget every connection charges (budget.ts). */
  readonly budget: BufferBudget;
  /** Sends a segment; data comes from the connection's send ring at offset `at` from SND.UNA. */
  emit(c: Tcb, flags: number, seq: number, at: number, len: number, opts: number): void;
  /** Notes that the connection has a timer due at `at` (ms). */
  wake(c: Tcb, at: number): void;
  /** The connection reached CLOSED and leaves the table. */
  release(c: Tcb): void;
  /** A passively opened connection finished its handshake. */
  accepted(c: Tcb): void;
  /** The connection has ACK work to do at the end of the current input batch. */
  dirty(c: Tcb): void;
}

/** Options to put in an emitted segment. */
export const Opt = { none: 0, syn: 1, sack: 2 } as const;

const seqLt = (a: number, b: number): boolean => ((a - b) | 0) < 0;
const seqLe = (a: number, b: number): boolean => ((a - b) | 0) <= 0;
const seqGt = (a: number, b: number): boolean => ((a - b) | 0) > 0;
const seqGe = (a: number, b: number): boolean => ((a - b) | 0) >= 0;
const sub = (a: number, b: number): number => (a - b) | 0;
const add = (a: number, b: number): number => (a + b) >>> 0;

/** A receive buffer grows only when a whole buffer's worth arrives within this time (ms): 1 MiB a second is 8 Mbit/s. */
const RCV_TUNE_MS = 1000;

/** An out-of-order segment kept for later. */
interface Ooo { seq: number; end: number; data: Uint8Array }

/** A TCP connection's control block. */
export class Tcb {
  // identity (16-byte address slots)
  readonly family: 4 | 6;
  readonly localAddr = new Uint8Array(16);
  readonly remoteAddr = new Uint8Array(16);
  readonly localPort: number;
  readonly remotePort: number;
  /** Hash-bucket chain (owned by the stack's table). */
  next: Tcb | undefined;
  readonly key: number;

  state: number = S.CLOSED;
  handler: TcpHandler | undefined;
  /** Set by the application: a passive connection waiting for accept()/reject(). */
  pendingAccept = false;
  /** Nobody holds the connection any more (the application closed or destroyed it). */
  orphan = false;
  /** Opaque slot for the application. */
  user: unknown;

  // send sequence space
  iss = 0;
  sndUna = 0;
  sndNxt = 0;
  sndMax = 0;
  sndWnd = 0;
  sndWl1 = 0;
  sndWl2 = 0;
  sndShift = 0;
  mss: number;
  readonly snd: ByteRing;
  finQueued = false;
  finSent = false;
  // receive sequence space
  irs = 0;
  rcvNxt = 0;
  rcvShift = 0;
  rcvAdvRight = 0;
  unread = 0;
  /**
   * This connection's receive buffer (the window's ceiling): starts at cfg.rcvBuf and doubles, up
   * to cfg.rcvBufMax, each time a whole buffer's worth of data arrives within RCV_TUNE_MS while
   * the application holds less than half of it: the reader keeps up, so the window is what limits
   * a fast sender. Linux and gVisor auto-tune the same way (to twice what arrives per round trip);
   * without timestamps we have no receive-side RTT, so a window's worth a second stands in. It
   * never shrinks, so data in flight always fits.
   */
  rcvBuf: number;
  /** Auto-tuning round: RCV.NXT to reach (a buffer's worth on from where it started) and when it started (-1: none). */
  private rcvTuneSeq = 0;
  private rcvTuneAt = -1;
  sackOk = false;
  private ooo: Ooo[] = [];
  private oooBytes = 0;
  private oooFin = -1;
  private lastOooSeq = 0;
  finReceived = false;
  // congestion control
  cwnd = 0;
  ssthresh = 0x7fffffff;
  dupAcks = 0;
  inRecovery = false;
  recover = 0;
  /** SACKed ranges above SND.UNA as [left, right) pairs, sorted (the sender's scoreboard, RFC 6675 in spirit). */
  private readonly scoreboard: number[] = [];
  /** Next sequence number a SACK-driven retransmission may start at in this recovery. */
  private retxNext = 0;
  // RTT (RFC 6298)
  srtt = 0;
  rttvar = 0;
  rto: number;
  private rttActive = false;
  private rttSeq = 0;
  private rttAt = 0;
  retries = 0;
  // timers (ms deadlines, 0 = off)
  rtoAt = 0;
  delackAt = 0;
  persistAt = 0;
  kaAt = 0;
  closeAt = 0;
  private persistBackoff = 0;
  private zeroSince = 0;
  keepalive = false;
  private kaProbes = 0;
  lastRecv = 0;
  ackPending = 0;
  ackNow = false;
  private quickAcks = 0;
  private lastData = 0;
  /** Bytes charged to the stack's budget: unread + the advertised window not yet filled + send buffer bytes (see recharge). */
  charged = 0;
  /** Bytes this connection's buffers grew beyond their initial sizes, taken from the budget (given back at TIME-WAIT or CLOSED). */
  private grown = 0;
  /** Counted in budget.members. */
  private member = false;
  /** Budget events already counted for this connection: 1 receive and 2 send growth refused, 4 window clamped, 8 write clamped. */
  private budgetNoted = 0;
  inDirty = false;
  closed = false;
  private readonly host: TcpHost;
  readonly ourMss: number;

  constructor(host: TcpHost, family: 4 | 6, local: Uint8Array, localPort: number, remote: Uint8Array, remotePort: number, key: number, mtu: number) {
    this.host = host;
    this.family = family;
    this.localAddr.set(local.subarray(0, 16));
    this.remoteAddr.set(remote.subarray(0, 16));
    this.localPort = localPort;
    this.remotePort = remotePort;
    this.key = key;
    this.ourMss = mtu - (family === 4 ? 40 : 60);
    // RFC 9293 3.7.1: without an MSS option, 536 (IPv4) or 1220 (IPv6).
    this.mss = Math.min(this.ourMss, family === 4 ? 536 : 1220);
    this.snd = new ByteRing(host.cfg.sndBuf);
    this.rcvBuf = host.cfg.rcvBuf;
    this.rto = host.cfg.rtoInitialMs;
  }

  /** Current state's name. */
  get stateName(): string {
    return STATE_NAMES[this.state]!;
  }

  // ---- application side -------------------------------------------------------------------------

  /** Queues up to len bytes for sending; returns how many were taken (0 when the buffer is full). */
  write(buf: Uint8Array, off: number, len: number): number {
    if (this.finQueued || this.closed || this.state === S.CLOSED) return 0;
    const free = this.snd.free;
    const room = this.sndRoom(free);
    if (room < free && room < len) this.noteBudget(8, 'bufWriteClamped');
    else this.budgetNoted &= ~8;
    const n = this.snd.push(buf, off, Math.min(len, room));
    if (n > 0) {
      this.recharge();
      if (this.state === S.ESTABLISHED || this.state === S.CLOSE_WAIT) this.output();
    }
    return n;
  }

  /** Room in the send buffer. */
  get writable(): number {
    return this.finQueued || this.closed ? 0 : this.sndRoom(this.snd.free);
  }

  /** What a write may add: the ring's free room, within the budget's hard limit beyond the connection's share. */
  private sndRoom(free: number): number {
    const cfg = this.host.cfg;
    const fit = Math.max(this.host.budget.headroom, this.keep(cfg.sndBufMin, cfg.sndBuf, this.snd.max) - this.snd.length);
    return fit >= free ? free : Math.max(0, fit);
  }

  /** What a buffer keeps past the hard limit: the budget's share, at least `min`, at most the initial size and the buffer itself. */
  private keep(min: number, initial: number, size: number): number {
    return Math.min(size, Math.max(min, Math.min(initial, this.host.budget.share)));
  }

  /** Half-close: a FIN goes after the queued data (RFC 9293 3.10.4 CLOSE). */
  shutdown(): void {
    if (this.finQueued || this.closed) return;
    switch (this.state) {
      case S.SYN_SENT: this.release(null); return;
      case S.SYN_RECEIVED:
        if (this.pendingAccept) { this.abort(); return; }
        this.finQueued = true; return; // sent once established
      case S.ESTABLISHED: case S.CLOSE_WAIT:
        this.finQueued = true;
        this.output();
        return;
      default: return;
    }
  }

  /** Abortive close: RST to the peer (in synchronized states), then CLOSED (RFC 9293 3.10.5 ABORT). */
  abort(): void {
    if (this.closed) return;
    if (this.state === S.SYN_RECEIVED && !this.pendingAccept) this.host.emit(this, F.RST, this.sndNxt, 0, 0, Opt.none);
    else if (this.state >= S.ESTABLISHED && this.state <= S.CLOSE_WAIT) this.host.emit(this, F.RST | F.ACK, this.sndNxt, 0, 0, Opt.none);
    else if (this.state === S.SYN_RECEIVED && this.pendingAccept) this.host.emit(this, F.RST | F.ACK, 0, 0, 0, Opt.none);
    this.release(null);
  }

  /** The application holds this many received bytes it has not consumed; opens the window as it shrinks. */
  setUnread(n: number): void {
    this.unread = n;
    this.recharge();
    // An ACK already due carries the new window.
    if (this.state < S.ESTABLISHED || this.closed || this.finReceived || this.ackPending > 0) return;
    // Window update when the window grew by a segment and doubled or by half the buffer (receiver SWS avoidance, RFC 9293 3.8.6.2.2).
    const adv = Math.max(0, sub(this.rcvAdvRight, this.rcvNxt));
    const w = this.rcvWindow();
    if (w - adv >= this.ourMss && (w >= 2 * adv || w - adv >= this.rcvBuf / 2)) {
      this.host.counters.windowUpdates = (this.host.counters.windowUpdates ?? 0) + 1;
      this.sendAck();
    }
  }

  /** Accepts a passive connection held for the application (sends the SYN-ACK). */
  accept(h: TcpHandler): void {
    this.handler = h;
    if (!this.pendingAccept || this.closed) return;
    this.pendingAccept = false;
    this.retries = 0;
    this.sendSyn();
  }

  /** Refuses a passive connection held for the application: RST to the peer. */
  reject(): void {
    if (this.closed) return;
    this.abort();
  }

  /** Turns keepalive probes on (idle/interval/count from the config). */
  setKeepalive(on: boolean): void {
    this.keepalive = on;
    if (on && this.state === S.ESTABLISHED) this.armKeepalive();
    else this.kaAt = 0;
  }

  // ---- opening ----------------------------------------------------------------------------------

  /** Active open: SYN-SENT (RFC 9293 3.10.1 OPEN). */
  openActive(iss: number): void {
    this.iss = iss;
    this.sndUna = iss;
    this.sndNxt = iss;
    this.sndMax = iss;
    this.recover = iss;
    this.cwnd = 10 * this.mss;
    this.state = S.SYN_SENT;
    this.sendSyn();
  }

  /** Passive open from a SYN (LISTEN -> SYN-RECEIVED); with `hold`, the SYN-ACK waits for accept(). */
  openPassive(s: TcpSeg, iss: number, hold: boolean): void {
    this.iss = iss;
    this.sndUna = iss;
    this.sndNxt = iss;
    this.sndMax = iss;
    this.recover = iss;
    this.irs = s.seq;
    this.rcvNxt = add(s.seq, 1);
    this.takeSynOptions(s);
    this.sndWnd = s.wnd; // never scaled in a SYN
    this.sndWl1 = s.seq;
    this.sndWl2 = s.ack;
    this.state = S.SYN_RECEIVED;
    this.lastRecv = this.host.now;
    if (hold) {
      this.pendingAccept = true;
      this.closeAt = this.host.now + 10_000; // the application decides within 10 s or the peer gets a RST
      this.host.wake(this, this.closeAt);
    } else {
      this.sendSyn();
    }
  }

  private takeSynOptions(s: TcpSeg): void {
    if (s.mss > 0) this.mss = Math.max(64, Math.min(this.ourMss, s.mss));
    else this.mss = Math.min(this.ourMss, this.family === 4 ? 536 : 1220);
    if (s.wscale >= 0) { this.sndShift = s.wscale; this.rcvShift = this.host.cfg.wscale; } else { this.sndShift = 0; this.rcvShift = 0; }
    this.sackOk = s.sackOk;
    this.cwnd = 10 * this.mss;
  }

  private sendSyn(): void {
    const flags = this.state === S.SYN_SENT ? F.SYN : F.SYN | F.ACK;
    this.host.emit(this, flags, this.iss, 0, 0, Opt.syn);
    if (seqLe(this.sndNxt, this.iss)) this.sndNxt = add(this.iss, 1);
    if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
    this.armRto();
  }

  // ---- segment arrival (RFC 9293 3.10.7) -------------------------------------------------------

  /** Processes a segment addressed to this connection. */
  input(s: TcpSeg): void {
    const c = this.host.counters;
    if (this.closed) return;
    if (this.state === S.SYN_SENT) { this.inputSynSent(s); return; }
    if (this.state === S.SYN_RECEIVED && this.pendingAccept) {
      // Waiting for the application: a retransmitted SYN is absorbed, a RST ends it, the rest waits.
      if (s.flags & F.RST && s.seq === this.rcvNxt) { c.rstIn = (c.rstIn ?? 0) + 1; this.release(new TcpError('ECONNRESET', 'connection reset by peer')); }
      return;
    }
    const flags = s.flags;
    if (this.state === S.SYN_RECEIVED && (flags & (F.SYN | F.ACK | F.RST)) === F.SYN && s.seq === this.irs) {
      // The peer did not get our SYN-ACK: send it again.
      this.host.emit(this, F.SYN | F.ACK, this.iss, 0, 0, Opt.syn);
      return;
    }
    this.lastRecv = this.host.now;
    this.kaProbes = 0;
    if (this.keepalive && this.state === S.ESTABLISHED) this.armKeepalive();

    // 1. Sequence number check.
    let seq = s.seq;
    let dataOff = s.dataOff, dataLen = s.dataLen;
    let fin = (flags & F.FIN) !== 0;
    const syn = (flags & F.SYN) !== 0;
    const segLen = dataLen + (syn ? 1 : 0) + (fin ? 1 : 0);
    const wnd = Math.max(0, sub(this.rcvAdvRight, this.rcvNxt));
    let ok: boolean;
    if (segLen === 0) ok = wnd === 0 ? seq === this.rcvNxt : seqGe(seq, this.rcvNxt) && seqLt(seq, add(this.rcvNxt, wnd));
    else ok = wnd > 0 && ((seqGe(seq, this.rcvNxt) && seqLt(seq, add(this.rcvNxt, wnd))) ||
      (seqGe(add(seq, segLen - 1), this.rcvNxt) && seqLt(add(seq, segLen - 1), add(this.rcvNxt, wnd))));
    let ackOnly = false;
    if (!ok) {
      if (wnd === 0 && seq === this.rcvNxt && !(flags & F.RST)) {
        // A zero window still takes ACKs (RFC 9293 3.10.7.4): the data is dropped.
        ackOnly = true;
        if (dataLen > 0) c.dropZeroWindow = (c.dropZeroWindow ?? 0) + 1;
      } else {
        c.dropOutOfWindow = (c.dropOutOfWindow ?? 0) + 1;
        if (!(flags & F.RST)) {
          this.sendAck();
          if (this.state === S.TIME_WAIT && fin) this.armClose(this.host.cfg.timeWaitMs);
        }
        return;
      }
    }
    // 2. RST (RFC 5961 3.2: only an exact match resets; elsewhere in the window, a challenge ACK).
    if (flags & F.RST) {
      if (seq !== this.rcvNxt) { c.challengeAck = (c.challengeAck ?? 0) + 1; this.sendAck(); return; }
      c.rstIn = (c.rstIn ?? 0) + 1;
      if (this.state === S.SYN_RECEIVED) { this.release(new TcpError('ECONNREFUSED', 'connection refused by peer')); return; }
      if (this.state >= S.CLOSING) { this.release(null); return; }
      this.release(new TcpError('ECONNRESET', 'connection reset by peer'));
      return;
    }
    // 4. A SYN in a synchronized state: challenge ACK (RFC 5961 4.2).
    if (syn) { c.challengeAck = (c.challengeAck ?? 0) + 1; this.sendAck(); return; }
    if (ackOnly) { dataLen = 0; fin = false; }
    // Trim to the window: what lies before RCV.NXT, and what lies past its right edge.
    if (seqLt(seq, this.rcvNxt)) {
      const cut = sub(this.rcvNxt, seq);
      if (cut >= dataLen) { if (dataLen > 0) c.dupData = (c.dupData ?? 0) + 1; dataOff += dataLen; dataLen = 0; if (cut > s.dataLen) fin = false; }
      else { dataOff += cut; dataLen -= cut; c.partialDup = (c.partialDup ?? 0) + 1; }
      seq = this.rcvNxt;
      if (dataLen === 0 && fin === false && s.dataLen > 0) this.ackNow = true; // a duplicate: ACK it now
    }
    if (dataLen > 0 && sub(add(seq, dataLen), add(this.rcvNxt, wnd)) > 0) {
      dataLen = Math.max(0, sub(add(this.rcvNxt, wnd), seq));
      fin = false;
      c.trimmedRight = (c.trimmedRight ?? 0) + 1;
    }
    // 5. ACK.
    if (!(flags & F.ACK)) { c.dropNoAck = (c.dropNoAck ?? 0) + 1; return; }
    if (this.state === S.SYN_RECEIVED) {
      if (seqGt(s.ack, this.sndUna) && seqLe(s.ack, this.sndMax)) {
        this.state = S.ESTABLISHED;
        this.sndWnd = s.wnd << this.sndShift;
        this.sndWl1 = s.seq;
        this.sndWl2 = s.ack;
        this.ackAdvance(s.ack);
        if (this.finQueued) this.output();
        this.host.accepted(this);
        this.handler?.onEstablished?.(this);
        if (this.closed) return;
      } else {
        this.host.emit(this, F.RST, s.ack, 0, 0, Opt.none);
        c.rstOut = (c.rstOut ?? 0) + 1;
        return;
      }
    } else if (!this.processAck(s)) {
      return;
    }
    if (this.closed) return;
    // 7. Segment text.
    if (dataLen > 0) {
      if (this.state === S.ESTABLISHED || this.state === S.FIN_WAIT_1 || this.state === S.FIN_WAIT_2) {
        if (seq === this.rcvNxt) this.deliver(s.buf, dataOff, dataLen);
        else this.keepOoo(seq, s.buf, dataOff, dataLen, fin);
        if (this.closed) return;
      }
    }
    // 8. FIN.
    if (fin) {
      if (add(seq, dataLen) === this.rcvNxt) this.finArrived();
      else if (this.oooFin < 0) { this.oooFin = add(seq, dataLen); this.ackNow = true; }
    }
    if (this.ackPending > 0 || this.ackNow) this.host.dirty(this);
  }

  private inputSynSent(s: TcpSeg): void {
    const c = this.host.counters;
    const flags = s.flags;
    if (flags & F.ACK) {
      if (seqLe(s.ack, this.iss) || seqGt(s.ack, this.sndMax)) {
        if (!(flags & F.RST)) { this.host.emit(this, F.RST, s.ack, 0, 0, Opt.none); c.rstOut = (c.rstOut ?? 0) + 1; }
        return;
      }
    }
    if (flags & F.RST) {
      if (flags & F.ACK) { c.rstIn = (c.rstIn ?? 0) + 1; this.release(new TcpError('ECONNREFUSED', 'connection refused')); }
      return;
    }
    if (!(flags & F.SYN)) return;
    this.irs = s.seq;
    this.rcvNxt = add(s.seq, 1);
    this.rcvAdvRight = this.rcvNxt;
    this.takeSynOptions(s);
    this.lastRecv = this.host.now;
    if (flags & F.ACK) {
      this.state = S.ESTABLISHED;
      this.sndWnd = s.wnd << this.sndShift;
      this.sndWl1 = s.seq;
      this.sndWl2 = s.ack;
      this.ackAdvance(s.ack);
      this.sendAck();
      this.handler?.onEstablished?.(this);
      if (this.closed) return;
      if (s.dataLen > 0) this.deliver(s.buf, s.dataOff, s.dataLen);
      if (!this.closed && flags & F.FIN) this.finArrived();
      if (!this.closed) { this.output(); if (this.keepalive) this.armKeepalive(); }
    } else {
      // Simultaneous open (RFC 9293 figure 7): SYN-RECEIVED, SYN-ACK with our ISS.
      this.state = S.SYN_RECEIVED;
      this.sndWnd = s.wnd;
      this.sndWl1 = s.seq;
      this.sndWl2 = s.ack;
      this.host.emit(this, F.SYN | F.ACK, this.iss, 0, 0, Opt.syn);
      this.armRto();
    }
  }

  /** ACK processing in synchronized states; false when the segment is to be dropped. */
  private processAck(s: TcpSeg): boolean {
    const ack = s.ack;
    if (seqGt(ack, this.sndMax)) {
      // Acknowledges something not yet sent: ACK back and drop (RFC 9293 3.10.7.4, fifth).
      this.host.counters.ackUnsent = (this.host.counters.ackUnsent ?? 0) + 1;
      this.sendAck();
      return false;
    }
    const wndBefore = this.sndWnd;
    // Window update (SND.WL1/WL2 rule).
    if (seqLt(this.sndWl1, s.seq) || (this.sndWl1 === s.seq && seqLe(this.sndWl2, ack))) {
      this.sndWnd = s.wnd << this.sndShift;
      this.sndWl1 = s.seq;
      this.sndWl2 = ack;
    }
    if (this.sackOk && s.sackCount > 0) this.noteSack(s);
    if (seqGt(ack, this.sndUna)) {
      this.ackAdvance(ack);
    } else if (ack === this.sndUna && s.dataLen === 0 && !(s.flags & F.FIN) && this.sndWnd === wndBefore && this.sndMax !== this.sndUna) {
      this.dupAck();
    }
    if (this.sndWnd > 0) { this.persistAt = 0; this.persistBackoff = 0; this.zeroSince = 0; }
    if (this.closed) return false;
    const finAcked = this.finSent && this.sndUna === this.sndMax && this.snd.length === 0;
    switch (this.state) {
      case S.FIN_WAIT_1:
        if (finAcked) {
          this.state = S.FIN_WAIT_2;
          if (this.orphan) this.armClose(this.host.cfg.finWait2Ms);
        }
        break;
      case S.CLOSING:
        if (finAcked) { this.state = S.TIME_WAIT; this.enterTimeWait(); }
        break;
      case S.LAST_ACK:
        if (finAcked) { this.release(null); return false; }
        break;
      default: break;
    }
    this.output();
    return true;
  }

  /** SND.UNA moves to `ack`: drop acknowledged bytes, RTT sample, congestion window, RTO. */
  private ackAdvance(ack: number): void {
    let acked = sub(ack, this.sndUna);
    const cfg = this.host.cfg;
    // Our SYN took one sequence number and no buffer bytes.
    if (this.sndUna === this.iss) acked -= 1;
    const dataAcked = Math.min(Math.max(acked, 0), this.snd.length);
    this.snd.drop(dataAcked);
    this.sndUna = ack;
    if (seqLt(this.sndNxt, ack)) this.sndNxt = ack;
    const sb = this.scoreboard;
    while (sb.length > 0 && seqLe(sb[1]!, ack)) sb.splice(0, 2);
    if (sb.length > 0 && seqLt(sb[0]!, ack)) sb[0] = ack;
    // Forward progress ends the backoff: the RTO comes from the estimates again (as Linux does).
    if (this.retries > 0 && this.srtt > 0) this.rto = Math.min(cfg.rtoMaxMs, Math.max(cfg.rtoMinMs, this.srtt + Math.max(1, 4 * this.rttvar)));
    this.retries = 0;
    // RTT (Karn: only segments not retransmitted are timed).
    if (this.rttActive && seqGe(ack, this.rttSeq)) {
      this.rttActive = false;
      this.rttSample(this.host.now - this.rttAt);
    }
    // Congestion control (RFC 5681, NewReno RFC 6582 3.2).
    const mss = this.mss;
    if (this.inRecovery) {
      if (seqGe(ack, this.recover)) {
        this.inRecovery = false;
        this.cwnd = Math.min(this.ssthresh, Math.max(sub(this.sndMax, this.sndUna), 0) + mss);
        this.dupAcks = 0;
      } else {
        // Partial ACK: retransmit the next hole (the next one the peer's SACK blocks show when the
        // head went out again already), deflate by what was acked, add back one segment.
        if (seqGt(this.retxNext, this.sndUna)) this.retransmitNextHole();
        else { this.retransmitHead(); this.retxNext = add(this.sndUna, Math.min(this.mss, this.snd.length)); }
        this.cwnd = Math.max(mss, this.cwnd - dataAcked + (dataAcked >= mss ? mss : 0));
      }
    } else {
      this.dupAcks = 0;
      if (this.cwnd < this.ssthresh) this.cwnd += dataAcked;
      else this.cwnd += Math.max(1, Math.floor((mss * dataAcked) / this.cwnd));
      if (this.cwnd > 2 * cfg.sndBufMax) this.cwnd = 2 * cfg.sndBufMax;
      // Send buffer auto-tuning (gVisor, Linux's tcp_sndbuf_expand): room for twice the congestion
      // window, so the buffer never limits what the window allows in flight.
      if (this.snd.max < cfg.sndBufMax && 2 * this.cwnd > this.snd.max) {
        const next = Math.min(cfg.sndBufMax, 2 * this.snd.max);
        if (this.host.budget.tryGrow(next - this.snd.max)) {
          this.grown += next - this.snd.max;
          this.snd.max = next;
          this.budgetNoted &= ~2;
          this.host.counters.sndBufGrown = (this.host.counters.sndBufGrown ?? 0) + 1;
        } else {
          this.noteBudget(2, 'bufGrowDenied');
        }
      }
    }
    if (dataAcked > 0) this.recharge();
    if (this.sndMax !== this.sndUna) this.armRto(true);
    else this.rtoAt = 0;
    if (dataAcked > 0 && !this.finQueued && !this.closed) this.handler?.onWritable(this);
  }

  private dupAck(): void {
    const mss = this.mss;
    this.dupAcks++;
    const c = this.host.counters;
    if (this.inRecovery) {
      // Each dup ACK means a segment left the network: spend it on the next SACK hole, else inflate.
      if (!this.retransmitNextHole()) this.cwnd += mss;
      return;
    }
    // Loss: three duplicate ACKs, or the peer SACKed three segments' worth above the hole (RFC 6675 IsLost).
    if ((this.dupAcks >= 3 || this.sackedBytes() >= 3 * mss) && seqGe(this.sndUna, this.recover)) {
      const flight = sub(this.sndMax, this.sndUna);
      this.ssthresh = Math.max(flight >> 1, 2 * mss);
      this.recover = this.sndMax;
      this.inRecovery = true;
      c.fastRetransmit = (c.fastRetransmit ?? 0) + 1;
      this.retransmitHead();
      this.retxNext = add(this.sndUna, Math.min(mss, this.snd.length));
      this.cwnd = this.ssthresh + 3 * mss;
    }
  }

  /** Records the peer's SACK blocks (RFC 2018) within (SND.UNA, SND.MAX] in the scoreboard, merged and sorted. */
  private noteSack(s: TcpSeg): void {
    const sb = this.scoreboard;
    for (let b = 0; b < s.sackCount; b++) {
      let l = s.sack[2 * b]!, r = s.sack[2 * b + 1]!;
      if (!seqLt(l, r) || seqLe(r, this.sndUna) || seqGt(r, this.sndMax)) continue;
      if (seqLt(l, this.sndUna)) l = this.sndUna;
      let i = 0;
      while (i < sb.length && seqLt(sb[i + 1]!, l)) i += 2;
      // Merge with every range it touches.
      while (i < sb.length && seqLe(sb[i]!, r)) {
        if (seqLt(sb[i]!, l)) l = sb[i]!;
        if (seqGt(sb[i + 1]!, r)) r = sb[i + 1]!;
        sb.splice(i, 2);
      }
      if (sb.length >= 64) continue; // bounded: a peer cannot grow it without limit
      sb.splice(i, 0, l, r);
    }
  }

  private sackedBytes(): number {
    const sb = this.scoreboard;
    let n = 0;
    for (let i = 0; i < sb.length; i += 2) n += sub(sb[i + 1]!, sb[i]!);
    return n;
  }

  /** Retransmits the first segment after retxNext that the scoreboard does not cover and lies below the highest SACKed byte. */
  private retransmitNextHole(): boolean {
    const sb = this.scoreboard;
    if (sb.length === 0) return false;
    let at = seqGt(this.retxNext, this.sndUna) ? this.retxNext : this.sndUna;
    let next = -1;
    for (let i = 0; i < sb.length; i += 2) {
      if (seqLe(sb[i + 1]!, at)) continue;
      if (seqLe(sb[i]!, at)) { at = sb[i + 1]!; continue; }
      next = sb[i]!;
      break;
    }
    if (next === -1) return false;
    const dataEnd = add(this.sndUna, this.snd.length);
    const len = Math.min(this.mss, sub(next, at), sub(dataEnd, at));
    if (len <= 0) return false;
    const c = this.host.counters;
    c.retransmits = (c.retransmits ?? 0) + 1;
    c.sackRetransmits = (c.sackRetransmits ?? 0) + 1;
    this.rttActive = false;
    this.host.emit(this, F.ACK, at, sub(at, this.sndUna), len, this.ooo.length > 0 ? Opt.sack : Opt.none);
    this.clearAckPending();
    this.retxNext = add(at, len);
    return true;
  }

  /** Resends one segment at SND.UNA. */
  private retransmitHead(): void {
    const len = Math.min(this.mss, this.snd.length);
    const c = this.host.counters;
    c.retransmits = (c.retransmits ?? 0) + 1;
    this.rttActive = false;
    if (len > 0) {
      const fin = this.finSent && len === this.snd.length;
      this.host.emit(this, F.ACK | F.PSH | (fin ? F.FIN : 0), this.sndUna, 0, len, this.ooo.length > 0 ? Opt.sack : Opt.none);
      this.clearAckPending();
    } else if (this.finSent) {
      this.host.emit(this, F.ACK | F.FIN, this.sndUna, 0, 0, Opt.none);
      this.clearAckPending();
    }
    this.armRto(true);
  }

  private rttSample(r: number): void {
    const cfg = this.host.cfg;
    if (this.srtt === 0) { this.srtt = r; this.rttvar = r / 2; }
    else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - r);
      this.srtt = 0.875 * this.srtt + 0.125 * r;
    }
    this.rto = Math.min(cfg.rtoMaxMs, Math.max(cfg.rtoMinMs, this.srtt + Math.max(1, 4 * this.rttvar)));
  }

  /** In-order data: to the application, then whatever out-of-order data now follows. */
  private deliver(buf: Uint8Array, off: number, len: number): void {
    if (this.orphan) {
      // Data for a connection nobody reads any more: reset it (as Linux does after close()).
      this.fail(new TcpError('ECONNABORTED', 'data arrived after the application closed the connection'));
      return;
    }
    this.rcvNxt = add(this.rcvNxt, len);
    this.ackPending++;
    // Quick ACKs at the start of a connection and after a quiet spell (as Linux's quickack mode),
    // so a peer's Nagle never waits on our delayed ACK in request/response exchanges.
    const now = this.host.now;
    if (this.rcvBuf < this.host.cfg.rcvBufMax) this.tuneRcvBuf(now);
    if (this.quickAcks < 16 || now - this.lastData > this.rto) { this.quickAcks++; this.ackNow = true; }
    this.lastData = now;
    if (this.ackPending >= 2) this.ackNow = true;
    if (this.ackPending >= this.host.cfg.ackStretchMax) this.sendAck(); // a long batch: do not stretch ACKs further
    this.unread += len;
    this.handler?.onData(this, buf, off, len);
    if (this.closed) return;
    if (this.ooo.length > 0) {
      this.ackNow = true; // a hole filled: ACK at once (RFC 5681 4.2)
      while (this.ooo.length > 0 && !this.closed) {
        const o = this.ooo[0]!;
        if (seqGt(o.seq, this.rcvNxt)) break;
        this.ooo.shift();
        this.oooBytes -= o.data.length;
        if (seqGt(o.end, this.rcvNxt)) {
          const skip = sub(this.rcvNxt, o.seq);
          const n = o.data.length - skip;
          this.rcvNxt = o.end;
          this.unread += n;
          this.handler?.onData(this, o.data, skip, n);
        }
      }
    }
    if (!this.closed && this.oooFin >= 0 && this.oooFin === this.rcvNxt) { this.oooFin = -1; this.finArrived(); }
  }

  /** Receive buffer auto-tuning (see rcvBuf): at the end of each round, doubles it when the round was fast and the reader kept up; the next ACK advertises the larger window. */
  private tuneRcvBuf(now: number): void {
    if (this.rcvTuneAt >= 0 && seqLt(this.rcvNxt, this.rcvTuneSeq)) return;
    if (this.rcvTuneAt >= 0 && now - this.rcvTuneAt < RCV_TUNE_MS && this.unread < this.rcvBuf >> 1) {
      const next = Math.min(this.host.cfg.rcvBufMax, this.rcvBuf * 2);
      if (this.host.budget.tryGrow(next - this.rcvBuf)) {
        this.grown += next - this.rcvBuf;
        this.rcvBuf = next;
        this.budgetNoted &= ~1;
        this.host.counters.rcvBufGrown = (this.host.counters.rcvBufGrown ?? 0) + 1;
      } else {
        this.noteBudget(1, 'bufGrowDenied');
      }
    }
    this.rcvTuneAt = now;
    this.rcvTuneSeq = add(this.rcvNxt, this.rcvBuf);
  }

  /** Keeps an out-of-order segment (copied, trimmed against what is held, bounded). */
  private keepOoo(seq: number, buf: Uint8Array, off: number, len: number, fin: boolean): void {
    const c = this.host.counters;
    this.ackNow = true; // RFC 5681 4.2: out-of-order data is ACKed at once (a duplicate ACK with SACK)
    if (fin) this.oooFin = add(seq, len);
    let end = add(seq, len);
    const list = this.ooo;
    let i = 0;
    while (i < list.length && seqLe(list[i]!.end, seq)) i++;
    // Trim against the neighbours so kept segments never overlap.
    if (i < list.length && seqLe(list[i]!.seq, seq)) {
      const o = list[i]!;
      if (seqGe(o.end, end)) { c.dupOoo = (c.dupOoo ?? 0) + 1; this.lastOooSeq = o.seq; return; }
      const cut = sub(o.end, seq);
      off += cut; len -= cut; seq = o.end; i++;
      c.overlapOoo = (c.overlapOoo ?? 0) + 1;
    }
    if (i < list.length && seqLt(list[i]!.seq, end)) {
      end = list[i]!.seq;
      len = sub(end, seq);
      c.overlapOoo = (c.overlapOoo ?? 0) + 1;
    }
    if (len <= 0) return;
    if (list.length >= this.host.cfg.maxOoo || this.oooBytes + len > this.rcvBuf) { c.dropOooFull = (c.dropOooFull ?? 0) + 1; return; }
    const data = new Uint8Array(len);
    data.set(buf.subarray(off, off + len));
    list.splice(i, 0, { seq, end: add(seq, len), data });
    this.oooBytes += len;
    this.lastOooSeq = seq;
    c.oooSegments = (c.oooSegments ?? 0) + 1;
    // One duplicate ACK per out-of-order segment, at once (RFC 5681 4.2), even inside a batch: the
    // sender counts them to detect the loss.
    this.sendAck();
  }

  /** SACK blocks for the next ACK (RFC 2018 4: the block with the latest segment first), written as words. */
  sackBlocks(out: Uint32Array): number {
    const list = this.ooo;
    if (!this.sackOk || list.length === 0) return 0;
    // Coalesce adjacent kept segments into blocks.
    const blocks: number[] = [];
    let first = -1;
    for (let i = 0; i < list.length;) {
      const start = list[i]!.seq;
      let end = list[i]!.end;
      let hasLatest = list[i]!.seq === this.lastOooSeq;
      let j = i + 1;
      while (j < list.length && list[j]!.seq === end) { if (list[j]!.seq === this.lastOooSeq) hasLatest = true; end = list[j]!.end; j++; }
      if (hasLatest) first = blocks.length;
      blocks.push(start, end);
      i = j;
    }
    let n = 0;
    if (first >= 0) { out[0] = blocks[first]!; out[1] = blocks[first + 1]!; n = 1; }
    for (let b = 0; b < blocks.length && n < 4; b += 2) {
      if (b === first) continue;
      out[2 * n] = blocks[b]!; out[2 * n + 1] = blocks[b + 1]!; n++;
    }
    return n;
  }

  private finArrived(): void {
    if (this.finReceived) return;
    this.finReceived = true;
    this.rcvNxt = add(this.rcvNxt, 1);
    this.recharge(); // nothing more arrives: the window no longer reserves budget
    this.ackNow = true;
    this.host.dirty(this);
    switch (this.state) {
      case S.ESTABLISHED: this.state = S.CLOSE_WAIT; break;
      case S.FIN_WAIT_1:
        if (this.finSent && this.sndUna === this.sndMax) { this.state = S.TIME_WAIT; this.enterTimeWait(); }
        else this.state = S.CLOSING;
        break;
      case S.FIN_WAIT_2: this.state = S.TIME_WAIT; this.enterTimeWait(); break;
      default: break;
    }
    this.handler?.onEnd(this);
  }

  private enterTimeWait(): void {
    this.rtoAt = 0; this.persistAt = 0; this.kaAt = 0;
    // Everything we sent was acknowledged and nothing more arrives in order: the TCB lingers with
    // no buffers (many connections churning through TIME-WAIT kept ~10 KiB each otherwise).
    this.snd.release();
    this.ooo = [];
    this.oooBytes = 0;
    this.recharge();
    this.armClose(this.host.cfg.timeWaitMs);
    // The application is done with it: tell it now, the TCB lingers for old duplicates.
    const h = this.handler;
    this.handler = undefined;
    h?.onClose(this, null);
  }

  // ---- sending ---------------------------------------------------------------------------------

  /** Receive window to advertise now (never shrinking the right edge already advertised). */
  rcvWindow(): number {
    // Out-of-order bytes are not subtracted: they lie inside the window already (and are bounded by
    // it), and a window that shrank with each of them would stop the peer from counting our
    // duplicate ACKs (RFC 5681 2: a dup ACK leaves the window unchanged).
    let free = this.rcvBuf - this.unread;
    // The budget: with window w this connection's charge becomes unread + w + send bytes, the rest
    // of the stack's stays; past the hard limit it keeps its share (keep, budget.ts).
    const fit = this.host.budget.headroom + this.charged - this.unread - this.snd.length;
    if (fit < free) free = Math.max(fit, this.keep(this.host.cfg.rcvBufMin, this.host.cfg.rcvBuf, this.rcvBuf) - this.unread);
    const max = 0xffff << this.rcvShift;
    return Math.min(max, Math.max(0, free));
  }

  /** Window field for a segment, remembering the right edge it advertises. */
  windowField(syn: boolean): number {
    if (syn) { const w = Math.min(0xffff, this.rcvWindow()); this.rcvAdvRight = add(this.rcvNxt, w); return w; }
    let w = this.rcvWindow();
    const max = 0xffff << this.rcvShift;
    if (w < max && w < this.rcvBuf - this.unread) this.noteBudget(4, 'bufWindowClamped');
    else this.budgetNoted &= ~4;
    // RFC 9293 3.8.6.2.2: the right edge accepted never moves left. The field is the window rounded
    // down to the scale (as gVisor's getSendParams): rounding up instead moved the edge forward by
    // up to 2^shift - 1 bytes with each ACK of a stalled connection, past what the budget allowed.
    // The edge the peer computes may then recede by less than 2^shift (RFC 7323 2.4 window
    // retraction, which senders tolerate); what it was offered before is still accepted.
    const already = sub(this.rcvAdvRight, this.rcvNxt);
    if (w > already) this.rcvAdvRight = add(this.rcvNxt, w);
    else w = already;
    this.recharge();
    return Math.min(0xffff, w >>> this.rcvShift);
  }

  /**
   * Brings this connection's charge on the stack's budget up to date: the bytes the application
   * holds unread, the advertised window not yet filled (from ESTABLISHED until the peer's FIN: what
   * the peer may still send), and the send buffer's bytes; nothing from TIME-WAIT on. Between
   * calls it can only overstate (reads lower it; the window and writes, which raise it, call this).
   */
  private recharge(): void {
    let n = 0;
    const st = this.state;
    if (!this.closed && st !== S.TIME_WAIT) {
      n = this.unread + this.snd.length;
      if (st >= S.ESTABLISHED && !this.finReceived) { const w = sub(this.rcvAdvRight, this.rcvNxt); if (w > 0) n += w; }
    }
    const b = this.host.budget;
    const d = n - this.charged;
    if (d !== 0) { this.charged = n; b.charge(d); }
    if (n > 0) { if (!this.member) { this.member = true; b.members++; } }
    // Also when nothing was charged any more before the end (all read, sent and acknowledged):
    // membership and growth go back at TIME-WAIT or CLOSED whatever the last charge was.
    else if (this.closed || st === S.TIME_WAIT) {
      if (this.member) { this.member = false; b.members--; }
      if (this.grown !== 0) { b.shrink(this.grown); this.grown = 0; }
    }
  }

  /** Counts a budget event once per connection until it clears (the bits of budgetNoted). */
  private noteBudget(bit: number, counter: string): void {
    if (this.budgetNoted & bit) return;
    this.budgetNoted |= bit;
    this.host.counters[counter] = (this.host.counters[counter] ?? 0) + 1;
  }

  /** Sends a bare ACK now. */
  sendAck(): void {
    if (this.closed) return;
    this.host.emit(this, F.ACK, this.sndNxt, 0, 0, this.ooo.length > 0 ? Opt.sack : Opt.none);
    this.clearAckPending();
  }

  /** Called by the stack after an input batch: ACK now, or arm the delayed-ACK timer. */
  flushAck(): void {
    this.inDirty = false;
    if (this.closed) return;
    if (this.ackNow) this.sendAck();
    else if (this.ackPending > 0 && this.delackAt === 0) { this.delackAt = this.host.now + this.host.cfg.delackMs; this.host.wake(this, this.delackAt); }
  }

  clearAckPending(): void {
    this.ackPending = 0;
    this.ackNow = false;
    this.delackAt = 0;
  }

  /** Sends what the windows allow: new data, then the FIN once the data is out. */
  output(): void {
    const st = this.state;
    if (this.closed || !(st === S.ESTABLISHED || st === S.CLOSE_WAIT || st === S.FIN_WAIT_1 || st === S.CLOSING || st === S.LAST_ACK)) return;
    const mss = this.mss;
    const dataEnd = add(this.sndUna, this.snd.length);
    for (let guard = 0; guard < 1024; guard++) {
      const flight = sub(this.sndNxt, this.sndUna);
      const unsent = Math.max(0, sub(dataEnd, this.sndNxt));
      const limit = Math.min(this.cwnd, this.sndWnd);
      const avail = limit - flight;
      if (unsent > 0) {
        if (avail <= 0) break;
        const n = Math.min(mss, unsent, avail);
        // Sender SWS avoidance (RFC 9293 3.8.6.2.1): a full segment, all that is left, or nothing in flight.
        if (n < mss && n < unsent && flight > 0) break;
        const fin = this.finQueued && n === unsent;
        const at = sub(this.sndNxt, this.sndUna);
        const isNew = this.sndNxt === this.sndMax;
        if (!this.rttActive && isNew) { this.rttActive = true; this.rttSeq = add(this.sndNxt, n); this.rttAt = this.host.now; }
        if (!isNew) { this.host.counters.retransmits = (this.host.counters.retransmits ?? 0) + 1; this.rttActive = false; }
        this.host.emit(this, F.ACK | (n === unsent ? F.PSH : 0) | (fin ? F.FIN : 0), this.sndNxt, at, n, this.ooo.length > 0 ? Opt.sack : Opt.none);
        this.clearAckPending();
        this.sndNxt = add(this.sndNxt, n + (fin ? 1 : 0));
        if (fin) this.noteFinSent();
        if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
        if (this.rtoAt === 0) this.armRto();
        continue;
      }
      if (this.finQueued && this.sndNxt === dataEnd && (!this.finSent || this.sndNxt !== this.sndMax)) {
        this.host.emit(this, F.ACK | F.FIN, this.sndNxt, 0, 0, Opt.none);
        this.clearAckPending();
        this.sndNxt = add(this.sndNxt, 1);
        this.noteFinSent();
        if (seqGt(this.sndNxt, this.sndMax)) this.sndMax = this.sndNxt;
        if (this.rtoAt === 0) this.armRto();
      }
      break;
    }
    // Zero window with data waiting and nothing in flight: probe (RFC 9293 3.8.6.1).
    if (this.sndWnd === 0 && sub(dataEnd, this.sndNxt) > 0 && this.sndNxt === this.sndUna && this.persistAt === 0) {
      if (this.zeroSince === 0) this.zeroSince = this.host.now;
      this.persistAt = this.host.now + Math.min(60_000, Math.max(this.rto, 200) << Math.min(this.persistBackoff, 9));
      this.host.wake(this, this.persistAt);
    }
  }

  private noteFinSent(): void {
    if (this.finSent) return;
    this.finSent = true;
    if (this.state === S.ESTABLISHED) this.state = S.FIN_WAIT_1;
    else if (this.state === S.CLOSE_WAIT) this.state = S.LAST_ACK;
  }

  // ---- timers ----------------------------------------------------------------------------------

  private armRto(restart = false): void {
    if (this.rtoAt !== 0 && !restart) return;
    this.rtoAt = this.host.now + this.rto;
    this.host.wake(this, this.rtoAt);
  }

  private armClose(ms: number): void {
    this.closeAt = this.host.now + ms;
    this.host.wake(this, this.closeAt);
  }

  private armKeepalive(): void {
    const cfg = this.host.cfg;
    this.kaAt = this.lastRecv + (this.kaProbes === 0 ? cfg.keepaliveIdleMs : cfg.keepaliveIntervalMs);
    if (this.kaProbes > 0) this.kaAt = this.host.now + cfg.keepaliveIntervalMs;
    this.host.wake(this, this.kaAt);
  }

  /** Earliest timer deadline, 0 when none. */
  nextTimer(): number {
    let t = 0;
    for (const x of [this.rtoAt, this.delackAt, this.persistAt, this.kaAt, this.closeAt]) if (x !== 0 && (t === 0 || x < t)) t = x;
    return t;
  }

  /** Runs due timers. */
  runTimers(now: number): void {
    if (this.closed) return;
    const cfg = this.host.cfg;
    const c = this.host.counters;
    if (this.closeAt !== 0 && now >= this.closeAt) {
      this.closeAt = 0;
      if (this.pendingAccept) { c.acceptTimeout = (c.acceptTimeout ?? 0) + 1; this.abort(); return; }
      if (this.state === S.TIME_WAIT) { this.release(null); return; }
      if (this.state === S.FIN_WAIT_2) { c.finWait2Timeout = (c.finWait2Timeout ?? 0) + 1; this.release(null); return; }
    }
    if (this.delackAt !== 0 && now >= this.delackAt) { this.delackAt = 0; if (this.ackPending > 0) this.sendAck(); }
    if (this.rtoAt !== 0 && now >= this.rtoAt) { this.rtoAt = 0; this.onRto(); if (this.closed) return; }
    if (this.persistAt !== 0 && now >= this.persistAt) {
      this.persistAt = 0;
      if (this.sndWnd === 0 && this.snd.length > 0) {
        const waited = now - this.zeroSince;
        if (waited >= cfg.zeroWindowMaxMs || (this.orphan && waited >= cfg.zeroWindowOrphanMs)) {
          c.zeroWindowAbort = (c.zeroWindowAbort ?? 0) + 1;
          this.fail(new TcpError('ETIMEDOUT', `the peer kept a zero window for ${Math.round(waited / 1000)} s`));
          return;
        }
        c.windowProbes = (c.windowProbes ?? 0) + 1;
        this.persistBackoff++;
        this.host.emit(this, F.ACK, add(this.sndUna, -1 >>> 0), 0, 0, Opt.none);
        this.output();
      }
    }
    if (this.kaAt !== 0 && now >= this.kaAt) {
      this.kaAt = 0;
      if (this.keepalive && this.state === S.ESTABLISHED) {
        if (this.kaProbes >= cfg.keepaliveCount) {
          c.keepaliveTimeout = (c.keepaliveTimeout ?? 0) + 1;
          this.fail(new TcpError('ETIMEDOUT', 'the peer stopped answering keepalive probes'));
          return;
        }
        this.kaProbes++;
        c.keepaliveProbes = (c.keepaliveProbes ?? 0) + 1;
        this.host.emit(this, F.ACK, add(this.sndUna, -1 >>> 0), 0, 0, Opt.none);
        this.armKeepalive();
      }
    }
  }

  private onRto(): void {
    const cfg = this.host.cfg;
    const c = this.host.counters;
    c.rtoExpired = (c.rtoExpired ?? 0) + 1;
    this.retries++;
    this.rto = Math.min(cfg.rtoMaxMs, this.rto * 2);
    this.rttActive = false;
    if (this.state === S.SYN_SENT || this.state === S.SYN_RECEIVED) {
      if (this.retries > cfg.synRetries) {
        this.fail(new TcpError('ETIMEDOUT', `no answer to SYN after ${this.retries} tries`));
        return;
      }
      // RFC 6298 5.7: after a SYN timeout the RTO for data starts at 3 s (kept simple: the doubled one).
      this.host.emit(this, this.state === S.SYN_SENT ? F.SYN : F.SYN | F.ACK, this.iss, 0, 0, Opt.syn);
      this.armRto(true);
      return;
    }
    if (this.sndMax === this.sndUna) return;
    if (this.retries > cfg.dataRetries) {
      this.fail(new TcpError('ETIMEDOUT', `no acknowledgement after ${this.retries} retransmissions`));
      return;
    }
    // RFC 5681 3.1 eq. 4 and RFC 6582 4: back to one segment, go back N, no fast retransmit until recovered.
    const flight = sub(this.sndMax, this.sndUna);
    this.ssthresh = Math.max(flight >> 1, 2 * this.mss);
    this.cwnd = this.mss;
    this.inRecovery = false;
    this.scoreboard.length = 0; // the receiver may have reneged (RFC 2018 8)
    this.retxNext = this.sndUna;
    this.recover = this.sndMax;
    this.dupAcks = 0;
    this.sndNxt = this.sndUna;
    if (this.finSent && this.snd.length === 0) {
      this.host.emit(this, F.ACK | F.FIN, this.sndUna, 0, 0, Opt.none);
      this.sndNxt = add(this.sndUna, 1);
    } else {
      this.output();
    }
    this.armRto(true);
  }

  /** Ends the connection with an error, telling the peer (RST) where it is synchronized. */
  fail(err: TcpError): void {
    if (this.closed) return;
    if (this.state >= S.ESTABLISHED) this.host.emit(this, F.RST | F.ACK, this.sndNxt, 0, 0, Opt.none);
    this.release(err);
  }

  /** To CLOSED: timers off, out of the table, the application told once. */
  release(err: TcpError | null): void {
    if (this.closed) return;
    this.closed = true;
    this.state = S.CLOSED;
    this.rtoAt = this.delackAt = this.persistAt = this.kaAt = this.closeAt = 0;
    this.ooo = [];
    this.oooBytes = 0;
    this.snd.release();
    this.recharge();
    this.host.release(this);
    const h = this.handler;
    this.handler = undefined;
    h?.onClose(this, err);
  }
}
