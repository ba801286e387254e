// TUN and UDP offloads against the real kernel: two TUN devices in two namespaces joined by a
// "wire" (test/native/fixtures/wire-child.ts) that forwards through two loopback UDP sockets, so
// kernel TCP and UDP in namespace A reach namespace B through every offload stage: TSO/USO reads
// split into MTU packets, UDP GSO sends, UDP GRO receives, coalesced TUN writes. The bytes must
// arrive intact (SHA-256 both ends), the counters must show each stage did its work, and the same
// must hold with every kill switch set (the plain path).
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Lab, waitFor } from '../harness/netns.ts';
import { needs } from '../harness/prereq.ts';
import type { TunStats } from '../../src/tun/tun.ts';
import type { UdpStats } from '../../src/net/udp.ts';

const wire = fileURLToPath(new URL('./fixtures/wire-child.js', import.meta.url));
const flow = fileURLToPath(new URL('./fixtures/flow.js', import.meta.url));
const skip = needs({ root: true, tun: true, commands: ['ip'] });

interface Stats { tunA: TunStats; tunB: TunStats; sockA: UdpStats; sockB: UdpStats }

function jsonLines(text: string): Array<Record<string, unknown>> {
  return text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
}

function output(p: ChildProcess): { text: () => string } {
  let text = '';
  p.stdout?.on('data', (d: Buffer) => { text += d.toString(); });
  p.stderr?.on('data', (d: Buffer) => { text += d.toString(); });
  return { text: () => text };
}

async function exited(p: ChildProcess, what: string, ms: number): Promise<void> {
  if (p.exitCode !== null) return;
  await Promise.race([
    new Promise<void>((r) => p.once('exit', () => r())),
    new Promise<void>((_r, rej) => setTimeout(() => rej(new Error(`${what} did not finish in ${ms} ms`)), ms).unref()),
  ]);
}

const KILL = { MESHD_DISABLE_TUN_OFFLOAD: '1', MESHD_DISABLE_UDP_GSO: '1', MESHD_DISABLE_UDP_GRO: '1' };

