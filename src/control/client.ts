// ControlClient: register, log out, stream the network map and report endpoints to a Tailscale-
// compatible control server (headscale v0.29.2) over TS2021 (ts2021.ts). control-plane.md 3, 4, 6, 10.
//
// One Noise + HTTP/2 connection is shared by every request (as Tailscale's MaxConnsPerHost: 1) and
// redialled on demand after it breaks. Requests:
//   POST /machine/register  RegisterRequest → RegisterResponse (JSON; failures in .Error)
//   POST /machine/map       MapRequest{Stream:true}  → [u32 little-endian length][JSON MapResponse]…
//   POST /machine/map       MapRequest{Stream:false, OmitPeers:true} → empty 200 (lite update)
// Compress is never sent: Node 20 has no zstd, and headscale then sends plain JSON.
import http from 'node:http';
import https from 'node:https';
import http2 from 'node:http2';
import { randomInt } from 'node:crypto';
import {
  formatDiscoPublic, formatNodePublic, generateKeyPair, parseMachinePublic, publicKeyOf,
  type DiscoPublic, type MachinePublic, type NodePublic, type PrivateKey,
} from './keys.ts';
import { fetchServerKey, type ControlConnection } from './ts2021.ts';
import { ControlError, ControlErrorCode, registerError, toControlError } from './errors.ts';
import { ControlSession, readBody } from './session.ts';
import { buildHostinfo } from './hostinfo.ts';
import { NetworkMap, type MapDelta } from './netmap.ts';
import { MapFrameReader } from './mapframe.ts';
import { EndpointType, type Hostinfo, type MapRequest, type MapResponse, type RegisterRequest, type RegisterResponse, type WireUser } from './wire.ts';
import type { TcpDialer } from '../net/tcp.ts';
import { timeline, timelineOn } from '../util/timeline.ts';

/**
 * The capability version meshd speaks, sent in /key?v=, the Noise header and prologue, and every
 * request's Version. 138 = Tailscale v1.98, the newest in headscale v0.29.2's tables (which accept
 * >= 113). control-plane.md 5.
 */
export const CAPABILITY_VERSION = 138;
/** Tailscale's map-poll watchdog: no message for this long breaks the stream (TS direct.go watchdogTimeout). */
export const MAP_WATCHDOG_MS = 120_000;
/**
 * First delay of the map-stream reconnect backoff: exponential from here, jitter in [d/2, d],
 * capped at BACKOFF_MAX_MS. (Tailscale's util/backoff grows n²·10 ms with 0.5–1.5× jitter and the
 * same 30 s cap for its mapRoutine; exponential from 1 s backs off harder in the first seconds.)
 */
export const BACKOFF_INITIAL_MS = 1_000;
/** Cap of the reconnect backoff. */
export const BACKOFF_MAX_MS = 30_000;
/** Expiry sent to log out (Tailscale sends Unix time 123). */
export const LOGOUT_EXPIRY = '1970-01-01T00:02:03Z';
/** Map messages this long or longer are applied an event-loop turn after they are parsed (~170 peers). */
export const YIELD_MESSAGE_BYTES = 100_000;

/** A logging function; receives one line without the component prefix. */
export type LogFn = (line: string) => void;

/** Options for {@link ControlClient}. */
export interface ControlClientOptions {
  /** Control server URL, `http://host:port` or `https://host[:port]`. */
  serverUrl: string;
  /** Machine private key (the Noise identity toward control; persist it). */
  machineKey: PrivateKey;
  /** Node private key (the WireGuard key; persist it). */
  nodeKey: PrivateKey;
  /** Disco public key; a fresh one is made per client when absent (as tailscaled does per process). */
  discoKey?: DiscoPublic;
  /** Pinned server Noise key (`mkey:` text or bytes); a different key from /key is an error. */
  serverKey?: MachinePublic | string;
  /** Extra CA file for https servers. */
  caFile?: string;
  /** GET /key already on its way ({@link fetchKeyAhead} with the same server, CA file and dialer). */
  keyAhead?: Promise<MachinePublic>;
  /** Hostinfo fields overriding the defaults (hostname, RoutableIPs, NetInfo…). */
  hostinfo?: Hostinfo;
  /** Capability version override (debug); default {@link CAPABILITY_VERSION}. */
  capVer?: number;
  /** Timeout for connecting and for one-shot requests, ms; default 15 s. */
  timeoutMs?: number;
  /** Log sink; default silent. The auth key is never passed to it. */
  log?: LogFn;
  /** Makes the TCP connections to control (the agent's carry SO_MARK: src/net/tcp.ts). */
  dial?: TcpDialer;
}

