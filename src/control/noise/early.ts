// The ts2021 early payload (TS:control/ts2021/conn.go, HS:hscontrol/noise.go).
//
// The first decrypted bytes from the server are either the start of HTTP/2 (its SETTINGS frame) or:
//   [0..5)    magic FF FF FF 54 53 ("\xff\xff\xffTS": never a valid HTTP/2 frame header)
//   [5..9)    JSON length, big-endian uint32 (the Go client refuses more than 10 MiB)
//   [9..9+n)  JSON tailcfg.EarlyNoise, e.g. {"nodeKeyChallenge":"chalpub:<64 hex>"}
// Headscale always sends it, split over several records.

/** The 5 magic bytes that start an early payload. */
export const EARLY_PAYLOAD_MAGIC = Uint8Array.of(0xff, 0xff, 0xff, 0x54, 0x53);
/** Magic plus length. */
export const EARLY_HEADER_LEN = 9;
/** Largest early payload accepted (TS: 10 MiB). */
export const MAX_EARLY_PAYLOAD = 10 << 20;

/** tailcfg.EarlyNoise. */
export interface EarlyNoise {
  /** Random per-connection challenge public key (`chalpub:`), used for optional node-key proofs. */
  nodeKeyChallenge?: string;
}

/** Outcome of looking at the first bytes of the stream. */
export type EarlyParse =
  | { kind: 'need'; bytes: number }
  | { kind: 'none' }
  | { kind: 'payload'; payload: EarlyNoise; consumed: number };

/** Looks at the stream's first bytes; says how many more are needed, that there is none, or parses it. */
export function parseEarlyPayload(b: Uint8Array): EarlyParse {
  if (b.length < EARLY_HEADER_LEN) {
    // Decide early when the bytes already differ from the magic.
    for (let i = 0; i < Math.min(b.length, EARLY_PAYLOAD_MAGIC.length); i++) {
      if (b[i] !== EARLY_PAYLOAD_MAGIC[i]) return { kind: 'none' };
    }
    return { kind: 'need', bytes: EARLY_HEADER_LEN };
  }
  for (let i = 0; i < EARLY_PAYLOAD_MAGIC.length; i++) if (b[i] !== EARLY_PAYLOAD_MAGIC[i]) return { kind: 'none' };
  const len = new DataView(b.buffer, b.byteOffset, b.byteLength).getUint32(5);
  if (len > MAX_EARLY_PAYLOAD) throw new Error(`ts2021: early payload of ${len} bytes exceeds ${MAX_EARLY_PAYLOAD}`);
  if (b.length < EARLY_HEADER_LEN + len) return { kind: 'need', bytes: EARLY_HEADER_LEN + len };
  let payload: EarlyNoise;
  try {
    payload = JSON.parse(Buffer.from(b.subarray(EARLY_HEADER_LEN, EARLY_HEADER_LEN + len)).toString('utf8')) as EarlyNoise;
  } catch {
    throw new Error('ts2021: early payload is not JSON');
  }
  return { kind: 'payload', payload, consumed: EARLY_HEADER_LEN + len };
}

/** Encodes an early payload (for in-process test servers). */
export function encodeEarlyPayload(p: EarlyNoise): Uint8Array {
  const json = Buffer.from(JSON.stringify(p), 'utf8');
  const out = new Uint8Array(EARLY_HEADER_LEN + json.length);
  out.set(EARLY_PAYLOAD_MAGIC, 0);
  new DataView(out.buffer).setUint32(5, json.length);
  out.set(json, EARLY_HEADER_LEN);
  return out;
}
