// Interop with a real, unmodified tailscale derper v1.102.3 on 127.0.0.1 (plain HTTP, loopback only).
// Skipped with a reason when derper is not built (scripts/install-peers.sh derper); a failure under CI=true.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createSocket } from 'node:dgram';
import { readFileSync, rmSync } from 'node:fs';
import { createHash, randomFillSync, X509Certificate } from 'node:crypto';
import { needs } from '../harness/prereq.ts';
import { Derper } from '../harness/derper.ts';
import { boxBefore, generateKeyPair } from '../../src/crypto/box.ts';
import { DerpClient, type DerpClientOptions } from '../../src/derp/client.ts';
import { PeerGoneReason } from '../../src/derp/frames.ts';
import { decodeDisco, encodeDisco } from '../../src/disco/disco.ts';
import { bindingRequest, newTxId, parseBindingResponse } from '../../src/stun/stun.ts';

const skip = needs({ commands: ['derper'] });
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

/** A client plus everything it received, keyed by a label for messages. */
interface Peer { key: ReturnType<typeof generateKeyPair>; client: DerpClient; inbox: { src: string; data: Uint8Array }[] }

describe('derp against a real derper on loopback', { skip }, () => {
  let derper: Derper;
  const peers: Peer[] = [];

  function peer(extra: Partial<DerpClientOptions> = {}): Peer {
    const key = generateKeyPair();
    const client = new DerpClient({
      url: derper.url, privateKey: key.privateKey, allowInsecureHttp: true, preferred: true,
      backoffInitialMs: 50, backoffMaxMs: 500, ...extra,
    });
    const p: Peer = { key, client, inbox: [] };
    client.on('packet', (src, data) => p.inbox.push({ src: toHex(src), data }));
    peers.push(p);
    return p;
  }

  async function connected(...ps: Peer[]): Promise<void> {
    await Promise.all(ps.map((p) => (p.client.connected ? undefined : once(p.client, 'connected'))));
  }

  /** Sends from a to b until one arrives (the server may not know b for a moment after it connects). */
  async function deliver(a: Peer, b: Peer, data: Uint8Array): Promise<void> {
    const before = b.inbox.length;
    const deadline = Date.now() + 10_000;
    while (b.inbox.length === before) {
      if (Date.now() > deadline) throw new Error('packet not delivered within 10 s');
      a.client.send(b.key.publicKey, data);
      await sleep(50);
    }
  }

  before(async () => {
    derper = new Derper();
    await derper.start();
  });

  after(async () => {
    for (const p of peers) p.client.close();
    await derper?.dispose();
  });

  it('relays packets both ways, byte-exact, with the sender key as source', async () => {
    const a = peer();
    const b = peer();
    a.client.start();
    b.client.start();
    await connected(a, b);
    assert.equal(toHex(a.client.serverKey!), toHex(b.client.serverKey!));
    await deliver(a, b, Uint8Array.of(0));
    b.inbox.length = 0;
    a.inbox.length = 0;
    const sizes = [1, 148, 1280, 9000, 65536];
    const sent = sizes.map((n) => randomFillSync(new Uint8Array(n)));
    for (const p of sent) { assert.ok(a.client.send(b.key.publicKey, p)); assert.ok(b.client.send(a.key.publicKey, p)); }
    await waitFor(() => a.inbox.length === sizes.length && b.inbox.length === sizes.length, 'all packets');
    for (let i = 0; i < sizes.length; i++) {
      assert.equal(b.inbox[i]!.src, toHex(a.key.publicKey));
      assert.equal(a.inbox[i]!.src, toHex(b.key.publicKey));
      assert.equal(toHex(b.inbox[i]!.data), toHex(sent[i]!), `a->b packet of ${sizes[i]} bytes`);
      assert.equal(toHex(a.inbox[i]!.data), toHex(sent[i]!), `b->a packet of ${sizes[i]} bytes`);
    }
    assert.equal(a.client.counters.bogusFrames + a.client.counters.unknownFrames + a.client.counters.protocolErrors, 0);
  });

  it('carries a disco ping through DERP that the receiver opens and parses', async () => {
    const [a, b] = [peers[0]!, peers[1]!];
    const da = generateKeyPair();
    const db = generateKeyPair();
    const txId = randomFillSync(new Uint8Array(12));
    b.inbox.length = 0;
    const pkt = encodeDisco({ type: 'ping', txId, nodeKey: a.key.publicKey, padding: 0 }, da.publicKey, boxBefore(db.publicKey, da.privateKey));
    assert.ok(a.client.send(b.key.publicKey, pkt));
    await waitFor(() => b.inbox.length === 1, 'disco ping');
    const r = decodeDisco(b.inbox[0]!.data, (s) => (toHex(s) === toHex(da.publicKey) ? boxBefore(da.publicKey, db.privateKey) : undefined));
    assert.ok(r.ok, JSON.stringify(r));
    assert.deepEqual(r.msg, { type: 'ping', txId, nodeKey: a.key.publicKey, padding: 0 });
  });

  it('measures a DERP ping round trip to derper', async () => {
    const rtt = await peers[0]!.client.ping();
    assert.ok(rtt >= 0 && rtt < 2000, `rtt ${rtt}`);
  });

  it('keeps an idle connection whose liveness pings derper answers', async () => {
    const p = peer({ liveness: { idlePingMs: 100, activePingMs: 50, pingTimeoutMs: 300 } });
    p.client.start();
    await connected(p);
    await sleep(1000);
    assert.ok(p.client.counters.livenessPings >= 4, `${p.client.counters.livenessPings} liveness pings`);
    assert.equal(p.client.counters.livenessTimeouts, 0);
    assert.equal(p.client.counters.connects, 1);
    p.client.close();
  });

  it('hears PeerGone "not here" for a disco packet to an unknown key, and "disconnected" when a peer leaves', async () => {
    const a = peers[0]!;
    const gone: [string, number][] = [];
    a.client.on('peer-gone', (k, r) => gone.push([toHex(k), r]));
    const nobody = generateKeyPair().publicKey;
    const d = generateKeyPair();
    a.client.send(nobody, encodeDisco({ type: 'call-me-maybe', endpoints: [] }, d.publicKey, boxBefore(generateKeyPair().publicKey, d.privateKey)));
    await waitFor(() => gone.some(([k]) => k === toHex(nobody)), 'PeerGone not-here');
    assert.deepEqual(gone.find(([k]) => k === toHex(nobody)), [toHex(nobody), PeerGoneReason.notHere]);

    const c = peer();
    c.client.start();
    await connected(c);
    await deliver(c, a, Uint8Array.of(1, 2, 3)); // now a has talked with c... the server tracks c -> a
    await deliver(a, c, Uint8Array.of(4, 5, 6));
    c.client.close();
    await waitFor(() => gone.some(([k]) => k === toHex(c.key.publicKey)), 'PeerGone disconnected');
    assert.deepEqual(gone.find(([k]) => k === toHex(c.key.publicKey)), [toHex(c.key.publicKey), PeerGoneReason.disconnected]);
  });

  it('reconnects after derper restarts and traffic resumes; fast start works with the known key', async () => {
    const [a, b] = [peers[0]!, peers[1]!];
    const serverKey = a.client.serverKey!;
    const fast = peer({ serverKey });
    fast.client.start();
    await connected(fast);
    assert.equal(fast.client.counters.protocolErrors, 0);

    const genA = a.client.counters.connects;
    const genB = b.client.counters.connects;
    const downs = [once(a.client, 'disconnected'), once(b.client, 'disconnected'), once(fast.client, 'disconnected')];
    await derper.stop();
    await Promise.all(downs);
    assert.equal(a.client.send(b.key.publicKey, Uint8Array.of(9)), false, 'no sends while down');
    await sleep(300); // let them fail a few reconnect attempts against the closed port
    await derper.start();
    await waitFor(() => a.client.counters.connects > genA && b.client.counters.connects > genB && fast.client.connected, 'reconnects');
    assert.ok(a.client.counters.connectFailures > 0, 'attempts while derper was down were counted');
    assert.equal(toHex(a.client.serverKey!), toHex(serverKey), 'same key file, same server key');

    a.inbox.length = 0;
    b.inbox.length = 0;
    await deliver(a, b, new TextEncoder().encode('after restart a->b'));
    await deliver(b, a, new TextEncoder().encode('after restart b->a'));
    await deliver(fast, a, new TextEncoder().encode('fast start'));
    assert.equal(new TextDecoder().decode(b.inbox.at(-1)!.data), 'after restart a->b');
    assert.equal(b.inbox.at(-1)!.src, toHex(a.key.publicKey));
    assert.equal(a.inbox.find((m) => m.src === toHex(b.key.publicKey)) !== undefined, true);
    assert.equal(new TextDecoder().decode(a.inbox.find((m) => m.src === toHex(fast.key.publicKey))!.data), 'fast start');
  });

  it('learns a new server key when derper comes back with a new identity (fast start falls back)', async () => {
    const [a, b] = [peers[0]!, peers[1]!];
    const fast = peers.at(-1)!;
    const oldKey = a.client.serverKey!;
    const downs = [once(a.client, 'disconnected'), once(b.client, 'disconnected'), once(fast.client, 'disconnected')];
    await derper.stop();
    await Promise.all(downs);
    rmSync(derper.keyFile);
    const errorsBefore = fast.client.counters.protocolErrors;
    await derper.start();
    await waitFor(() => a.client.connected && b.client.connected && fast.client.connected, 'reconnects');
    assert.notEqual(toHex(a.client.serverKey!), toHex(oldKey));
    assert.equal(toHex(fast.client.serverKey!), toHex(a.client.serverKey!));
    assert.equal(fast.client.counters.protocolErrors, errorsBefore + 1, 'one fast-start attempt failed on the changed key');
    await deliver(a, b, Uint8Array.of(7));
    await deliver(b, fast, Uint8Array.of(8));
  });

  it("gets 127.0.0.1:<our port> back from derper's STUN server", async () => {
    const sock = createSocket('udp4');
    await new Promise<void>((r) => sock.bind(0, '127.0.0.1', r));
    try {
      const ourPort = sock.address().port;
      const txId = newTxId();
      const reply = new Promise<Buffer>((resolve) => sock.on('message', (m) => resolve(m)));
      const req = bindingRequest(txId);
      assert.equal(req.length, 40);
      let got: Buffer | undefined;
      void reply.then((m) => { got = m; });
      for (let i = 0; i < 10 && got === undefined; i++) {
        sock.send(req, derper.stunPort, '127.0.0.1');
        await sleep(200);
      }
      assert.ok(got, 'no STUN reply');
      const r = parseBindingResponse(got);
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(toHex(r.txId), toHex(txId));
      assert.equal(r.endpoint.key, `127.0.0.1:${ourPort}`);
    } finally {
      sock.close();
    }
  });
});

