// ControlClient against a real, unmodified headscale v0.29.2 on loopback: registration, map
// streaming between two nodes, endpoint updates, re-registration, logout, ephemeral nodes and the
// typed errors. headscale is started with a generated config in a temp dir and always stopped.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { needs } from '../harness/prereq.ts';
import { Headscale, freeTcpPort } from '../harness/headscale.ts';
import { ControlClient, type MapStream } from '../../src/control/client.ts';
import { ControlError } from '../../src/control/errors.ts';
import { formatMachinePublic, formatNodePublic, formatDiscoPublic, generateKeyPair, type MachinePublic } from '../../src/control/keys.ts';
import type { NetworkMap, MapDelta } from '../../src/control/netmap.ts';
import { StateStore } from '../../src/state/store.ts';

const skip = needs({ commands: ['headscale'] });

async function waitFor<T>(what: string, f: () => T | undefined | false, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits for p at most ms; a cleanup step that hangs must not keep headscale running. */
async function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const limit = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => {
      console.error(`headscale.test: ${what} took more than ${ms} ms; stopping headscale anyway`);
      resolve(undefined);
    }, ms);
  });
  try {
    return await Promise.race([p, limit]);
  } finally {
    clearTimeout(timer);
  }
}

/** A node under test: its state dir, client and the latest map it saw. */
interface TestNode {
  dir: string;
  client: ControlClient;
  stream?: MapStream;
  map?: NetworkMap;
  fullMaps: number;
  deltas: MapDelta[];
}

