// PeerPath on a fake clock: DERP first, direct after a pong, trust and heartbeats, fallback.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoints } from '../../src/net/endpoint.ts';
import {
  BEST_OVERDUE_MS, betterAddr, HEARD_MS, HEARTBEAT_MS, PeerPath, PING_BACK_INTERVAL_MS, PING_TIMEOUT_MS, Route, SESSION_ACTIVE_TIMEOUT_MS, TRUST_UDP_ADDR_MS, type PathAction,
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
    assert.equal(p.counters.lapses, 1, 'one lapse counted');
    assert.ok(t <= TRUST_UDP_ADDR_MS + HEARTBEAT_MS + PING_TIMEOUT_MS + 200, `after ${t} ms`);
    assert.equal(p.noteSend(t, []), Route.derp);
  });

  it('after losing its path, answers over UDP where the peer\'s authenticated packets come from (and DERP) for HEARD_MS', () => {
    // chaos linkdown: the peer's link was down 20 s, our pings to it timed out and the path was
    // forgotten; its first packet after the link returns arrives over UDP while its DERP connection
    // is still being redialled. DERP alone would hand our reply to its dead old connection.
    const p = newPath();
    const a = eps.parse('198.18.0.10:41641');
    p.setMapEndpoints([a]);
    const out: PathAction[] = [];
    p.noteSend(0, out);
    p.onPong(pings(out)[0]!.txId, 5);
    let t = 0;
    for (; t < 20_000 && p.bestAddr !== undefined; t += 100) { p.noteSend(t, []); p.tick(t, []); }
    assert.equal(p.bestAddr, undefined, 'path forgotten');
    assert.equal(p.noteSend(t, []), Route.derp);
    assert.equal(p.udpAddr(t), undefined);
    p.onHeard(a, t);
    assert.equal(p.noteSend(t + 1, []), Route.both);
    assert.equal(p.udpAddr(t + 1), a);
    assert.equal(p.noteSend(t + HEARD_MS - 1, []), Route.both);
    assert.equal(p.noteSend(t + HEARD_MS, []), Route.derp, 'nothing heard since: DERP alone');
    assert.equal(p.udpAddr(t + HEARD_MS), undefined);
  });

  it('sends to the trusted best address, not where a packet was last heard from', () => {
    const p = newPath();
    const a = eps.parse('198.18.0.10:41641'), b = eps.parse('198.18.0.99:41641');
    p.setMapEndpoints([a]);
    const out: PathAction[] = [];
    p.noteSend(0, out);
    p.onPong(pings(out)[0]!.txId, 5);
    p.onHeard(b, 10);
    assert.equal(p.noteSend(20, []), Route.udp);
    assert.equal(p.udpAddr(20), a);
    // Untrusted: the heard address (fresh evidence the peer is there) before the stale best one.
    assert.equal(p.noteSend(5 + TRUST_UDP_ADDR_MS, []), Route.both);
    p.onHeard(b, 5 + TRUST_UDP_ADDR_MS);
    assert.equal(p.udpAddr(5 + TRUST_UDP_ADDR_MS + 1), b);
    assert.equal(p.udpAddr(5 + TRUST_UDP_ADDR_MS + HEARD_MS), a, 'heard too long ago: the best address');
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

  /**
   * A peer whose NAT moves: until `roamAt` everything to `old` is answered; after it, pings to `old`
   * are lost and the peer's heartbeats come from `moved` every 3 s (the first `firstPingAfter` ms
   * after the move), and our pings to `moved` are answered in 1 ms. `oldAlive` keeps `old`
   * answering too (the peer just sends from another address). Returns when `p` sent to `moved` by
   * UDP, or over DERP, or neither within 10 s.
   */
  function roam(p: PeerPath, old: ReturnType<typeof eps.parse>, moved: ReturnType<typeof eps.parse>, roamAt: number, firstPingAfter: number, oldAlive = false) {
    const pending: { txId: Uint8Array; at: number; to: string }[] = [];
    const handle = (o: PathAction[], t: number) => { for (const x of pings(o)) pending.push({ txId: x.txId, at: t, to: x.to.key }); };
    let nextPeerPing = roamAt + firstPingAfter;
    let udpToMoved = -1, derp = -1;
    for (let t = 0; t < roamAt + 10_000; t += 10) {
      // Answers: 1 ms, for pings to old before the move (or while oldAlive), to moved after it.
      for (let i = pending.length - 1; i >= 0; i--) {
        const q = pending[i]!;
        if (t - q.at < 1) continue;
        pending.splice(i, 1);
        const answered = q.to === old.key ? q.at < roamAt || oldAlive : q.at >= roamAt;
        if (answered) p.onPong(q.txId, t);
      }
      if (t >= nextPeerPing) {
        const o: PathAction[] = [];
        p.onPingFrom(moved, t, o);
        handle(o, t);
        nextPeerPing += HEARTBEAT_MS;
      }
      const o: PathAction[] = [];
      const r = p.noteSend(t, o);
      p.tick(t, o);
      handle(o, t);
      if (t < roamAt) continue;
      if (r & Route.udp && p.bestAddr?.key === moved.key && udpToMoved < 0) udpToMoved = t - roamAt;
      if (r & Route.derp && derp < 0) derp = t - roamAt;
      if (udpToMoved >= 0 && t - roamAt > 5000) break;
    }
    return { udpToMoved, derp };
  }

  it('moves to the address the peer now pings from when the old one stops answering (roaming), well before trust lapses', () => {
    const old = eps.parse('198.18.0.101:41641'), moved = eps.parse('198.18.0.111:41641');
    const p = newPath();
    p.setMapEndpoints([old]);
    const o: PathAction[] = [];
    p.noteSend(0, o);
    p.onPong(pings(o)[0]!.txId, 1);
    // The move right after a heartbeat's pong: trust runs 6.5 s more. tailscale sends on to the dead
    // mapping until then; here the peer's first ping from its new address, 0.5 s later, starts the switch.
    const roamAt = 3 * HEARTBEAT_MS + 20;
    const r = roam(p, old, moved, roamAt, 500);
    assert.ok(r.udpToMoved >= 0, 'went direct to the new address');
    assert.ok(r.udpToMoved <= 500 + BEST_OVERDUE_MS + 300, `direct to the new address ${r.udpToMoved} ms after the move`);
    assert.equal(r.derp, -1, 'never needed DERP');
    assert.equal(p.counters.failovers, 1);
    assert.equal(p.trusted(roamAt + r.udpToMoved), true);
  });

  it('keeps its address when the peer pings from another one that also answers (asymmetric paths)', () => {
    const old = eps.parse('198.19.1.2:41641'), other = eps.parse('198.18.0.101:41641');
    const p = newPath();
    p.setMapEndpoints([old]);
    const o: PathAction[] = [];
    p.noteSend(0, o);
    p.onPong(pings(o)[0]!.txId, 1);
    const r = roam(p, old, other, 3 * HEARTBEAT_MS + 20, 500, true);
    assert.equal(r.udpToMoved, -1);
    assert.equal(r.derp, -1);
    assert.equal(p.bestAddr?.key, old.key);
    assert.equal(p.counters.failovers, 0);
  });

  it('lapses only after two lost heartbeat pongs in a row, also when the ticks run late', () => {
    // tailscale heartbeats on a 3 s timer and trusts a pong 6.5 s: one lost pong is covered by the
    // next heartbeat. Here heartbeats ride a 250 ms tick that runs late under load (330 ms apart):
    // without a fixed grid each interval was 3.3 s and one lost pong lapsed the path.
    const p = newPath();
    p.setMapEndpoints([eps.parse('198.18.0.10:41641')]);
    const out: PathAction[] = [];
    p.noteSend(0, out);
    p.onPong(pings(out)[0]!.txId, 1);
    let heartbeats = 0;
    for (let t = 0; t < 60_000; t += 330) {
      assert.equal(p.noteSend(t, []), Route.udp, `UDP alone at ${t} (heartbeat ${heartbeats})`);
      const o: PathAction[] = [];
      p.tick(t, o);
      for (const x of pings(o)) {
        // Every other heartbeat's pong is lost (never two in a row).
        if (++heartbeats % 2 === 0) continue;
        p.onPong(x.txId, t + 1);
      }
      assert.equal(o.filter((a) => a.kind === 'call-me-maybe').length, 0, `no call-me-maybe (re-STUN) on one lost pong (${t})`);
    }
    assert.ok(heartbeats >= 18, `${heartbeats} heartbeats`);
    assert.equal(p.counters.lapses, 0);
  });

  it('forgets a ping that could not be sent without touching the path', () => {
    const p = newPath();
    const a = eps.parse('198.18.0.10:41641');
    p.setMapEndpoints([a]);
    const out: PathAction[] = [];
    p.noteSend(0, out);
    p.onPong(pings(out)[0]!.txId, 1);
    const o: PathAction[] = [];
    p.tick(HEARTBEAT_MS, o);
    p.onPingSendFailed(pings(o)[0]!.txId);
    assert.equal(p.bestAddr?.key, a.key);
    assert.equal(p.noteSend(HEARTBEAT_MS + 1, []), Route.udp);
    p.tick(HEARTBEAT_MS + PING_TIMEOUT_MS + 1, []);
    assert.equal(p.counters.pingsTimedOut, 0, 'not counted as lost');
  });

  it("when its own NAT moves (the peer's NAT filters the new address), both sides go direct on it before trust lapses", () => {
    // a sits behind a NAT whose public address changes from A0 to A1 at roamAt; the old mapping is
    // gone, and b's NAT drops what comes from A1 until b has sent there (easy NATs filter by
    // endpoint). tailscale sends on to A0 until trust lapses 6.5 s after the last pong (both sides),
    // then over DERP. Here a's unanswered heartbeat makes it re-STUN and send a call-me-maybe with
    // A1 after it and its re-sent ping go unanswered; b pings A1 (opening its NAT) and A0, and
    // moves to A1 when only A1 answers.
    const A0 = eps.parse('198.18.0.101:41641'), A1 = eps.parse('198.18.0.111:41641'), B = eps.parse('198.18.0.102:41641');
    const a = newPath(), b = newPath();
    a.setMapEndpoints([B]);
    b.setMapEndpoints([A0]);
    const roamAt = 18_010; // just after the heartbeat round at 18 s: trust would run 6.5 s more
    let bOpened = false; // b sent to A1: its NAT lets A1 in
    const aAddr = (t: number) => (t < roamAt ? A0 : A1);
    type Flight = { at: number; run: () => void };
    let flights: Flight[] = [];
    const send = (side: 'a' | 'b', o: PathAction[], t: number) => {
      for (const x of o) {
        if (x.kind === 'call-me-maybe') {
          // Over DERP, 100 ms (with a re-STUN first when asked): the sender's current address.
          if (side === 'a') { const eps2 = [aAddr(t + 100)]; flights.push({ at: t + 100, run: () => { const q: PathAction[] = []; b.onCallMeMaybe(eps2, t + 100, q); send('b', q, t + 100); } }); }
          else flights.push({ at: t + 100, run: () => { const q: PathAction[] = []; a.onCallMeMaybe([B], t + 100, q); send('a', q, t + 100); } });
          continue;
        }
        if (side === 'a') {
          // a -> B from a's current address; b's NAT lets it in if it is A0 or b opened A1.
          const from = aAddr(t);
          if (from.key === A1.key && !bOpened) continue;
          flights.push({ at: t + 1, run: () => { const q: PathAction[] = []; b.onPingFrom(from, t + 1, q); send('b', q, t + 1); a.onPong(x.txId, t + 2); } });
        } else {
          if (x.to.key === A1.key && t >= roamAt) bOpened = true;
          const alive = x.to.key === aAddr(t).key;
          if (alive) flights.push({ at: t + 1, run: () => { const q: PathAction[] = []; a.onPingFrom(B, t + 1, q); send('a', q, t + 1); b.onPong(x.txId, t + 2); } });
        }
      }
    };
    let resumed = -1;
    for (let t = 0; t < roamAt + 10_000 && resumed < 0; t += 10) {
      const due = flights.filter((f) => f.at <= t);
      flights = flights.filter((f) => f.at > t);
      for (const f of due) f.run();
      const oa: PathAction[] = [], ob: PathAction[] = [];
      const ra = a.noteSend(t, oa), rb = b.noteSend(t, ob);
      if (t % 250 === 0) { a.tick(t, oa); b.tick(t, ob); }
      send('a', oa, t);
      send('b', ob, t);
      if (t < roamAt) {
        if (t > 1000) assert.ok(ra === Route.udp && rb === Route.udp, `direct before the move (${t})`);
        continue;
      }
      const aToB = (ra & Route.derp) !== 0 || (aAddr(t).key === A0.key || bOpened);
      const bToA = (rb & Route.derp) !== 0 || ((rb & Route.udp) !== 0 && b.bestAddr?.key === aAddr(t).key);
      if (aToB && bToA) resumed = t - roamAt;
    }
    // The move lands just after a heartbeat round (the worst phase here): a's next heartbeat is
    // 3 s on, overdue 1 s later, sent again, overdue again 1 s later.
    assert.ok(resumed >= 0, 'resumed');
    assert.ok(resumed < HEARTBEAT_MS + 2 * BEST_OVERDUE_MS + 500, `resumed ${resumed} ms after the move`);
    assert.equal(b.bestAddr?.key, A1.key, 'b sends to the new address');
    assert.equal(b.counters.failovers, 1);
    assert.equal(a.trusted(roamAt + resumed), true, 'a never lapsed');
  });

  it('ends a lapse at the first pong of a ping re-sent every 0.5 s, not at the next heartbeat', () => {
    // Under loss three misses in a row lapse the path; every packet is then mirrored to DERP until
    // a pong, at full rate under a bulk transfer (36,867 packets in one loss10 run).
    const p = newPath();
    p.setMapEndpoints([eps.parse('198.18.0.10:41641')]);
    const out: PathAction[] = [];
    p.noteSend(0, out);
    p.onPong(pings(out)[0]!.txId, 1);
    const deaf = { from: 10_000, until: -1 }; // pongs lost from 10 s until the lapse
    let lapsedAt = -1, backAt = -1;
    for (let t = 0; t < 40_000 && backAt < 0; t += 50) {
      const o: PathAction[] = [];
      const r = p.noteSend(t, o);
      if (t > deaf.from && r !== Route.udp && lapsedAt < 0) { lapsedAt = t; deaf.until = t; }
      if (lapsedAt >= 0 && r === Route.udp) backAt = t;
      p.tick(t, o);
      for (const x of pings(o)) if (t < deaf.from || (deaf.until >= 0 && t >= deaf.until)) p.onPong(x.txId, t + 1);
    }
    assert.ok(lapsedAt > 0, 'lapsed');
    assert.ok(backAt > 0, 'trusted again');
    assert.ok(backAt - lapsedAt <= BEST_OVERDUE_MS + 100, `mirrored for ${backAt - lapsedAt} ms`);
    assert.equal(p.counters.lapses, 1);
  });
});
