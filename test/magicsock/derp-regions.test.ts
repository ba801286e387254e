// MagicSock with two real derper regions on loopback: each node homes on its own region (no STUN
// answers here, so the lowest measurable region), and a node dials the peer's home region on
// demand to reach it: disco ping and WireGuard packets arrive through it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPair } from '../../src/crypto/box.ts';
import { Endpoints } from '../../src/net/endpoint.ts';
import { MagicSock } from '../../src/magicsock/magicsock.ts';
import type { DERPMap, DERPRegion } from '../../src/control/wire.ts';
import type { NodeInfo } from '../../src/control/netmap.ts';
import { Derper } from '../harness/derper.ts';
import { needs } from '../harness/prereq.ts';

const skip = needs({ commands: ['derper'] });

function region(id: number, d: Derper, noHome = false): DERPRegion {
  return {
    RegionID: id, RegionCode: `r${id}`, RegionName: `Region ${id}`, ...(noHome ? { NoMeasureNoHome: true } : {}),
    Nodes: [{ Name: `${id}a`, RegionID: id, HostName: '127.0.0.1', IPv4: '127.0.0.1', DERPPort: d.httpPort, STUNPort: -1 }],
  };
}

describe('MagicSock with two DERP regions (real derpers on loopback)', { skip }, () => {
  const d1 = new Derper(), d2 = new Derper();
  const wgAtB: number[] = [];
  let a: MagicSock, b: MagicSock;
  const ka = { node: generateKeyPair(), disco: generateKeyPair() };
  const kb = { node: generateKeyPair(), disco: generateKeyPair() };

  function info(k: typeof ka, name: string, home: number): NodeInfo {
    return { id: 1, name: `${name}.test.`, hostname: name, nodeKey: k.node.publicKey, discoKey: k.disco.publicKey, endpoints: [], homeDERP: home } as unknown as NodeInfo;
  }
  function make(k: typeof ka, onWg: (len: number) => void): MagicSock {
    return new MagicSock({
      io: { endpoints: new Endpoints(), listenPort: 1, sendDatagram: () => true, receiveWireGuard: (_b, _o, len) => onWg(len) },
      nodePrivate: k.node.privateKey, discoPrivate: k.disco.privateKey, log: () => {}, derpHttp: true,
      localEndpoints: () => [], onReport: () => {},
    });
  }

  before(async () => {
    await d1.start();
    await d2.start();
    a = make(ka, () => {});
    b = make(kb, (len) => wgAtB.push(len));
    // A may home only on region 1; B only knows region 2.
    const mapA: DERPMap = { Regions: { '1': region(1, d1), '2': region(2, d2, true) } };
    const mapB: DERPMap = { Regions: { '2': region(2, d2) } };
    a.setDerpMap(mapA);
    b.setDerpMap(mapB);
    await Promise.all([a.netcheck(), b.netcheck()]);
  });
  after(async () => { a?.close(); b?.close(); await d1.dispose(); await d2.dispose(); });

  it('homes each node on its own region and reaches the peer through the peer\'s home region', async () => {
    assert.equal(a.homeRegion, 1);
    assert.equal(b.homeRegion, 2);
    a.upsertPeer(info(kb, 'b', 2));
    b.upsertPeer(info(ka, 'a', 1));
    let r;
    for (let i = 0; i < 20 && !r; i++) r = await a.ping(kb.node.publicKey, 1000);
    assert.equal(r?.via, 'derp');
    assert.equal(r?.region, 2, 'the pong came back through region 2');
    assert.deepEqual(a.derpStatus().map((x) => `${x.region}:${x.connected}:${x.home}`).sort(), ['1:true:true', '2:true:false']);
    const vep = a.upsertPeer(info(kb, 'b', 2));
    const wg = new Uint8Array(48);
    wg[0] = 4;
    assert.equal(a.route(vep, wg, 0, 48), null, 'no direct path: DERP only');
    for (let i = 0; i < 50 && wgAtB.length === 0; i++) await new Promise((res) => setTimeout(res, 20));
    assert.deepEqual(wgAtB, [48]);
  });
});