describe('ControlClient against headscale v0.29.2', { skip, timeout: 180_000 }, () => {
  let hs: Headscale;
  let userId: number;
  let authKey: string;
  const clients: ControlClient[] = [];
  const logLines: string[] = [];

  async function makeNode(hostname: string, dir?: string): Promise<TestNode> {
    // Inside headscale's temp dir, so that every exit path (stop, exit, SIGINT/SIGTERM) removes it.
    const d = dir ?? mkdtempSync(join(hs.dir, 'node-'));
    const store = await StateStore.open(join(d, 'state'));
    const { identity } = await store.loadOrCreateIdentity(hs.url);
    const client = new ControlClient({
      serverUrl: hs.url,
      machineKey: identity.machinePrivate,
      nodeKey: identity.nodePrivate,
      hostinfo: { Hostname: hostname },
      log: (line) => logLines.push(`[${hostname}] ${line}`),
    });
    clients.push(client);
    return { dir: d, client, fullMaps: 0, deltas: [] };
  }

  function stream(n: TestNode): void {
    n.stream = n.client.streamMap({
      onMap: (m) => { n.map = m; n.fullMaps++; },
      onDelta: (d, m) => { n.deltas.push(d); n.map = m; },
    });
  }

  before(async () => {
    hs = await Headscale.start();
    userId = hs.createUser('alice');
    authKey = hs.createPreAuthKey(userId, { reusable: true });
  });

  after(async () => {
    try {
      await bounded(Promise.allSettled(clients.map((c) => c.close())), 15_000, 'closing the clients');
    } finally {
      if (hs) await hs.stop();
    }
  });

  let a: TestNode;
  let b: TestNode;

  it('registers two nodes with a reusable pre-auth key', { timeout: 40_000 }, async () => {
    a = await makeNode('node-a');
    b = await makeNode('node-b');
    const ra = await a.client.register({ authKey });
    const rb = await b.client.register({ authKey });
    for (const r of [ra, rb]) {
      assert.equal(r.machineAuthorized, true);
      assert.equal(r.nodeKeyExpired, false);
      assert.equal(r.authUrl, undefined);
      assert.equal(r.user?.displayName, 'alice');
    }
    const nodes = hs.nodes();
    assert.equal(nodes.length, 2);
    const keys = nodes.map((n) => n['node_key']).sort();
    assert.deepEqual(keys, [formatNodePublic(a.client.nodePublic), formatNodePublic(b.client.nodePublic)].sort());
  });

  it('keeps the auth key out of the state directory, which is 0700 with a 0600 file', { timeout: 40_000 }, () => {
    for (const n of [a, b]) {
      const file = join(n.dir, 'state', 'state.json');
      const text = readFileSync(file, 'utf8');
      assert.ok(!text.includes(authKey), 'auth key must not be persisted');
      assert.ok(!text.includes('hskey'), 'no pre-auth key material in state');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.equal(statSync(join(n.dir, 'state')).mode & 0o777, 0o700);
    }
  });

  it('streams a full map in which each node sees the other with keys and tailnet addresses', { timeout: 40_000 }, async () => {
    stream(a);
    stream(b);
    const pa = await waitFor('a to see b', () => a.map?.peerByKey(formatNodePublic(b.client.nodePublic)));
    const pb = await waitFor('b to see a', () => b.map?.peerByKey(formatNodePublic(a.client.nodePublic)));
    const selfA = a.map!.self!;
    const selfB = b.map!.self!;
    assert.equal(selfA.nodeKeyText, formatNodePublic(a.client.nodePublic));
    assert.equal(selfA.raw.Machine, formatMachinePublic(a.client.machinePublic));
    for (const [self, peer, other] of [[selfA, pb, a], [selfB, pa, b]] as const) {
      assert.equal(self.addresses.length, 2);
      assert.match(self.addresses[0]!, /^100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.\d+\.\d+\/32$/);
      assert.match(self.addresses[1]!, /^fd7a:115c:a1e0:.*\/128$/);
      // The peer as the other node sees it matches this node's self view.
      assert.deepEqual([...peer.addresses], [...self.addresses]);
      assert.ok(peer.allowedIPs.includes(self.addresses[0]!));
      assert.equal(peer.discoKeyText, formatDiscoPublic(other.client.discoPublic));
      assert.equal(peer.hostname, other === a ? 'node-a' : 'node-b');
      assert.equal(peer.online, true);
    }
    assert.ok(a.map!.derpMap?.Regions?.['999'], 'embedded DERP region 999 in the DERP map');
    assert.ok(a.map!.packetFilter.length > 0, 'allow-all packet filter present');
    assert.ok(a.map!.userProfiles.size >= 1);
  });

  it('delivers endpoints and home DERP sent with updateEndpoints to the other node as a delta', { timeout: 40_000 }, async () => {
    const eps = ['127.0.0.1:41641', '[::1]:41641'];
    await a.client.updateEndpoints(eps, { hostinfo: { NetInfo: { PreferredDERP: 999 } } });
    const keyA = formatNodePublic(a.client.nodePublic);
    await waitFor('b to see a\'s endpoints and home DERP', () => {
      const p = b.map?.peerByKey(keyA);
      return p && eps.every((e) => p.endpoints.includes(e)) && p.homeDERP === 999;
    });
    assert.ok(b.deltas.some((d) => !d.keepAlive && (d.patches.length > 0 || d.peersChanged.length > 0)), 'arrived as a delta');
  });

  it('reconnects the map streams with backoff after headscale restarts, and the peers come back', { timeout: 60_000 }, async () => {
    const before = [a.fullMaps, b.fullMaps];
    await hs.restart(1500);
    await waitFor('both streams to get a new full map', () => a.fullMaps > before[0]! && b.fullMaps > before[1]!, 40_000);
    assert.ok(a.stream!.reconnects >= 1);
    await waitFor('a to see b again', () => a.map?.peerByKey(formatNodePublic(b.client.nodePublic))?.online === true);
    assert.ok(b.map?.peerByKey(formatNodePublic(a.client.nodePublic)));
  });

  it('breaks a silent stream with the watchdog and reconnects', { timeout: 40_000 }, async () => {
    const w = await makeNode('node-watch');
    await w.client.register({ authKey });
    let maps = 0;
    const errors: Array<[string, number | undefined]> = [];
    const s = w.client.streamMap({
      onMap: () => { maps++; },
      onError: (e, retry) => { errors.push([e.message, retry]); },
      watchdogMs: 1500,
      backoffInitialMs: 100,
    });
    await waitFor('two full maps', () => maps >= 2, 20_000);
    assert.match(errors[0]![0], /no map message .* for 1500 ms/);
    assert.ok(errors[0]![1] !== undefined && errors[0]![1] <= 100);
    await s.close();
    await w.client.logout();
    await w.client.close();
  });

  it('re-registers from the same state directory as the same node with the same addresses', { timeout: 40_000 }, async () => {
    const before = a.map!.self!;
    const count = hs.nodes().length;
    const again = await makeNode('node-a', a.dir);
    const r = await again.client.register({ authKey });
    assert.equal(r.machineAuthorized, true);
    let m: NetworkMap | undefined;
    const s = again.client.streamMap({ onMap: (x) => { m = x; } });
    const self = await waitFor('map of the re-registered node', () => m?.self);
    await s.close();
    assert.equal(self.id, before.id);
    assert.deepEqual([...self.addresses], [...before.addresses]);
    assert.equal(hs.nodes().length, count, 'no new node was created');
    await again.client.close();
  });

  it('gives a new node without an auth key an AuthURL, and a followup completes once an admin registers it', { timeout: 40_000 }, async () => {
    const n = await makeNode('node-interactive');
    const r = await n.client.register();
    assert.equal(r.machineAuthorized, false);
    assert.ok(r.authUrl?.startsWith(`${hs.url}/register/`), `authUrl ${r.authUrl}`);
    const authId = r.authUrl!.slice(`${hs.url}/register/`.length);
    const waiting = n.client.register({ followup: r.authUrl! });
    await new Promise((res) => setTimeout(res, 500));
    hs.cli(['auth', 'register', '--auth-id', authId, '--user', 'alice']);
    const done = await waiting;
    assert.equal(done.machineAuthorized, true);
    assert.equal(done.user?.displayName, 'alice');
    await n.client.logout();
    await n.client.close();
  });

  it('gives up streaming the map of an unregistered node with node_not_found', { timeout: 20_000 }, async () => {
    const n = await makeNode('node-unknown');
    const errs: Array<[string, number | undefined]> = [];
    const s = n.client.streamMap({ onMap: () => assert.fail('no map expected'), onError: (e, retry) => { errs.push([e.code, retry]); } });
    await assert.rejects(s.done, (e: unknown) => e instanceof ControlError && e.code === 'node_not_found' && !e.retryable);
    assert.deepEqual(errs, [['node_not_found', undefined]]);
    await n.client.close();
  });

  it('rejects a wrong auth key with code auth_key_invalid and one clear line', { timeout: 40_000 }, async () => {
    const n = await makeNode('node-wrong');
    const bogus = 'hskey-auth-AAAAAAAAAAAA-' + 'b'.repeat(64);
    await assert.rejects(n.client.register({ authKey: bogus }), (e: unknown) => {
      assert.ok(e instanceof ControlError);
      assert.equal(e.code, 'auth_key_invalid');
      assert.equal(e.retryable, false);
      assert.ok(!e.message.includes('\n'));
      assert.ok(!e.message.includes(bogus), 'the key itself is not echoed');
      return true;
    });
    await n.client.close();
  });

  it('names an expired key auth_key_expired and a spent single-use key auth_key_used', { timeout: 20_000 }, async () => {
    const expired = hs.createPreAuthKey(userId, { expiration: '1s' });
    const single = hs.createPreAuthKey(userId, {});
    await new Promise((r) => setTimeout(r, 1500));
    const n1 = await makeNode('node-exp');
    await assert.rejects(n1.client.register({ authKey: expired }), (e: unknown) => e instanceof ControlError && e.code === 'auth_key_expired' && !e.retryable);
    const n2 = await makeNode('node-once');
    assert.equal((await n2.client.register({ authKey: single })).machineAuthorized, true);
    const n3 = await makeNode('node-twice');
    await assert.rejects(n3.client.register({ authKey: single }), (e: unknown) => e instanceof ControlError && e.code === 'auth_key_used' && !e.retryable);
    await n2.client.logout();
    for (const n of [n1, n2, n3]) await n.client.close();
  });

  it('reports an unreachable server (closed loopback port) as server_unreachable', { timeout: 40_000 }, async () => {
    const port = await freeTcpPort();
    const k = generateKeyPair();
    const c = new ControlClient({ serverUrl: `http://127.0.0.1:${port}`, machineKey: k.privateKey, nodeKey: generateKeyPair().privateKey });
    await assert.rejects(c.register({ authKey }), (e: unknown) => {
      assert.ok(e instanceof ControlError);
      assert.equal(e.code, 'server_unreachable');
      assert.equal(e.retryable, true);
      assert.match(e.message, /cannot reach control server/);
      return true;
    });
    await c.close();
  });

  it('sees a capability version below headscale\'s floor (113) refused at the handshake', { timeout: 20_000 }, async () => {
    const c = new ControlClient({ serverUrl: hs.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, capVer: 100 });
    await assert.rejects(c.register({ authKey }), (e: unknown) => e instanceof ControlError && e.code === 'handshake_failed' && /capability version refused/.test(e.message));
    await c.close();
  });

  it('refuses a server whose Noise key differs from the pinned one', { timeout: 40_000 }, async () => {
    const k = generateKeyPair();
    const c = new ControlClient({
      serverUrl: hs.url, machineKey: k.privateKey, nodeKey: generateKeyPair().privateKey,
      serverKey: generateKeyPair<MachinePublic>().publicKey,
    });
    await assert.rejects(c.register({ authKey }), (e: unknown) => e instanceof ControlError && e.code === 'server_key_mismatch');
    await c.close();
  });

  it('logs out: the node key expires on the server and the peer learns it', { timeout: 40_000 }, async () => {
    const r = await b.client.logout();
    assert.equal(r.nodeKeyExpired, true);
    assert.equal(r.deleted, false, JSON.stringify(r.raw));
    const keyB = formatNodePublic(b.client.nodePublic);
    await waitFor('a to see b expired or gone', () => {
      const p = a.map?.peerByKey(keyB);
      return p?.expired === true && p.keyExpiry !== undefined;
    });
    const row = hs.nodes().find((n) => n['node_key'] === keyB);
    assert.ok(row, 'a non-ephemeral node stays listed after logout');
    const expiry = (row['expiry'] as { seconds?: string | number } | string | undefined);
    assert.ok(expiry, 'expiry is set');
  });

  it('deletes an ephemeral node on logout', { timeout: 40_000 }, async () => {
    const ephKey = hs.createPreAuthKey(userId, { ephemeral: true });
    const e = await makeNode('node-eph');
    const r = await e.client.register({ authKey: ephKey });
    assert.equal(r.machineAuthorized, true);
    const keyE = formatNodePublic(e.client.nodePublic);
    assert.ok(hs.nodes().some((n) => n['node_key'] === keyE), 'ephemeral node listed after register');
    stream(e);
    await waitFor('ephemeral node map', () => e.map?.self);
    const out = await e.client.logout();
    assert.equal(out.nodeKeyExpired, true);
    assert.equal(out.machineAuthorized, false);
    assert.equal(out.deleted, true);
    await waitFor('ephemeral node to disappear', () => !hs.nodes().some((n) => n['node_key'] === keyE), 10_000);
  });

  it('logged what it did without ever logging an auth key', () => {
    assert.ok(logLines.some((l) => /registered: authorized=true/.test(l)));
    assert.ok(logLines.some((l) => /connected to .* over ts2021/.test(l)));
    for (const l of logLines) assert.ok(!l.includes('hskey-auth-'), `log line leaks a key: ${l}`);
  });
});

