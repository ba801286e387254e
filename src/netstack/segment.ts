// The TCP header (RFC 9293 3.1) and its options: parse in place into a reused TcpSeg, write into a
// caller's buffer. Options: EOL 0, NOP 1, MSS 2/4, WS 3/3 (RFC 7323 2), SACK-permitted 4/2 and
// SACK 5/2+8n (RFC 2018), TS 8/10 (read and ignored: this stack does not negotiate timestamps).
//
//   srcport(2) dstport(2) seq(4) ack(4) off/flags(2) window(2) checksum(2) urgent(2) [options]
import { fold, pseudoSum, sum16, Proto } from './ip.ts';

/** TCP flags. */
export const F = { FIN: 1, SYN: 2, RST: 4, PSH: 8, ACK: 16, URG: 32 } as const;

/** Why a segment was refused before any connection saw it. */
export const SegDrop = { ok: 0, short: 1, badOffset: 2, badChecksum: 3, badOptions: 4 } as const;

/** A parsed segment; one object reused for every packet. */
export class TcpSeg {
  srcPort = 0;
  dstPort = 0;
  seq = 0;
  ack = 0;
  flags = 0;
  /** Window field as sent (unscaled). */
  wnd = 0;
  /** The packet buffer and where the payload lies in it. */
  buf: Uint8Array = new Uint8Array(0);
  dataOff = 0;
  dataLen = 0;
  /** MSS option, 0 when absent. */
  mss = 0;
  /** Window scale shift, -1 when absent. */
  wscale = -1;
  sackOk = false;
  /** SACK blocks as [left, right) pairs; sackCount blocks. */
  readonly sack = new Uint32Array(8);
  sackCount = 0;

  /** Parses the TCP segment at buf[off, off+len) and checks its checksum against the pseudo-header. */
  parse(buf: Uint8Array, off: number, len: number, family: 4 | 6, srcOff: number, dstOff: number): number {
    if (len < 20) return SegDrop.short;
    const doff = (buf[off + 12]! >> 4) * 4;
    if (doff < 20 || doff > len) return SegDrop.badOffset;
    if (fold(sum16(buf, off, len, pseudoSum(family, buf, srcOff, buf, dstOff, Proto.TCP, len))) !== 0) return SegDrop.badChecksum;
    this.srcPort = (buf[off]! << 8) | buf[off + 1]!;
    this.dstPort = (buf[off + 2]! << 8) | buf[off + 3]!;
    this.seq = ((buf[off + 4]! << 24) | (buf[off + 5]! << 16) | (buf[off + 6]! << 8) | buf[off + 7]!) >>> 0;
    this.ack = ((buf[off + 8]! << 24) | (buf[off + 9]! << 16) | (buf[off + 10]! << 8) | buf[off + 11]!) >>> 0;
    this.flags = buf[off + 13]! & 0x3f;
    this.wnd = (buf[off + 14]! << 8) | buf[off + 15]!;
    this.buf = buf;
    this.dataOff = off + doff;
    this.dataLen = len - doff;
    this.mss = 0;
    this.wscale = -1;
    this.sackOk = false;
    this.sackCount = 0;
    let i = off + 20;
    const end = off + doff;
    while (i < end) {
      const kind = buf[i]!;
      if (kind === 0) break;
      if (kind === 1) { i++; continue; }
      if (i + 1 >= end) return SegDrop.badOptions;
      const olen = buf[i + 1]!;
      if (olen < 2 || i + olen > end) return SegDrop.badOptions;
      if (kind === 2 && olen === 4) this.mss = (buf[i + 2]! << 8) | buf[i + 3]!;
      else if (kind === 3 && olen === 3) this.wscale = Math.min(buf[i + 2]!, 14); // RFC 7323 2.3: more than 14 means 14
      else if (kind === 4 && olen === 2) this.sackOk = true;
      else if (kind === 5 && olen >= 10 && (olen - 2) % 8 === 0) {
        const n = Math.min(4, (olen - 2) / 8);
        for (let b = 0; b < n; b++) {
          const p = i + 2 + b * 8;
          this.sack[2 * b] = ((buf[p]! << 24) | (buf[p + 1]! << 16) | (buf[p + 2]! << 8) | buf[p + 3]!) >>> 0;
          this.sack[2 * b + 1] = ((buf[p + 4]! << 24) | (buf[p + 5]! << 16) | (buf[p + 6]! << 8) | buf[p + 7]!) >>> 0;
        }
        this.sackCount = n;
      }
      i += olen;
    }
    return SegDrop.ok;
  }
}

/** Writes a 32-bit big-endian value. */
export function put32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24; b[o + 1] = (v >>> 16) & 255; b[o + 2] = (v >>> 8) & 255; b[o + 3] = v & 255;
}

/**
 * Writes a TCP header at out[off] (options from `opts`, optLen bytes, already padded to 4); the
 * payload must already sit at out[off + 20 + optLen]. Fills in the checksum; returns header length.
 */
export function writeTcpHeader(out: Uint8Array, off: number, family: 4 | 6, src: Uint8Array, dst: Uint8Array,
  srcPort: number, dstPort: number, seq: number, ack: number, flags: number, wnd: number,
  opts: Uint8Array, optLen: number, payloadLen: number): number {
  const hl = 20 + optLen;
  out[off] = srcPort >> 8; out[off + 1] = srcPort & 255;
  out[off + 2] = dstPort >> 8; out[off + 3] = dstPort & 255;
  put32(out, off + 4, seq);
  put32(out, off + 8, flags & F.ACK ? ack : 0);
  out[off + 12] = (hl / 4) << 4; out[off + 13] = flags;
  out[off + 14] = wnd >> 8; out[off + 15] = wnd & 255;
  out[off + 16] = 0; out[off + 17] = 0; out[off + 18] = 0; out[off + 19] = 0;
  for (let i = 0; i < optLen; i++) out[off + 20 + i] = opts[i]!;
  const c = fold(sum16(out, off, hl + payloadLen, pseudoSum(family, src, 0, dst, 0, Proto.TCP, hl + payloadLen)));
  out[off + 16] = c >> 8; out[off + 17] = c & 255;
  return hl;
}
