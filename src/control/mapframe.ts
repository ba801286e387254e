// Framing of the map poll's response body (HS:hscontrol/poll.go writeMap, TS direct.go decodeMsg):
//   [0..4)    message length n, LITTLE-endian uint32 (unlike everything else in this protocol)
//   [4..4+n)  one MapResponse as UTF-8 JSON (zstd instead when the request asked for it; meshd never does)
// Repeated for as long as the stream lives.

/** Largest single MapResponse accepted (a cap before buffering, not a protocol limit). */
export const MAX_MAP_MESSAGE = 64 << 20;

/** Cuts a byte stream into map messages; holds partial chunks without re-copying them per chunk. */
export class MapFrameReader {
  private chunks: Buffer[] = [];
  private have = 0;
  private readonly max: number;

  constructor(max = MAX_MAP_MESSAGE) {
    this.max = max;
  }

  /** Bytes held waiting for the rest of a message. */
  get pending(): number {
    return this.have;
  }

  /** Feeds bytes; returns the JSON text of every complete message. Throws on an oversized length. */
  feed(chunk: Uint8Array): string[] {
    if (chunk.length > 0) {
      this.chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
      this.have += chunk.length;
    }
    const out: string[] = [];
    for (;;) {
      if (this.have < 4) return out;
      const head = this.peek(4);
      const len = head.readUInt32LE(0);
      if (len > this.max) throw new RangeError(`map message of ${len} bytes exceeds ${this.max}`);
      if (this.have < 4 + len) return out;
      const all = this.take(4 + len);
      out.push(all.toString('utf8', 4));
    }
  }

  private peek(n: number): Buffer {
    if (this.chunks[0]!.length >= n) return this.chunks[0]!;
    const b = Buffer.concat(this.chunks);
    this.chunks = [b];
    return b;
  }

  private take(n: number): Buffer {
    const b = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    const rest = b.subarray(n);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.have = rest.length;
    return b.subarray(0, n);
  }
}

/** Encodes one message as the server does (for tests and fake servers). */
export function encodeMapFrame(msg: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(msg), 'utf8');
  const out = Buffer.alloc(4 + json.length);
  out.writeUInt32LE(json.length, 0);
  json.copy(out, 4);
  return out;
}