describe('ControlClient against headscale v0.29.2 over https', { skip: skip || needs({ commands: ['openssl'] }), timeout: 90_000 }, () => {
  let hs: Headscale;
  before(async () => {
    hs = await Headscale.start({ tls: true });
  });
  after(async () => {
    if (hs) await hs.stop();
  });

  it('registers and streams a map when given the CA file', { timeout: 40_000 }, async () => {
    const key = hs.createPreAuthKey(hs.createUser('bob'), {});
    const c = new ControlClient({ serverUrl: hs.url, caFile: hs.caFile, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, hostinfo: { Hostname: 'tls-node' } });
    try {
      const r = await c.register({ authKey: key });
      assert.equal(r.machineAuthorized, true);
      let m: NetworkMap | undefined;
      const s = c.streamMap({ onMap: (x) => { m = x; } });
      const self = await waitFor('map over https', () => m?.self);
      assert.match(self.addresses[0]!, /^100\.64\./);
      await s.close();
    } finally {
      await c.close();
    }
  });

  it('refuses an untrusted certificate with code tls_untrusted', { timeout: 20_000 }, async () => {
    const c = new ControlClient({ serverUrl: hs.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey });
    await assert.rejects(c.register({ authKey: 'irrelevant' }), (e: unknown) => {
      assert.ok(e instanceof ControlError);
      assert.equal(e.code, 'tls_untrusted');
      assert.equal(e.retryable, false);
      return true;
    });
    await c.close();
  });
});

