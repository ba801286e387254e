// ByteRing: the TCP send buffer (FIFO with random-access reads, bounded, growing on demand).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ByteRing } from '../../src/netstack/ring.ts';

describe('ByteRing', () => {
  it('holds no memory until the first push, then grows by doubling up to its cap', () => {
    const r = new ByteRing(1 << 20);
    assert.equal(r.capacity, 0);
    assert.equal(r.push(new Uint8Array(10).fill(1), 0, 10), 10);
    assert.ok(r.capacity >= 10 && r.capacity <= 4096, `capacity ${r.capacity}`);
    r.push(new Uint8Array(100_000), 0, 100_000);
    assert.equal(r.length, 100_010);
    assert.ok(r.capacity >= 100_010 && r.capacity <= 1 << 20);
    assert.equal(r.free, (1 << 20) - 100_010);
  });

  it('keeps bytes in order across wrap-around, growth and drops, and takes no more than the cap', () => {
    const r = new ByteRing(5000);
    const src = new Uint8Array(20_000);
    for (let i = 0; i < src.length; i++) src[i] = (i * 7 + 3) & 255;
    let pushed = 0, dropped = 0;
    const out = new Uint8Array(5000);
    // Push and drop in uneven steps so the head moves round the buffer.
    for (let step = 0; step < 200 && pushed < src.length; step++) {
      pushed += r.push(src, pushed, Math.min(777, src.length - pushed));
      assert.ok(r.length <= 5000);
      r.copyOut(0, out, 0, r.length);
      for (let i = 0; i < r.length; i++) assert.equal(out[i], src[dropped + i], `byte ${dropped + i}`);
      const d = Math.min(r.length, 500 + (step % 3) * 100);
      r.drop(d);
      dropped += d;
    }
    assert.equal(pushed, src.length);
    // Filling past the cap takes only what fits.
    const room = 5000 - r.length;
    assert.equal(r.push(src, 0, 10_000), room);
    assert.equal(r.length, 5000);
    assert.equal(r.push(src, 0, 1), 0);
  });
});
