// DERP frames and handshake (tailscale derp/derp.go, derp/derp_client.go; reference data-plane.md 5.2-5.4).
//
// Frame: type(1) ‖ payload length(4 BE) ‖ payload. Client-side cap: 1 MiB per frame (larger = the
// stream is bogus, close it). Packets carry at most 64 KiB of data.
//
//   0x01 ServerKey      S→C  magic "DERP🔑" (44 45 52 50 F0 9F 94 91) ‖ server key(32) [‖ ignored]
//   0x02 ClientInfo     C→S  client node key(32) ‖ nonce(24) ‖ box(JSON)   box = NaCl box client→server
//   0x03 ServerInfo     S→C  nonce(24) ‖ box(JSON)                           box = NaCl box server→client
//   0x04 SendPacket     C→S  destination key(32) ‖ packet
//   0x05 RecvPacket     S→C  source key(32) ‖ packet (protocol v2)
//   0x06 KeepAlive      S→C  empty
//   0x07 NotePreferred  C→S  1 byte: 1 home, 0 not home
//   0x08 PeerGone       S→C  key(32) [‖ reason(1): 0 disconnected, 1 not here]
//   0x09 PeerPresent    S→C  key(32) [‖ IP(16) ‖ port(2) [‖ flags(1)]]   (mesh watchers only)
//   0x0A ForwardPacket  mesh src(32) ‖ dst(32) ‖ packet
//   0x10 WatchConns     mesh, empty
//   0x11 ClosePeer      mesh, key(32)
//   0x12 Ping           either, 8 bytes          0x13 Pong  either, the ping's 8 bytes
//   0x14 Health         S→C  UTF-8 problem; empty = healthy again
//   0x15 Restarting     S→C  reconnect-in ms(4 BE) ‖ try-for ms(4 BE)
// Unknown types are skipped by length.
import { ENDPOINT_RAW_LEN, Endpoints, type Endpoint } from '../net/endpoint.ts';
import { KEY_LEN, open, seal } from '../crypto/box.ts';

/** Frame header bytes: type + BE u32 length. */
export const FRAME_HEADER_LEN = 5;
/** "DERP🔑", the first 8 bytes of the ServerKey frame. */
export const DERP_MAGIC = Uint8Array.from([0x44, 0x45, 0x52, 0x50, 0xf0, 0x9f, 0x94, 0x91]);
/** DERP protocol version we speak (v2: RecvPacket carries the source key). */
export const PROTOCOL_VERSION = 2;
/** Most packet bytes in one SendPacket/RecvPacket (derp.MaxPacketSize). */
export const MAX_PACKET_SIZE = 64 << 10;
/** Largest frame the client accepts; anything longer means the stream is bogus (derp_client.go). */
export const MAX_FRAME_LEN = 1 << 20;
/** Longest ServerInfo/ClientInfo JSON (derp.MaxInfoLen). */
export const MAX_INFO_LEN = 1 << 20;
/** How often the server sends KeepAlive at least (plus jitter); 2× without a frame = dead. */
export const KEEP_ALIVE_MS = 60_000;

/** Frame type bytes (derp.go). */
export const FrameType = {
  serverKey: 0x01,
  clientInfo: 0x02,
  serverInfo: 0x03,
  sendPacket: 0x04,
  recvPacket: 0x05,
  keepAlive: 0x06,
  notePreferred: 0x07,
  peerGone: 0x08,
  peerPresent: 0x09,
  forwardPacket: 0x0a,
  watchConns: 0x10,
  closePeer: 0x11,
  ping: 0x12,
  pong: 0x13,
  health: 0x14,
  restarting: 0x15,
} as const;

/** PeerGone reasons (derp.PeerGoneReasonType). */
export const PeerGoneReason = { disconnected: 0x00, notHere: 0x01 } as const;

/** ClientInfo JSON (derp.ClientInfo; Go field names). */
export interface ClientInfo { version: number; canAckPings: boolean; isProber?: boolean; appName?: string; meshKey?: string }

/** ServerInfo JSON (derp.ServerInfo): a non-zero token bucket asks the client to pace its sends. */
export interface ServerInfo { version: number; tokenBucketBytesPerSecond: number; tokenBucketBytesBurst: number }

/** A frame as read off the stream; payload is a view that stays valid (never reused). */
export interface Frame { type: number; payload: Uint8Array }

/** A server→client message after the handshake. */
export type ServerMessage =
  | { type: 'recv-packet'; source: Uint8Array; data: Uint8Array }
  | { type: 'keep-alive' }
  | { type: 'peer-gone'; peer: Uint8Array; reason: number }
  | { type: 'peer-present'; peer: Uint8Array; endpoint?: Endpoint; flags?: number }
  | { type: 'ping'; data: Uint8Array }
  | { type: 'pong'; data: Uint8Array }
  | { type: 'health'; problem: string }
  | { type: 'restarting'; reconnectInMs: number; tryForMs: number }
  | { type: 'server-info'; payload: Uint8Array }
  | { type: 'server-key'; payload: Uint8Array };

