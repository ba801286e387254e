// DNS over a byte stream (TCP, RFC 7766 / RFC 1035 4.2.2): each message behind a 2-byte length.
// Serves quad-100 on any duplex stream (a node:net socket, a netstack connection), as tailscaled's
// HandleTCPConn: queries pipelined and answered as they complete (maybe out of order), a request
// larger than 4096 bytes (or a zero length) ends the connection, 45 s idle ends it, at most 16
// queries outstanding per connection and a capped number of connections per server.
import type { Duplex } from 'node:stream';

/** Largest request accepted (TS: requests capped at 4096 bytes). */
export const MAX_TCP_REQUEST = 4096;
/** Idle time before the server closes a connection (TS: 45 s). */
export const TCP_IDLE_MS = 45_000;
/** Queries answered at once per connection. */
export const MAX_PIPELINED = 16;

/** Answers one query (payload without the length); null = no answer. */
export type StreamHandler = (query: Uint8Array) => Promise<Uint8Array | null>;

/** Counters of a {@link DnsStreamServer}. */
export interface StreamCounters {
  connections: number;
  refusedConnections: number;
  queries: number;
  badLength: number;
  idleClosed: number;
}

/** Serves DNS on streams handed to it; caps how many are open at once. */
export class DnsStreamServer {
  private readonly handler: StreamHandler;
  private readonly maxConnections: number;
  private readonly idleMs: number;
  private readonly open = new Set<Duplex>();
  readonly counters: StreamCounters = { connections: 0, refusedConnections: 0, queries: 0, badLength: 0, idleClosed: 0 };

  constructor(handler: StreamHandler, opts: { maxConnections?: number; idleMs?: number } = {}) {
    this.handler = handler;
    this.maxConnections = opts.maxConnections ?? 64;
    this.idleMs = opts.idleMs ?? TCP_IDLE_MS;
  }

  /** Connections open now. */
  get size(): number {
    return this.open.size;
  }

  /** Takes a new connection: serves it, or closes it at once when the cap is reached. */
  serve(stream: Duplex): void {
    if (this.open.size >= this.maxConnections) {
      this.counters.refusedConnections++;
      stream.destroy();
      return;
    }
    this.counters.connections++;
    this.open.add(stream);
    let buf: Buffer = Buffer.alloc(0);
    let outstanding = 0;
    let closed = false, ended = false;
    let idle: NodeJS.Timeout | undefined;
    const close = () => {
      if (closed) return;
      closed = true;
      clearTimeout(idle);
      this.open.delete(stream);
      stream.destroy();
    };
    // Graceful: the client half-closed and every answer is written.
    const finish = () => {
      if (closed) return;
      closed = true;
      clearTimeout(idle);
      this.open.delete(stream);
      stream.end();
    };
    const touch = () => {
      clearTimeout(idle);
      idle = setTimeout(() => { this.counters.idleClosed++; close(); }, this.idleMs);
    };
    const pump = () => {
      while (!closed && outstanding < MAX_PIPELINED && buf.length >= 2) {
        const n = buf.readUInt16BE(0);
        if (n === 0 || n > MAX_TCP_REQUEST) { this.counters.badLength++; close(); return; }
        if (buf.length < 2 + n) return;
        const q = new Uint8Array(buf.subarray(2, 2 + n));
        buf = buf.subarray(2 + n);
        outstanding++;
        this.counters.queries++;
        this.handler(q).then((a) => {
          outstanding--;
          if (closed) return;
          if (a) {
            const framed = Buffer.allocUnsafe(a.length + 2);
            framed.writeUInt16BE(a.length, 0);
            framed.set(a, 2);
            stream.write(framed);
          }
          if (ended && outstanding === 0 && buf.length < 2) { finish(); return; }
          touch();
          pump();
        }, () => { outstanding--; close(); });
      }
      // Do not buffer beyond one maximal request while the pipeline is full.
      if (buf.length > 2 + MAX_TCP_REQUEST + 2) stream.pause(); else stream.resume();
    };
    stream.on('data', (d: Buffer) => {
      buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
      touch();
      pump();
    });
    stream.on('end', () => { ended = true; if (outstanding === 0) finish(); });
    stream.on('error', close);
    stream.on('close', close);
    touch();
  }

  /** Closes every connection. */
  close(): void {
    for (const s of this.open) s.destroy();
    this.open.clear();
  }
}