/** Options for {@link ControlClient.register}. */
export interface RegisterOptions {
  /** Pre-auth key. Omit to re-register a known node, or for an interactive login (AuthURL). */
  authKey?: string;
  /** Hostinfo fields to set before registering (kept for later requests). */
  hostinfo?: Hostinfo;
  /** Ask for an ephemeral node (headscale ignores this; ephemerality comes from the key). */
  ephemeral?: boolean;
  /** The AuthURL of an earlier answer: waits until that interactive login completes. */
  followup?: string;
  /** Called once the request is on its way (the wait for control's answer starts). */
  onSent?: () => void;
}

/** A user or login as control reported it. */
export interface ControlUser {
  readonly id: number;
  readonly loginName: string;
  readonly displayName: string;
}

/** What a register (or logout) call learned about this node. */
export interface RegisterResult {
  /** Control lets this node on the tailnet. */
  readonly machineAuthorized: boolean;
  /** The node key is expired (after logout, or control wants a new node key). */
  readonly nodeKeyExpired: boolean;
  /**
   * Logout only: control answered MachineAuthorized false, which headscale (auth.go handleLogout)
   * sends when it deleted an ephemeral node, and also when the node was already expired before
   * this logout; a null body (deleted during a combined logout + auth key) counts too.
   */
  readonly deleted: boolean;
  /** Owning user. */
  readonly user: ControlUser | undefined;
  /** Login. */
  readonly login: ControlUser | undefined;
  /** Set when control wants an interactive login: open it, then register({ followup }). */
  readonly authUrl: string | undefined;
  /** The response as received (null for a deleted ephemeral node). */
  readonly raw: RegisterResponse | null;
}

/** An endpoint to report: "ip:port" text (type local) or with an explicit type. */
export type EndpointInput = string | { readonly addr: string; readonly type?: EndpointType };

/** Options for {@link ControlClient.streamMap}. */
export interface StreamMapOptions {
  /** Called with the full map: after the first message of every stream (also after a reconnect). */
  onMap(map: NetworkMap): void;
  /** Called after each later message (deltas and keep-alives), with the updated map. */
  onDelta?(delta: MapDelta, map: NetworkMap): void;
  /** Called when the stream broke and will be retried after `retryInMs`, or gave up (undefined). */
  onError?(err: ControlError, retryInMs: number | undefined): void;
  /** Endpoints to report in the poll request (kept for later requests). */
  endpoints?: readonly EndpointInput[];
  /** Hostinfo fields to set (kept for later requests). */
  hostinfo?: Hostinfo;
  /** Watchdog, ms; default {@link MAP_WATCHDOG_MS}. */
  watchdogMs?: number;
  /** Reconnect backoff, ms; defaults {@link BACKOFF_INITIAL_MS} / {@link BACKOFF_MAX_MS}. */
  backoffInitialMs?: number;
  /** Cap of the reconnect backoff, ms. */
  backoffMaxMs?: number;
}

/** A running map stream. */
export interface MapStream {
  /** The current map (a new object after each reconnect; undefined before the first full map). */
  readonly map: NetworkMap | undefined;
  /** Reconnects so far. */
  readonly reconnects: number;
  /** Stops the stream; resolves when it has stopped. */
  close(): Promise<void>;
  /** Ends the current poll; the stream reconnects at once and delivers a fresh full map (onMap). */
  refresh(): void;
  /** Resolves after close(); rejects with a ControlError when the stream gave up (not retryable). */
  readonly done: Promise<void>;
}

