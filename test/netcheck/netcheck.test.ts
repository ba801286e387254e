// netcheck's pure parts: the probe plan, the report, and home-region hysteresis.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoints } from '../../src/net/endpoint.ts';
import { netInfoOf, pickHome, planProbes, ReportBuilder, ReportHistory, REPORT_HISTORY_MS } from '../../src/netcheck/netcheck.ts';
import type { DERPMap } from '../../src/control/wire.ts';

const eps = new Endpoints();
const map: DERPMap = {
  Regions: {
    '1': { RegionID: 1, RegionCode: 'a', RegionName: 'A', Nodes: [{ Name: '1a', RegionID: 1, HostName: 'a.example', IPv4: '192.0.2.1' }] },
    '2': { RegionID: 2, RegionCode: 'b', RegionName: 'B', Nodes: [{ Name: '2a', RegionID: 2, HostName: '192.0.2.2', STUNPort: 3479 }] },
    '3': { RegionID: 3, RegionCode: 'c', RegionName: 'C', NoMeasureNoHome: true, Nodes: [{ Name: '3a', RegionID: 3, HostName: '192.0.2.3' }] },
    '4': { RegionID: 4, RegionCode: 'd', RegionName: 'D', Nodes: [{ Name: '4a', RegionID: 4, HostName: '192.0.2.4', STUNPort: -1 }] },
  },
};

describe('netcheck', () => {
  it('plans three tries per measurable region, to the IPv4 or a literal host, skipping disabled STUN', () => {
    const p = planProbes(map);
    assert.deepEqual(p.map((x) => `${x.region}@${x.delayMs}:${x.host}:${x.port}`), [
      '1@0:192.0.2.1:3478', '1@100:192.0.2.1:3478', '1@200:192.0.2.1:3478',
      '2@0:192.0.2.2:3479', '2@100:192.0.2.2:3479', '2@200:192.0.2.2:3479',
    ]);
  });

  it('keeps the best latency per region and sees a mapping that varies by destination', () => {
    const r = new ReportBuilder();
    r.sentProbe('t1', 1, '192.0.2.1', 0);
    r.sentProbe('t2', 1, '192.0.2.1', 100);
    r.sentProbe('t3', 2, '192.0.2.2', 0);
    assert.equal(r.onResponse('t1', eps.parse('203.0.113.5:1000'), 30), true);
    assert.equal(r.onResponse('t2', eps.parse('203.0.113.5:1000'), 110), true);
    assert.equal(r.onResponse('nope', eps.parse('203.0.113.5:1000'), 110), false);
    r.onResponse('t3', eps.parse('203.0.113.5:2000'), 50);
    const rep = r.report();
    assert.equal(rep.udp, true);
    assert.deepEqual([...rep.regionLatency], [[1, 10], [2, 50]]);
    assert.equal(rep.globalV4?.key, '203.0.113.5:1000');
    assert.equal(rep.mappingVariesByDestIP, true);
    assert.deepEqual(netInfoOf(rep, 1), { PreferredDERP: 1, DERPLatency: { '1-v4': 0.01, '2-v4': 0.05 }, WorkingUDP: true, WorkingIPv6: false, MappingVariesByDestIP: true });
  });

  it('stops probing once every region answered, or after the slowest of three (twice that in a full report)', () => {
    const all = new ReportBuilder();
    all.sentProbe('a', 1, '192.0.2.1', 0);
    all.sentProbe('b', 2, '192.0.2.2', 0);
    all.onResponse('a', eps.parse('203.0.113.5:1000'), 4);
    assert.equal(all.stopAt(2, true), Infinity, 'one of two regions: keep waiting');
    all.onResponse('b', eps.parse('203.0.113.5:1000'), 6);
    assert.ok(all.stopAt(2, true) <= 6, 'both answered: stop now, not after a fixed floor');
    const many = new ReportBuilder();
    for (const [tx, region, at] of [['1', 1, 10], ['2', 2, 30], ['3', 3, 20]] as const) {
      many.sentProbe(tx, region, '192.0.2.1', 0);
      many.onResponse(tx, eps.parse('203.0.113.5:1000'), at);
    }
    // The third answer came at 20 ms; the slowest of the three took 30 ms.
    assert.equal(many.stopAt(5, false), 20 + 30);
    assert.equal(many.stopAt(5, true), 20 + 60);
  });

  it('changes home only for a clear improvement (10 ms and a third)', () => {
    assert.equal(pickHome(map, new Map([[1, 30], [2, 25]]), 0), 2);
    assert.equal(pickHome(map, new Map([[1, 30], [2, 25]]), 1), 1, 'within 10 ms: keep');
    assert.equal(pickHome(map, new Map([[1, 100], [2, 80]]), 1), 1, 'better by less than a third: keep');
    assert.equal(pickHome(map, new Map([[1, 100], [2, 50]]), 1), 2);
    assert.equal(pickHome(map, new Map(), 2), 2, 'no data: keep');
    assert.equal(pickHome(map, new Map(), 0), 1, 'no data, no home: lowest region');
  });

  it('keeps 5 minutes of reports and picks home on the best recent latency, with hysteresis against the old home', () => {
    const h = new ReportHistory();
    h.add(new Map([[1, 50], [2, 22]]), 0);
    h.add(new Map([[1, 30], [2, 60]]), 1000); // region 2 had a bad moment
    assert.deepEqual([...h.bestRecent()].sort(), [[1, 30], [2, 22]]);
    const now = new Map([[1, 30], [2, 60]]);
    assert.equal(pickHome(map, now, 0), 1, 'this report alone: 1');
    assert.equal(pickHome(map, now, 0, { bestRecent: h.bestRecent() }), 2, 'over 5 min: 2 is best');
    assert.equal(pickHome(map, now, 1, { bestRecent: h.bestRecent() }), 1, 'but 30 -> 22 is within 10 ms: the old home stays');
    assert.equal(pickHome(map, new Map([[2, 25]]), 1, { oldHeardRecently: true }), 1, 'old home unmeasured but heard from: stays');
    assert.equal(pickHome(map, new Map([[2, 25]]), 1, { oldHeardRecently: false }), 2, 'old home gone: moves');
    h.add(new Map([[1, 40]]), REPORT_HISTORY_MS + 1001);
    assert.deepEqual([...h.bestRecent()], [[1, 40]], 'older reports dropped');
  });
});
