import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { RateLimiter } from '../../src/wg/ratelimiter.ts';

describe('RateLimiter', () => {
  it('lets a burst through, then 20 per second, per source', () => {
    const r = new RateLimiter();
    let ok = 0;
    for (let i = 0; i < 10; i++) if (r.allow('198.18.0.1', 0)) ok++;
    assert.equal(ok, 4, 'wireguard-go: a new source starts with burst - 1 tokens after its first packet');
    assert.equal(r.allow('198.18.0.2', 0), true, 'another source has its own bucket');
    let later = 0;
    for (let t = 10; t <= 1000; t += 10) if (r.allow('198.18.0.1', t)) later++;
    assert.ok(later >= 19 && later <= 21, `${later} in one second`);
  });

  it('forgets sources idle for more than a second', () => {
    const r = new RateLimiter();
    r.allow('a', 0);
    r.allow('b', 900);
    r.collect(1500);
    assert.equal(r.size, 1);
  });
});