function toUser(u: WireUser | undefined): ControlUser | undefined {
  if (!u) return undefined;
  return { id: u.ID, loginName: u.LoginName ?? u.DisplayName ?? '', displayName: u.DisplayName ?? u.LoginName ?? '' };
}

function normalizeEndpoints(eps: readonly EndpointInput[]): { Endpoints: string[]; EndpointTypes: number[] } {
  const Endpoints: string[] = [];
  const EndpointTypes: number[] = [];
  for (const e of eps) {
    if (typeof e === 'string') {
      Endpoints.push(e);
      EndpointTypes.push(EndpointType.local);
    } else {
      Endpoints.push(e.addr);
      EndpointTypes.push(e.type ?? EndpointType.local);
    }
  }
  return { Endpoints, EndpointTypes };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) { resolve(); return; }
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/** Backoff delay for attempt n (0-based): exponential, capped, with jitter in [d/2, d]. */
export function backoffDelay(n: number, initialMs: number, maxMs: number): number {
  const d = Math.min(maxMs, initialMs * 2 ** Math.min(n, 30));
  return Math.round(d / 2 + (randomInt(0, 1_000_000) / 1_000_000) * (d / 2));
}

/** Client for one node's session with a control server. */
export class ControlClient {
  /** This node's public key. */
  readonly nodePublic: NodePublic;
  /** This machine's public key. */
  readonly machinePublic: MachinePublic;
  /** The disco key reported to control. */
  readonly discoPublic: DiscoPublic;
  /** Capability version in use. */
  readonly capVer: number;
  private readonly opts: ControlClientOptions;
  private readonly log: LogFn;
  private hostinfoOverrides: Hostinfo;
  private endpoints: readonly EndpointInput[] = [];
  private readonly streams = new Set<MapStream>();
  /** MESHD_TIMELINE: map messages marked so far. */
  private mapMarks = 0;
  private readonly session: ControlSession;

  constructor(opts: ControlClientOptions) {
    this.opts = opts;
    this.capVer = opts.capVer ?? CAPABILITY_VERSION;
    this.nodePublic = publicKeyOf<NodePublic>(opts.nodeKey);
    this.machinePublic = publicKeyOf<MachinePublic>(opts.machineKey);
    this.discoPublic = opts.discoKey ?? generateKeyPair<DiscoPublic>().publicKey;
    const pinned = typeof opts.serverKey === 'string' ? parseMachinePublic(opts.serverKey) : opts.serverKey;
    this.log = opts.log ?? (() => {});
    this.hostinfoOverrides = { ...opts.hostinfo };
    this.session = new ControlSession({
      serverUrl: opts.serverUrl,
      machineKey: opts.machineKey,
      nodePublic: this.nodePublic,
      capVer: this.capVer,
      log: this.log,
      ...(pinned === undefined ? {} : { pinned }),
      ...(opts.caFile === undefined ? {} : { caFile: opts.caFile }),
      ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
      ...(opts.dial === undefined ? {} : { dial: opts.dial }),
      ...(opts.keyAhead === undefined ? {} : { keyAhead: opts.keyAhead }),
    });
  }

  /** The full Hostinfo sent with every request. */
  get hostinfo(): Hostinfo {
    return buildHostinfo(this.hostinfoOverrides);
  }

  /** Merges Hostinfo fields into what later requests send (does not send anything by itself). */
  setHostinfo(h: Hostinfo): void {
    this.hostinfoOverrides = { ...this.hostinfoOverrides, ...h };
  }

  /**
   * The server's Noise public key from GET /key (cached). Throws server_key_mismatch when a key
   * was pinned and the server presents another, server_unreachable when it cannot be fetched.
   */
  serverKey(): Promise<MachinePublic> {
    return this.session.serverKey();
  }