describe('derp over TLS against a real derper (its self-signed 127.0.0.1 certificate)', { skip }, () => {
  let derper: Derper;
  const clients: DerpClient[] = [];
  let certPem = '';
  let certName = '';

  function client(opts: { tls?: { ca: string }; certName?: string }): { c: DerpClient; key: ReturnType<typeof generateKeyPair> } {
    const key = generateKeyPair();
    const c = new DerpClient({ url: derper.url, privateKey: key.privateKey, backoffInitialMs: 50, backoffMaxMs: 200, ...opts });
    clients.push(c);
    c.start();
    return { c, key };
  }

  before(async () => {
    derper = new Derper({ tls: true });
    await derper.start();
    certPem = readFileSync(derper.certFile, 'utf8');
    certName = `sha256-raw:${createHash('sha256').update(new X509Certificate(certPem).raw).digest('hex')}`;
  });

  after(async () => {
    for (const c of clients) c.close();
    await derper?.dispose();
  });

  it('derper advertises the same sha256-raw CertName we compute from its certificate', () => {
    assert.ok(derper.log.includes(`"CertName":"${certName}"`), derper.log);
  });

  it('connects over TLS with the certificate as CA and relays packets', async () => {
    const a = client({ tls: { ca: certPem } });
    const b = client({ certName });
    await Promise.all([once(a.c, 'connected'), once(b.c, 'connected')]);
    const got: string[] = [];
    b.c.on('packet', (src, d) => got.push(`${toHex(src)} ${new TextDecoder().decode(d)}`));
    const deadline = Date.now() + 10_000;
    while (got.length === 0 && Date.now() < deadline) { a.c.send(b.key.publicKey, new TextEncoder().encode('over tls')); await sleep(50); }
    assert.equal(got[0], `${toHex(a.key.publicKey)} over tls`);
  });

  it('refuses the self-signed certificate without a CA or pin, and a wrong pin, counting the failures', async () => {
    const plain = client({});
    const wrong = client({ certName: `sha256-raw:${'00'.repeat(32)}` });
    await waitFor(() => plain.c.counters.connectFailures >= 2 && wrong.c.counters.connectFailures >= 2, 'failed attempts');
    assert.equal(plain.c.counters.connects, 0);
    assert.equal(wrong.c.counters.connects, 0);
    assert.ok(wrong.c.counters.protocolErrors >= 2, 'a pin mismatch is a protocol error');
  });
});
