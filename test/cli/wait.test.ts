import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LocalApiError, type PingReply } from '../../src/daemon/localapi.ts';
import { parseHosts, waitForHosts, type Pinger } from '../../src/cli/wait.ts';

const pong = (name: string): PingReply => ({ name, ip: '100.64.0.9', via: 'derp', endpoint: null, region: 999, regionCode: 'hs', latencyMs: 3 });

describe('waitForHosts', () => {
  it('returns at the first answer, not after a fixed wait', async () => {
    let calls = 0;
    const api: Pinger = { async ping() { calls++; return pong('a'); } };
    const t0 = Date.now();
    const [r] = await waitForHosts(api, ['a'], Date.now() + 10_000);
    assert.equal(r?.ok, true);
    assert.equal(calls, 1);
    assert.ok(Date.now() - t0 < 1000);
  });
  it('asks again for a host that joins the tailnet later', async () => {
    let calls = 0;
    const api: Pinger = {
      async ping() {
        if (++calls < 3) throw new LocalApiError('no_such_peer', 'no peer');
        return pong('late');
      },
    };
    const [r] = await waitForHosts(api, ['late'], Date.now() + 5_000);
    assert.equal(r?.ok, true);
    assert.equal(calls, 3);
  });
  it('names each host that did not answer by the deadline, with the reason', async () => {
    const api: Pinger = {
      async ping(req) {
        if (req.peer === 'good') return pong('good');
        if (req.peer === 'ghost') throw new LocalApiError('no_such_peer', 'no peer');
        await new Promise((r) => setTimeout(r, Math.min(req.timeoutMs, 50)));
        throw new LocalApiError('timeout', 'timed out');
      },
    };
    const t0 = Date.now();
    const rs = await waitForHosts(api, ['good', 'ghost', 'mute'], Date.now() + 600);
    assert.ok(Date.now() - t0 < 2000, 'bounded by the deadline');
    assert.deepEqual(rs.map((r) => [r.host, r.ok, r.ok ? '' : r.reason]), [['good', true, ''], ['ghost', false, 'not in the tailnet'], ['mute', false, 'no answer']]);
  });
  it('stops at once when no agent runs', async () => {
    const api: Pinger = { async ping() { throw new LocalApiError('not_running', 'no meshd agent answers'); } };
    await assert.rejects(waitForHosts(api, ['x'], Date.now() + 5_000), /no meshd agent/);
  });
});

describe('parseHosts', () => {
  it('splits on commas and spaces and drops duplicates', () => {
    assert.deepEqual(parseHosts(['a,b', 'b 100.64.0.1']), ['a', 'b', '100.64.0.1']);
  });
  it('refuses odd names', () => {
    assert.throws(() => parseHosts(['a;rm']), /bad host/);
  });
});
