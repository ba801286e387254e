// The DERP liveness core on a fake clock: when it pings, when it gives a connection up, and that an
// idle or busy live connection is pinged a bounded number of times.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DerpLiveness, type LivenessAction } from '../../src/derp/liveness.ts';

/** Ticks every `step` ms from `from` to `to`; returns the times of each non-'none' action. */
function run(l: DerpLiveness, from: number, to: number, step: number, onTick?: (now: number, a: LivenessAction) => void): { at: number; a: LivenessAction }[] {
  const out: { at: number; a: LivenessAction }[] = [];
  for (let now = from; now <= to; now += step) {
    const a = l.tick(now);
    if (a !== 'none') out.push({ at: now, a });
    onTick?.(now, a);
  }
  return out;
}

describe('derp/liveness', () => {
  it('pings after idlePingMs of silence and declares the connection dead pingTimeoutMs later', () => {
    const l = new DerpLiveness({ idlePingMs: 15_000, activePingMs: 3_000, pingTimeoutMs: 5_000 });
    l.reset(0);
    const acts = run(l, 0, 30_000, 1000);
    assert.deepEqual(acts.slice(0, 2), [{ at: 15_000, a: 'ping' }, { at: 20_000, a: 'dead' }]);
  });

  it('pings soon after a send that nothing answers, and not before activePingMs of silence', () => {
    const l = new DerpLiveness({ idlePingMs: 15_000, activePingMs: 3_000, pingTimeoutMs: 5_000 });
    l.reset(0);
    l.onRead(10_000);
    l.onSend();
    assert.equal(l.tick(12_999), 'none');
    assert.equal(l.tick(13_000), 'ping');
    assert.equal(l.pinging, true);
    assert.equal(l.tick(17_999), 'none', 'one ping outstanding at a time');
    assert.equal(l.tick(18_000), 'dead');
  });

  it('a send after a long silence pings at the next tick', () => {
    const l = new DerpLiveness({ idlePingMs: 15_000, activePingMs: 3_000, pingTimeoutMs: 5_000 });
    l.reset(0);
    // A keep-alive at 10 s; at 14 s a packet goes out: 4 s of silence already, so ping now.
    l.onRead(10_000);
    assert.equal(l.tick(14_000), 'none');
    l.onSend();
    assert.equal(l.tick(14_100), 'ping');
  });

  it('any byte read answers the ping; the idle clock starts again from it', () => {
    const l = new DerpLiveness({ idlePingMs: 1000, activePingMs: 300, pingTimeoutMs: 500 });
    l.reset(0);
    assert.equal(l.tick(1000), 'ping');
    l.onRead(1040); // the pong (or a packet, or a keep-alive)
    assert.equal(l.pinging, false);
    assert.equal(l.tick(1600), 'none', 'not dead: answered');
    assert.equal(l.tick(2039), 'none');
    assert.equal(l.tick(2040), 'ping');
  });

  it('a live idle connection gets at most one ping per idlePingMs (no ping storm)', () => {
    const l = new DerpLiveness({ idlePingMs: 15_000, activePingMs: 3_000, pingTimeoutMs: 5_000 });
    l.reset(0);
    let pings = 0;
    // The server answers each ping 30 ms later and sends a keep-alive every 60 s.
    let answerAt = -1;
    run(l, 0, 600_000, 10, (now, a) => {
      if (a === 'ping') { pings++; answerAt = now + 30; }
      if (now === answerAt || (now > 0 && now % 60_000 === 0)) l.onRead(now);
      assert.notEqual(a, 'dead');
    });
    assert.ok(pings <= 600_000 / 15_000, `${pings} pings in 10 minutes`);
    assert.ok(pings >= 20, `still pings while idle (${pings}: 3 between two 60 s keep-alives)`);
  });

  it('a connection that sends all the time and hears back after each ping pings once per activePingMs at most', () => {
    const l = new DerpLiveness({ idlePingMs: 15_000, activePingMs: 3_000, pingTimeoutMs: 5_000 });
    l.reset(0);
    let pings = 0;
    let answerAt = -1;
    run(l, 0, 60_000, 10, (now, a) => {
      l.onSend();
      if (a === 'ping') { pings++; answerAt = now + 50; }
      if (now === answerAt) l.onRead(now);
      assert.notEqual(a, 'dead');
    });
    assert.ok(pings <= 20 && pings >= 15, `${pings} pings in a minute`);
  });

  it('a connection that keeps reading is never pinged', () => {
    const l = new DerpLiveness();
    l.reset(0);
    const acts = run(l, 0, 120_000, 100, (now) => { l.onSend(); if (now % 1000 === 0) l.onRead(now); });
    assert.deepEqual(acts, []);
  });

  it('refuses timings that are not positive', () => {
    assert.throws(() => new DerpLiveness({ pingTimeoutMs: 0 }), /pingTimeoutMs must be a positive number of ms, got 0/);
    assert.throws(() => new DerpLiveness({ idlePingMs: Number.NaN }), /idlePingMs/);
    assert.equal(new DerpLiveness().tickMs, 600);
  });
});