for (const mode of ['offloads on', 'every kill switch set', 'TUN coalescing switched off'] as const) {
  describe(`offload wire (${mode})`, { skip }, () => {
    const lab = new Lab(mode === 'offloads on' ? 'ow' : mode === 'every kill switch set' ? 'ok' : 'og');
    after(() => lab.dispose());
    const env = { ...process.env, ...(mode === 'offloads on' ? {} : mode === 'every kill switch set' ? KILL : { MESHD_DISABLE_TUN_GRO: '1' }) };
    // With only TUN coalescing off, everything else is on.
    const on = mode !== 'every kill switch set';
    let a = '', b = '';
    let child: ChildProcess | undefined;
    let out: { text: () => string } | undefined;

    async function stats(): Promise<Stats> {
      const before = jsonLines(out!.text()).filter((o) => o.stats).length;
      child!.stdin!.write('stats\n');
      await waitFor('wire stats', () => jsonLines(out!.text()).filter((o) => o.stats).length > before, 5000, 20);
      return jsonLines(out!.text()).filter((o) => o.stats).at(-1)!.stats as Stats;
    }

    async function tcp(host: string, bytes: number): Promise<void> {
      const sink = lab.spawn(b, [process.execPath, flow, 'tcp-sink', '5201'], { env });
      const so = output(sink);
      await waitFor('tcp sink', () => so.text().includes('listening'), 10_000, 20);
      const src = lab.spawn(a, [process.execPath, flow, 'tcp-source', host, '5201', String(bytes)], { env });
      const ao = output(src);
      await exited(sink, 'tcp sink', 60_000);
      await exited(src, 'tcp source', 5_000);
      const got = jsonLines(so.text()).find((o) => o.sha256);
      const sent = jsonLines(ao.text()).find((o) => o.sha256);
      assert.ok(sent && got, `no result: source ${ao.text()} sink ${so.text()}\nwire: ${out!.text()}`);
      assert.equal(got.bytes, bytes);
      assert.equal(got.sha256, sent.sha256, 'bytes changed on the way');
    }

    async function udp(host: string, n: number, size: number): Promise<void> {
      const sink = lab.spawn(b, [process.execPath, flow, 'udp-sink', '5301', String(n), host.includes(':') ? '6' : '4'], { env });
      const so = output(sink);
      await waitFor('udp sink', () => so.text().includes('listening'), 10_000, 20);
      const src = lab.spawn(a, [process.execPath, flow, 'udp-source', host, '5301', String(n), String(size)], { env });
      const ao = output(src);
      await exited(src, 'udp source', 10_000);
      await exited(sink, 'udp sink', 10_000);
      const got = jsonLines(so.text()).find((o) => o.sha256);
      const sent = jsonLines(ao.text()).find((o) => o.sha256);
      assert.ok(sent && got, `no result: source ${ao.text()} sink ${so.text()}`);
      assert.equal(sent.sent, n);
      assert.equal(got.count, n, `datagrams lost: source ${ao.text()}`);
      assert.equal(got.sha256, sent.sha256, 'datagrams changed on the way');
      const st = sent.stats as UdpStats;
      if (on) assert.ok(st.txGsoMessages > 0, 'the source sent UDP_SEGMENT messages');
      else assert.equal(st.txGsoMessages, 0);
    }

    it('comes up with the offloads the mode asks for', async () => {
      a = lab.ns('a');
      b = lab.ns('b');
      child = lab.spawn(a, [process.execPath, wire, b], { env, stdio: ['pipe', 'pipe', 'pipe'] });
      out = output(child);
      await waitFor('wire ready', () => out!.text().includes('"ready"') || child!.exitCode !== null, 10_000, 20);
      assert.match(out.text(), /"ready"/, out.text());
      const s = await stats();
      assert.equal(s.tunA.offload.vnetHdr, on);
      assert.equal(s.tunA.offload.tso, on);
      assert.equal(s.tunA.offload.tcpGro, mode === 'offloads on', JSON.stringify(s.tunA.offload));
      assert.equal(s.tunB.offload.udpGro, mode === 'offloads on');
      assert.equal(s.tunB.offload.uso, on);
      assert.equal(s.sockA.offload.gso, on);
      assert.equal(s.sockB.offload.gro, on);
      if (!on) assert.match(s.tunA.offload.reason ?? '', /MESHD_DISABLE_TUN_OFFLOAD/);
      if (mode === 'TUN coalescing switched off') assert.match(s.tunA.offload.reason ?? '', /MESHD_DISABLE_TUN_GRO/);
    });

    it('carries kernel TCP over IPv4 and IPv6 intact, split from TSO reads and coalesced on write', async () => {
      await tcp('100.64.1.2', 24 << 20);
      await tcp('fd7a:115c:a1e0:1::2', 8 << 20);
      const s = await stats();
      const detail = JSON.stringify(s);
      if (on) {
        assert.ok(s.tunA.rx!.gsoReads > 0, `TSO super-packets read: ${detail}`);
        assert.ok(s.tunA.rx!.gsoSegments > s.tunA.rx!.gsoReads, detail);
        assert.ok(s.sockA.txGsoMessages > 0, `UDP GSO sends: ${detail}`);
        assert.ok(s.sockB.rx!.groMessages > 0, `UDP GRO receives: ${detail}`);
        if (mode === 'offloads on') assert.ok(s.tunB.txCoalescedFrames > 0, `coalesced TUN writes: ${detail}`);
        else assert.equal(s.tunB.txCoalescedFrames, 0, detail);
        assert.equal(s.tunB.txGroFallbacks, 0, detail);
      } else {
        for (const k of [s.tunA.rx!.gsoReads, s.sockA.txGsoMessages, s.sockB.rx!.groMessages, s.tunB.txCoalescedFrames]) assert.equal(k, 0, detail);
      }
      assert.equal(s.tunA.rx!.badGso + s.tunB.rx!.badGso, 0, detail);
    });

    it('carries kernel UDP sent with UDP_SEGMENT intact, IPv4 and IPv6', async () => {
      const before = await stats();
      await udp('100.64.1.2', 256, 1200);
      await udp('fd7a:115c:a1e0:1::2', 128, 1100);
      const s = await stats();
      if (on) assert.ok(s.tunA.rx!.gsoReads > before.tunA.rx!.gsoReads, `USO super-packets read: ${JSON.stringify(s.tunA)}`);
      if (mode === 'offloads on') assert.ok(s.tunB.txCoalescedFrames > before.tunB.txCoalescedFrames, 'UDP coalesced on the TUN write');
      child!.stdin!.write('quit\n');
      await exited(child!, 'wire', 5000);
    });
  });
}