/** Why a server frame was not turned into a message. 'short' frames are dropped; 'unknown' types skipped. */
export type ServerMessageError = 'short' | 'unknown';

const defaultEndpoints = new Endpoints(1024);

/** Writes a frame header at out[off..off+5). */
export function writeFrameHeader(type: number, len: number, out: Uint8Array, off = 0): void {
  out[off] = type;
  out[off + 1] = len >>> 24;
  out[off + 2] = (len >>> 16) & 0xff;
  out[off + 3] = (len >>> 8) & 0xff;
  out[off + 4] = len & 0xff;
}

/** A whole frame: header and the concatenated payload parts, in one buffer. */
export function encodeFrame(type: number, ...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  if (len > 10 << 20) throw new RangeError('derp: unreasonably large frame');
  const out = new Uint8Array(FRAME_HEADER_LEN + len);
  writeFrameHeader(type, len, out, 0);
  let o = FRAME_HEADER_LEN;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

function checkKey(k: Uint8Array, what: string): void {
  if (k.length !== KEY_LEN) throw new TypeError(`derp: ${what} must be ${KEY_LEN} bytes, got ${k.length}`);
}

/** SendPacket frame to dst (throws when the packet is over 64 KiB). */
export function encodeSendPacket(dst: Uint8Array, packet: Uint8Array): Uint8Array {
  checkKey(dst, 'destination key');
  if (packet.length > MAX_PACKET_SIZE) throw new RangeError(`derp: packet too big: ${packet.length} > ${MAX_PACKET_SIZE}`);
  return encodeFrame(FrameType.sendPacket, dst, packet);
}

/** RecvPacket frame from src (what a server sends; used by test servers). */
export function encodeRecvPacket(src: Uint8Array, packet: Uint8Array): Uint8Array {
  checkKey(src, 'source key');
  return encodeFrame(FrameType.recvPacket, src, packet);
}

/** NotePreferred frame: whether this server is the client's home. */
export function encodeNotePreferred(preferred: boolean): Uint8Array {
  return encodeFrame(FrameType.notePreferred, Uint8Array.of(preferred ? 1 : 0));
}

/** Ping or Pong frame with 8 bytes of data. */
export function encodePingPong(type: typeof FrameType.ping | typeof FrameType.pong, data: Uint8Array): Uint8Array {
  if (data.length !== 8) throw new TypeError('derp: ping/pong data must be 8 bytes');
  return encodeFrame(type, data);
}

/** ServerKey frame (magic + key); used by test servers. */
export function encodeServerKey(serverPub: Uint8Array): Uint8Array {
  checkKey(serverPub, 'server key');
  return encodeFrame(FrameType.serverKey, DERP_MAGIC, serverPub);
}

/** PeerGone frame; used by test servers. */
export function encodePeerGone(peer: Uint8Array, reason: number): Uint8Array {
  return encodeFrame(FrameType.peerGone, peer, Uint8Array.of(reason));
}

/** Health frame; used by test servers. */
export function encodeHealth(problem: string): Uint8Array {
  return encodeFrame(FrameType.health, new TextEncoder().encode(problem));
}

/** Restarting frame; used by test servers. */
export function encodeRestarting(reconnectInMs: number, tryForMs: number): Uint8Array {
  const p = new Uint8Array(8);
  const dv = new DataView(p.buffer);
  dv.setUint32(0, reconnectInMs);
  dv.setUint32(4, tryForMs);
  return encodeFrame(FrameType.restarting, p);
}

/** The ClientInfo JSON exactly as Go's encoding/json writes derp.ClientInfo (field order and omissions). */
export function clientInfoJson(info: ClientInfo): string {
  const o: Record<string, unknown> = {};
  if (info.meshKey) o['meshKey'] = info.meshKey;
  if (info.version) o['version'] = info.version;
  o['CanAckPings'] = info.canAckPings;
  if (info.isProber) o['IsProber'] = true;
  if (info.appName) o['AppName'] = info.appName;
  return JSON.stringify(o);
}

/**
 * ClientInfo frame: our node key, then the JSON sealed with shared = box.before(serverPub, ourPriv)
 * as nonce ‖ tag ‖ ciphertext.
 */
export function encodeClientInfo(clientPub: Uint8Array, shared: Uint8Array, info: ClientInfo): Uint8Array {
  checkKey(clientPub, 'client key');
  return encodeFrame(FrameType.clientInfo, clientPub, seal(shared, new TextEncoder().encode(clientInfoJson(info))));
}

/** ServerInfo frame sealed with shared = box.before(clientPub, serverPriv); used by test servers. */
export function encodeServerInfo(shared: Uint8Array, info: Partial<ServerInfo> = {}): Uint8Array {
  const o: Record<string, number> = { version: info.version ?? PROTOCOL_VERSION };
  if (info.tokenBucketBytesPerSecond) o['TokenBucketBytesPerSecond'] = info.tokenBucketBytesPerSecond;
  if (info.tokenBucketBytesBurst) o['TokenBucketBytesBurst'] = info.tokenBucketBytesBurst;
  return encodeFrame(FrameType.serverInfo, seal(shared, new TextEncoder().encode(JSON.stringify(o))));
}

/** The server key from a ServerKey payload; undefined when short or without the magic ("invalid server greeting"). */
export function parseServerKey(payload: Uint8Array): Uint8Array | undefined {
  if (payload.length < DERP_MAGIC.length + KEY_LEN) return undefined;
  for (let i = 0; i < DERP_MAGIC.length; i++) if (payload[i] !== DERP_MAGIC[i]) return undefined;
  return payload.slice(DERP_MAGIC.length, DERP_MAGIC.length + KEY_LEN);
}

/** Looks a key up the way Go's encoding/json does: exact name first, then case-insensitively. */
function field(o: Record<string, unknown>, name: string): unknown {
  if (name in o) return o[name];
  const lower = name.toLowerCase();
  for (const k of Object.keys(o)) if (k.toLowerCase() === lower) return o[k];
  return undefined;
}

function parseJsonObject(bytes: Uint8Array): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const int = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) ? Math.trunc(v) : 0);

