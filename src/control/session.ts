// ControlSession: the one Noise + HTTP/2 connection a client keeps to its control server, and the
// POST requests made on it. Like Tailscale (MaxConnsPerHost: 1) every request shares the
// connection; it is dialled on first use and again after it breaks. The server key comes from
// GET /key once per session, is checked against a pinned key, and is fetched again after a failed
// handshake. Protocol meaning (register, map) lives in client.ts.
import http2 from 'node:http2';
import { formatNodePublic, keysEqual, type MachinePublic, type NodePublic, type PrivateKey } from './keys.ts';
import { dialControl, fetchServerKey, TransportError, type ControlConnection } from './ts2021.ts';
import { ControlError, ControlErrorCode, toControlError } from './errors.ts';
import type { TcpDialer } from '../net/tcp.ts';
import { timeline } from '../util/timeline.ts';

/** Largest reply read whole (register, lite update); headscale caps request bodies the same. */
export const MAX_REPLY = 1 << 20;

/** Options for {@link ControlSession}. */
export interface ControlSessionOptions {
  /** Control server URL. */
  serverUrl: string;
  /** Machine private key (Noise static key). */
  machineKey: PrivateKey;
  /** Node public key, sent as the Ts-Lb hint header. */
  nodePublic: NodePublic;
  /** Capability version (Noise protocol version and /key?v=). */
  capVer: number;
  /** Pinned server Noise key. */
  pinned?: MachinePublic;
  /** Extra CA file for https. */
  caFile?: string;
  /** Connect and request timeout, ms. */
  timeoutMs?: number;
  /** Makes the TCP connections (marked ones in the agent); default Node's own. */
  dial?: TcpDialer;
  /** Log sink. */
  log: (line: string) => void;
  /** GET /key already on its way (fetchServerKey with the same options); fetched again if it fails. */
  keyAhead?: Promise<MachinePublic>;
}

/** Called synchronously with the response headers; must attach its stream readers right there. */
export type OnResponse = (status: number, stream: http2.ClientHttp2Stream, conn: ControlConnection) => void;

/** Resolves like p, or rejects with code closed as soon as the signal aborts. */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal, what: string): Promise<T> {
  if (signal.aborted) return Promise.reject(new ControlError(ControlErrorCode.closed, `${what}: cancelled`, { retryable: false }));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new ControlError(ControlErrorCode.closed, `${what}: cancelled`, { retryable: false }));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => { signal.removeEventListener('abort', onAbort); resolve(v); },
      (e: unknown) => { signal.removeEventListener('abort', onAbort); reject(e); },
    );
  });
}

/** Reads a whole (small) response body; attaches its listeners synchronously. */
export function readBody(stream: http2.ClientHttp2Stream, serverUrl: string, limit = MAX_REPLY): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let n = 0;
    stream.on('data', (c: Buffer) => {
      n += c.length;
      if (n > limit) {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        reject(new ControlError(ControlErrorCode.protocolError, `control server reply larger than ${limit} bytes; retrying may help`, { retryable: true }));
        return;
      }
      parts.push(c);
    });
    stream.once('end', () => resolve(Buffer.concat(parts)));
    stream.once('error', (e) => reject(toControlError(e, serverUrl)));
  });
}

/** The shared connection to one control server. */
export class ControlSession {
  private readonly opts: ControlSessionOptions;
  private cachedServerKey: MachinePublic | undefined;
  private conn: ControlConnection | undefined;
  private connecting: Promise<ControlConnection> | undefined;
  private closed = false;
  private keyAhead: Promise<MachinePublic> | undefined;

  constructor(opts: ControlSessionOptions) {
    this.opts = opts;
    this.keyAhead = opts.keyAhead;
    this.keyAhead?.catch(() => {}); // fetched again when used
  }

  /** The server URL. */
  get serverUrl(): string {
    return this.opts.serverUrl;
  }

  /**
   * The server's Noise public key from GET /key (cached). Throws server_key_mismatch when a key
   * was pinned and the server presents another, server_unreachable when it cannot be fetched.
   */
  async serverKey(): Promise<MachinePublic> {
    if (this.cachedServerKey) return this.cachedServerKey;
    timeline('control: fetching /key');
    let k: MachinePublic;
    const ahead = this.keyAhead;
    this.keyAhead = undefined;
    try {
      const fetch = (): Promise<MachinePublic> => fetchServerKey({ url: this.opts.serverUrl, ...this.endpointOpts() }, this.opts.capVer);
      k = await (ahead ? ahead.catch(fetch) : fetch());
    } catch (e) {
      throw toControlError(e, this.opts.serverUrl);
    }
    if (this.opts.pinned && !keysEqual(k, this.opts.pinned)) {
      throw new ControlError(ControlErrorCode.serverKeyMismatch,
        `control server ${this.opts.serverUrl} presents a different Noise key than the pinned one: if the server was reinstalled, forget the pinned key (remove serverKey from the state file); otherwise do not connect; retrying will not help`,
        { retryable: false });
    }
    this.cachedServerKey = k;
    return k;
  }

  private endpointOpts(): { caFile?: string; timeoutMs?: number; dial?: TcpDialer } {
    return {
      ...(this.opts.dial === undefined ? {} : { dial: this.opts.dial }),
      ...(this.opts.caFile === undefined ? {} : { caFile: this.opts.caFile }),
      ...(this.opts.timeoutMs === undefined ? {} : { timeoutMs: this.opts.timeoutMs }),
    };
  }

