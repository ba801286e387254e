import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LOSS_WINDOW_MS, LOSSY_HOLD_MS, LossMonitor } from '../../src/wg/loss.ts';

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
