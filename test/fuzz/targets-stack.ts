// Fuzz targets for the decoders that came with MagicDNS, userspace networking and port mapping:
// quad-100's query parser and its IP/UDP classifier, the netstack's IP/TCP/UDP/ICMP input path,
// the SOCKS5 and HTTP proxy request parsers, and the NAT-PMP / PCP / SSDP / UPnP XML readers.
// Same contract as ./targets.ts: return, or throw only what the caller catches.
import fc from 'fast-check';
import { NetworkMap } from '../../src/control/netmap.ts';
import type { MapResponse } from '../../src/control/wire.ts';
import { compileDnsConfig } from '../../src/dns/config.ts';
import { Resolver, parseQuery } from '../../src/dns/resolver.ts';
import { Verdict, classify, parseDnsPacket } from '../../src/dns/quad100.ts';
import { clampEdns, setTcIfTooBig, udpSizeOf } from '../../src/dns/forwarder.ts';
import { encodeName } from '../../src/dns/wire.ts';
import { Netstack } from '../../src/netstack/stack.ts';
import { fold, sum16, pseudoSum } from '../../src/netstack/ip.ts';
import type { Tcb } from '../../src/netstack/tcp.ts';
import { SocksHandshake } from '../../src/proxy/socks5.ts';
import { parseAuthority, parseRequestHead } from '../../src/proxy/http.ts';
import { parsePcp, parsePmp, parseRootDescription, parseSoapResponse, parseSsdp } from '../../src/portmapper/codec.ts';
import type { Target } from './targets.ts';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const key = (c: string): string => `nodekey:${c.repeat(64)}`;