  /**
   * Opens the connection to control ahead of the first request (the agent `up` starts, while it
   * waits for `up`'s request: src/daemon/agent.ts prepareControl). Never rejects: a failure is
   * the first request's to report.
   */
  connect(): Promise<void> {
    return this.session.connect().catch((e: Error) => this.log(`connecting ahead: ${e.message}`));
  }

  /** Turns a non-200 status into a ControlError. */
  private statusError(path: string, status: number, text: string): ControlError {
    const t = text.trim().slice(0, 200);
    if (status === 400 && /unsupported client version/i.test(t)) {
      return new ControlError(ControlErrorCode.versionRejected,
        `control server rejects capability version ${this.capVer} (${JSON.stringify(t)}): upgrade meshd; retrying will not help`,
        { retryable: false, serverMessage: t });
    }
    if (status === 404 && path === '/machine/map') {
      return new ControlError(ControlErrorCode.nodeNotFound,
        `control server does not know this node (${JSON.stringify(t)}): register again with an auth key; retrying will not help`,
        { retryable: false, serverMessage: t });
    }
    if (status === 401 || status === 403) {
      return new ControlError(ControlErrorCode.registrationRejected,
        `control server refused ${path} with HTTP ${status} (${JSON.stringify(t)}); retrying will not help`,
        { retryable: false, serverMessage: t });
    }
    return new ControlError(ControlErrorCode.serverError,
      `control server answered ${path} with HTTP ${status} (${JSON.stringify(t)}); retrying may help`,
      { retryable: status >= 500 || status === 429, serverMessage: t });
  }

  private async registerRequest(req: RegisterRequest, timeoutMs: number | undefined, onSent?: () => void): Promise<RegisterResult> {
    const { status, body } = await this.session.postForBody('/machine/register', req, timeoutMs, onSent);
    if (status !== 200) throw this.statusError('/machine/register', status, body);
    let r: RegisterResponse | null;
    try {
      r = JSON.parse(body) as RegisterResponse | null;
    } catch {
      throw new ControlError(ControlErrorCode.protocolError, `control server sent a register reply that is not JSON; retrying may help`, { retryable: true });
    }
    if (r === null) {
      return { machineAuthorized: false, nodeKeyExpired: true, deleted: true, user: undefined, login: undefined, authUrl: undefined, raw: null };
    }
    if (r.Error) throw registerError(r.Error);
    return {
      machineAuthorized: r.MachineAuthorized ?? false,
      nodeKeyExpired: r.NodeKeyExpired ?? false,
      deleted: req.Expiry !== undefined && !r.MachineAuthorized,
      user: toUser(r.User),
      login: toUser(r.Login),
      authUrl: r.AuthURL || undefined,
      raw: r,
    };
  }

  /**
   * Registers (or re-registers) this node key. With an auth key the node is created or updated;
   * without one a known node gets its current state back. Throws ControlError: auth_key_invalid,
   * auth_key_expired, auth_key_used, registration_rejected, version_rejected, server_unreachable,
   * server_key_mismatch, handshake_failed, server_error.
   */
  async register(opts: RegisterOptions = {}): Promise<RegisterResult> {
    if (opts.hostinfo) this.setHostinfo(opts.hostinfo);
    const req: RegisterRequest = {
      Version: this.capVer,
      NodeKey: formatNodePublic(this.nodePublic),
      Hostinfo: this.hostinfo,
      ...(opts.authKey ? { Auth: { AuthKey: opts.authKey } } : {}),
      ...(opts.ephemeral ? { Ephemeral: true } : {}),
      ...(opts.followup ? { Followup: opts.followup } : {}),
    };
    this.log(`registering node ${req.NodeKey.slice(0, 16)}…${opts.authKey ? ' with an auth key' : ''}`);
    // A followup waits for a human; no timeout then.
    timeline('control: register request');
    const r = await this.registerRequest(req, opts.followup ? undefined : (this.opts.timeoutMs ?? 30_000), opts.onSent);
    this.log(`registered: authorized=${r.machineAuthorized} user=${r.user?.loginName ?? '-'}${r.authUrl ? ` authURL=${r.authUrl}` : ''}`);
    return r;
  }

