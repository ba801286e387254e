import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AgentMetrics, healthWarnings, pathLabel, type AgentFacts } from '../../src/daemon/metrics.ts';
import type { NetworkMap } from '../../src/control/netmap.ts';
import type { DataPlane } from '../../src/daemon/dataplane.ts';
import type { MagicSock } from '../../src/magicsock/magicsock.ts';
import { WgPipe, ipv4 } from '../harness/wgpipe.ts';

const facts = (over: Partial<AgentFacts> = {}): AgentFacts => ({
  map: undefined, controlReconnects: 0, mapUpdates: 0, controlDownSince: undefined, advertisedRoutes: 0,
  approvedRoutes: 0, otherHealth: [], now: Date.parse('2026-01-01T00:00:00Z'), ...over,
});

describe('metrics', () => {
  it('books the bytes of peers that moved traffic, looking up the path of those peers only', () => {
    const p = new WgPipe();
    for (let i = 1; i <= 300; i++) p.a.setPeer(Uint8Array.from({ length: 32 }, (_, j) => (j === 0 ? 7 : j === 31 ? i & 255 : j === 30 ? i >> 8 : 0)), { allowedIPs: [`10.7.${i >> 8}.${i & 255}/32`] });
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 100));
    p.deliver();
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 500));
    p.deliver();
    let lookups = 0;
    const magic = { pathOf: () => { lookups++; return { direct: '198.18.0.2:41641', derp: null }; }, counters: {}, derpStatus: () => [], homeRegion: 0 } as unknown as MagicSock;
    const dp = { device: p.a, counters: () => ({}) } as unknown as DataPlane;
    const m = new AgentMetrics();
    m.sample(dp, magic);
    assert.equal(lookups, 1, 'one path lookup: the one peer with traffic, not the 300 idle ones');
    const tx = p.a.peers().reduce((a, x) => a + x.txBytes, 0);
    assert.ok(tx > 600);
    assert.match(m.render(dp, magic, facts()), new RegExp(`^meshd_outbound_bytes_total\\{path="direct_ipv4"\\} ${tx}$`, 'm'));
    m.sample(dp, magic);
    assert.equal(lookups, 1, 'nothing moved since: no lookup');
  });

  it('labels paths as tailscale does', () => {
    assert.equal(pathLabel({ direct: '198.18.0.2:41641', derp: null }), 'direct_ipv4');
    assert.equal(pathLabel({ direct: '[2001:db8::2]:41641', derp: null }), 'direct_ipv6');
    assert.equal(pathLabel({ direct: '198.18.0.2:41641', derp: 'hs' }), 'derp');
    assert.equal(pathLabel({ direct: null, derp: null }), undefined);
  });
  it('renders valid exposition text with zeroes before anything ran', () => {
    const text = new AgentMetrics().render(undefined, undefined, facts({ controlReconnects: 2, mapUpdates: 5 }));
    for (const line of text.trim().split('\n')) {
      assert.match(line, /^(# (HELP|TYPE) meshd_[a-z0-9_]+ .+|meshd_[a-z0-9_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? \d+)$/, line);
    }
    assert.match(text, /^meshd_outbound_bytes_total\{path="derp"\} 0$/m);
    assert.match(text, /^meshd_control_reconnects_total 2$/m);
    assert.match(text, /^meshd_control_map_updates_total 5$/m);
  });
  it('warns about a key that expires within a day, and one that has expired', () => {
    const map = (keyExpiry: string) => ({ self: { keyExpiry }, peers: new Map() }) as unknown as NetworkMap;
    assert.match(healthWarnings(undefined, facts({ map: map('2026-01-01T05:30:00Z') })).join(), /node key expires in 5h30m/);
    assert.match(healthWarnings(undefined, facts({ map: map('2025-12-31T00:00:00Z') })).join(), /node key expired/);
    assert.deepEqual(healthWarnings(undefined, facts({ map: map('2026-03-01T00:00:00Z') })), []);
  });
  it('warns while control is unreachable, with how long', () => {
    const f = facts();
    assert.match(healthWarnings(undefined, { ...f, controlDownSince: f.now - 42_000 }).join(), /control unreachable for 42s/);
  });

  it('forgets peers that left: 1000 peers join, move bytes and leave, and the book is back to its baseline', () => {
    const peers = new Map<string, { rx: number; tx: number }>();
    const device = {
      forEachPeerTraffic: (f: (id: string, key: Uint8Array, rx: number, tx: number) => void) => { for (const [id, c] of peers) f(id, new Uint8Array(32), c.rx, c.tx); },
      counters: {},
    };
    const dp = { device, counters: () => ({}) } as unknown as DataPlane;
    const magic = { pathOf: () => ({ direct: '198.18.0.2:41641', derp: null }), counters: {}, derpStatus: () => [], homeRegion: 0 } as unknown as MagicSock;
    const m = new AgentMetrics();
    peers.set('stays', { rx: 10, tx: 10 });
    m.sample(dp, magic);
    assert.equal(m.trackedPeers, 1);
    for (let i = 0; i < 1000; i++) {
      peers.set(`p${i}`, { rx: 100, tx: 200 });
      m.sample(dp, magic);
      peers.delete(`p${i}`);
    }
    m.sample(dp, magic);
    assert.equal(m.trackedPeers, 1, 'only the peer still in the device');
    const text = m.render(dp, magic, facts());
    assert.match(text, /^meshd_inbound_bytes_total\{path="direct_ipv4"\} 100010$/m, 'the bytes of the peers that left stay counted');
    assert.match(text, /^meshd_outbound_bytes_total\{path="direct_ipv4"\} 200010$/m);
  });

  it('reports where the memory is: RSS, the V8 heap and its spaces, malloc, and the memory keeper when it runs', () => {
    const text = new AgentMetrics().render(undefined, undefined, facts({ keeper: { gcs: 2, gcSeconds: 0.03, trims: 3, trimSeconds: 0.002 } }));
    for (const kind of ['rss', 'heap_total', 'heap_used', 'external', 'array_buffers', 'v8_old_space', 'v8_code_space', 'malloc_in_use', 'malloc_free']) {
      const m = new RegExp(`^meshd_process_memory_bytes\\{kind="${kind}"\\} (\\d+)$`, 'm').exec(text);
      assert.ok(m, `kind ${kind} is reported`);
      assert.ok(Number(m[1]) > 0, `kind ${kind} is not zero`);
    }
    assert.match(text, /^meshd_malloc_trims_total 3$/m);
    assert.match(text, /^meshd_forced_gcs_total 2$/m);
    assert.match(text, /^meshd_malloc_trim_seconds_total 0.002$/m);
    assert.doesNotMatch(new AgentMetrics().render(undefined, undefined, facts()), /meshd_malloc_trims_total/, 'no keeper, no keeper metrics');
  });
});
