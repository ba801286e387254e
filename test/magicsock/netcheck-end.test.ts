// magicsock's netcheck ends on the STUN answer that completes the report (every region answered),
// as tailscale's does, rather than after a fixed floor: shown on a frozen fake clock, where only an
// answer can end it (a floor or the STUN timeout would never pass).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import type { Socket } from 'node:net';
import { generateKeyPair } from '../../src/crypto/box.ts';
import { Endpoints, type Endpoint } from '../../src/net/endpoint.ts';
import { MagicSock } from '../../src/magicsock/magicsock.ts';
import { bindingResponse, isStunPacket } from '../../src/stun/stun.ts';
import type { DERPMap } from '../../src/control/wire.ts';

/** Two regions, each one STUN-only node (so no DERP connection is dialled). */
const derpMap = {
  Regions: {
    1: { RegionID: 1, RegionCode: 'one', RegionName: 'one', Nodes: [{ Name: '1a', RegionID: 1, HostName: '192.0.2.1', IPv4: '192.0.2.1', STUNOnly: true }] },
    2: { RegionID: 2, RegionCode: 'two', RegionName: 'two', Nodes: [{ Name: '2a', RegionID: 2, HostName: '192.0.2.2', IPv4: '192.0.2.2', STUNOnly: true }] },
  },
} as unknown as DERPMap;

function magic(answer: (to: Endpoint) => number | null, dialled: string[] = []): { ms: MagicSock; reports: number[] } {
  const endpoints = new Endpoints();
  const node = generateKeyPair(), disco = generateKeyPair();
  const reports: number[] = [];
  const now = 5000; // frozen
  const ms: MagicSock = new MagicSock({
    io: {
      endpoints, listenPort: 41641,
      sendDatagram: (data: Uint8Array, to: Endpoint) => {
        const latency = answer(to);
        if (isStunPacket(data) && latency !== null) {
          const resp = bindingResponse(data.slice(8, 20), endpoints.parse('203.0.113.7:41641'));
          queueMicrotask(() => ms.receiveOther(resp, 0, resp.length, to));
        }
        return true;
      },
      receiveWireGuard: () => {},
    },
    nodePrivate: node.privateKey, discoPrivate: disco.privateKey, log: () => {}, derpHttp: false,
    // A DERP dial is only recorded: the socket never connects.
    derpDial: (host: string, port: number) => { dialled.push(`${host}:${port}`); return new PassThrough() as unknown as Socket; },
    localEndpoints: () => ['10.0.0.1:41641'], onReport: (_eps, ni) => { reports.push(Number(ni.PreferredDERP)); }, now: () => now,
  });
  return { ms, reports };
}

const within = <T>(p: Promise<T>, ms: number): Promise<T | 'still running'> =>
  Promise.race([p, new Promise<'still running'>((r) => { setTimeout(() => r('still running'), ms).unref(); })]);

describe('MagicSock netcheck', () => {
  it('ends when the last region answers, picks home and reports, with no time passing', async () => {
    const { ms, reports } = magic(() => 1);
    ms.setDerpMap(derpMap);
    const r = await within(ms.netcheck(), 2000);
    ms.close();
    assert.notEqual(r, 'still running', 'the report waited for a clock that never moves');
    assert.equal(r === 'still running' ? undefined : r?.udp, true);
    assert.deepEqual([...(r === 'still running' ? [] : r!.regionLatency.keys())].sort(), [1, 2]);
    assert.ok(ms.homeRegion === 1 || ms.homeRegion === 2);
    assert.deepEqual(reports, [ms.homeRegion], 'one report naming the home region');
  });

  it('keeps waiting while a region has not answered (on a frozen clock: until closed)', async () => {
    const { ms } = magic((to) => (to.ip === '192.0.2.1' ? 1 : null));
    ms.setDerpMap(derpMap);
    const r = await within(ms.netcheck(), 300);
    ms.close();
    assert.equal(r, 'still running');
  });

  it('with a one-region map, dials that region as home at once, before netcheck has any answer', async () => {
    const one = { Regions: { 7: { RegionID: 7, RegionCode: 'seven', RegionName: 'seven', Nodes: [{ Name: '7a', RegionID: 7, HostName: '192.0.2.7', IPv4: '192.0.2.7', DERPPort: 443 }] } } } as unknown as DERPMap;
    const dialled: string[] = [];
    const { ms, reports } = magic(() => null, dialled); // STUN is never answered
    ms.setDerpMap(one);
    assert.equal(ms.homeRegion, 7);
    assert.deepEqual(dialled, ['192.0.2.7:443'], 'the home connection is being dialled');
    assert.deepEqual(reports, [], 'nothing reported before netcheck ends');
    ms.close();
  });

  it('with two regions, leaves the choice to netcheck (no home, no dial before an answer)', async () => {
    const two = { Regions: { 1: { ...derpMap.Regions![1]!, Nodes: [{ ...derpMap.Regions![1]!.Nodes[0]!, STUNOnly: false }] }, 2: derpMap.Regions![2]! } } as unknown as DERPMap;
    const dialled: string[] = [];
    const { ms } = magic(() => null, dialled);
    ms.setDerpMap(two);
    assert.equal(ms.homeRegion, 0);
    assert.deepEqual(dialled, []);
    ms.close();
  });
});
