// PeerPath on a fake clock: DERP first, direct after a pong, trust and heartbeats, fallback.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoints } from '../../src/net/endpoint.ts';
import {
  betterAddr, HEARTBEAT_MS, PeerPath, PING_BACK_INTERVAL_MS, PING_TIMEOUT_MS, Route, SESSION_ACTIVE_TIMEOUT_MS, TRUST_UDP_ADDR_MS, type PathAction,
} from '../../src/magicsock/path.ts';

const eps = new Endpoints();
let seq = 0;
function newPath(): PeerPath {
  return new PeerPath(() => { const t = new Uint8Array(12); t[0] = ++seq & 0xff; t[1] = seq >> 8; return t; });
}
function pings(out: PathAction[]): Extract<PathAction, { kind: 'ping' }>[] {
  return out.filter((a): a is Extract<PathAction, { kind: 'ping' }> => a.kind === 'ping');
}

describe('PeerPath', () => {
  it('sends over DERP and pings every candidate with a call-me-maybe until a pong arrives', () => {
    const p = newPath();
    p.setMapEndpoints([eps.parse('198.18.0.10:41641'), eps.parse('[2001:db8::a]:41641')]);
    const out: PathAction[] = [];
    assert.equal(p.noteSend(0, out), Route.derp);
    assert.equal(pings(out).length, 2);
    assert.equal(out.filter((a) => a.kind === 'call-me-maybe').length, 1);
    // A second packet right after starts no new round.
    const out2: PathAction[] = [];
    assert.equal(p.noteSend(10, out2), Route.derp);
    assert.equal(out2.length, 0);
  });

  it('goes direct on a pong, trusts it 6.5 s, then sends both ways until the next pong', () => {
    const p = newPath();
    const a = eps.parse('198.18.0.10:41641');
    p.setMapEndpoints([a]);
    const out: PathAction[] = [];
    p.noteSend(0, out);
    const r = p.onPong(pings(out)[0]!.txId, 12);
    assert.equal(r?.latencyMs, 12);
    assert.equal(r?.becameBest, true);
    assert.equal(p.bestAddr?.key, a.key);
    assert.equal(p.noteSend(100, []), Route.udp);
    assert.equal(p.noteSend(12 + TRUST_UDP_ADDR_MS, []), Route.both);
  });

  it('keeps the path trusted with heartbeats while traffic flows', () => {
    const p = newPath();
    p.setMapEndpoints([eps.parse('198.18.0.10:41641')]);
    const out: PathAction[] = [];
    p.noteSend(0, out);
    p.onPong(pings(out)[0]!.txId, 5);
    for (let t = 0; t < 30_000; t += 100) {
      p.noteSend(t, []);
      const o: PathAction[] = [];
      p.tick(t, o);
      for (const x of pings(o)) p.onPong(x.txId, t + 5);
      assert.equal(p.trusted(t), true, `trusted at ${t}`);
    }
  });

  it('heartbeats also when the path was trusted before our first send (the peer pinged first)', () => {
    // The peer's ping arrives, we ping back, its pong makes the path trusted: all before we send a
    // WireGuard packet. tailscale starts the heartbeat on every send (noteTxActivityExtTriggerLocked),
    // trusted or not; without that the path lapses to UDP+DERP 6.5 s later while traffic flows.
    const p = newPath();
    const a = eps.parse('198.18.0.10:41641');
    p.setMapEndpoints([a]);
    const back: PathAction[] = [];
    p.onPingFrom(a, 0, back);
    assert.ok(p.onPong(pings(back)[0]!.txId, 3)?.becameBest);
    for (let t = 10; t < 30_000; t += 100) {
      assert.equal(p.noteSend(t, []), Route.udp, `UDP alone at ${t}`);
      const o: PathAction[] = [];
      p.tick(t, o);
      for (const x of pings(o)) p.onPong(x.txId, t + 3);
    }
  });

  it('falls back to DERP when pongs stop', () => {
    const p = newPath();
    p.setMapEndpoints([eps.parse('198.18.0.10:41641')]);
    const out: PathAction[] = [];
    p.noteSend(0, out);
    p.onPong(pings(out)[0]!.txId, 5);
    let t = 0;
    for (; t < 20_000 && p.bestAddr !== undefined; t += 100) { p.noteSend(t, []); p.tick(t, []); }
    assert.equal(p.bestAddr, undefined, 'best address forgotten');
    assert.ok(t <= TRUST_UDP_ADDR_MS + HEARTBEAT_MS + PING_TIMEOUT_MS + 200, `after ${t} ms`);
    assert.equal(p.noteSend(t, []), Route.derp);
  });

  it('pings call-me-maybe endpoints at once and learns candidates from received pings', () => {
    const p = newPath();
    const out: PathAction[] = [];
    p.onCallMeMaybe([eps.parse('203.0.113.1:1000'), eps.parse('[fe80::1]:1000')], 0, out);
    assert.deepEqual(pings(out).map((x) => x.to.key), ['203.0.113.1:1000']);
    p.onPingFrom(eps.parse('203.0.113.2:2000'), 1);
    assert.deepEqual(p.candidateKeys().sort(), ['203.0.113.1:1000', '203.0.113.2:2000']);
  });

  it('pings back at once a peer that pinged while the path is untrusted, at most once a second per address', () => {
    const p = newPath();
    const b = eps.parse('198.18.0.10:41641');
    p.setMapEndpoints([b]);
    const out: PathAction[] = [];
    p.noteSend(0, out); // discovery ping to b at 0: lost at b's NAT
    const back: PathAction[] = [];
    p.onPingFrom(b, 5, back);
    assert.deepEqual(pings(back).map((x) => x.to.key), [b.key], 'pinged back 5 ms after the first ping, not 5 s');
    p.onPong(pings(back)[0]!.txId, 6);
    assert.equal(p.trusted(6), true);
    const again: PathAction[] = [];
    p.onPingFrom(b, 7, again);
    assert.equal(again.length, 0, 'no ping-back while trusted');
    const q = newPath();
    const o1: PathAction[] = [], o2: PathAction[] = [], o3: PathAction[] = [];
    q.onPingFrom(b, 0, o1);
    q.onPingFrom(b, PING_BACK_INTERVAL_MS - 1, o2);
    q.onPingFrom(b, PING_BACK_INTERVAL_MS, o3);
    assert.deepEqual([o1.length, o2.length, o3.length], [1, 0, 1]);
  });

  it('answers a call-me-maybe with one of its own while untrusted, but never two within 5 s (no ping-pong)', () => {
    const cmm = (o: PathAction[]) => o.filter((a) => a.kind === 'call-me-maybe').length;
    const a = newPath(), b = newPath();
    const ea = eps.parse('198.18.0.101:41641'), eb = eps.parse('198.18.0.102:41641');
    a.setMapEndpoints([eb]);
    b.setMapEndpoints([ea]);
    const o1: PathAction[] = [];
    a.noteSend(0, o1); // a starts: pings and a call-me-maybe
    assert.equal(cmm(o1), 1);
    const o2: PathAction[] = [];
    b.onCallMeMaybe([ea], 10, o2); // b pings a and answers with its own
    assert.equal(pings(o2).length, 1);
    assert.equal(cmm(o2), 1);
    const o3: PathAction[] = [];
    a.onCallMeMaybe([eb], 20, o3); // a pings b again, but sent one 20 ms ago: no answer, the exchange ends
    assert.equal(pings(o3).length, 1);
    assert.equal(cmm(o3), 0);
    const o4: PathAction[] = [];
    b.onPong(pings(o2)[0]!.txId, 21);
    b.onCallMeMaybe([ea], 6000, o4);
    assert.equal(cmm(o4), 0, 'trusted: no answer');
  });

  it('stops heartbeats when idle and forgets ping-learned candidates', () => {
    const p = newPath();
    p.onPingFrom(eps.parse('203.0.113.2:2000'), 0);
    p.noteSend(0, []);
    let n = 0;
    for (let t = 0; t < SESSION_ACTIVE_TIMEOUT_MS + 10_000; t += 500) { const o: PathAction[] = []; p.tick(t, o); n += o.length; }
    assert.ok(n < 40, `bounded pings: ${n}`);
    assert.deepEqual(p.candidateKeys(), []);
  });

  it('ignores pongs it did not ask for', () => {
    const p = newPath();
    assert.equal(p.onPong(new Uint8Array(12), 0), undefined);
    assert.equal(p.counters.unknownPongs, 1);
  });

  it('prefers a clearly faster address and keeps the current one on a small difference', () => {
    const a = eps.parse('198.18.0.10:1'), b = eps.parse('198.18.0.11:1');
    assert.equal(betterAddr(a, 1, b, 10), true);
    assert.equal(betterAddr(a, 9.95, b, 10), false);
    assert.equal(betterAddr(a, 5, undefined, Infinity), true);
  });
});
