// quad-100's own DNS wire format, written by hand for the per-query path (RFC 1035 4.1): the query's
// header and first question in, replies of at most one answer and one authority record out.
// Measured (README, MagicDNS): with dns-packet encoding every local reply, quad-100 answered at a
// quarter of tailscaled's rate; name re-encoding and garbage dominated the profile. dns-packet still
// parses and prints everything else (upstream answers, the CLI, tests).
//
//   header    ID(16) flags(16) QDCOUNT ANCOUNT NSCOUNT ARCOUNT
//   name      labels (length 1-63, then bytes), 0; 0xC0 pointers (RFC 1035 4.1.4) followed only
//             backwards and at most 16 times; wire length at most 255
//   question  name, TYPE(16), CLASS(16)
//   record    name, TYPE, CLASS, TTL(32), RDLENGTH(16), RDATA; owner names written out in full
//             (tailscaled compresses only answers with several addresses, which quad-100 never gives)

/** Why a name could not be read. */
export type NameError = 'truncated' | 'bad label' | 'bad pointer' | 'too long';

/** A question name read from a message. */
export interface WireName {
  /** Presentation form, ASCII-lowercased, with the trailing dot ("." for the root). */
  readonly lower: string;
  /** The name as sent (case kept), without the trailing dot as dns-packet shows it ("." for the root). */
  readonly text: string;
  /** Offset just past the name in the message. */
  readonly end: number;
  /** The name in wire form as sent, flattened (a view into the message when it used no pointers). */
  readonly wire: Uint8Array;
}

/** Reads the name at `off`; an error string when it is malformed. Never throws. */
export function readName(buf: Uint8Array, off: number): WireName | NameError {
  let p = off, end = -1, hops = 0, wireLen = 0, pointed = false;
  let text = '';
  for (;;) {
    if (p >= buf.length) return 'truncated';
    const len = buf[p]!;
    if (len === 0) {
      wireLen += 1;
      if (end < 0) end = p + 1;
      break;
    }
    const kind = len & 0xc0;
    if (kind === 0xc0) {
      if (p + 1 >= buf.length) return 'truncated';
      const target = ((len & 0x3f) << 8) | buf[p + 1]!;
      if (target >= p || ++hops > 16) return 'bad pointer';
      if (end < 0) end = p + 2;
      pointed = true;
      p = target;
      continue;
    }
    if (kind !== 0) return 'bad label';
    if (p + 1 + len > buf.length) return 'truncated';
    wireLen += len + 1;
    if (wireLen > 254) return 'too long';
    if (text.length > 0) text += '.';
    for (let i = p + 1; i <= p + len; i++) text += String.fromCharCode(buf[i]!);
    p += 1 + len;
  }
  const lower = text === '' ? '.' : `${asciiLowerFast(text)}.`;
  const wire = pointed ? encodeName(text === '' ? '.' : `${text}.`) : buf.subarray(off, end);
  return { lower, text: text === '' ? '.' : text, end, wire };
}

/** ASCII-only lowercase (RFC 4343: other bytes compare as they are). */
function asciiLowerFast(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 65 && c <= 90) return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
  }
  return s;
}

/** An FQDN ("a.b." or ".") in wire form; labels are taken byte for byte (latin1). */
export function encodeName(fqdn: string): Uint8Array {
  if (fqdn === '.' || fqdn === '') return Uint8Array.of(0);
  const s = fqdn.endsWith('.') ? fqdn : `${fqdn}.`;
  const out = new Uint8Array(s.length + 1);
  let lenAt = 0, o = 1;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x2e) { out[lenAt] = o - lenAt - 1; lenAt = o; o++; continue; }
    out[o++] = c & 0xff;
  }
  out[lenAt] = 0;
  return out.subarray(0, o);
}

/** One answer record of a quad-100 reply. */
export interface WireAnswer {
  /** 1 (A), 28 (AAAA) or 12 (PTR). */
  readonly type: number;
  readonly ttl: number;
  readonly rdata: Uint8Array;
}

/** The negative-caching SOA of a zone. */
export interface WireSoa {
  /** The zone in wire form. */
  readonly zone: Uint8Array;
  readonly ttl: number;
  readonly serial: number;
  /** refresh = retry = expire = minimum. */
  readonly timer: number;
}

/**
 * Writes a reply: header (id, flags, counts), the question as sent (`question` = name + type +
 * class bytes, or none), an answer with `owner` as its name, an authority SOA.
 */
export function buildReply(id: number, flags: number, question: Uint8Array | undefined, owner: Uint8Array | undefined,
  answer: WireAnswer | undefined, soa: WireSoa | undefined): Uint8Array {
  let size = 12 + (question?.length ?? 0);
  if (answer && owner) size += owner.length + 10 + answer.rdata.length;
  if (soa) size += soa.zone.length * 3 + 10 + 20;
  const out = new Uint8Array(size);
  out[0] = id >> 8; out[1] = id & 0xff; out[2] = flags >> 8; out[3] = flags & 0xff;
  out[5] = question ? 1 : 0;
  out[7] = answer && owner ? 1 : 0;
  out[9] = soa ? 1 : 0;
  let o = 12;
  if (question) { out.set(question, o); o += question.length; }
  if (answer && owner) {
    out.set(owner, o); o += owner.length;
    o = rrHeader(out, o, answer.type, answer.ttl, answer.rdata.length);
    out.set(answer.rdata, o); o += answer.rdata.length;
  }
  if (soa) {
    const z = soa.zone;
    out.set(z, o); o += z.length;
    o = rrHeader(out, o, 6, soa.ttl, z.length * 2 + 20);
    out.set(z, o); o += z.length;
    out.set(z, o); o += z.length;
    o = u32(out, o, soa.serial);
    for (let i = 0; i < 4; i++) o = u32(out, o, soa.timer);
  }
  return out;
}

function rrHeader(out: Uint8Array, o: number, type: number, ttl: number, rdlen: number): number {
  out[o] = type >> 8; out[o + 1] = type & 0xff; out[o + 2] = 0; out[o + 3] = 1; // class IN
  u32(out, o + 4, ttl);
  out[o + 8] = rdlen >> 8; out[o + 9] = rdlen & 0xff;
  return o + 10;
}

function u32(out: Uint8Array, o: number, v: number): number {
  out[o] = (v >>> 24) & 0xff; out[o + 1] = (v >>> 16) & 0xff; out[o + 2] = (v >>> 8) & 0xff; out[o + 3] = v & 0xff;
  return o + 4;
}

/** IPv4 text -> 4 bytes (the caller checked it is IPv4). */
export function ipv4Bytes(ip: string): Uint8Array {
  const out = new Uint8Array(4);
  let v = 0, k = 0;
  for (let i = 0; i < ip.length; i++) {
    const c = ip.charCodeAt(i);
    if (c === 0x2e) { out[k++] = v; v = 0; } else v = v * 10 + c - 48;
  }
  out[k] = v;
  return out;
}