  /**
   * Dials now (GET /key and the Noise handshake) so the first request finds the connection up.
   * A failure is left for that request to meet and report: it dials again.
   */
  async connect(): Promise<void> {
    await this.connection();
  }

  /** The live connection, dialling one if needed (one dial at a time). */
  private async connection(): Promise<ControlConnection> {
    if (this.closed) throw new ControlError(ControlErrorCode.closed, 'control client is closed', { retryable: false });
    if (this.conn && !this.conn.session.closed && !this.conn.session.destroyed) return this.conn;
    this.conn = undefined;
    if (!this.connecting) {
      this.connecting = this.dial().finally(() => { this.connecting = undefined; });
    }
    return this.connecting;
  }

  private async dial(): Promise<ControlConnection> {
    const serverKey = await this.serverKey();
    let c: ControlConnection;
    try {
      c = await dialControl({ url: this.opts.serverUrl, serverKey, machinePrivate: this.opts.machineKey, capVer: this.opts.capVer, ...this.endpointOpts() });
    } catch (e) {
      if (e instanceof TransportError && e.stage === 'handshake') this.cachedServerKey = undefined; // fetch again next time
      throw toControlError(e, this.opts.serverUrl);
    }
    this.opts.log(`connected to ${this.opts.serverUrl} over ts2021 (capver ${this.opts.capVer})`);
    timeline('control: noise connected');
    const drop = (): void => {
      if (this.conn === c) this.conn = undefined;
    };
    c.session.on('close', drop);
    c.session.on('goaway', drop);
    c.session.on('error', (e: Error) => {
      this.opts.log(`control connection error: ${e.message}`);
      drop();
    });
    if (this.closed) {
      c.close();
      throw new ControlError(ControlErrorCode.closed, 'control client is closed', { retryable: false });
    }
    this.conn = c;
    return c;
  }

  /** Drops a connection (the next request redials). */
  reset(c: ControlConnection | undefined): void {
    if (!c) return;
    if (this.conn === c) this.conn = undefined;
    c.close();
  }

  /**
   * POSTs a JSON body. `onResponse` runs synchronously when the response headers arrive and must
   * attach its readers right there: Node may end an empty body on the next tick, before any
   * awaiting code would run. The timeout covers the wait for the headers only.
   */
  async post(path: string, body: unknown, timeoutMs: number | undefined, onResponse: OnResponse, signal?: AbortSignal, onSent?: () => void): Promise<void> {
    const conn = await (signal ? raceAbort(this.connection(), signal, path) : this.connection());
    if (signal?.aborted) throw new ControlError(ControlErrorCode.closed, `${path}: cancelled`, { retryable: false });
    const data = Buffer.from(JSON.stringify(body), 'utf8');
    return new Promise((resolve, reject) => {
      let stream: http2.ClientHttp2Stream;
      try {
        stream = conn.session.request({
          ':method': 'POST',
          ':path': path,
          'content-type': 'application/json',
          'ts-lb': formatNodePublic(this.opts.nodePublic),
        });
      } catch (e) {
        this.reset(conn);
        reject(toControlError(e, this.opts.serverUrl));
        return;
      }
      let timer: NodeJS.Timeout | undefined;
      if (timeoutMs !== undefined && timeoutMs > 0) {
        timer = setTimeout(() => {
          signal?.removeEventListener('abort', onAbort);
          stream.close(http2.constants.NGHTTP2_CANCEL);
          this.reset(conn);
          reject(new ControlError(ControlErrorCode.serverError,
            `control server ${this.opts.serverUrl} did not answer ${path} within ${timeoutMs} ms; retrying may help`, { retryable: true }));
        }, timeoutMs);
      }
      const onAbort = (): void => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        onError(new ControlError(ControlErrorCode.closed, `${path}: cancelled`, { retryable: false }));
      };
      const onError = (e: Error): void => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        reject(toControlError(e, this.opts.serverUrl));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const onClose = (): void => onError(new Error(`${path}: stream closed before a response (HTTP/2 code ${stream.rstCode})`));
      stream.once('error', onError);
      stream.once('close', onClose);
      stream.once('response', (headers) => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        stream.off('error', onError);
        stream.off('close', onClose);
        onResponse(Number(headers[':status'] ?? 0), stream, conn);
        resolve();
      });
      stream.end(data);
      onSent?.();
    });
  }

  /** POSTs and reads the whole (small) reply as text. */
  async postForBody(path: string, body: unknown, timeoutMs: number | undefined, onSent?: () => void): Promise<{ status: number; body: string }> {
    let status = 0;
    let reply: Promise<Buffer> | undefined;
    await this.post(path, body, timeoutMs, (st, stream) => {
      status = st;
      reply = readBody(stream, this.opts.serverUrl);
    }, undefined, onSent);
    return { status, body: (await reply!).toString('utf8') };
  }

  /**
   * Closes the connection; pending requests fail, later ones fail with code closed. A dial still
   * under way closes its connection when it completes (see dial) without being waited for.
   */
  close(): void {
    this.closed = true;
    const c = this.conn;
    this.conn = undefined;
    c?.close();
  }
}
