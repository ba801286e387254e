import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  TransportCipher, RecordReader, sealRecords, writeNonce, MAX_PLAINTEXT_SIZE, MAX_MESSAGE_SIZE,
} from '../../../src/control/noise/framing.ts';
import { referenceSeal } from './reference.ts';

const key = new Uint8Array(32).map((_, i) => i);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

describe('transport records', () => {
  it('puts the counter big-endian in the last 8 nonce bytes', () => {
    const n = new Uint8Array(12);
    writeNonce(1, n);
    assert.equal(hex(n), '000000000000000000000001');
    writeNonce(2 ** 32, n);
    assert.equal(hex(n), '000000000000000100000000');
    writeNonce(2 ** 53 - 1, n);
    assert.equal(hex(n), '00000000001fffffffffffff');
  });

  it('seals records exactly like an independent ChaCha20-Poly1305 with a big-endian nonce', () => {
    const tx = new TransportCipher(key);
    const msgs = ['hello', '', 'x'.repeat(300)].map((s) => Buffer.from(s));
    for (let i = 0; i < msgs.length; i++) {
      assert.equal(hex(tx.sealRecord(msgs[i]!)), hex(referenceSeal(key, BigInt(i), msgs[i]!)), `record ${i}`);
    }
  });

  it('has a golden first record for "hello" under key 00..1f', () => {
    const rec = new TransportCipher(key).sealRecord(Buffer.from('hello'));
    assert.equal(hex(rec.subarray(0, 3)), '040015');
    assert.equal(hex(rec), hex(referenceSeal(key, 0n, Buffer.from('hello'))));
  });

  it('splits writes into records of at most 4077 plaintext bytes (4096 on the wire)', () => {
    const tx = new TransportCipher(key);
    const data = new Uint8Array(MAX_PLAINTEXT_SIZE * 2 + 5).fill(7);
    const recs = sealRecords(tx, data);
    assert.deepEqual(recs.map((r) => r.length), [MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE, 5 + 16 + 3]);
    assert.equal(MAX_PLAINTEXT_SIZE, 4077);
  });

  it('reassembles records fed one byte at a time and skips empty records', () => {
    const tx = new TransportCipher(key);
    const rx = new RecordReader(new TransportCipher(key));
    const wire = Buffer.concat([tx.sealRecord(Buffer.from('ab')), tx.sealRecord(new Uint8Array(0)), tx.sealRecord(Buffer.from('cd'))]);
    const out: Uint8Array[] = [];
    for (const b of wire) out.push(...rx.feed(Uint8Array.of(b)));
    assert.equal(Buffer.concat(out).toString(), 'abcd');
    assert.equal(rx.pending, 0);
  });

  it('rejects a header announcing more than 4096 bytes before buffering its body', () => {
    const rx = new RecordReader(new TransportCipher(key));
    assert.throws(() => rx.feed(Uint8Array.of(4, 0x0f, 0xfe)), /exceeds 4093/);
  });

  it('rejects a non-record message type and a tampered record', () => {
    assert.throws(() => new RecordReader(new TransportCipher(key)).feed(Uint8Array.of(2, 0, 16)), /unexpected message type 2/);
    const rec = new TransportCipher(key).sealRecord(Buffer.from('hi'));
    rec[4]! ^= 0x80;
    assert.throws(() => new RecordReader(new TransportCipher(key)).feed(rec), /authentication failed/);
  });

  it('fails out-of-order records (counters cannot resync)', () => {
    const tx = new TransportCipher(key);
    const r0 = tx.sealRecord(Buffer.from('0'));
    const r1 = tx.sealRecord(Buffer.from('1'));
    const rx = new RecordReader(new TransportCipher(key));
    assert.throws(() => rx.feed(r1), /authentication failed/);
    void r0;
  });
});