/** A resolver holding a small tailnet (names, ExtraRecords, a split route), as quad-100 has. */
const RESOLVER = new Resolver({ nowSec: () => 1_800_000_000 });
{
  const m = new NetworkMap();
  m.apply({
    Node: { ID: 1, Key: key('1'), Name: 'm1.meshd.test.', Addresses: ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128'] },
    Peers: [{ ID: 2, Key: key('2'), Name: 't1.meshd.test.', Addresses: ['100.64.0.2/32', 'fd7a:115c:a1e0::2/128'] }],
    DNSConfig: {
      Resolvers: [{ Addr: '198.18.0.53' }], Routes: { 'corp.test': [{ Addr: '198.18.0.54' }] }, Domains: ['meshd.test'], Proxied: true,
      ExtraRecords: [{ Name: 'grafana.meshd.test', Type: 'A', Value: '100.64.0.99' }, { Name: 'g6.meshd.test', Type: 'AAAA', Value: 'fd7a:115c:a1e0::99' }],
    },
  } as MapResponse);
  RESOLVER.setConfig(compileDnsConfig(m, { acceptDns: true, osSupportsSplit: false }));
}

/** A DNS query for name/type, with an optional EDNS OPT record of the given UDP size. */
function dnsQuery(id: number, name: string, type: number, edns?: number): Uint8Array {
  const q = encodeName(name);
  const b = new Uint8Array(12 + q.length + 4 + (edns === undefined ? 0 : 11));
  b[0] = id >> 8; b[1] = id & 255; b[2] = 1; b[5] = 1; b[11] = edns === undefined ? 0 : 1;
  b.set(q, 12);
  b[12 + q.length + 1] = type; b[12 + q.length + 3] = 1;
  if (edns !== undefined) {
    const o = 12 + q.length + 4;
    b[o + 2] = 41; b[o + 3] = edns >> 8; b[o + 4] = edns & 255;
  }
  return b;
}
const QNAMES = ['t1.meshd.test.', 'T1.Meshd.Test.', 't1.', 'nope.meshd.test.', 'grafana.meshd.test.', 'example.com.', 'x.corp.test.',
  '2.0.64.100.in-addr.arpa.', '1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.e.0.a.1.c.5.1.1.a.7.d.f.ip6.arpa.', '1-2-3-4-via-7.',
  '10-0-0-1-via-0x10.ts.net.', 'magicdns.localhost-tailscale-daemon.', 'b._dns-sd._udp.meshd.test.', 'x.onion.', '.'];
const QTYPES = [1, 28, 12, 255, 2, 6, 252, 13, 16, 65];

/** IPv4 or IPv6 UDP packets carrying `payload` from a client to quad-100 port 53. */
function udpTo100(v6: boolean, payload: Uint8Array): Uint8Array {
  const h = v6 ? 40 : 20;
  const p = new Uint8Array(h + 8 + payload.length);
  if (v6) {
    p[0] = 0x60; p[4] = (8 + payload.length) >> 8; p[5] = (8 + payload.length) & 255; p[6] = 17; p[7] = 64;
    p.set([0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], 8);
    p.set([0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53], 24);
  } else {
    p[0] = 0x45; p[2] = p.length >> 8; p[3] = p.length & 255; p[8] = 64; p[9] = 17;
    p.set([100, 64, 0, 1, 100, 100, 100, 100], 12);
  }
  p[h] = 0x9c; p[h + 1] = 0x40; p[h + 3] = 53; p[h + 4] = (8 + payload.length) >> 8; p[h + 5] = (8 + payload.length) & 255;
  p.set(payload, h + 8);
  return p;
}

// ---- netstack --------------------------------------------------------------------------------

const A4 = [100, 64, 0, 1], B4 = [100, 64, 0, 2];
const A6 = [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1], B6 = [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/**
 * Input of the netstack target: byte 0 = mode (bit 0: fix IP and transport checksums, bit 1: TCP
 * ack numbers relative to the stack's last sequence number sent, bit 2: promiscuous, bits 3-5:
 * ms to advance per packet as 2^n), then records of [length u16][IP packet].
 */
function netstackInput(mode: number, packets: Uint8Array[]): Uint8Array {
  const total = 1 + packets.reduce((a, p) => a + 2 + p.length, 0);
  const out = new Uint8Array(total);
  out[0] = mode;
  let o = 1;
  for (const p of packets) { out[o] = p.length >> 8; out[o + 1] = p.length & 255; out.set(p, o + 2); o += 2 + p.length; }
  return out;
}

/** A TCP segment from B to A (IPv4 or IPv6); checksums left to the target's fix-up. */
function tcpSeg(v6: boolean, sport: number, dport: number, seq: number, ack: number, flags: number, opts: number[], data: Uint8Array): Uint8Array {
  const h = v6 ? 40 : 20, ol = (opts.length + 3) & ~3;
  const p = new Uint8Array(h + 20 + ol + data.length);
  ipHead(p, v6, 6, 20 + ol + data.length);
  const t = h;
  p[t] = sport >> 8; p[t + 1] = sport & 255; p[t + 2] = dport >> 8; p[t + 3] = dport & 255;
  p[t + 4] = seq >>> 24; p[t + 5] = (seq >>> 16) & 255; p[t + 6] = (seq >>> 8) & 255; p[t + 7] = seq & 255;
  p[t + 8] = ack >>> 24; p[t + 9] = (ack >>> 16) & 255; p[t + 10] = (ack >>> 8) & 255; p[t + 11] = ack & 255;
  p[t + 12] = ((20 + ol) / 4) << 4; p[t + 13] = flags; p[t + 14] = 0xff; p[t + 15] = 0xff;
  p.set(opts, t + 20);
  p.set(data, t + 20 + ol);
  return p;
}

function ipHead(p: Uint8Array, v6: boolean, proto: number, l4: number): void {
  if (v6) {
    p[0] = 0x60; p[4] = l4 >> 8; p[5] = l4 & 255; p[6] = proto; p[7] = 64; p.set(B6, 8); p.set(A6, 24);
  } else {
    p[0] = 0x45; p[2] = (20 + l4) >> 8; p[3] = (20 + l4) & 255; p[8] = 64; p[9] = proto; p.set(B4, 12); p.set(A4, 16);
  }
}

/** Recomputes the IPv4 header checksum and the TCP/UDP/ICMP checksum where the headers allow. */
function fixChecksums(p: Uint8Array): void {
  if (p.length < 1) return;
  const v = p[0]! >> 4;
  let proto: number, l4: number, l4Len: number, family: 4 | 6;
  if (v === 4 && p.length >= 20) {
    const ihl = (p[0]! & 15) * 4;
    if (ihl < 20 || ihl > p.length) return;
    p[10] = 0; p[11] = 0;
    const c = fold(sum16(p, 0, ihl));
    p[10] = c >> 8; p[11] = c & 255;
    const tot = Math.min((p[2]! << 8) | p[3]!, p.length);
    proto = p[9]!; l4 = ihl; l4Len = tot - ihl; family = 4;
  } else if (v === 6 && p.length >= 40) {
    proto = p[6]!; l4 = 40; l4Len = Math.min((p[4]! << 8) | p[5]!, p.length - 40); family = 6;
  } else return;
  if (l4Len < 0) return;
  const at = proto === 6 ? 16 : proto === 17 ? 6 : (proto === 1 || proto === 58) ? 2 : -1;
  if (at < 0 || l4Len < at + 2) return;
  p[l4 + at] = 0; p[l4 + at + 1] = 0;
  const src = family === 4 ? 12 : 8, dst = family === 4 ? 16 : 24;
  const base = proto === 1 ? 0 : pseudoSum(family, p, src, p, dst, proto, l4Len);
  const c = fold(sum16(p, l4, l4Len, base));
  p[l4 + at] = c >> 8; p[l4 + at + 1] = c & 255;
}

const TCP_SEEDS: Uint8Array[] = (() => {
  const out: Uint8Array[] = [];
  const mss = [2, 4, 0x05, 0xb4], ws = [1, 3, 3, 7], sackOk = [4, 2], ts = [8, 10, 0, 0, 0, 1, 0, 0, 0, 0];
  for (const v6 of [false, true]) {
    const syn = tcpSeg(v6, 40000, 80, 1000, 0, 0x02, [...mss, ...ws, ...sackOk, 1, ...ts], new Uint8Array(0));
    // ack numbers are relative to what the stack sent last (mode bit 1): 0 = exactly its snd.nxt.
    const ack = tcpSeg(v6, 40000, 80, 1001, 0, 0x10, [], new Uint8Array(0));
    const data = tcpSeg(v6, 40000, 80, 1001, 0, 0x18, [], enc('GET / HTTP/1.1\r\n\r\n'));
    const ooo = tcpSeg(v6, 40000, 80, 1100, 0, 0x10, [], new Uint8Array(40).fill(0x61));
    const sack = tcpSeg(v6, 40000, 80, 1019, 0, 0x10, [1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 9], new Uint8Array(0));
    const fin = tcpSeg(v6, 40000, 80, 1019, 0, 0x11, [], new Uint8Array(0));
    const rst = tcpSeg(v6, 40000, 80, 1019, 0, 0x04, [], new Uint8Array(0));
    out.push(netstackInput(0x03, [syn, ack, data, ooo, sack, fin]));
    out.push(netstackInput(0x03 | (4 << 3), [syn, ack, data, rst]));
    out.push(netstackInput(0x03 | (7 << 3), [syn, ack, ooo, data, ooo]));
    out.push(netstackInput(0x01, [syn, syn, tcpSeg(v6, 40001, 81, 5, 0, 0x02, [], new Uint8Array(0))]));
    const udp = new Uint8Array((v6 ? 40 : 20) + 8 + 5);
    ipHead(udp, v6, 17, 13);
    const u = v6 ? 40 : 20;
    udp[u] = 0x30; udp[u + 1] = 0x39; udp[u + 3] = 53; udp[u + 5] = 13; udp.set(enc('hello'), u + 8);
    const echo = new Uint8Array((v6 ? 40 : 20) + 8 + 4);
    ipHead(echo, v6, v6 ? 58 : 1, 12);
    echo[v6 ? 40 : 20] = v6 ? 128 : 8;
    out.push(netstackInput(0x05, [udp, echo, udp]));
  }
  return out;
})();

const NOP_HANDLER = { onData(): void {}, onEnd(c: Tcb): void { c.shutdown(); }, onWritable(): void {}, onClose(): void {} };

/** Runs one netstack input; the stack is fresh each time (inputs reproduce on their own). */
function runNetstack(d: Uint8Array): void {
  if (d.length < 1) return;
  const mode = d[0]!;
  const clock = { t: 1000 };
  let lastSeq = 0;
  const s = new Netstack({
    now: () => clock.t,
    output: (b, o, l) => {
      // Remember the next sequence number the stack will send (for relative acks).
      const v6 = b[o]! >> 4 === 6, h = v6 ? 40 : (b[o]! & 15) * 4;
      if ((v6 ? b[o + 6] : b[o + 9]) !== 6 || l < h + 20) return;
      const t = o + h, fl = b[t + 13]!;
      const seq = ((b[t + 4]! << 24) | (b[t + 5]! << 16) | (b[t + 6]! << 8) | b[t + 7]!) >>> 0;
      const dlen = l - h - (b[t + 12]! >> 4) * 4;
      lastSeq = (seq + dlen + (fl & 0x02 ? 1 : 0) + (fl & 0x01 ? 1 : 0)) >>> 0;
    },
    random: (b) => { b.fill(0x5a); },
    limits: { maxConns: 8, maxHalfOpen: 4 },
  });
  s.setAddresses(['100.64.0.1/32', 'fd7a:115c:a1e0::1/128']);
  s.addServiceAddress('100.100.100.100');
  s.promiscuous = (mode & 4) !== 0;
  s.listen(80, (c) => { c.handler = NOP_HANDLER; const m = enc('hello\n'); c.write(m, 0, m.length); });
  let held = 0;
  s.onTcp = (c) => { if (held++ % 2 === 0) c.accept(NOP_HANDLER); else c.reject(); };
  s.bindUdp(53, (g) => { s.sendUdp(g.family, g.dst, g.dstPort, g.src, g.srcPort, g.buf, g.off, Math.min(g.len, 64)); });
  s.onUdp = () => {};
  const step = 2 ** ((mode >> 3) & 7);
  let o = 1;
  for (let k = 0; k < 64 && o + 2 <= d.length; k++) {
    const n = Math.min((d[o]! << 8) | d[o + 1]!, d.length - o - 2);
    const p = d.slice(o + 2, o + 2 + n);
    o += 2 + n;
    if (mode & 2) relativeAck(p, lastSeq);
    if (mode & 1) fixChecksums(p);
    s.input(p, 0, p.length);
    s.endBatch();
    clock.t += step;
    s.tick();
  }
  // Let the timers run out: retransmissions, keepalives, TIME-WAIT; bounded steps.
  for (let k = 0; k < 40 && s.wakeAt !== Infinity; k++) { clock.t = Math.max(clock.t + 1, s.wakeAt); s.tick(); }
  s.close();
}

/** Adds the stack's next sequence number to a TCP segment's ack field. */
function relativeAck(p: Uint8Array, base: number): void {
  const v = p[0]! >> 4;
  const h = v === 6 ? 40 : v === 4 ? (p[0]! & 15) * 4 : -1;
  if (h < 20 || p.length < h + 20 || (v === 6 ? p[6] : p[9]) !== 6) return;
  const t = h + 8;
  const rel = ((p[t]! << 24) | (p[t + 1]! << 16) | (p[t + 2]! << 8) | p[t + 3]!) | 0;
  const ack = (base + rel) >>> 0;
  p[t] = ack >>> 24; p[t + 1] = (ack >>> 16) & 255; p[t + 2] = (ack >>> 8) & 255; p[t + 3] = ack & 255;
}

// ---- proxies and port mapping ----------------------------------------------------------------

/** Splits input after byte 0 into up to 4 chunks at offsets from bytes 1-3 (as a TCP stream arrives). */
function streamChunks(d: Uint8Array): Uint8Array[] {
  if (d.length < 4) return [d];
  const body = d.subarray(4), out: Uint8Array[] = [];
  let off = 0;
  for (let i = 1; i < 4 && off < body.length; i++) {
    const n = d[i]! % (body.length - off + 1);
    out.push(body.subarray(off, off + n));
    off += n;
  }
  out.push(body.subarray(off));
  return out;
}

const SSDP_OK = 'HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n' +
  'USN: uuid:x::urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLOCATION: http://192.168.1.1:5000/rootDesc.xml\r\nSERVER: miniupnpd/2.3\r\n\r\n';
const ROOT_DESC = '<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><URLBase>http://192.168.1.1:5000/</URLBase><device>' +
  '<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><deviceList><device><serviceList>' +
  '<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>/ctl/IPConn</controlURL></service>' +
  '<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType><controlURL>ctl/PPP</controlURL></service>' +
  '</serviceList></device></deviceList></device></root>';
const SOAP_OK = '<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>' +
  '<u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewExternalIPAddress>198.18.0.7</NewExternalIPAddress>' +
  '</u:GetExternalIPAddressResponse></s:Body></s:Envelope>';
const SOAP_FAULT = '<s:Envelope><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError>' +
  '<errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>';

/** The targets of this file. */
export const STACK_TARGETS: readonly Target[] = [
  {
    name: 'dns-query',
    arb: fc.tuple(fc.nat(65535), fc.constantFrom(...QNAMES), fc.constantFrom(...QTYPES), fc.option(fc.constantFrom(512, 1232, 4096, 65535), { nil: undefined }))
      .map(([id, n, t, e]) => dnsQuery(id, n, t, e)),
    seeds: () => QNAMES.flatMap((n, i) => [dnsQuery(i, n, QTYPES[i % QTYPES.length]!), dnsQuery(i, n, 28, 4096)]),
    dict: ['\x00\x00\x29\x10\x00', '\xc0\x0c', '\x03ts\x03net\x00', '\x05meshd\x04test\x00', '\x07in-addr\x04arpa\x00', '\x00\x01\x00\x01', '\x00\x0c\x00\x01'],
    run(d) {
      const r = RESOLVER.respond(d);
      if (r.kind === 'reply') {
        setTcIfTooBig(r.bytes, 512);
        if (r.bytes.length < 12) throw new Error(`reply of ${r.bytes.length} bytes`);
      }
      parseQuery(d);
      clampEdns(d);
      udpSizeOf(d);
    },
  },
  {
    name: 'dns-quad100',
    arb: fc.tuple(fc.boolean(), fc.uint8Array({ maxLength: 64 })).map(([v6, q]) => udpTo100(v6, q)),
    seeds: () => [false, true].flatMap((v6) => QNAMES.slice(0, 6).map((n, i) => udpTo100(v6, dnsQuery(i, n, 1)))),
    run(d) {
      for (const off of [0, 3]) {
        if (off >= d.length) break;
        const v = classify(d, off, d.length - off);
        if (v === Verdict.DNS) {
          const p = parseDnsPacket(d, off);
          if (p.payloadOff + p.payloadLen > d.length) throw new Error(`payload [${p.payloadOff}, +${p.payloadLen}) past a ${d.length}-byte packet`);
          RESOLVER.respond(d.subarray(p.payloadOff, p.payloadOff + p.payloadLen));
        }
      }
    },
  },
  {
    name: 'netstack',
    seeds: () => TCP_SEEDS,
    maxLen: 8192,
    run: runNetstack,
  },
  {
    name: 'socks5',
    arb: fc.tuple(fc.uint8Array({ minLength: 3, maxLength: 3 }), fc.constantFrom(0, 1, 2), fc.constantFrom(1, 3, 4, 5), fc.string({ maxLength: 20 }), fc.nat(65535))
      .map(([cuts, auth, atyp, host, port]) => {
        const hb = atyp === 1 ? [10, 0, 0, 1] : atyp === 4 ? new Array<number>(16).fill(1) : [...enc(host)].length > 0 ? [[...enc(host)].length, ...enc(host)] : [0];
        const greet = auth === 1 ? [5, 2, 0, 2, 1, 3, 117, 115, 114, 2, 112, 119] : [5, 1, auth === 0 ? 0 : 2];
        return Uint8Array.from([auth & 1, ...cuts, ...greet, 5, 1, 0, atyp, ...hb, port >> 8, port & 255, 71, 69, 84]);
      }),
    seeds: () => [
      Uint8Array.from([0, 2, 3, 4, 5, 1, 0, 5, 1, 0, 1, 100, 64, 0, 2, 0, 80]),
      Uint8Array.from([1, 1, 9, 2, 5, 1, 2, 1, 3, 117, 115, 114, 2, 112, 119, 5, 1, 0, 3, 7, ...enc('example'), 1, 187, 1, 2]),
      Uint8Array.from([0, 0, 0, 0, 5, 1, 0, 5, 1, 0, 4, ...new Array<number>(16).fill(0xfd), 0, 22]),
    ],
    run(d) {
      if (d.length < 1) return;
      const h = new SocksHandshake({ auth: (d[0]! & 1) === 1 });
      for (const c of streamChunks(d.subarray(1))) {
        let step = h.feed(c);
        for (let k = 0; k < 8 && step.t !== 'more' && step.t !== 'error' && step.t !== 'request'; k++) step = h.feed(new Uint8Array(0));
        if (step.t === 'error' || step.t === 'request') {
          if (step.t === 'request' && (!Number.isInteger(step.req.port) || step.req.port < 0 || step.req.port > 65535)) throw new Error(`port ${step.req.port}`);
          return;
        }
      }
    },
  },
  {
    name: 'http-proxy',
    arb: fc.tuple(fc.constantFrom('CONNECT', 'GET', 'POST', 'get', ''), fc.constantFrom('t1:80', '[fd7a::1]:443', 'http://t1/x?y', 'https://a/', 'h:0', 'h:99999', '::1:80', 'x'),
      fc.array(fc.constantFrom('Host: t1', 'Proxy-Authorization: x', 'Connection: keep-alive', 'X: y', 'bad'), { maxLength: 4 }))
      .map(([m, t, hs]) => enc(`${m} ${t} HTTP/1.1\r\n${hs.map((h) => `${h}\r\n`).join('')}\r\nbody`)),
    dict: ['\r\n', '\r\n\r\n', 'CONNECT ', ' HTTP/1.1', 'Host: ', ':443', '[::1]', 'http://'],
    // Malformed heads are answered 400 with the message; anything else escaping is a crash.
    expected: (e) => e instanceof Error && e.constructor === Error && /^(request head|malformed|bad CONNECT|bad port|bogus|only http)/.test(e.message),
    run(d) {
      const req = parseRequestHead(Buffer.from(d.buffer, d.byteOffset, d.length));
      if (!req) return;
      if (req.method === 'CONNECT') parseAuthority(req.target);
      else {
        let u: URL;
        try { u = new URL(req.target); } catch { throw new Error('bogus RequestURI'); }
        if (u.protocol !== 'http:') throw new Error('only http');
      }
    },
  },
  {
    name: 'natpmp-pcp',
    arb: fc.tuple(fc.constantFrom(0, 2), fc.constantFrom(0x80, 0x81, 0x82, 0x81 | 0x80, 0x01), fc.uint8Array({ minLength: 6, maxLength: 70 }))
      .map(([v, op, rest]) => Uint8Array.from([v, op, ...rest])),
    seeds: () => [
      Uint8Array.from([0, 0x80, 0, 0, 0, 0, 1, 0, 198, 18, 0, 7]),
      Uint8Array.from([0, 0x81, 0, 0, 0, 0, 1, 0, 0xa2, 0x69, 0xa2, 0x69, 0, 0, 0x1c, 0x20]),
      Uint8Array.from([2, 0x81, 0, 0, 0, 0, 0x1c, 0x20, 0, 0, 0, 9, ...new Array<number>(12).fill(0), ...new Array<number>(12).fill(7), 17, 0, 0, 0,
        0xa2, 0x69, 0xa2, 0x69, ...new Array<number>(10).fill(0), 0xff, 0xff, 198, 18, 0, 7]),
    ],
    run(d) { parsePmp(d); parsePcp(d); },
  },
  {
    name: 'upnp',
    seeds: () => [SSDP_OK, ROOT_DESC, SOAP_OK, SOAP_FAULT].map(enc),
    dict: ['<service>', '</service>', '<serviceType>', '</serviceType>', '<controlURL>', '</controlURL>', '<URLBase>', 'Response>', '</u:',
      '<s:Fault>', '<errorCode>', '&amp;', '&lt;', 'urn:schemas-upnp-org:service:WANIPConnection:1', ':InternetGatewayDevice:', 'LOCATION: ', '\r\n'],
    maxLen: 16384,
    run(d) {
      parseSsdp(d);
      const text = new TextDecoder('latin1').decode(d);
      parseRootDescription(text, 'http://192.168.1.1:5000/rootDesc.xml');
      parseSoapResponse(text);
    },
  },
];
