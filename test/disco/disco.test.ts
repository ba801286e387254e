// Golden bytes: tailscale v1.102.3 disco/disco_test.go TestMarshalAndParse (inner payloads) and a
// whole sealed ping packet made by tailscale's disco + x/crypto nacl/box with fixed keys and nonce
// (test/vectors/golden/main.go).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoints } from '../../src/net/endpoint.ts';
import { boxBefore, boxSealAfter, generateKeyPair, publicKeyOf } from '../../src/crypto/box.ts';
import {
  decodeDisco, discoSender, encodeDisco, looksLikeDisco, marshalDisco, parseDisco, type DiscoMessage,
} from '../../src/disco/disco.ts';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const eps = new Endpoints();
const tx = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
const key = (set: Record<number, number>) => { const k = new Uint8Array(32); for (const [i, v] of Object.entries(set)) k[Number(i)] = v; return k; };
const k1 = key({ 1: 1, 2: 2, 30: 30, 31: 31 });
const c0 = key({ 1: 1, 2: 2, 3: 3, 30: 30, 31: 31 });
const c1 = key({ 1: 1, 2: 2, 4: 4, 30: 30, 31: 31 });
const challenge = Uint8Array.from({ length: 32 }, (_, i) => i);
const relay = {
  serverDisco: k1, clientDisco: [c0, c1] as [Uint8Array, Uint8Array], lamportId: 123n, vni: 456,
  bindLifetimeNs: 1_000_000_000n, steadyStateLifetimeNs: 60_000_000_000n,
  addrPorts: [eps.parse('1.2.3.4:567'), eps.parse('[2001::3456]:789')],
};
const bind = { vni: 1, generation: 2, remoteKey: k1, challenge };
const bindHex = '00 00 00 01 00 00 00 02 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b 1c 1d 1e 1f';
const relayHex = '00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 01 02 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 01 02 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 00 00 00 00 00 00 7b 00 00 01 c8 00 00 00 00 3b 9a ca 00 00 00 00 0d f8 47 58 00 00 00 00 00 00 00 00 00 00 00 ff ff 01 02 03 04 02 37 20 01 00 00 00 00 00 00 00 00 00 00 00 00 34 56 03 15';

const golden: [string, DiscoMessage, string][] = [
  ['ping', { type: 'ping', txId: tx, padding: 0 }, '01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c'],
  ['ping_with_nodekey_src', { type: 'ping', txId: tx, nodeKey: k1, padding: 0 },
    '01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f'],
  ['ping_with_padding', { type: 'ping', txId: tx, padding: 3 }, '01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 00 00'],
  ['ping_with_padding_and_nodekey_src', { type: 'ping', txId: tx, nodeKey: k1, padding: 3 },
    '01 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 01 02 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 00 00'],
  ['pong', { type: 'pong', txId: tx, src: eps.parse('2.3.4.5:1234') },
    '02 00 01 02 03 04 05 06 07 08 09 0a 0b 0c 00 00 00 00 00 00 00 00 00 00 ff ff 02 03 04 05 04 d2'],
  ['pongv6', { type: 'pong', txId: tx, src: eps.parse('[fed0::12]:6666') },
    '02 00 01 02 03 04 05 06 07 08 09 0a 0b 0c fe d0 00 00 00 00 00 00 00 00 00 00 00 00 00 12 1a 0a'],
  ['call_me_maybe', { type: 'call-me-maybe', endpoints: [] }, '03 00'],
  ['call_me_maybe_endpoints', { type: 'call-me-maybe', endpoints: [eps.parse('1.2.3.4:567'), eps.parse('[2001::3456]:789')] },
    '03 00 00 00 00 00 00 00 00 00 00 00 ff ff 01 02 03 04 02 37 20 01 00 00 00 00 00 00 00 00 00 00 00 00 34 56 03 15'],
  ['bind_udp_relay_endpoint', { type: 'bind-udp-relay-endpoint', ...bind }, `04 00 ${bindHex}`],
  ['bind_udp_relay_endpoint_challenge', { type: 'bind-udp-relay-endpoint-challenge', ...bind }, `05 00 ${bindHex}`],
  ['bind_udp_relay_endpoint_answer', { type: 'bind-udp-relay-endpoint-answer', ...bind }, `06 00 ${bindHex}`],
  ['call_me_maybe_via', { type: 'call-me-maybe-via', relay }, `07 00 ${relayHex}`],
  ['allocate_udp_relay_endpoint_request', { type: 'allocate-udp-relay-endpoint-request', clientDisco: [c0, c1], generation: 1 },
    '08 00 00 01 02 03 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 01 02 00 04 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 1e 1f 00 00 00 01'],
  ['allocate_udp_relay_endpoint_response', { type: 'allocate-udp-relay-endpoint-response', generation: 1, relay },
    `09 00 00 00 00 01 ${relayHex}`],
];

