import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isSackAck, LOSS_WINDOW_MS, LOSSY_HOLD_MS, LossMonitor } from '../../src/wg/loss.ts';

/** An IPv4 TCP segment (ACK set) with `options` (padded to 4 bytes) and `payload` bytes of data. */
function tcp4(options: number[], payload = 0, flags = 0x10): Uint8Array {
  const opt = [...options];
  while (opt.length % 4) opt.push(1);
  const hl = 20 + opt.length, len = 20 + hl + payload;
  const p = new Uint8Array(len);
  p[0] = 0x45; p[2] = len >> 8; p[3] = len & 255; p[6] = 0x40; p[8] = 64; p[9] = 6;
  p[20 + 12] = (hl / 4) << 4; p[20 + 13] = flags;
  p.set(opt, 40);
  return p;
}
const TS = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
const SACK1 = [1, 1, 5, 10, 0, 0, 0, 10, 0, 0, 0, 20];

/** Feeds `mon` a path that delivers `perTick` packets every 100 ms and loses `lostPerTick` of them, for `ms`. */
function run(mon: LossMonitor, t0: number, ms: number, perTick: number, lostPerTick: number, late = 0, base = { rx: 0, skipped: 0, late: 0 }): { verdicts: boolean[]; t: number } {
  const verdicts: boolean[] = [];
  let t = t0;
  for (; t < t0 + ms; t += 100) {
    base.rx += perTick - lostPerTick;
    base.skipped += lostPerTick + late;
    base.late += late;
    verdicts.push(mon.update(t, base.rx, base.skipped, base.late));
  }
  return { verdicts, t };
}

describe('isSackAck', () => {
  it('finds a SACK block in a pure ACK, after timestamps or alone', () => {
    assert.equal(isSackAck(tcp4([...TS, ...SACK1]), 0, 20 + 20 + 24), true);
    const p = tcp4(SACK1);
    assert.equal(isSackAck(p, 0, p.length), true);
  });

  it('is false for an ACK with timestamps only, a data segment, a SYN and a non-TCP packet', () => {
    const ack = tcp4(TS);
    assert.equal(isSackAck(ack, 0, ack.length), false);
    const data = tcp4([...TS, ...SACK1], 100);
    assert.equal(isSackAck(data, 0, data.length), false, 'carries data: not a pure ACK');
    const syn = tcp4([...TS, ...SACK1], 0, 0x02);
    assert.equal(isSackAck(syn, 0, syn.length), false);
    const udp = tcp4([...TS, ...SACK1]);
    udp[9] = 17;
    assert.equal(isSackAck(udp, 0, udp.length), false);
  });

  it('stops at a malformed option list instead of reading past the header', () => {
    const bad = tcp4([8, 0, 5, 10, 0, 0, 0, 10, 0, 0, 0, 20]); // length 0: invalid
    assert.equal(isSackAck(bad, 0, bad.length), false);
    const short = tcp4([...TS, ...SACK1]);
    assert.equal(isSackAck(short, 0, 30), false, 'cut short');
  });
});

describe('LossMonitor', () => {
  it('calls a clean path clean, however busy', () => {
    const mon = new LossMonitor();
    const { verdicts } = run(mon, 0, 10_000, 3000, 0);
    assert.ok(verdicts.every((v) => !v));
  });

  it('calls a path losing 19% lossy within the first window of 200 packets', () => {
    const mon = new LossMonitor();
    const { verdicts } = run(mon, 0, 1_000, 100, 19);
    const first = verdicts.indexOf(true);
    assert.ok(first >= 0 && first <= 3, `lossy at tick ${first}`);
  });

  it('does not count reordering as loss: counters skipped and filled later cancel out', () => {
    const mon = new LossMonitor();
    const { verdicts } = run(mon, 0, 5_000, 100, 0, 10);
    assert.ok(verdicts.every((v) => !v));
  });

  it('turns lossy as soon as a window has 3 lost, without waiting for the window to end', () => {
    const mon = new LossMonitor();
    assert.equal(mon.update(0, 0, 0, 0), false);
    assert.equal(mon.update(100, 20, 2, 0), false);
    assert.equal(mon.update(200, 30, 3, 0), true, '3 of 33 lost, 200 ms into the window');
  });

  it('calls the way out lossy when the ACKs coming back carry SACK blocks, though nothing is lost on the way in', () => {
    const mon = new LossMonitor();
    mon.update(0, 0, 0, 0, 0);
    assert.equal(mon.update(100, 30, 0, 0, 7), false, 'a handful of SACKs says little');
    assert.equal(mon.update(200, 60, 0, 0, 12), true, '12 of 60 ACKs with SACK blocks');
    const clean = new LossMonitor();
    clean.update(0, 0, 0, 0, 0);
    assert.equal(clean.update(900, 1000, 0, 0, 20), false, '20 SACKs among 1000 ACKs: a drop or reordering, not a lossy path');
  });

  it('ignores a lone gap at a low rate (fewer than 3 lost in a window)', () => {
    const mon = new LossMonitor();
    const { verdicts } = run(mon, 0, 5_000, 2, 0.1);
    assert.ok(verdicts.every((v) => !v));
  });

  it(`holds the verdict ${LOSSY_HOLD_MS / 1000} s after the last lossy window, then lets go`, () => {
    const mon = new LossMonitor();
    const base = { rx: 0, skipped: 0, late: 0 };
    const lossy = run(mon, 0, 2_000, 100, 10, 0, base);
    assert.equal(lossy.verdicts.at(-1), true);
    const clean = run(mon, lossy.t, LOSSY_HOLD_MS + 2 * LOSS_WINDOW_MS, 100, 0, 0, base);
    assert.equal(clean.verdicts[0], true, 'still lossy right after');
    assert.equal(clean.verdicts.at(-1), false, 'clean again after the hold');
    assert.equal(mon.lossyWindows >= 1, true);
  });
});