/** Opens and parses a ServerInfo payload with shared = box.before(serverPub, ourPriv); a string error when bogus. */
export function parseServerInfo(payload: Uint8Array, shared: Uint8Array): ServerInfo | string {
  if (payload.length < 24) return 'short serverInfo frame';
  if (payload.length > 24 + MAX_INFO_LEN) return 'long serverInfo frame';
  const msg = open(shared, payload);
  if (!msg) return 'failed to open naclbox from server key';
  const o = parseJsonObject(msg);
  if (!o) return 'invalid JSON in serverInfo';
  return {
    version: int(field(o, 'version')),
    tokenBucketBytesPerSecond: int(field(o, 'TokenBucketBytesPerSecond')),
    tokenBucketBytesBurst: int(field(o, 'TokenBucketBytesBurst')),
  };
}

/**
 * Splits a ClientInfo payload (server side, for test servers): the client key, then the JSON opened
 * with sharedFor(clientKey). A string error when bogus.
 */
export function parseClientInfo(payload: Uint8Array, sharedFor: (clientPub: Uint8Array) => Uint8Array):
  { clientKey: Uint8Array; info: ClientInfo } | string {
  if (payload.length < KEY_LEN + 24 + 16) return 'short clientInfo frame';
  if (payload.length > KEY_LEN + 24 + (256 << 10)) return 'long clientInfo frame';
  const clientKey = payload.slice(0, KEY_LEN);
  const msg = open(sharedFor(clientKey), payload.subarray(KEY_LEN));
  if (!msg) return 'failed to open naclbox from client key';
  const o = parseJsonObject(msg);
  if (!o) return 'invalid JSON in clientInfo';
  const info: ClientInfo = { version: int(field(o, 'version')), canAckPings: field(o, 'CanAckPings') === true };
  if (field(o, 'IsProber') === true) info.isProber = true;
  const app = field(o, 'AppName');
  if (typeof app === 'string' && app) info.appName = app;
  return { clientKey, info };
}

