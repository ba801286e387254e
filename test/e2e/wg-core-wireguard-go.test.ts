// The WireGuard core against an unmodified wireguard-go in network namespaces: handshakes in both
// directions, data both ways with every padding case, and a pre-shared key. Our side runs through
// a node:dgram stand-in I/O layer (test/harness/wgudp.ts); wireguard-go's side is the kernel's
// ICMP stack behind its TUN device.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { nodeCrypto } from '../../src/crypto/backend.ts';
import { Lab, waitFor } from '../harness/netns.ts';
import { needs } from '../harness/prereq.ts';
import { rand } from '../harness/bytes.ts';

const skip = needs({ root: true, tun: true, commands: ['wireguard-go', 'wg', 'ip', 'ping'] });
const runner = fileURLToPath(new URL('../harness/wgudp.js', import.meta.url));
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

interface Result {
  replies: number;
  requestsAnswered: number;
  badReplies: number;
  counters: Record<string, number>;
  peers: Array<{ endpoint: string | null; handshake: boolean }>;
}

// The interface's config socket /var/run/wireguard/IFACE.sock is machine-wide: a name of our own.
const IFACE = `gwgc${process.pid % 100000}`;

describe('WireGuard core against wireguard-go', { skip }, () => {
  const labs: Lab[] = [];
  let labCount = 0;
  const dirs: string[] = [];
  after(async () => {
    for (const l of labs) await l.dispose();
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  async function setup(opts: { psk?: Uint8Array; weKnowEndpoint: boolean; underLoad?: boolean; flood?: number }) {
    // One lab per test, with its own prefix; the previous one is gone first.
    for (const l of labs.splice(0)) await l.dispose();
    const lab = new Lab(`wgc${labCount++}`);
    labs.push(lab);
    const us = lab.ns('us');
    const them = lab.ns('wg');
    lab.link(us, them, { a4: '198.18.0.1', b4: '198.18.0.2' });
    const ours = nodeCrypto.x25519.generatePrivate(rand);
    const theirs = nodeCrypto.x25519.generatePrivate(rand);
    const dir = mkdtempSync(join(tmpdir(), 'meshd-wgc-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'key'), b64(theirs));
    const wg = lab.spawn(them, ['wireguard-go', '-f', IFACE], { env: { ...process.env, WG_PROCESS_FOREGROUND: '1' } });
    void wg;
    await waitFor('wireguard-go interface', () => lab.tryExec(them, ['ip', 'link', 'show', IFACE]).status === 0, 10_000);
    const peerArgs = ['peer', b64(nodeCrypto.x25519.publicFromPrivate(ours)), 'allowed-ips', '100.64.99.1/32', 'endpoint', '198.18.0.1:51820'];
    if (opts.psk) {
      writeFileSync(join(dir, 'psk'), b64(opts.psk));
      peerArgs.push('preshared-key', join(dir, 'psk'));
    }
    lab.exec(them, ['wg', 'set', IFACE, 'private-key', join(dir, 'key'), 'listen-port', '51820', ...peerArgs]);
    lab.exec(them, ['ip', 'addr', 'add', '100.64.99.2/24', 'dev', IFACE]);
    lab.exec(them, ['ip', 'link', 'set', IFACE, 'up']);
    const config = (pings: number, durationMs: number) => JSON.stringify({
      privateKey: b64(ours),
      peerPublicKey: b64(nodeCrypto.x25519.publicFromPrivate(theirs)),
      ...(opts.psk ? { presharedKey: b64(opts.psk) } : {}),
      listen: { ip: '198.18.0.1', port: 51820 },
      ...(opts.weKnowEndpoint ? { peer: { ip: '198.18.0.2', port: 51820 } } : {}),
      self: '100.64.99.1', other: '100.64.99.2', pings, intervalMs: 100, durationMs,
      underLoad: opts.underLoad === true,
      floodInitiations: opts.flood ?? 0,
    });
    // The promise also carries `ready`: resolved once the runner's socket is bound (a busy machine
    // can take well over a second to start node, and a datagram sent before that is lost).
    const run = (pings: number, durationMs: number): Promise<Result> & { ready: Promise<void> } => {
      let onReady = (): void => {};
      const ready = new Promise<void>((r) => { onReady = r; });
      const result = new Promise<Result>((resolve, reject) => {
        const p = lab.spawn(us, [process.execPath, runner, config(pings, durationMs)]);
        let text = '';
        p.stdout!.on('data', (d: Buffer) => { text += d.toString(); if (text.includes('{"ready":true}')) onReady(); });
        p.stderr!.on('data', (d: Buffer) => { text += d.toString(); });
        p.on('exit', () => {
          const line = text.split('\n').find((l) => l.startsWith('{"result"'));
          onReady();
          if (line) resolve((JSON.parse(line) as { result: Result }).result);
          else reject(new Error(`runner gave no result:\n${text}`));
        });
      });
      return Object.assign(result, { ready });
    };
    return { lab, us, them, run };
  }

  it('completes a handshake it initiates and exchanges packets of every padding class', async () => {
    const { run, lab, them } = await setup({ weKnowEndpoint: true });
    const r = await run(20, 3500);
    assert.equal(r.badReplies, 0);
    assert.equal(r.replies, 20, JSON.stringify(r));
    assert.equal(r.counters.handshakesCompleted, 1);
    assert.match(lab.exec(them, ['wg', 'show', IFACE, 'latest-handshakes']), /\t[1-9]\d*\n/);
  });

  it('answers a handshake wireguard-go initiates and learns its endpoint', async () => {
    const { run, lab, them } = await setup({ weKnowEndpoint: false });
    const running = run(0, 4000);
    await running.ready;
    const ping = lab.tryExec(them, ['ping', '-c', '5', '-i', '0.2', '-W', '2', '100.64.99.1'], 10_000);
    const r = await running;
    assert.equal(ping.status, 0, ping.stdout + ping.stderr);
    assert.equal(r.requestsAnswered, 5);
    assert.equal(r.counters.rxInitiations, 1);
    assert.deepEqual(r.peers, [{ endpoint: '198.18.0.2:51820', handshake: true }]);
  });

  it('interoperates with a pre-shared key', async () => {
    const { run } = await setup({ weKnowEndpoint: true, psk: rand(32) });
    const r = await run(5, 2500);
    assert.equal(r.replies, 5, JSON.stringify(r));
  });

  it('under load, sends a cookie reply that wireguard-go accepts and answers with a valid mac2', async () => {
    const { run, lab, them } = await setup({ weKnowEndpoint: false, underLoad: true });
    const running = run(0, 9000);
    await running.ready;
    // The first initiation gets a cookie; wireguard-go retransmits after 5 s with mac2.
    const ping = lab.tryExec(them, ['ping', '-c', '1', '-W', '8', '100.64.99.1'], 12_000);
    const r = await running;
    assert.equal(ping.status, 0, ping.stdout + ping.stderr + JSON.stringify(r));
    assert.ok(r.counters.txCookieReplies! >= 1, JSON.stringify(r.counters));
    assert.equal(r.counters.rxInitiations, 1);
    assert.equal(r.requestsAnswered, 1);
  });

  it('takes the cookie reply of a wireguard-go under load and completes the handshake', async () => {
    // Thousands of bogus initiations with a valid mac1 fill wireguard-go's handshake queue, so it
    // answers our real initiation with a cookie reply; we retry with mac2 five seconds later.
    // Whether the flood outruns wireguard-go depends on how busy the machine is: up to three tries,
    // each with a bigger flood.
    let r: Awaited<ReturnType<Awaited<ReturnType<typeof setup>>['run']>> | undefined;
    for (const flood of [4000, 12000, 30000]) {
      const { run } = await setup({ weKnowEndpoint: true, flood });
      r = await run(80, 9000);
      if ((r.counters.rxCookieReplies ?? 0) >= 1) break;
    }
    assert.ok(r && r.counters.rxCookieReplies! >= 1, JSON.stringify(r?.counters));
    assert.equal(r.counters.dropRxBadCookieReply ?? 0, 0);
    assert.ok(r.replies >= 1, JSON.stringify(r));
  });
});
