import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readCounter, REJECT_AFTER_MESSAGES, REPLAY_WINDOW, ReplayFilter } from '../../src/wg/replay.ts';

describe('ReplayFilter', () => {
  it('follows the wireguard-go / Linux replay table', () => {
    const f = new ReplayFilter();
    const L = REJECT_AFTER_MESSAGES;
    const T_LIM = REPLAY_WINDOW + 1;
    const table: Array<[number, boolean]> = [
      [0, true], [1, true], [1, false], [9, true], [8, true], [7, true], [7, false],
      [T_LIM, true], [T_LIM - 1, true], [T_LIM - 1, false], [T_LIM - 2, true], [2, true], [2, false],
      [T_LIM + 16, true], [3, false], [T_LIM + 16, false], [T_LIM * 4, true], [T_LIM * 4 - (T_LIM - 1), true],
      [10, false], [T_LIM * 4 - T_LIM, false], [T_LIM * 4 - (T_LIM + 1), false], [T_LIM * 4 - (T_LIM - 2), true],
      [T_LIM * 4 + 1 - T_LIM, false], [0, false], [L, false], [L - 1, true], [L, false], [L - 1, false],
      [L - 2, true], [L + 1, false], [L + 2, false], [L - 2, false], [L - 3, true], [0, false],
    ];
    table.forEach(([n, want], i) => assert.equal(f.validate(n, L), want, `case ${i + 1}: counter ${n}`));
  });

  it('accepts a whole window in order and then 0 (bulk 1)', () => {
    const f = new ReplayFilter();
    for (let i = 1; i <= REPLAY_WINDOW; i++) assert.equal(f.validate(i), true);
    assert.equal(f.validate(0), true);
    assert.equal(f.validate(0), false);
  });

  it('rejects a counter one more than the window behind (bulk 2)', () => {
    const f = new ReplayFilter();
    for (let i = 2; i <= REPLAY_WINDOW + 1; i++) assert.equal(f.validate(i), true);
    assert.equal(f.validate(1), true);
    assert.equal(f.validate(0), false);
  });

  it('accepts a whole window in reverse order (bulk 3 to 6)', () => {
    let f = new ReplayFilter();
    for (let i = REPLAY_WINDOW + 1; i > 0; i--) assert.equal(f.validate(i), true);
    f = new ReplayFilter();
    for (let i = REPLAY_WINDOW + 2; i > 1; i--) assert.equal(f.validate(i), true);
    assert.equal(f.validate(0), false);
    f = new ReplayFilter();
    for (let i = REPLAY_WINDOW; i > 0; i--) assert.equal(f.validate(i), true);
    assert.equal(f.validate(REPLAY_WINDOW + 1), true);
    assert.equal(f.validate(0), false);
    f = new ReplayFilter();
    for (let i = REPLAY_WINDOW; i > 0; i--) assert.equal(f.validate(i), true);
    assert.equal(f.validate(0), true);
    assert.equal(f.validate(REPLAY_WINDOW + 1), true);
  });

  it('reads 64-bit counters exactly below 2^53 and flags larger ones with -1', () => {
    const b = new Uint8Array(8);
    b.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00]);
    assert.equal(readCounter(b, 0), 2 ** 53 - 1);
    b.set([0, 0, 0, 0, 0, 0, 0x20, 0]);
    assert.equal(readCounter(b, 0), -1);
    b.set([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert.equal(readCounter(b, 0), -1);
    b.set([1, 2, 3, 4, 5, 0, 0, 0]);
    assert.equal(readCounter(b, 0), 0x0504030201);
  });
});

describe('ReplayFilter loss accounting', () => {
  it('counts the counters a new highest one skips, net of those that arrive late', () => {
    const f = new ReplayFilter();
    for (const c of [0, 1, 2]) assert.equal(f.validate(c), true);
    assert.deepEqual([f.skipped, f.late], [0, 0], 'in order: nothing missing');
    assert.equal(f.validate(6), true); // 3, 4, 5 missing
    assert.deepEqual([f.skipped, f.late], [3, 0]);
    assert.equal(f.validate(4), true); // one of them was only late
    assert.deepEqual([f.skipped, f.late], [3, 1]);
    assert.equal(f.validate(4), false, 'a replay');
    assert.equal(f.validate(7), true);
    assert.equal(f.skipped - f.late, 2, 'lost so far: 3 and 5');
  });

  it('counts from counter 0 when the first packet seen is a later one', () => {
    const f = new ReplayFilter();
    assert.equal(f.validate(3), true);
    assert.equal(f.skipped, 3, '0, 1 and 2 missing');
    f.reset();
    assert.equal(f.validate(0), true);
    assert.deepEqual([f.skipped, f.late], [3, 0], 'reset keeps the running totals; counter 0 first is neither');
  });
});