  /**
   * Logs out: expires the node key on the server (an ephemeral node is deleted). Stops running map
   * streams first. The result has nodeKeyExpired true; a new node key is needed to log in again.
   */
  async logout(): Promise<RegisterResult> {
    await Promise.all([...this.streams].map((s) => s.close()));
    const req: RegisterRequest = {
      Version: this.capVer,
      NodeKey: formatNodePublic(this.nodePublic),
      Hostinfo: this.hostinfo,
      Expiry: LOGOUT_EXPIRY,
    };
    const r = await this.registerRequest(req, this.opts.timeoutMs ?? 30_000);
    this.log(`logged out${r.deleted ? ' (node deleted)' : ''}`);
    return r;
  }

  private mapRequest(stream: boolean): MapRequest {
    const eps = normalizeEndpoints(this.endpoints);
    return {
      Version: this.capVer,
      KeepAlive: stream,
      NodeKey: formatNodePublic(this.nodePublic),
      DiscoKey: formatDiscoPublic(this.discoPublic),
      Stream: stream,
      ...(stream ? {} : { OmitPeers: true }),
      Hostinfo: this.hostinfo,
      ...(eps.Endpoints.length > 0 ? eps : {}),
    };
  }

  /**
   * Reports endpoints (and the current Hostinfo) with a lite map request (Stream false,
   * OmitPeers true); headscale answers with an empty 200. Later requests keep these endpoints.
   */
  async updateEndpoints(endpoints: readonly EndpointInput[], opts: { hostinfo?: Hostinfo } = {}): Promise<void> {
    this.endpoints = [...endpoints];
    if (opts.hostinfo) this.setHostinfo(opts.hostinfo);
    timeline(`control: lite MapRequest (${endpoints.length} endpoints)`);
    const { status, body } = await this.session.postForBody('/machine/map', this.mapRequest(false), this.opts.timeoutMs ?? 30_000);
    if (status !== 200) throw this.statusError('/machine/map', status, body);
    timeline('control: lite MapRequest answered');
  }

  /** Sends changed Hostinfo (e.g. RoutableIPs) with a lite map request, keeping the endpoints last reported. */
  async updateHostinfo(h: Hostinfo): Promise<void> {
    await this.updateEndpoints(this.endpoints, { hostinfo: h });
  }

  /**
   * Starts the streaming map poll. Calls onMap with the full map first (and again after every
   * reconnect), then onDelta per message. Reconnects with exponential backoff and jitter when the
   * stream breaks or stays silent past the watchdog; gives up only on errors a retry cannot fix
   * (node_not_found, version_rejected, server_key_mismatch…), rejecting `done`.
   */
  streamMap(opts: StreamMapOptions): MapStream {
    if (opts.endpoints) this.endpoints = [...opts.endpoints];
    if (opts.hostinfo) this.setHostinfo(opts.hostinfo);
    const abort = new AbortController();
    const watchdogMs = opts.watchdogMs ?? MAP_WATCHDOG_MS;
    const initial = opts.backoffInitialMs ?? BACKOFF_INITIAL_MS;
    const max = opts.backoffMaxMs ?? BACKOFF_MAX_MS;
    let current: NetworkMap | undefined;
    let reconnects = 0;
    let cancelPoll: (() => void) | undefined;

    const loop = async (): Promise<void> => {
      let attempt = 0;
      while (!abort.signal.aborted) {
        let err: ControlError;
        try {
          await this.pollOnce(opts, watchdogMs, abort.signal, (m) => {
            current = m;
            attempt = 0;
          }, (c) => { cancelPoll = c; });
          if (abort.signal.aborted) return;
          err = new ControlError(ControlErrorCode.serverError, 'control server ended the map stream; reconnecting', { retryable: true });
        } catch (e) {
          if (abort.signal.aborted) return;
          err = toControlError(e, this.opts.serverUrl);
        }
        if (!err.retryable) {
          opts.onError?.(err, undefined);
          throw err;
        }
        const delay = backoffDelay(attempt++, initial, max);
        this.log(`map stream: ${err.message}; retrying in ${delay} ms`);
        opts.onError?.(err, delay);
        await sleep(delay, abort.signal);
        reconnects++;
      }
    };

    const done = loop();
    const handle: MapStream = {
      get map() { return current; },
      get reconnects() { return reconnects; },
      refresh: () => { cancelPoll?.(); },
      close: async () => {
        abort.abort();
        cancelPoll?.();
        try {
          await done;
        } catch {
          // already reported through done
        }
        this.streams.delete(handle);
      },
      done: done.finally(() => this.streams.delete(handle)),
    };
    handle.done.catch(() => {}); // the caller may never look at done
    this.streams.add(handle);
    return handle;
  }

