// A proxy's outgoing connection through the netstack, without node:stream: dialRelay() opens it,
// TcpRelay.relayWith(socket) then copies both ways between it and the client's host socket (a
// SOCKS5 or HTTP CONNECT). Behaviour is TcpStream.relayWith's (stream.ts): what the peer sends is
// gathered per loop turn into pooled buffers written to the socket directly, the socket's data goes
// into the send buffer (the socket pauses while it is full), the socket's end is our FIN, the
// peer's FIN ends the socket, a reset destroys it.
//
// Why not a TcpStream: a Duplex per connection costs its constructor, readable/writable states and
// events, and with net.Socket and TcpStream both running through node's stream functions, V8
// optimizes those for two object shapes and throws the code away ("wrong map") when the second
// shows up. In bench-netstack's connection storm, compiling (and recompiling) was ~40% of the
// agent's CPU in the third round of 500 connections.
import { TcpError, type Tcb, type TcpHandler } from './tcp.ts';
import type { Netstack } from './stack.ts';
import { formatAddr } from './ip.ts';
import { Gather, giveBack, type RelaySocket } from './stream.ts';


/** A handler for the moment between connect() and the relay taking the connection over. */
const NONE: TcpHandler = { onData() {}, onEnd() {}, onWritable() {}, onClose() {} };

/** One outgoing netstack connection a proxy relays with a client socket. */
export class TcpRelay implements TcpHandler {
  readonly tcb: Tcb;
  private readonly kick: () => void;
  /** The dial's outcome: null once established, else why it failed (called once). */
  private opened: ((err: TcpError | null) => void) | undefined;
  /** The client's socket, once relayWith() was called. */
  private host: RelaySocket | undefined;
  /** Received before relayWith() (a server that speaks first): written to the socket then. */
  private early: Buffer[] | undefined;
  private earlyLen = 0;
  /** The peer's FIN was handed on (or is, at relayWith). */
  private ended = false;
  /** The connection closed with an error before relayWith(). */
  private failed = false;
  /** This loop turn's received bytes (see Gather). */
  private readonly gather = new Gather((acc, len) => this.handOn(acc, len));
  /** Gathering buffers being written to the socket, in write order. */
  private readonly inflight: Buffer[] = [];
  /** Bytes waiting for room in the send buffer (the socket is paused meanwhile). */
  private pending: Buffer | undefined;
  private pendingOff = 0;
  /** Send our FIN once `pending` is in the send buffer. */
  private finAfterPending = false;

  constructor(tcb: Tcb, kick: () => void, opened?: (err: TcpError | null) => void) {
    this.tcb = tcb;
    this.kick = kick;
    this.opened = opened;
    tcb.handler = this;
  }

  /** Our address on the connection, as text (a SOCKS5 reply's BND.ADDR). */
  get localAddress(): string {
    return formatAddr(this.tcb.family, this.tcb.localAddr);
  }

  get localPort(): number {
    return this.tcb.localPort;
  }

  onEstablished(): void {
    const o = this.opened;
    this.opened = undefined;
    o?.(null);
  }

  onData(_c: Tcb, buf: Uint8Array, off: number, len: number): void {
    // Segments of one input batch are gathered and handed on once (one socket write, not one per segment).
    this.gather.add(buf, off, len);
    this.tcb.unread = this.held() + this.gather.len;
  }

  /** Received bytes past the gathering buffer that the window must still count. */
  private held(): number {
    const h = this.host;
    return h === undefined ? this.earlyLen : h.writableLength;
  }

  /** Hands the gathered bytes on: a socket write, or (before relayWith) the early list. */
  private handOn(acc: Buffer, len: number): void {
    const h = this.host;
    if (h === undefined) {
      (this.early ??= []).push(acc.subarray(0, len));
      this.earlyLen += len;
    } else if (h.destroyed || h.writableEnded) {
      giveBack(acc);
    } else {
      this.inflight.push(acc);
      h.write(acc.subarray(0, len), this.writtenBound);
    }
    this.tcb.unread = this.held();
  }

  /** A socket write finished: its buffer goes back to the pool, and the window may open. */
  private readonly writtenBound = (err?: Error | null): void => {
    const b = this.inflight.shift();
    if (b !== undefined && !err) giveBack(b);
    const t = this.tcb;
    if (!t.closed) { t.setUnread(this.held() + this.gather.len); this.kick(); }
  };

  onEnd(): void {
    this.endToHost();
  }

  /** Hands on what is gathered, then the peer's FIN (to the socket, or noted for relayWith). */
  private endToHost(): void {
    this.gather.flush();
    if (this.ended) return;
    this.ended = true;
    const h = this.host;
    if (h !== undefined && !h.destroyed && !h.writableEnded) h.end();
  }

