import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { compareTai64n, tai64n } from '../../src/wg/tai64n.ts';
import { toHex } from '../harness/bytes.ts';

describe('TAI64N', () => {
  it('labels the Unix epoch as 2^62 + 10 seconds and zero nanoseconds', () => {
    assert.equal(toHex(tai64n(0)), '400000000000000a' + '00000000');
  });

  it('writes seconds big-endian and whitens the low 24 bits of the nanoseconds', () => {
    // 2026-01-01T00:00:00.999Z: 999 ms = 999000000 ns = 0x3b8b87c0 -> 0x3b000000.
    const ms = Date.UTC(2026, 0, 1) + 999;
    const secs = Math.floor(ms / 1000) + 10;
    assert.equal(toHex(tai64n(ms)), '40000000' + secs.toString(16).padStart(8, '0') + '3b000000');
  });

  it('orders timestamps bytewise, equal within one whitening step', () => {
    const t = Date.UTC(2026, 0, 1);
    assert.ok(compareTai64n(tai64n(t), tai64n(t + 1000)) < 0);
    assert.ok(compareTai64n(tai64n(t + 1000), tai64n(t)) > 0);
    assert.equal(compareTai64n(tai64n(t), tai64n(t + 16)), 0);
    assert.ok(compareTai64n(tai64n(t), tai64n(t + 17)) < 0);
  });
});