  /** One poll: request, then messages until the stream ends, breaks or the watchdog fires. */
  private async pollOnce(opts: StreamMapOptions, watchdogMs: number, signal: AbortSignal, onFull: (m: NetworkMap) => void, setCancel: (c: () => void) => void): Promise<void> {
    let status = 0;
    let errBody: Promise<Buffer> | undefined;
    let run: Promise<void> | undefined;
    timeline(`control: streaming MapRequest (${normalizeEndpoints(this.endpoints).Endpoints.length} endpoints)`);
    await this.session.post('/machine/map', this.mapRequest(true), this.opts.timeoutMs ?? 30_000, (st, stream, conn) => {
      status = st;
      if (st !== 200) errBody = readBody(stream, this.opts.serverUrl);
      else run = this.consumeMap(stream, conn, opts, watchdogMs, signal, onFull, setCancel);
    }, signal);
    if (status !== 200) throw this.statusError('/machine/map', status, (await errBody!).toString('utf8'));
    await run;
  }

  /** Reads length-prefixed MapResponses from a poll stream; listeners are attached synchronously. */
  private consumeMap(stream: http2.ClientHttp2Stream, conn: ControlConnection, opts: StreamMapOptions, watchdogMs: number, signal: AbortSignal, onFull: (m: NetworkMap) => void, setCancel: (c: () => void) => void): Promise<void> {
    const map = new NetworkMap();
    let gotFull = false;
    const pinged = new Set<string>();
    return new Promise<void>((resolve, reject) => {
      const frames = new MapFrameReader();
      let finished = false;
      let watchdog: NodeJS.Timeout | undefined;
      const finish = (e?: Error): void => {
        if (finished) return;
        finished = true;
        if (watchdog) clearTimeout(watchdog);
        signal.removeEventListener('abort', onAbort);
        if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        if (e) reject(e);
        else resolve();
      };
      const arm = (): void => {
        if (watchdog) clearTimeout(watchdog);
        watchdog = setTimeout(() => {
          // A silent stream may mean a dead connection under it: drop the whole connection.
          this.session.reset(conn);
          finish(new ControlError(ControlErrorCode.serverError,
            `no map message from ${this.opts.serverUrl} for ${watchdogMs} ms; reconnecting`, { retryable: true }));
        }, watchdogMs);
      };
      const onAbort = (): void => finish();
      if (signal.aborted) {
        // close() ran while the request was waiting for its headers.
        finish();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      setCancel(onAbort);
      arm();
      /** Parses and applies one message; false when the stream is finished. */
      const apply = (msg: MapResponse): boolean => {
        try {
          if (!gotFull && !msg.KeepAlive && !msg.Node) {
            throw new ControlError(ControlErrorCode.protocolError, 'first map message has no self node; reconnecting', { retryable: true });
          }
          const delta = map.apply(msg);
          if (timelineOn && !msg.KeepAlive && this.mapMarks++ < 20) {
            timeline(`control: map message${gotFull ? '' : ' (full)'}: ${map.peers.size} peers, self home ${map.self?.homeDERP ?? '-'}`);
          }
          if (delta.pingRequest) this.answerPing(delta.pingRequest.URL, pinged);
          if (!gotFull && !msg.KeepAlive) {
            gotFull = true;
            onFull(map);
            opts.onMap(map);
          } else if (gotFull) {
            opts.onDelta?.(delta, map);
          }
          return true;
        } catch (e) {
          finish(e instanceof ControlError ? e : toControlError(e, this.opts.serverUrl));
          return false;
        }
      };
      const parse = (text: string): MapResponse | undefined => {
        try {
          return JSON.parse(text) as MapResponse;
        } catch {
          finish(new ControlError(ControlErrorCode.protocolError, 'map message is not JSON (was compression negotiated?); reconnecting', { retryable: true }));
          return undefined;
        }
      };
      // A large message (a full map of thousands of peers) is parsed in one event-loop turn and
      // applied in the next, so forwarding, which shares the loop, gets a turn in between.
      // Messages stay in order: once one waits, the ones after it queue behind it.
      const queue: string[] = [];
      let draining: Promise<void> | undefined;
      const drain = async (): Promise<void> => {
        while (queue.length > 0 && !finished) {
          const text = queue.shift()!;
          const msg = parse(text);
          if (msg === undefined) break;
          if (text.length >= YIELD_MESSAGE_BYTES) await new Promise((r) => setImmediate(r));
          if (finished || !apply(msg)) break;
        }
        draining = undefined;
      };
      stream.on('data', (chunk: Buffer) => {
        if (finished) return;
        let texts: string[];
        try {
          texts = frames.feed(chunk);
        } catch (e) {
          finish(new ControlError(ControlErrorCode.protocolError, `${(e as Error).message}; reconnecting`, { retryable: true }));
          return;
        }
        for (const text of texts) {
          if (finished) return;
          arm();
          if (draining === undefined && text.length < YIELD_MESSAGE_BYTES) {
            const msg = parse(text);
            if (msg === undefined || !apply(msg)) return;
            continue;
          }
          queue.push(text);
          draining ??= drain();
        }
      });
      // An orderly end waits for the messages still queued.
      const finishAfterQueue = (e?: Error): void => {
        if (e || draining === undefined) finish(e);
        else void draining.then(() => finish());
      };
      stream.once('end', () => finishAfterQueue());
      stream.once('error', (e) => finish(toControlError(e, this.opts.serverUrl)));
      stream.once('close', () => finishAfterQueue(stream.rstCode && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR
        ? new ControlError(ControlErrorCode.serverError, `map stream reset (HTTP/2 code ${stream.rstCode}); reconnecting`, { retryable: true })
        : undefined));
    });
  }

  /** Answers a PingRequest with a plain HEAD to its URL (control-plane.md 4.4), once per URL. */
  private answerPing(url: string, seen: Set<string>): void {
    if (!url || seen.has(url)) return;
    seen.add(url);
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      return;
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return;
    const mod = u.protocol === 'https:' ? https : http;
    const req = mod.request(u, { method: 'HEAD', agent: false, timeout: 10_000 }, (res) => res.resume());
    req.on('timeout', () => req.destroy());
    req.on('error', (e) => this.log(`ping response to control failed: ${e.message}`));
    req.end();
  }

  /** Stops all map streams and closes the connection (which also fails any request in flight). */
  async close(): Promise<void> {
    const stopping = [...this.streams].map((st) => st.close());
    this.session.close();
    await Promise.all(stopping);
  }
}

/**
 * GET /key for a client not made yet (the agent, before its keys are loaded): pass the promise as
 * ControlClientOptions.keyAhead. Rejections are the client's to meet (it fetches again).
 */
export function fetchKeyAhead(opts: { serverUrl: string; caFile?: string | undefined; dial?: TcpDialer | undefined; timeoutMs?: number }): Promise<MachinePublic> {
  const p = fetchServerKey({
    url: opts.serverUrl, ...(opts.caFile ? { caFile: opts.caFile } : {}), ...(opts.dial ? { dial: opts.dial } : {}),
    ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
  }, CAPABILITY_VERSION);
  p.catch(() => {});
  return p;
}