/** Turns a server→client frame into a message, as derp.Client.Recv does; short frames and unknown types are errors to count. */
export function parseServerMessage(f: Frame, endpoints: Endpoints = defaultEndpoints):
  { ok: true; msg: ServerMessage } | { ok: false; error: ServerMessageError } {
  const p = f.payload;
  switch (f.type) {
    case FrameType.recvPacket:
      if (p.length < KEY_LEN) return { ok: false, error: 'short' };
      return { ok: true, msg: { type: 'recv-packet', source: p.subarray(0, KEY_LEN), data: p.subarray(KEY_LEN) } };
    case FrameType.keepAlive:
      return { ok: true, msg: { type: 'keep-alive' } };
    case FrameType.peerGone:
      if (p.length < KEY_LEN) return { ok: false, error: 'short' };
      // Older servers send no reason byte: that means "disconnected".
      return { ok: true, msg: { type: 'peer-gone', peer: p.slice(0, KEY_LEN), reason: p.length > KEY_LEN ? p[KEY_LEN]! : PeerGoneReason.disconnected } };
    case FrameType.peerPresent: {
      if (p.length < KEY_LEN) return { ok: false, error: 'short' };
      const msg: ServerMessage = { type: 'peer-present', peer: p.slice(0, KEY_LEN) };
      if (p.length >= KEY_LEN + 18) {
        const raw = new Uint8Array(ENDPOINT_RAW_LEN);
        raw.set(p.subarray(KEY_LEN, KEY_LEN + 18), 0);
        let mapped = raw[10] === 0xff && raw[11] === 0xff;
        for (let i = 0; i < 10 && mapped; i++) if (raw[i] !== 0) mapped = false;
        raw[18] = mapped ? 4 : 6;
        msg.endpoint = endpoints.intern(raw, 0);
        if (p.length >= KEY_LEN + 19) msg.flags = p[KEY_LEN + 18]!;
      }
      return { ok: true, msg };
    }
    case FrameType.ping:
    case FrameType.pong:
      if (p.length < 8) return { ok: false, error: 'short' };
      return { ok: true, msg: { type: f.type === FrameType.ping ? 'ping' : 'pong', data: p.slice(0, 8) } };
    case FrameType.health:
      return { ok: true, msg: { type: 'health', problem: new TextDecoder().decode(p) } };
    case FrameType.restarting: {
      if (p.length < 8) return { ok: false, error: 'short' };
      const dv = new DataView(p.buffer, p.byteOffset, 8);
      return { ok: true, msg: { type: 'restarting', reconnectInMs: dv.getUint32(0), tryForMs: dv.getUint32(4) } };
    }
    case FrameType.serverInfo:
      return { ok: true, msg: { type: 'server-info', payload: p } };
    case FrameType.serverKey:
      return { ok: true, msg: { type: 'server-key', payload: p } };
    default:
      return { ok: false, error: 'unknown' };
  }
}

/** What FrameReader.next returns when the stream cannot be DERP any more. */
export interface FrameStreamError { error: 'frame-too-large'; type: number; length: number }

/**
 * Reassembles frames from stream chunks without I/O. A frame that lies in one chunk is returned as a
 * view of it (no copy); one spread over chunks is copied once. Chunks must not be reused by the caller.
 */
export class FrameReader {
  private chunks: Uint8Array[] = [];
  private head = 0; // offset of the first unread byte in chunks[0]
  private total = 0; // unread bytes
  private readonly maxFrameLen: number;

  constructor(maxFrameLen = MAX_FRAME_LEN) {
    this.maxFrameLen = maxFrameLen;
  }

  /** Bytes buffered and not yet returned. */
  get buffered(): number {
    return this.total;
  }

  /** Appends a chunk read from the stream. */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  private byteAt(i: number): number {
    let idx = this.head + i;
    for (const c of this.chunks) {
      if (idx < c.length) return c[idx]!;
      idx -= c.length;
    }
    return -1;
  }

  /** Removes and returns the next n buffered bytes (n <= buffered). */
  take(n: number): Uint8Array {
    const first = this.chunks[0];
    if (first !== undefined && first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = new Uint8Array(n);
    let o = 0;
    while (o < n) {
      const c = this.chunks[0]!;
      const k = Math.min(n - o, c.length - this.head);
      out.set(c.subarray(this.head, this.head + k), o);
      o += k;
      this.advance(k);
    }
    return out;
  }

  private advance(n: number): void {
    this.total -= n;
    this.head += n;
    while (this.chunks.length > 0 && this.head >= this.chunks[0]!.length) {
      this.head -= this.chunks[0]!.length;
      this.chunks.shift();
    }
  }

  /** Index just past the first CRLFCRLF within the first max bytes, -1 when not there yet, -2 when max is passed. */
  findHeadEnd(max: number): number {
    const lim = Math.min(this.total, max);
    for (let i = 3; i < lim; i++) {
      if (this.byteAt(i) === 0x0a && this.byteAt(i - 1) === 0x0d && this.byteAt(i - 2) === 0x0a && this.byteAt(i - 3) === 0x0d) return i + 1;
    }
    return this.total >= max ? -2 : -1;
  }

  /** The next whole frame, undefined when more bytes are needed, or an error when the header is bogus. */
  next(): Frame | FrameStreamError | undefined {
    if (this.total < FRAME_HEADER_LEN) return undefined;
    const type = this.byteAt(0);
    const length = ((this.byteAt(1) << 24) | (this.byteAt(2) << 16) | (this.byteAt(3) << 8) | this.byteAt(4)) >>> 0;
    if (length > this.maxFrameLen) return { error: 'frame-too-large', type, length };
    if (this.total < FRAME_HEADER_LEN + length) return undefined;
    this.advance(FRAME_HEADER_LEN);
    return { type, payload: this.take(length) };
  }
}