  onWritable(): void {
    const p = this.pending;
    if (p === undefined) return;
    const t = this.tcb;
    this.pendingOff += t.write(p, this.pendingOff, p.length - this.pendingOff);
    if (this.pendingOff < p.length) return;
    this.pending = undefined;
    this.pendingOff = 0;
    if (this.finAfterPending) { this.finAfterPending = false; t.shutdown(); }
    this.kick();
    this.host?.resume();
  }

  onClose(_c: Tcb, err: TcpError | null): void {
    this.pending = undefined;
    const o = this.opened;
    if (o !== undefined) {
      this.opened = undefined;
      this.gather.drop();
      o(err ?? new TcpError('ECONNRESET', 'connection closed while opening'));
      return;
    }
    if (err) {
      this.gather.drop();
      this.failed = true;
      this.host?.destroy();
      return;
    }
    this.endToHost();
  }

  /** Queues bytes for the peer before the relay starts (a CONNECT's early data, a rewritten request head). */
  write(chunk: Uint8Array | string): boolean {
    const b = typeof chunk === 'string' ? Buffer.from(chunk, 'latin1') : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
    const t = this.tcb;
    if (t.closed) return false;
    if (this.pending !== undefined) {
      this.pending = Buffer.concat([this.pending.subarray(this.pendingOff), b]);
      this.pendingOff = 0;
      return false;
    }
    const n = t.write(b, 0, b.length);
    if (n < b.length) { this.pending = b; this.pendingOff = n; }
    this.kick();
    return n >= b.length;
  }

  /** Resets the connection (the client went away before the relay started, or the dial timed out). */
  destroy(): void {
    this.gather.drop();
    this.early = undefined;
    this.opened = undefined;
    const t = this.tcb;
    if (!t.closed && t.handler === this) { t.handler = NONE; t.abort(); this.kick(); }
  }

  /** Relays between this connection and the client's socket until both directions ended (see the file comment). */
  relayWith(sock: RelaySocket): void {
    this.host = sock;
    const early = this.early;
    this.early = undefined;
    this.earlyLen = 0;
    if (early !== undefined) for (const b of early) sock.write(b, noop);
    if (this.failed) { sock.destroy(); return; }
    this.tcb.unread = this.held() + this.gather.len;
    if (this.ended) sock.end();
    if (this.pending !== undefined) sock.pause();
    sock.on('data', (chunk) => this.fromHost(chunk));
    sock.on('end', () => this.hostEnded());
    sock.on('error', () => this.release());
    sock.on('close', () => this.release());
    if (this.pending === undefined) sock.resume();
  }

  private fromHost(chunk: Buffer): void {
    const t = this.tcb;
    if (t.closed || t.handler !== this) { this.host?.destroy(); return; }
    if (this.pending !== undefined) {
      // Arrived after pause(): queue behind what waits (rare; bounded by one read).
      this.pending = Buffer.concat([this.pending.subarray(this.pendingOff), chunk]);
      this.pendingOff = 0;
      return;
    }
    const n = t.write(chunk, 0, chunk.length);
    if (n < chunk.length) {
      this.pending = chunk;
      this.pendingOff = n;
      this.host!.pause();
    }
    this.kick();
  }

  private hostEnded(): void {
    const t = this.tcb;
    if (t.closed || t.handler !== this) return;
    if (this.pending !== undefined) { this.finAfterPending = true; return; }
    t.shutdown();
    this.kick();
  }

  /** The socket closed: the connection finishes in the background (orphan), as a closed socket's would. */
  private release(): void {
    this.gather.drop();
    const t = this.tcb;
    if (!t.closed && t.handler === this) {
      t.handler = NONE;
      t.orphan = true;
      t.shutdown();
      this.kick();
    }
  }

}

/** Why a dial through the netstack failed, with the code the proxies map to a reply (ENETUNREACH, ETIMEDOUT, or the TcpError's). */
export class DialError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'DialError';
    this.code = code;
  }
}

/**
 * Opens a TCP connection through the stack to ip:port; resolves with its relay once established,
 * rejects with the TcpError (refused, reset) or a DialError (no route from here, timed out after
 * timeoutMs). `kick` flushes the stack's output (the driver's schedule).
 */
export function dialRelay(stack: Netstack, kick: () => void, ip: string, port: number, timeoutMs: number): Promise<TcpRelay> {
  return new Promise((resolve, reject) => {
    let relay: TcpRelay;
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      relay = new TcpRelay(stack.connect(ip, port, NONE), kick, (err) => {
        clearTimeout(timer);
        if (err === null) resolve(relay); else reject(err);
      });
    } catch (e) {
      reject(new DialError('ENETUNREACH', (e as Error).message));
      return;
    }
    timer = setTimeout(() => {
      relay.destroy();
      reject(new DialError('ETIMEDOUT', `timed out connecting to ${ip}:${port} through the tailnet`));
    }, timeoutMs);
    kick();
  });
}

function noop(): void {}