describe('ControlClient answers headscale PingRequests', { skip, timeout: 90_000 }, () => {
  let hs: Headscale;
  before(async () => {
    hs = await Headscale.start();
  });
  after(async () => {
    if (hs) await hs.stop();
  });

  it('HEADs the ping URL when headscale probes two routers of the same HA subnet route', { timeout: 60_000 }, async () => {
    const key = hs.createPreAuthKey(hs.createUser('carol'), { reusable: true });
    const route = '198.19.5.0/24';
    const mk = (h: string): ControlClient => new ControlClient({
      serverUrl: hs.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey,
      hostinfo: { Hostname: h, RoutableIPs: [route] },
    });
    const routers = [mk('router-1'), mk('router-2')];
    const pings: string[] = [];
    const streams: MapStream[] = [];
    try {
      for (const c of routers) {
        await c.register({ authKey: key });
        streams.push(c.streamMap({ onMap: () => {}, onDelta: (d) => { if (d.pingRequest) pings.push(d.pingRequest.URL); } }));
      }
      await new Promise((r) => setTimeout(r, 1000));
      for (const n of hs.nodes()) hs.cli(['nodes', 'approve-routes', '-i', String(n['id']), '-r', route]);
      await waitFor('a PingRequest', () => pings.length > 0, 30_000);
      await waitFor('headscale to log the HEAD answer', () => /method=HEAD path=\/machine\/ping-response .*status=200/.test(hs.log), 10_000);
      assert.match(pings[0]!, new RegExp(`^${hs.url}/machine/ping-response\\?id=`));
    } finally {
      await Promise.all(streams.map((s) => s.close()));
      await Promise.all(routers.map((c) => c.close()));
    }
  });
});
