// NoiseConn: a node:stream Duplex carrying plaintext over control-protocol transport records
// (see framing.ts for the wire layout). HTTP/2 runs on it via http2.connect's createConnection.
//
// Underneath: any Duplex (a TCP or TLS socket after the HTTP 101 and the Noise response).
// Writes are cut into ≤ 4077-byte records and written in one socket write per _write call.
// Reads are decrypted, and when `stripEarlyPayload` is set the ts2021 early payload is removed
// from the front of the stream and reported with the 'earlyPayload' event.
// Any decryption or framing failure destroys the connection (the counters cannot resync).
import { Duplex } from 'node:stream';
import { RecordReader, TransportCipher, sealRecords } from './framing.ts';
import { parseEarlyPayload, type EarlyNoise } from './early.ts';
import type { TransportKeys } from './handshake.ts';

/** Options for {@link NoiseConn}. */
export interface NoiseConnOptions {
  /** Bytes already read from the socket after the handshake response. */
  initial?: Uint8Array;
  /** Remove the ts2021 early payload from the front of the decrypted stream. */
  stripEarlyPayload?: boolean;
}

/** A Duplex of plaintext over a Noise transport on an underlying socket. */
export class NoiseConn extends Duplex {
  /** The early payload, once seen (undefined if the server sent none or it has not arrived). */
  earlyPayload: EarlyNoise | undefined;
  private readonly socket: Duplex;
  private readonly tx: TransportCipher;
  private readonly reader: RecordReader;
  private early: 'pending' | 'done';
  private earlyBuf: Uint8Array = new Uint8Array(0);
  private sawEnd = false;
  private readonly onData = (chunk: Buffer): void => this.receive(chunk);

  constructor(socket: Duplex, keys: TransportKeys, opts: NoiseConnOptions = {}) {
    super({ allowHalfOpen: false });
    this.socket = socket;
    this.tx = new TransportCipher(keys.tx);
    this.reader = new RecordReader(new TransportCipher(keys.rx));
    this.early = opts.stripEarlyPayload ? 'pending' : 'done';
    socket.on('data', this.onData);
    socket.on('end', () => {
      this.sawEnd = true;
      if (this.reader.pending > 0) this.destroy(new Error('noise: connection closed inside a record'));
      else if (this.early === 'pending' && this.earlyBuf.length > 0) this.destroy(new Error('noise: connection closed inside the early payload'));
      else this.push(null);
    });
    socket.on('error', (err: Error) => this.destroy(err));
    socket.on('close', () => {
      // A close after a clean end leaves our readable side to drain; anything else is an abort.
      if (!this.destroyed && !this.sawEnd) this.destroy(new Error('noise: underlying connection closed'));
    });
    if (opts.initial && opts.initial.length > 0) {
      const init = opts.initial;
      queueMicrotask(() => this.receive(init));
    }
  }

  private receive(chunk: Uint8Array): void {
    if (this.destroyed) return;
    let pts: Uint8Array[];
    try {
      pts = this.reader.feed(chunk);
    } catch (e) {
      this.destroy(e as Error);
      return;
    }
    for (const pt of pts) this.deliver(pt);
  }

  private deliver(pt: Uint8Array): void {
    if (this.early === 'pending') {
      const b = this.earlyBuf.length === 0 ? pt : Buffer.concat([this.earlyBuf, pt]);
      let r;
      try {
        r = parseEarlyPayload(b);
      } catch (e) {
        this.destroy(e as Error);
        return;
      }
      if (r.kind === 'need') {
        this.earlyBuf = new Uint8Array(b);
        return;
      }
      this.early = 'done';
      this.earlyBuf = new Uint8Array(0);
      if (r.kind === 'payload') {
        this.earlyPayload = r.payload;
        this.emit('earlyPayload', r.payload);
        pt = b.subarray(r.consumed);
      } else {
        pt = b;
      }
      if (pt.length === 0) return;
    }
    if (!this.push(Buffer.from(pt.buffer, pt.byteOffset, pt.byteLength))) this.socket.pause();
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    let records: Uint8Array[];
    try {
      records = sealRecords(this.tx, chunk);
    } catch (e) {
      cb(e as Error);
      return;
    }
    if (records.length === 0) {
      cb();
      return;
    }
    this.socket.write(records.length === 1 ? records[0]! : Buffer.concat(records), cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.off('data', this.onData);
    this.socket.destroy();
    cb(err);
  }
}
