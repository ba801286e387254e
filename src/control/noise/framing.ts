// Transport records of the control protocol after the handshake (TS:control/controlbase/conn.go).
//
// Record:
//   [0]       type 0x04
//   [1..3)    ciphertext length, big-endian uint16 (= plaintext length + 16)
//   [3..3+n)  ChaCha20-Poly1305 ciphertext and 16-byte tag, AAD empty
// A whole record is at most 4096 bytes, so a plaintext chunk is at most 4077 bytes. Zero-length
// records (just a tag) are legal. Record boundaries carry no meaning.
//
// Nonce: 4 zero bytes ‖ 64-bit BIG-endian counter, one counter per direction starting at 0.
// This deviates from the Noise spec (little-endian) on purpose: it is what controlbase does.
// The counter here is a JavaScript number: exact to 2^53, which at 4 KiB per record is 32 PiB per
// connection; we declare the connection exhausted at 2^53 - 1 instead of Go's 2^64 - 1.
import { createCipheriv, createDecipheriv } from 'node:crypto';
import { HEADER_LEN, MsgType } from './handshake.ts';

/** Largest whole record (header + ciphertext), controlbase maxMessageSize. */
export const MAX_MESSAGE_SIZE = 4096;
/** Poly1305 tag length. */
export const TAG_LEN = 16;
/** Largest ciphertext in one record. */
export const MAX_CIPHERTEXT_SIZE = MAX_MESSAGE_SIZE - HEADER_LEN;
/** Largest plaintext in one record. */
export const MAX_PLAINTEXT_SIZE = MAX_CIPHERTEXT_SIZE - TAG_LEN;

const MAX_COUNTER = Number.MAX_SAFE_INTEGER;

/** Writes the 12-byte nonce for `counter` (4 zero bytes, then 8 bytes big-endian) into out. */
export function writeNonce(counter: number, out: Uint8Array): void {
  out[0] = 0; out[1] = 0; out[2] = 0; out[3] = 0;
  const hi = Math.floor(counter / 0x1_0000_0000);
  const lo = counter >>> 0;
  const dv = new DataView(out.buffer, out.byteOffset, 12);
  dv.setUint32(4, hi);
  dv.setUint32(8, lo);
}

/** One direction of the transport: a key and its nonce counter. */
export class TransportCipher {
  private readonly key: Uint8Array;
  private counter = 0;
  private readonly nonce = new Uint8Array(12);

  constructor(key: Uint8Array) {
    if (key.length !== 32) throw new RangeError('transport key must be 32 bytes');
    this.key = key;
  }

  /** Records processed so far in this direction. */
  get count(): number {
    return this.counter;
  }

  private nextNonce(): Uint8Array {
    if (this.counter >= MAX_COUNTER) throw new Error('noise: nonce counter exhausted; reconnect');
    writeNonce(this.counter++, this.nonce);
    return this.nonce;
  }

  /** Encrypts one chunk (≤ 4077 bytes) into a whole record (header included). */
  sealRecord(plaintext: Uint8Array): Uint8Array {
    if (plaintext.length > MAX_PLAINTEXT_SIZE) throw new RangeError(`record plaintext ${plaintext.length} > ${MAX_PLAINTEXT_SIZE}`);
    const c = createCipheriv('chacha20-poly1305', this.key, this.nextNonce(), { authTagLength: TAG_LEN });
    const out = new Uint8Array(HEADER_LEN + plaintext.length + TAG_LEN);
    out[0] = MsgType.record;
    out[1] = (plaintext.length + TAG_LEN) >> 8;
    out[2] = (plaintext.length + TAG_LEN) & 0xff;
    const body = c.update(plaintext);
    c.final();
    out.set(body, HEADER_LEN);
    out.set(c.getAuthTag(), HEADER_LEN + plaintext.length);
    return out;
  }

  /** Decrypts one record's ciphertext (without header); throws on a bad tag. */
  open(ciphertext: Uint8Array): Uint8Array {
    if (ciphertext.length < TAG_LEN) throw new Error('noise: record shorter than a tag');
    const n = ciphertext.length - TAG_LEN;
    const d = createDecipheriv('chacha20-poly1305', this.key, this.nextNonce(), { authTagLength: TAG_LEN });
    d.setAuthTag(ciphertext.subarray(n));
    const pt = d.update(ciphertext.subarray(0, n));
    try {
      d.final();
    } catch {
      throw new Error('noise: record authentication failed');
    }
    return new Uint8Array(pt.buffer, pt.byteOffset, pt.byteLength);
  }
}

/** Encrypts a write of any length into consecutive records of at most 4077 plaintext bytes. */
export function sealRecords(tx: TransportCipher, data: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  if (data.length === 0) return out;
  for (let off = 0; off < data.length; off += MAX_PLAINTEXT_SIZE) {
    out.push(tx.sealRecord(data.subarray(off, Math.min(off + MAX_PLAINTEXT_SIZE, data.length))));
  }
  return out;
}

/**
 * Splits an incoming byte stream into records and decrypts them. Size-checks each header before
 * waiting for its body, so a hostile length cannot make it buffer more than one record.
 */
export class RecordReader {
  private buf: Uint8Array = new Uint8Array(0);
  private readonly rx: TransportCipher;

  constructor(rx: TransportCipher) {
    this.rx = rx;
  }

  /** Bytes held waiting for the rest of a record. */
  get pending(): number {
    return this.buf.length;
  }

  /** Feeds bytes; returns the decrypted plaintext of every record completed. Throws on bad input. */
  feed(chunk: Uint8Array): Uint8Array[] {
    let buf = this.buf.length === 0 ? chunk : concat(this.buf, chunk);
    const out: Uint8Array[] = [];
    let off = 0;
    while (buf.length - off >= HEADER_LEN) {
      const type = buf[off]!;
      if (type !== MsgType.record) throw new Error(`noise: unexpected message type ${type} after handshake`);
      const len = (buf[off + 1]! << 8) | buf[off + 2]!;
      if (len > MAX_CIPHERTEXT_SIZE) throw new Error(`noise: record length ${len} exceeds ${MAX_CIPHERTEXT_SIZE}`);
      if (buf.length - off < HEADER_LEN + len) break;
      const pt = this.rx.open(buf.subarray(off + HEADER_LEN, off + HEADER_LEN + len));
      if (pt.length > 0) out.push(pt);
      off += HEADER_LEN + len;
    }
    buf = buf.subarray(off);
    this.buf = buf.length === 0 ? new Uint8Array(0) : buf.slice();
    return out;
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}
