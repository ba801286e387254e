// Captures the MapResponses node-a receives from a real headscale v0.29.2 into
// test/control/fixtures/headscale-stream.json (run by hand from the repo root, not a test):
//   npx tsc -p . && node dist/test/control/capture-fixture.js
// Script: a and b register; b streams; a streams (full map); b reports endpoints + home DERP;
// c registers and streams, then stops (online/offline patches); b logs out (expiry); c is deleted.
import { writeFileSync } from 'node:fs';
import { Headscale } from '../harness/headscale.ts';
import { ControlClient } from '../../src/control/client.ts';
import { generateKeyPair } from '../../src/control/keys.ts';
import type { MapResponse } from '../../src/control/wire.ts';
import { NetworkMap } from '../../src/control/netmap.ts';

// Record every message applied to node-a's map (recognised by its first message).
const msgs: MapResponse[] = [];
const apply = NetworkMap.prototype.apply;
let recording: NetworkMap | undefined;
NetworkMap.prototype.apply = function (this: NetworkMap, r: MapResponse) {
  if (!recording && r.Node?.Hostinfo?.Hostname === 'node-a') recording = this;
  if (this === recording) msgs.push(r);
  return apply.call(this, r);
};

const hs = await Headscale.start();
try {
  const uid = hs.createUser('alice');
  const key = hs.createPreAuthKey(uid, { reusable: true });
  const a = new ControlClient({ serverUrl: hs.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, hostinfo: { Hostname: 'node-a' } });
  const b = new ControlClient({ serverUrl: hs.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, hostinfo: { Hostname: 'node-b' } });
  const c = new ControlClient({ serverUrl: hs.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, hostinfo: { Hostname: 'node-c' } });
  await a.register({ authKey: key });
  await b.register({ authKey: key });
  const sb = b.streamMap({ onMap: () => {} }); // kept open so that b is online
  await new Promise((r) => setTimeout(r, 1500));
  a.streamMap({ onMap: () => {} });
  await new Promise((r) => setTimeout(r, 1500));
  await b.updateEndpoints(['127.0.0.1:41641', { addr: '[::1]:41641', type: 1 }], { hostinfo: { NetInfo: { PreferredDERP: 999 } } });
  await new Promise((r) => setTimeout(r, 1500));
  await c.register({ authKey: key });
  const sc = c.streamMap({ onMap: () => {} });
  await new Promise((r) => setTimeout(r, 1500));
  await sc.close();
  await new Promise((r) => setTimeout(r, 12000));
  await b.logout();
  await new Promise((r) => setTimeout(r, 1500));
  hs.cli(['nodes', 'delete', '-i', '3', '--force']);
  await new Promise((r) => setTimeout(r, 1500));
  await a.close(); await b.close(); await c.close();
  void sb;
} finally {
  await hs.stop();
}
writeFileSync('test/control/fixtures/headscale-stream.json', JSON.stringify(msgs, null, 1) + '\n');
console.log(msgs.length, msgs.map((m) => Object.keys(m).join(',')));
