// ControlClient stream handling on paths headscale does not take on its own: the server ending the
// stream, a first message without a self node, an oversized frame, a dropped connection.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import type http2 from 'node:http2';
import { FakeControl } from '../harness/fakecontrol.ts';
import { ControlClient, fetchKeyAhead } from '../../src/control/client.ts';
import { encodeMapFrame } from '../../src/control/mapframe.ts';
import { formatNodePublic, generateKeyPair } from '../../src/control/keys.ts';
import type { MapRequest } from '../../src/control/wire.ts';
import { bigMap } from '../harness/bigmap.ts';

const selfNode = (key: string) => ({ ID: 1, Key: key, Addresses: ['100.64.0.1/32'] });

async function waitFor(what: string, f: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('ControlClient map stream against a scripted server', () => {
  let fc: FakeControl;
  before(async () => { fc = await FakeControl.start(); });
  after(async () => { await fc.stop(); });

  function client(): ControlClient {
    return new ControlClient({ serverUrl: fc.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, hostinfo: { Hostname: 'fake' } });
  }

  it('sends a streaming MapRequest without Compress, with the full Hostinfo, and reconnects when the server ends the stream', async () => {
    const c = client();
    const requests: MapRequest[] = [];
    fc.handler = (path, body, stream) => {
      assert.equal(path, '/machine/map');
      requests.push(body as MapRequest);
      stream.respond({ ':status': 200 });
      stream.write(encodeMapFrame({ Node: selfNode(formatNodePublic(c.nodePublic)) }));
      stream.end(encodeMapFrame({ KeepAlive: true }));
    };
    let maps = 0;
    const s = c.streamMap({ onMap: () => { maps++; }, backoffInitialMs: 20, endpoints: ['127.0.0.1:1'] });
    await waitFor('three full maps', () => maps >= 3);
    await s.close();
    await c.close();
    const r = requests[0]!;
    assert.equal(r.Stream, true);
    assert.equal(r.Version, 138);
    assert.equal('Compress' in r, false);
    assert.equal(r.Hostinfo.OS, 'linux');
    assert.equal(r.Hostinfo.Hostname, 'fake');
    assert.deepEqual(r.Endpoints, ['127.0.0.1:1']);
    assert.deepEqual(r.EndpointTypes, [1]);
    assert.match(String(r.DiscoKey), /^discokey:[0-9a-f]{64}$/);
  });

  it('applies a large full map a turn after parsing it, keeping the messages behind it in order, also when the stream ends at once', async () => {
    const c = client();
    fc.handler = (_p, _b, stream) => {
      stream.respond({ ':status': 200 });
      // One write: a full map over YIELD_MESSAGE_BYTES, a delta and a keep-alive; then the end.
      stream.end(Buffer.concat([
        encodeMapFrame(bigMap(600, formatNodePublic(c.nodePublic))),
        encodeMapFrame({ PeersRemoved: [2] }),
        encodeMapFrame({ KeepAlive: true }),
      ]));
    };
    const events: string[] = [];
    let otherTurns = 0;
    const ticker = setInterval(() => { otherTurns++; }, 0);
    const s = c.streamMap({
      onMap: (m) => { events.push(`map ${m.peers.size}`); },
      onDelta: (d, m) => { events.push(`delta ${d.peersRemoved.length} ${m.peers.size}`); },
      backoffInitialMs: 60_000,
    });
    await waitFor('the map and the delta', () => events.length >= 3);
    clearInterval(ticker);
    await s.close();
    await c.close();
    assert.deepEqual(events.slice(0, 3), ['map 600', 'delta 1 599', 'delta 0 599']);
    assert.ok(otherTurns > 0);
  });

  it('treats a first message without a self node as a protocol error and retries', async () => {
    const c = client();
    let n = 0;
    fc.handler = (_p, _b, stream) => {
      n++;
      stream.respond({ ':status': 200 });
      stream.write(encodeMapFrame(n === 1 ? { Peers: [] , DNSConfig: {} } : { Node: selfNode(formatNodePublic(c.nodePublic)) }));
    };
    const errors: string[] = [];
    let maps = 0;
    const s = c.streamMap({ onMap: () => { maps++; }, onError: (e) => errors.push(e.code), backoffInitialMs: 20 });
    await waitFor('a map after the bad first message', () => maps === 1);
    assert.deepEqual(errors, ['protocol_error']);
    await s.close();
    await c.close();
  });

  it('refuses an oversized frame and retries', async () => {
    const c = client();
    let n = 0;
    fc.handler = (_p, _b, stream: http2.ServerHttp2Stream) => {
      n++;
      stream.respond({ ':status': 200 });
      if (n === 1) stream.write(Buffer.from([0xff, 0xff, 0xff, 0x7f]));
      else stream.write(encodeMapFrame({ Node: selfNode(formatNodePublic(c.nodePublic)) }));
    };
    const errors: string[] = [];
    let maps = 0;
    const s = c.streamMap({ onMap: () => { maps++; }, onError: (e) => errors.push(e.message), backoffInitialMs: 20 });
    await waitFor('a map after the oversized frame', () => maps === 1);
    assert.match(errors[0]!, /exceeds/);
    await s.close();
    await c.close();
  });

  it('redials after the connection drops and delivers deltas on the new stream', async () => {
    const c = client();
    fc.handler = (_p, _b, stream) => {
      stream.respond({ ':status': 200 });
      stream.write(encodeMapFrame({ Node: selfNode(formatNodePublic(c.nodePublic)) }));
      stream.write(encodeMapFrame({ PeersChanged: [{ ID: 2, Key: 'nodekey:' + '22'.repeat(32) }] }));
    };
    const before = fc.connections;
    let maps = 0;
    let peers = 0;
    const s = c.streamMap({ onMap: () => { maps++; }, onDelta: (_d, m) => { peers = m.peers.size; }, backoffInitialMs: 20 });
    await waitFor('first map and delta', () => maps === 1 && peers === 1);
    peers = 0;
    fc.dropConnections();
    await waitFor('second map and delta', () => maps === 2 && peers === 1);
    assert.equal(fc.connections, before + 2);
    await s.close();
    await c.close();
  });

  it('closes promptly while the poll is still waiting for response headers', async () => {
    const c = client();
    fc.handler = () => { /* never answer */ };
    const s = c.streamMap({ onMap: () => {} });
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    await s.close();
    assert.ok(Date.now() - t0 < 1000, 'close did not wait for the 30 s header timeout');
    await c.close();
  });
  it('connects ahead of the first request and sends register on that connection the moment it is asked', async () => {
    const c = client();
    const before = fc.connections;
    await c.connect();
    assert.equal(fc.connections, before + 1, 'connect dialled (GET /key and the Noise handshake)');
    let sentAt = 0, gotAt = 0;
    fc.handler = (path, body, stream) => {
      gotAt = Date.now();
      assert.equal(path, '/machine/register');
      assert.equal((body as { Hostinfo: { Hostname: string } }).Hostinfo.Hostname, 'later');
      stream.respond({ ':status': 200, 'content-type': 'application/json' });
      stream.end(JSON.stringify({ MachineAuthorized: true, User: { ID: 1, LoginName: 'u' } }));
    };
    const r = await c.register({ hostinfo: { Hostname: 'later' }, onSent: () => { sentAt = Date.now(); } });
    assert.equal(r.machineAuthorized, true);
    assert.ok(sentAt > 0 && gotAt >= sentAt);
    assert.equal(fc.connections, before + 1, 'register used the connection made ahead');
    await c.close();
  });

  it('dials with a /key fetched ahead, and fetches again when that one failed', async () => {
    const keys0 = fc.keyFetches;
    const ahead = fetchKeyAhead({ serverUrl: fc.url });
    const a = new ControlClient({ serverUrl: fc.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, keyAhead: ahead });
    await a.connect();
    assert.equal(fc.keyFetches, keys0 + 1, 'one GET /key: the one ahead');
    const failed = Promise.reject(new Error('unreachable then'));
    const b = new ControlClient({ serverUrl: fc.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, keyAhead: failed });
    const conns = fc.connections;
    await b.connect();
    assert.equal(fc.keyFetches, keys0 + 2, 'fetched again');
    assert.equal(fc.connections, conns + 1, 'and connected');
    await a.close();
    await b.close();
  });

  it('leaves a failed connect to the first request, which dials again and names the cause', async () => {
    const dead = await FakeControl.start();
    const url = dead.url;
    await dead.stop();
    const c = new ControlClient({ serverUrl: url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, timeoutMs: 2000 });
    await c.connect(); // resolves: nothing to report yet
    await assert.rejects(c.register({}), (e: Error & { code?: string }) => e.code === 'server_unreachable' && e.message.includes(url));
    await c.close();
  });
});