describe('disco', () => {
  for (const [name, msg, want] of golden) {
    it(`marshals and parses ${name} like tailscale`, () => {
      assert.equal(toHex(marshalDisco(msg)), want.replace(/ /g, ''));
      const back = parseDisco(hex(want), eps);
      assert.ok(back.ok);
      assert.deepEqual(back.msg, msg);
    });
  }

  it('opens a ping sealed by tailscale and seals the same bytes with the same nonce', () => {
    const privA = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
    const privB = Uint8Array.from({ length: 32 }, (_, i) => 100 + i);
    const pubA = publicKeyOf(privA);
    assert.equal(toHex(pubA), '07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c');
    const pkt = hex(`5453f09f92ac07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7cc8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9da
      dbdcdddedfc1054a1cc554bdf5f663f1bd6aea83f354fcc5fffe46d6040e45f41e7b448962a586a3ae096f1f1e5537ca5bc2b46510727ef52e99aac41239d87c3df161`);
    assert.equal(pkt.length, 124, 'an unpadded ping with node key is 124 bytes on the wire');
    const sharedB = boxBefore(pubA, privB);
    const r = decodeDisco(pkt, (s) => (toHex(s) === toHex(pubA) ? sharedB : undefined), eps);
    assert.ok(r.ok, JSON.stringify(r));
    assert.deepEqual(r.msg, { type: 'ping', txId: tx, nodeKey: Uint8Array.from({ length: 32 }, (_, i) => 50 + i), padding: 0 });
    // the same inner bytes sealed by us with tailscale's nonce give tailscale's packet
    const sharedA = boxBefore(publicKeyOf(privB), privA);
    const box = boxSealAfter(sharedA, pkt.subarray(38, 62), marshalDisco(r.msg));
    assert.equal(toHex(box), toHex(pkt.subarray(62)));
  });

  it('round-trips through encodeDisco/decodeDisco between two fresh key pairs', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const msg: DiscoMessage = { type: 'call-me-maybe', endpoints: [eps.parse('192.0.2.1:41641')] };
    const pkt = encodeDisco(msg, a.publicKey, boxBefore(b.publicKey, a.privateKey));
    assert.equal(pkt.length, 80 + 18);
    assert.ok(looksLikeDisco(pkt));
    assert.equal(toHex(discoSender(pkt)!), toHex(a.publicKey));
    const r = decodeDisco(pkt, () => boxBefore(a.publicKey, b.privateKey), eps);
    assert.ok(r.ok);
    assert.deepEqual(r.msg, msg);
  });

  it('is lenient where tailscale is: trailing bytes, bad call-me-maybe lengths and versions', () => {
    const pong = parseDisco(hex('02 00 0102030405060708090a0b0c 00000000000000000000ffff02030405 04d2 ffffffff'), eps);
    assert.ok(pong.ok && pong.msg.type === 'pong' && pong.msg.src.key === '2.3.4.5:1234');
    const cmmV1 = parseDisco(hex('03 01 00000000000000000000ffff01020304 0237'), eps);
    assert.deepEqual(cmmV1, { ok: true, msg: { type: 'call-me-maybe', endpoints: [] } });
    const cmmOdd = parseDisco(hex('03 00 00000000000000000000ffff01020304 023700'), eps);
    assert.deepEqual(cmmOdd, { ok: true, msg: { type: 'call-me-maybe', endpoints: [] } });
    const pingOld = parseDisco(hex('01 00 0102030405060708090a0b0c 0000'), eps);
    assert.deepEqual(pingOld, { ok: true, msg: { type: 'ping', txId: tx, padding: 2 } });
  });

  it('reports, never throws on, unknown types, short bodies and junk', () => {
    assert.deepEqual(parseDisco(hex('0a 00 00'), eps), { ok: false, error: 'unknown-type' });
    assert.deepEqual(parseDisco(hex('01'), eps), { ok: false, error: 'short' });
    assert.deepEqual(parseDisco(hex('01 00 0102'), eps), { ok: false, error: 'short' });
    assert.deepEqual(parseDisco(hex('02 00 0102030405060708090a0b0c'), eps), { ok: false, error: 'short' });
    for (const [, , want] of golden) {
      const full = hex(want);
      for (let n = 0; n < full.length; n++) parseDisco(full.subarray(0, n), eps);
    }
    for (let i = 0; i < 3000; i++) {
      const junk = Uint8Array.from({ length: i % 200 }, () => (Math.random() * 256) | 0);
      if (junk.length > 0) junk[0] = junk[0]! % 12;
      parseDisco(junk, eps);
    }
  });

  it('drops packets from unknown senders, with a bad box, or without the magic', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const shared = boxBefore(b.publicKey, a.privateKey);
    const pkt = encodeDisco({ type: 'ping', txId: tx, padding: 0 }, a.publicKey, shared);
    const sharedB = boxBefore(a.publicKey, b.privateKey);
    assert.equal(decodeDisco(pkt, () => undefined).ok, false);
    assert.deepEqual(decodeDisco(pkt, () => undefined).ok === false && decodeDisco(pkt, () => undefined), { ok: false, error: 'unknown-sender', sender: pkt.subarray(6, 38) });
    const bad = pkt.slice(); bad[bad.length - 1]! ^= 0x80;
    assert.equal((decodeDisco(bad, () => sharedB) as { error: string }).error, 'bad-box');
    assert.equal((decodeDisco(pkt.subarray(0, 70), () => sharedB) as { error: string }).error, 'bad-box');
    assert.equal((decodeDisco(pkt.subarray(0, 61), () => sharedB) as { error: string }).error, 'not-disco');
    const nomagic = pkt.slice(); nomagic[0] = 0;
    assert.equal((decodeDisco(nomagic, () => sharedB) as { error: string }).error, 'not-disco');
    const inner = encodeDisco({ type: 'ping', txId: tx, padding: 0 }, a.publicKey, shared);
    assert.equal(decodeDisco(inner, () => sharedB).ok, true);
  });
});
