import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MapFrameReader, encodeMapFrame } from '../../src/control/mapframe.ts';

describe('map poll framing', () => {
  it('prefixes each JSON message with a little-endian u32 length', () => {
    assert.equal(encodeMapFrame({ KeepAlive: true }).toString('hex'), '12000000' + Buffer.from('{"KeepAlive":true}').toString('hex'));
  });

  it('splits messages fed in arbitrary pieces, including one byte at a time', () => {
    const wire = Buffer.concat([encodeMapFrame({ a: 1 }), encodeMapFrame({ KeepAlive: true }), encodeMapFrame({ b: 'x'.repeat(5000) })]);
    for (const step of [1, 3, 7, 4096, wire.length]) {
      const r = new MapFrameReader();
      const out: string[] = [];
      for (let i = 0; i < wire.length; i += step) out.push(...r.feed(wire.subarray(i, i + step)));
      assert.deepEqual(out.map((t) => Object.keys(JSON.parse(t) as object)[0]), ['a', 'KeepAlive', 'b'], `step ${step}`);
      assert.equal(r.pending, 0);
    }
  });

  it('refuses a length above the cap before buffering the body', () => {
    const r = new MapFrameReader(1000);
    assert.throws(() => r.feed(Buffer.from([0xe9, 0x03, 0, 0])), /1001 bytes exceeds 1000/);
  });
});
