// DERP client (tailscale derp/derphttp/derphttp_client.go + derp/derp_client.go; reference data-plane.md 5).
//
// Connection: TCP, then TLS (HTTP/1.1 only), or plain TCP only with allowInsecureHttp (the analogue
// of TS_DEBUG_USE_DERP_HTTP / an explicit http:// URL). Then
//   C→S  GET /derp HTTP/1.1 | Host | Upgrade: DERP | Connection: Upgrade [| Derp-Fast-Start: 1]
//   S→C  HTTP/1.1 101 Switching Protocols ... \r\n\r\n          (absent with fast start)
//   S→C  ServerKey(magic ‖ server key)
//   C→S  ClientInfo(our node key ‖ nonce ‖ box{"version":2,"CanAckPings":true}) -> 'connected'
//   C→S  NotePreferred(1) when this is our home region
//   S→C  ServerInfo(nonce ‖ box{"version":2,...})              -> handshake verified
// As tailscale's derp.NewClient, the connection is usable once ClientInfo is sent: packets written
// after it are read by the server after it. ServerInfo (its rate limit) is checked when it comes; a
// bad one closes the connection and counts as a failed connect, and the reconnect backoff is reset
// only by a good one.
// then SendPacket out, RecvPacket/KeepAlive/Ping/PeerGone/Health/Restarting in (frames.ts).
// Fast start is used only when the caller already knows the server key (opts.serverKey); Node's TLS
// API does not expose the unrelated "meta certificate" tailscaled reads it from.
//
// After any failure the client reconnects with exponential backoff and jitter, or on the schedule a
// Restarting frame asked for; a caller with a packet to send can ask for the next attempt at once
// (dialSoon: at most one dial per DIAL_SOON_GAP_MS), as tailscale's derphttp client connects on Send. A connection that stops answering is given up: queued writes that
// make no progress for 5 s (writeTimeoutMs), or no byte read within 5 s of a liveness ping
// (liveness.ts: pings after 3 s without an answer to what we sent, or 15 s of silence); the TCP
// connect itself gets 1.5 s (tailscale's dialNodeTimeout), the whole handshake 10 s. Junk from the server is counted, never thrown: short frames are
// dropped, unknown types skipped, an oversized frame or a bad handshake closes the connection.
import { EventEmitter } from 'node:events';
import { connect as netConnect, isIP, type Socket } from 'node:net';
import { checkServerIdentity, connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';
import { createHash, randomFillSync } from 'node:crypto';
import { debuglog } from 'node:util';
import type { TcpDialer } from '../net/tcp.ts';
import { DerpLiveness, type DerpLivenessOptions } from './liveness.ts';
import { boxBefore, KEY_LEN, publicKeyOf } from '../crypto/box.ts';
import {
  encodeClientInfo, encodeNotePreferred, encodePingPong, encodeSendPacket, FrameReader, FrameType,
  KEEP_ALIVE_MS, MAX_PACKET_SIZE, parseServerInfo, parseServerKey, parseServerMessage, PROTOCOL_VERSION,
  type ServerInfo,
} from './frames.ts';

/** Options for a DERP client. */
export interface DerpClientOptions {
  /** Server URL, e.g. `https://derp.example.com/derp` or `http://127.0.0.1:3340/derp`. */
  url: string;
  /** Our node private key (X25519, 32 bytes). */
  privateKey: Uint8Array;
  /** Permit a plain-HTTP URL (tests, loopback; tailscaled needs TS_DEBUG_USE_DERP_HTTP for this). */
  allowInsecureHttp?: boolean;
  /** Dial this IP instead of resolving the URL host (a DERPNode's IPv4/IPv6). */
  connectAddress?: string;
  /** Extra TLS options (ca, rejectUnauthorized, servername ...). */
  tls?: ConnectionOptions;
  /** Makes the TCP connection (the agent's carry SO_MARK: src/net/tcp.ts); default Node's own. */
  dial?: TcpDialer;
  /**
   * DERPNode.CertName: `sha256-raw:<hex>` pins the server's leaf certificate by the SHA-256 of its DER
   * (instead of CA verification, as tailscale's tlsdial does); any other value is the name the
   * certificate must carry instead of the URL host.
   */
  certName?: string;
  /** Whether this server is our home (sends NotePreferred(1) on every connect). */
  preferred?: boolean;
  /** Advertise that we answer server pings (default true; we always answer). */
  canAckPings?: boolean;
  /** Opaque app name for the server's stats. */
  appName?: string;
  /** The server's key if already known: enables fast start (no HTTP 101 round trip). */
  serverKey?: Uint8Array;
  /** Whole connect (TCP + TLS + upgrade + handshake) limit; default 10 s. */
  connectTimeoutMs?: number;
  /** TCP connect limit (derphttp dialNodeTimeout); default 1.5 s. */
  dialTimeoutMs?: number;
  /** Liveness pings (liveness.ts); false turns them off (then only the read timeout notices silence). */
  liveness?: DerpLivenessOptions | false;
  /** Silence after which the connection is declared dead; default 120 s (2 × keepalive). */
  readTimeoutMs?: number;
  /**
   * Data waiting to be written that makes no progress this long closes the connection (then the
   * client reconnects); default 5 s, tailscale's derp client write timeout. A server behind a
   * black hole leaves a TCP connection in retransmission backoff for tens of seconds after the path
   * is back; a fresh connection is up in one round trip.
   */
  writeTimeoutMs?: number;
  /** First reconnect delay; default 100 ms. */
  backoffInitialMs?: number;
  /** Largest reconnect delay; default 5 s (magicsock's cap). */
  backoffMaxMs?: number;
  /**
   * Drop sends while this many bytes wait in our process for the socket (the kernel's TCP buffer is
   * full); default DERP_MAX_QUEUED_BYTES. Anything queued here only adds delay: tailscale keeps 32
   * packets (magicsock derpWriteQueueDepth, "almost pure buffer bloat"). A deep queue delays the
   * DERP copies of packets sent both ways while a direct path is untrusted by seconds; a TCP
   * receiver whose hole is filled by such a copy echoes its old timestamp, and the sender's RTO
   * grows to tens of seconds (chaos loss10).
   */
  maxWriteBufferBytes?: number;
  /** Source of randomness in [0,1) for jitter; default Math.random. */
  random?: () => number;
  /** Log function (prefixed by the caller); default util.debuglog('derp'). */
  log?: (msg: string) => void;
}

/** Where the client is in its life. */
export type DerpClientState = 'idle' | 'connecting' | 'connected' | 'waiting' | 'closed';

/** Events a DerpClient emits. Packet bytes are views of receive buffers that are never reused. */
export interface DerpClientEvents {
  packet: [source: Uint8Array, data: Uint8Array];
  connected: [info: { serverKey: Uint8Array; connGen: number; localAddress: string; localPort: number }];
  disconnected: [reason: string];
  'peer-gone': [peer: Uint8Array, reason: number];
  'peer-present': [peer: Uint8Array];
  health: [problem: string];
  restarting: [reconnectInMs: number, tryForMs: number];
  'keep-alive': [];
  pong: [data: Uint8Array];
  closed: [];
}

/** Always-on counters. */
export interface DerpClientCounters {
  connects: number;
  disconnects: number;
  connectFailures: number;
  packetsIn: number;
  packetsOut: number;
  bytesIn: number;
  bytesOut: number;
  framesIn: number;
  /** Sends dropped: not connected. */
  dropNotConnected: number;
  /** Sends dropped: socket write buffer over the limit. */
  dropBackpressure: number;
  /** Connections closed because queued data made no progress for writeTimeoutMs. */
  writeTimeouts: number;
  /** Sends dropped: packet over 64 KiB. */
  dropTooBig: number;
  /** Sends dropped: over the server's token bucket. */
  dropRateLimited: number;
  /** Frames of a known type too short to parse (dropped). */
  bogusFrames: number;
  /** Frames of unknown type (skipped). */
  unknownFrames: number;
  /** Connections closed for a bogus stream: oversized frame, bad HTTP reply, bad handshake. */
  protocolErrors: number;
  /** Server pings answered. */
  pingsAnswered: number;
  /** Liveness pings sent (liveness.ts). */
  livenessPings: number;
  /** Connections closed because nothing was read within the timeout after a liveness ping. */
  livenessTimeouts: number;
}

const HTTP_HEAD_MAX = 16 << 10;

/**
 * Least time between dials that dialSoon brings forward: packets queued while the network is down
 * (each connect fails at once with ENETUNREACH) cost at most this many attempts per second.
 */
export const DIAL_SOON_GAP_MS = 100;

/** Bytes queued in-process per DERP connection before sends are dropped: ~32 full-size packets. */
export const DERP_MAX_QUEUED_BYTES = 48 << 10;

type Phase = 'http' | 'server-key' | 'server-info' | 'open';

interface PendingPing { data: Uint8Array; start: number; resolve: (rttMs: number) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }

/** A DERP client that keeps one connection to one server up, reconnecting with backoff. */
export class DerpClient extends EventEmitter<DerpClientEvents> {
  /** Our node public key. */
  readonly publicKey: Uint8Array;
  /** Counters, always on. */
  readonly counters: DerpClientCounters = {
    connects: 0, disconnects: 0, connectFailures: 0, packetsIn: 0, packetsOut: 0, bytesIn: 0, bytesOut: 0, framesIn: 0,
    dropNotConnected: 0, dropBackpressure: 0, writeTimeouts: 0, dropTooBig: 0, dropRateLimited: 0, bogusFrames: 0, unknownFrames: 0,
    protocolErrors: 0, pingsAnswered: 0, livenessPings: 0, livenessTimeouts: 0,
  };

  private readonly opts: DerpClientOptions;
  private readonly url: URL;
  private readonly log: (msg: string) => void;
  private readonly random: () => number;
  private _state: DerpClientState = 'idle';
  private socket: Socket | undefined;
  private reader = new FrameReader();
  private phase: Phase = 'http';
  private fastStart = false;
  private knownServerKey: Uint8Array | undefined;
  private _serverKey: Uint8Array | undefined;
  private shared: Uint8Array | undefined;
  private preferred: boolean;
  private connGen = 0;
  private attempt = 0;
  private connectTimer: NodeJS.Timeout | undefined;
  private dialTimer: NodeJS.Timeout | undefined;
  private readTimer: NodeJS.Timeout | undefined;
  /** While connected: checks queued writes for progress (writeTimeoutMs) and runs the liveness check. */
  private writeTimer: NodeJS.Timeout | undefined;
  private readonly liveness: DerpLiveness | undefined;
  private writeFlushed = 0;
  private writeStalledSince: number | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** When the latest dial began (performance.now()), for dialSoon's gap. */
  private lastDialAt = -Infinity;
  /** The latest connect failure's reason and how many in a row had it (logged once, then counted). */
  private lastFailure = '';
  private sameFailures = 0;
  private restartHint: { reconnectInMs: number; until: number } | undefined;
  private pings: PendingPing[] = [];
  private bucket: { rate: number; burst: number; tokens: number; at: number } | undefined;
  /** The socket corked by send() until the current batch of sends ends (uncorked on the next tick). */
  private corked: Socket | undefined;
  private readonly uncorkBound = (): void => {
    const c = this.corked;
    this.corked = undefined;
    if (c !== undefined && !c.destroyed) c.uncork();
  };

  constructor(opts: DerpClientOptions) {
    super();
    if (opts.privateKey.length !== KEY_LEN) throw new TypeError('derp: privateKey must be 32 bytes');
    const url = new URL(opts.url);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new TypeError(`derp: unsupported URL scheme ${url.protocol}`);
    if (url.protocol === 'http:' && !opts.allowInsecureHttp) {
      throw new TypeError('derp: plain http:// needs allowInsecureHttp (like TS_DEBUG_USE_DERP_HTTP); use https://');
    }
    if (opts.serverKey !== undefined && opts.serverKey.length !== KEY_LEN) throw new TypeError('derp: serverKey must be 32 bytes');
    this.opts = opts;
    this.url = url;
    this.publicKey = publicKeyOf(opts.privateKey);
    this.log = opts.log ?? debuglog('derp');
    this.random = opts.random ?? Math.random;
    this.preferred = opts.preferred ?? false;
    this.knownServerKey = opts.serverKey;
    this.liveness = opts.liveness === false ? undefined : new DerpLiveness(opts.liveness);
  }

  /** Current state. */
  get state(): DerpClientState {
    return this._state;
  }

  /** The server's key once a handshake has been seen. */
  get serverKey(): Uint8Array | undefined {
    return this._serverKey;
  }

  /** Bytes waiting in this process for the socket (the kernel's buffer being full); 0 when not connected. */
  get queuedBytes(): number {
    return this.socket?.writableLength ?? 0;
  }

  /** Whether the handshake is complete and packets can be sent. */
  get connected(): boolean {
    return this._state === 'connected';
  }

  /** Connected, and the server's ServerInfo came and checked out (its rate limit is applied). */
  get verified(): boolean {
    return this._state === 'connected' && this.phase === 'open';
  }

  /** Starts connecting (and keeps reconnecting until close()). */
  start(): void {
    if (this._state !== 'idle') return;
    this.dial();
  }

  /**
   * Someone has a packet for this server: while waiting to reconnect, dial now rather than when the
   * backoff ends (at most one dial per DIAL_SOON_GAP_MS; sooner than that, at the gap's end). After
   * a network outage the backoff has grown to seconds; the first packet after the network returns
   * then waits for DERP that long, and a peer's reply over DERP goes to our dead old connection.
   * tailscale's derphttp client connects on Send. Does nothing unless waiting to reconnect.
   */
  dialSoon(): void {
    if (this._state !== 'waiting' || this.restartHint !== undefined) return;
    const wait = this.lastDialAt + DIAL_SOON_GAP_MS - performance.now();
    if (wait <= 0) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      this.retryDueAt = Infinity;
      this.dial();
      return;
    }
    if (this.retryDueAt <= performance.now() + wait) return;
    clearTimeout(this.retryTimer);
    this.armRetry(wait);
  }

  /** Sends a packet to a node key; false (and counted) when dropped. Never throws for I/O reasons. */
  send(dst: Uint8Array, packet: Uint8Array): boolean {
    if (dst.length !== KEY_LEN) throw new TypeError('derp: destination key must be 32 bytes');
    if (packet.length > MAX_PACKET_SIZE) { this.counters.dropTooBig++; return false; }
    const s = this.socket;
    if (this._state !== 'connected' || s === undefined) { this.counters.dropNotConnected++; return false; }
    if (s.writableLength > (this.opts.maxWriteBufferBytes ?? DERP_MAX_QUEUED_BYTES)) { this.counters.dropBackpressure++; return false; }
    const frame = encodeSendPacket(dst, packet);
    if (!this.takeTokens(frame.length)) { this.counters.dropRateLimited++; return false; }
    // A data-plane batch sends many packets in one turn: one writev (and fewer TLS records) for all of
    // them instead of a write() per packet, which held TCP through DERP to a few tens of Mbit/s.
    if (this.corked === undefined) {
      this.corked = s;
      s.cork();
      process.nextTick(this.uncorkBound);
    }
    s.write(frame);
    this.liveness?.onSend();
    this.counters.packetsOut++;
    this.counters.bytesOut += packet.length;
    return true;
  }

  /** Tells the server whether it is our home region (also re-sent on every reconnect when true). */
  notePreferred(preferred: boolean): void {
    this.preferred = preferred;
    if (this._state === 'connected') this.socket?.write(encodeNotePreferred(preferred));
  }

  /** Sends a DERP Ping and resolves with the round-trip time in ms when the Pong arrives. */
  ping(timeoutMs = 5000): Promise<number> {
    return new Promise((resolve, reject) => {
      const s = this.socket;
      if (this._state !== 'connected' || s === undefined) { reject(new Error('derp: ping: not connected')); return; }
      const data = randomFillSync(new Uint8Array(8));
      const p: PendingPing = {
        data, start: performance.now(), resolve, reject,
        timer: setTimeout(() => { this.pings = this.pings.filter((x) => x !== p); reject(new Error('derp: ping timed out')); }, timeoutMs),
      };
      this.pings.push(p);
      s.write(encodePingPong(FrameType.ping, data));
    });
  }

  /** Closes the connection for good; no more reconnects. */
  close(): void {
    if (this._state === 'closed') return;
    const wasConnected = this._state === 'connected';
    this._state = 'closed';
    this.clearTimers();
    this.failPings('derp: client closed');
    const s = this.socket;
    this.socket = undefined;
    s?.destroy();
    if (wasConnected) this.emit('disconnected', 'closed');
    this.emit('closed');
  }

  private clearTimers(): void {
    clearTimeout(this.connectTimer);
    clearTimeout(this.dialTimer);
    clearTimeout(this.readTimer);
    clearTimeout(this.retryTimer);
    clearInterval(this.writeTimer);
    this.connectTimer = this.dialTimer = this.readTimer = this.retryTimer = this.writeTimer = undefined;
  }

  /**
   * While connected, every 1/5 of the shortest timeout: has data waited without any byte leaving
   * for writeTimeoutMs? Is a liveness ping due, or did the last one go unanswered?
   */
  private armWriteTimer(s: Socket): void {
    const ms = this.opts.writeTimeoutMs ?? 5000;
    const live = this.liveness;
    clearInterval(this.writeTimer);
    this.writeFlushed = s.bytesWritten - s.writableLength;
    this.writeStalledSince = undefined;
    live?.reset(performance.now());
    this.writeTimer = setInterval(() => {
      if (s !== this.socket) return;
      if (live !== undefined) this.checkLiveness(s, live);
      if (s !== this.socket) return;
      const flushed = s.bytesWritten - s.writableLength;
      if (s.writableLength === 0 || flushed !== this.writeFlushed) {
        this.writeFlushed = flushed;
        this.writeStalledSince = undefined;
        return;
      }
      const now = Date.now();
      this.writeStalledSince ??= now;
      if (now - this.writeStalledSince >= ms) {
        this.counters.writeTimeouts++;
        this.fail(s, `${s.writableLength} bytes queued made no progress for ${ms} ms`, false);
      }
    }, Math.max(10, Math.min(Math.floor(ms / 5), live?.tickMs ?? Infinity)));
  }

  private checkLiveness(s: Socket, live: DerpLiveness): void {
    const a = live.tick(performance.now());
    if (a === 'ping') {
      this.counters.livenessPings++;
      s.write(encodePingPong(FrameType.ping, randomFillSync(new Uint8Array(8))));
    } else if (a === 'dead') {
      // Timers run before the poll phase: an answer may be waiting unread after a busy stretch of the
      // event loop. Decide after the pending reads (setImmediate runs after the poll phase).
      setImmediate(() => {
        if (s !== this.socket || live.tick(performance.now()) !== 'dead') return;
        this.counters.livenessTimeouts++;
        this.fail(s, `no answer from server within ${live.pingTimeoutMs} ms of a ping`, false);
      });
    }
  }

  private failPings(msg: string): void {
    for (const p of this.pings) { clearTimeout(p.timer); p.reject(new Error(msg)); }
    this.pings = [];
  }

  private dial(): void {
    this._state = 'connecting';
    this.lastDialAt = performance.now();
    this.reader = new FrameReader();
    this.phase = 'http';
    this.shared = undefined;
    this.bucket = undefined;
    this.fastStart = this.knownServerKey !== undefined;
    const host = this.url.hostname.replace(/^\[(.*)\]$/, '$1');
    const target = this.opts.connectAddress ?? host;
    const port = Number(this.url.port || (this.url.protocol === 'https:' ? 443 : 80));
    if (this.sameFailures <= 1) this.log(`dialing ${this.url.href} via ${target}:${port}${this.fastStart ? ' (fast start)' : ''}`);
    let s: Socket;
    let tcp: Socket;
    if (this.url.protocol === 'https:') {
      const tlsOpts: ConnectionOptions = { host: target, port, ALPNProtocols: ['http/1.1'], ...this.opts.tls };
      if (tlsOpts.servername === undefined && isIP(host) === 0) tlsOpts.servername = host;
      const certName = this.opts.certName;
      const pin = certName?.startsWith('sha256-raw:') ? certName.slice('sha256-raw:'.length).toLowerCase() : undefined;
      if (pin !== undefined) tlsOpts.rejectUnauthorized = false;
      else if (certName) tlsOpts.checkServerIdentity = (_host, cert) => checkServerIdentity(certName, cert);
      if (this.opts.dial) tlsOpts.socket = this.opts.dial(target, port);
      s = tlsConnect(tlsOpts);
      tcp = (tlsOpts.socket as Socket | undefined) ?? s;
      s.once('secureConnect', () => {
        if (pin !== undefined) {
          const problem = checkPinnedCert(s as TLSSocket, pin, isIP(host) === 0 ? host : undefined);
          if (problem) { this.fail(s, `TLS: ${problem}`, true); return; }
        }
        this.onTransportUp(s);
      });
    } else {
      s = tcp = this.opts.dial ? this.opts.dial(target, port) : netConnect({ host: target, port });
      s.once('connect', () => this.onTransportUp(s));
    }
    this.socket = s;
    // The TCP connect alone gets dialTimeoutMs (a SYN into a black hole is retried at 1, 3, 7 s...;
    // a fresh attempt after the backoff finds a path that came back sooner).
    if (tcp.connecting) {
      const dialMs = this.opts.dialTimeoutMs ?? 1500;
      this.dialTimer = setTimeout(() => this.fail(s, `TCP connect timed out after ${dialMs} ms`, false), dialMs);
      tcp.once('connect', () => { clearTimeout(this.dialTimer); this.dialTimer = undefined; });
    }
    s.setNoDelay(true);
    s.on('data', (chunk: Buffer) => this.onData(s, chunk));
    s.on('error', (e) => this.onDown(s, e.message));
    s.on('close', () => this.onDown(s, 'connection closed'));
    this.connectTimer = setTimeout(() => this.fail(s, 'connect timed out', false), this.opts.connectTimeoutMs ?? 10_000);
  }

  private onTransportUp(s: Socket): void {
    if (s !== this.socket) return;
    const lines = [
      `GET ${this.url.pathname === '/' ? '/derp' : this.url.pathname} HTTP/1.1`,
      `Host: ${this.url.host}`,
      'User-Agent: meshd',
      'Upgrade: DERP',
      'Connection: Upgrade',
    ];
    if (this.fastStart) lines.push('Derp-Fast-Start: 1');
    s.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (this.fastStart) {
      // No 101 comes back; the server still sends ServerKey first, which we check against the known key.
      this.phase = 'server-key';
      this.sendClientInfo(s, this.knownServerKey!);
    }
    this.armReadTimer(s);
  }

  private sendClientInfo(s: Socket, serverKey: Uint8Array): void {
    this._serverKey = serverKey;
    this.shared = boxBefore(serverKey, this.opts.privateKey);
    const info = { version: PROTOCOL_VERSION, canAckPings: this.opts.canAckPings ?? true, ...(this.opts.appName ? { appName: this.opts.appName } : {}) };
    s.write(encodeClientInfo(this.publicKey, this.shared, info));
  }

  private armReadTimer(s: Socket): void {
    const ms = this.opts.readTimeoutMs ?? 2 * KEEP_ALIVE_MS;
    if (this.readTimer) { this.readTimer.refresh(); return; }
    this.readTimer = setTimeout(() => this.fail(s, `no frame from server for ${ms} ms`, false), ms);
  }

  private onData(s: Socket, chunk: Buffer): void {
    if (s !== this.socket) return;
    this.readTimer?.refresh();
    this.liveness?.onRead(performance.now());
    this.reader.push(chunk);
    if (this.phase === 'http') {
      const end = this.reader.findHeadEnd(HTTP_HEAD_MAX);
      if (end === -1) return;
      if (end === -2) { this.fail(s, 'HTTP response head too large', true); return; }
      const head = new TextDecoder().decode(this.reader.take(end));
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(head);
      if (!status || status[1] !== '101') {
        const rest = new TextDecoder().decode(this.reader.take(Math.min(this.reader.buffered, 200))).trim();
        this.fail(s, `DERP upgrade refused: ${head.split('\r\n')[0] ?? ''}${rest ? `: ${rest}` : ''}`, true);
        return;
      }
      this.phase = 'server-key';
    }
    for (;;) {
      if (s !== this.socket) return;
      const f = this.reader.next();
      if (f === undefined) return;
      if ('error' in f) { this.fail(s, `bogus frame length ${f.length} (type 0x${f.type.toString(16)})`, true); return; }
      this.counters.framesIn++;
      if (this.phase === 'server-key') {
        if (f.type !== FrameType.serverKey) { this.fail(s, `expected ServerKey frame, got type 0x${f.type.toString(16)}`, true); return; }
        const key = parseServerKey(f.payload);
        if (!key) { this.fail(s, 'invalid server greeting', true); return; }
        if (this.fastStart) {
          if (!equalBytes(key, this.knownServerKey!)) {
            this.knownServerKey = undefined; // next attempt: full upgrade, learn the key
            this.fail(s, 'server key differs from the known key; retrying without fast start', true);
            return;
          }
        } else {
          this.sendClientInfo(s, key);
        }
        this.phase = 'server-info';
        this.onConnected(s);
        continue;
      }
      this.onFrame(s, f);
    }
  }

  private onFrame(s: Socket, f: { type: number; payload: Uint8Array }): void {
    const p = f.payload;
    if (f.type === FrameType.recvPacket && p.length >= KEY_LEN) {
      // The common case, without building a message object: source key ‖ packet.
      this.counters.packetsIn++;
      this.counters.bytesIn += p.length - KEY_LEN;
      this.emit('packet', p.subarray(0, KEY_LEN), p.subarray(KEY_LEN));
      return;
    }
    const r = parseServerMessage(f);
    if (!r.ok) {
      if (r.error === 'unknown') this.counters.unknownFrames++;
      else this.counters.bogusFrames++;
      return;
    }
    const m = r.msg;
    switch (m.type) {
      case 'server-info': {
        const info = parseServerInfo(m.payload, this.shared!);
        if (typeof info === 'string') { this.fail(s, `invalid server info frame: ${info}`, true); return; }
        this.setRateLimit(info);
        if (this.phase === 'server-info') this.onHandshakeVerified();
        return;
      }
      case 'recv-packet':
        this.counters.packetsIn++;
        this.counters.bytesIn += m.data.length;
        this.emit('packet', m.source, m.data);
        return;
      case 'ping':
        s.write(encodePingPong(FrameType.pong, m.data));
        this.counters.pingsAnswered++;
        return;
      case 'pong': {
        const i = this.pings.findIndex((p) => equalBytes(p.data, m.data));
        if (i >= 0) {
          const [p] = this.pings.splice(i, 1);
          clearTimeout(p!.timer);
          p!.resolve(performance.now() - p!.start);
        }
        this.emit('pong', m.data);
        return;
      }
      case 'keep-alive': this.emit('keep-alive'); return;
      case 'peer-gone': this.emit('peer-gone', m.peer, m.reason); return;
      case 'peer-present': this.emit('peer-present', m.peer); return;
      case 'health': this.emit('health', m.problem); return;
      case 'restarting':
        this.restartHint = { reconnectInMs: m.reconnectInMs, until: Date.now() + m.reconnectInMs + m.tryForMs };
        this.emit('restarting', m.reconnectInMs, m.tryForMs);
        return;
      case 'server-key':
        return; // a late ServerKey (e.g. after fast start) is ignored, as derp.Client.Recv does
    }
  }

  /** ClientInfo is sent: the connection carries packets from now on (the server reads them after it). */
  private onConnected(s: Socket): void {
    clearTimeout(this.connectTimer);
    this.connectTimer = undefined;
    this._state = 'connected';
    this.connGen++;
    this.counters.connects++;
    if (this.preferred) s.write(encodeNotePreferred(true));
    this.armWriteTimer(s);
    this.log(`connected to ${this.url.href} (gen ${this.connGen})`);
    this.emit('connected', {
      serverKey: this._serverKey!, connGen: this.connGen,
      localAddress: s.localAddress ?? '', localPort: s.localPort ?? 0,
    });
  }

  /** A good ServerInfo came: the handshake is complete, and the reconnect backoff starts over. */
  private onHandshakeVerified(): void {
    this.phase = 'open';
    this.attempt = 0;
    this.restartHint = undefined;
    if (this.sameFailures > 1) this.log(`connected after ${this.sameFailures} failed attempts (${this.lastFailure})`);
    this.sameFailures = 0;
    this.lastFailure = '';
  }

  private setRateLimit(info: ServerInfo): void {
    this.bucket = info.tokenBucketBytesPerSecond > 0
      ? { rate: info.tokenBucketBytesPerSecond, burst: info.tokenBucketBytesBurst, tokens: info.tokenBucketBytesBurst, at: performance.now() }
      : undefined;
  }

  private takeTokens(n: number): boolean {
    const b = this.bucket;
    if (!b) return true;
    const now = performance.now();
    b.tokens = Math.min(b.burst, b.tokens + ((now - b.at) / 1000) * b.rate);
    b.at = now;
    if (b.tokens < n) return false;
    b.tokens -= n;
    return true;
  }

  private fail(s: Socket, reason: string, protocolError: boolean): void {
    if (s !== this.socket) return;
    if (protocolError) this.counters.protocolErrors++;
    this.onDown(s, reason);
  }

  private onDown(s: Socket, reason: string): void {
    if (s !== this.socket || this._state === 'closed') return;
    this.socket = undefined;
    s.destroy();
    const wasConnected = this._state === 'connected';
    const verified = this.phase === 'open';
    clearTimeout(this.connectTimer);
    clearTimeout(this.dialTimer);
    clearTimeout(this.readTimer);
    clearInterval(this.writeTimer);
    this.connectTimer = this.dialTimer = this.readTimer = this.writeTimer = undefined;
    this.failPings(`derp: connection lost: ${reason}`);
    if (wasConnected && verified) {
      this.counters.disconnects++;
      this.log(`disconnected: ${reason}`);
      this.emit('disconnected', reason);
    } else {
      // Usable before its ServerInfo, which then never came right: users saw it up, so it is down
      // again for them; for the counters and the backoff it is a failed connect.
      if (wasConnected) this.emit('disconnected', reason);
      this.counters.connectFailures++;
      // The same failure again and again (the network is down): logged once, then counted.
      const same = reason.replace(/ - Local .*$/, '') === this.lastFailure;
      this.sameFailures = same ? this.sameFailures + 1 : 1;
      this.lastFailure = reason.replace(/ - Local .*$/, '');
      if (this.sameFailures === 1) this.log(`connect failed: ${reason}`);
      else if (this.sameFailures === 2) this.log('connect failed again the same way; retrying quietly until something changes');
    }
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    this._state = 'waiting';
    let delay: number;
    const hint = this.restartHint;
    const initial = this.opts.backoffInitialMs ?? 100;
    if (hint !== undefined && Date.now() < hint.until) {
      // The server said it is restarting: first try after reconnectIn, then retry briskly until tryFor ends.
      delay = this.attempt === 0 ? hint.reconnectInMs : initial;
    } else {
      const max = this.opts.backoffMaxMs ?? 5000;
      const base = Math.min(max, initial * 2 ** Math.min(this.attempt, 30));
      delay = base / 2 + (base / 2) * this.random(); // jitter in [base/2, base)
    }
    this.attempt++;
    this.armRetry(delay);
  }

  /** When the pending reconnect fires (performance.now() ms). */
  private retryDueAt = Infinity;

  private armRetry(delay: number): void {
    this.retryDueAt = performance.now() + delay;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      this.retryDueAt = Infinity;
      if (this._state === 'waiting') this.dial();
    }, delay);
  }
}

/** tlsdial.SetConfigExpectedCertHash: the leaf's DER hash, validity dates and (for names) the host. */
function checkPinnedCert(s: TLSSocket, wantSha256Hex: string, hostname: string | undefined): string | undefined {
  const cert = s.getPeerX509Certificate();
  if (!cert) return 'expected cert not presented';
  if (createHash('sha256').update(cert.raw).digest('hex') !== wantSha256Hex) return 'cert hash does not match expected cert hash';
  const now = Date.now();
  if (now > Date.parse(cert.validTo)) return `cert expired ${cert.validTo}`;
  if (now < Date.parse(cert.validFrom)) return `cert not yet valid until ${cert.validFrom}; is your clock correct?`;
  if (hostname !== undefined && cert.checkHost(hostname) === undefined) return `cert does not match server name ${JSON.stringify(hostname)}`;
  return undefined;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}
