import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  COOKIE_REPLY_SIZE, INITIATION_SIZE, MessageType, messageTypeOf, Offsets, parseCookieReply, parseInitiation,
  parseResponse, RESPONSE_SIZE, writeCookieReply, writeInitiation, writeResponse, writeTransportHeader,
} from '../../src/wg/messages.ts';
import { toHex } from '../harness/bytes.ts';

const fill = (n: number, v: number): Uint8Array => new Uint8Array(n).fill(v);

describe('message layouts', () => {
  it('writes a 148-byte initiation with fields at the whitepaper offsets', () => {
    const m = writeInitiation({ sender: 0x04030201, ephemeral: fill(32, 0xe1), encStatic: fill(48, 0x5a), encTimestamp: fill(28, 0x7e) });
    assert.equal(m.length, INITIATION_SIZE);
    assert.equal(toHex(m),
      '01000000' + '01020304' + 'e1'.repeat(32) + '5a'.repeat(48) + '7e'.repeat(28) + '00'.repeat(16) + '00'.repeat(16));
    assert.deepEqual(Offsets.initiation, { sender: 4, ephemeral: 8, encStatic: 40, encTimestamp: 88, mac1: 116, mac2: 132 });
    const p = parseInitiation(m);
    assert.equal(p.sender, 0x04030201);
    assert.deepEqual(p.encTimestamp, fill(28, 0x7e));
  });

  it('writes a 92-byte response with fields at the whitepaper offsets', () => {
    const m = writeResponse({ sender: 0xa0b0c0d0, receiver: 0x11223344, ephemeral: fill(32, 0xe2), encNothing: fill(16, 0x99) });
    assert.equal(m.length, RESPONSE_SIZE);
    assert.equal(toHex(m), '02000000' + 'd0c0b0a0' + '44332211' + 'e2'.repeat(32) + '99'.repeat(16) + '00'.repeat(32));
    const p = parseResponse(m);
    assert.equal(p.sender, 0xa0b0c0d0);
    assert.equal(p.receiver, 0x11223344);
  });

  it('writes a 64-byte cookie reply with fields at the whitepaper offsets', () => {
    const m = writeCookieReply({ receiver: 7, nonce: fill(24, 0x4e), encCookie: fill(32, 0xcc) });
    assert.equal(m.length, COOKIE_REPLY_SIZE);
    assert.equal(toHex(m), '03000000' + '07000000' + '4e'.repeat(24) + 'cc'.repeat(32));
    assert.equal(parseCookieReply(m).receiver, 7);
  });

  it('writes the transport header as type 4, receiver LE, counter LE u64', () => {
    const b = new Uint8Array(16);
    writeTransportHeader(b, 0, Uint8Array.of(0xef, 0xbe, 0xad, 0xde), 0x0123456789ab);
    assert.equal(toHex(b), '04000000' + 'efbeadde' + 'ab89674523010000');
  });

  it('dispatches on type and exact size, and rejects everything else', () => {
    const withType = (n: number, t: number): Uint8Array => { const b = new Uint8Array(n); b[0] = t; return b; };
    assert.equal(messageTypeOf(withType(148, 1), 0, 148), MessageType.Initiation);
    assert.equal(messageTypeOf(withType(149, 1), 0, 149), 0);
    assert.equal(messageTypeOf(withType(147, 1), 0, 147), 0);
    assert.equal(messageTypeOf(withType(92, 2), 0, 92), MessageType.Response);
    assert.equal(messageTypeOf(withType(93, 2), 0, 93), 0);
    assert.equal(messageTypeOf(withType(64, 3), 0, 64), MessageType.CookieReply);
    assert.equal(messageTypeOf(withType(32, 4), 0, 32), MessageType.Transport);
    assert.equal(messageTypeOf(withType(31, 4), 0, 31), 0);
    assert.equal(messageTypeOf(withType(1332, 5), 0, 1332), 0, 'ML-KEM initiation (type 5) is dropped');
    assert.equal(messageTypeOf(withType(1180, 6), 0, 1180), 0);
    const hiBits = withType(148, 1);
    hiBits[3] = 1;
    assert.equal(messageTypeOf(hiBits, 0, 148), 0, 'the upper three bytes of the type word must be zero');
    assert.equal(messageTypeOf(Uint8Array.of(7), 0, 1), 0, 'the one-byte GSO sentinel');
    assert.equal(messageTypeOf(new Uint8Array(0), 0, 0), 0);
  });

  it('refuses to write fields of the wrong size', () => {
    assert.throws(() => writeInitiation({ sender: 1, ephemeral: fill(31, 0), encStatic: fill(48, 0), encTimestamp: fill(28, 0) }), /ephemeral must be 32 bytes/);
  });
});
