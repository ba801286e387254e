// Also the GSO fallback: segments larger than the route MTU make a UDP_SEGMENT send fail with
// EMSGSIZE (the kernel does not fragment GSO); the message is resent one datagram at a time. (EIO,
// from a device without checksum offload, and EINVAL take the same path and also turn GSO off;
// this 6.18 kernel checksums in software instead of EIO, so that cannot be provoked here.)
// Backpressure instead of loss: when the UDP socket's send queue is full (EAGAIN), sendBatch waits
// for it to drain (poll POLLOUT, a few ms per wait, a bounded total) instead of dropping the rest
// of the batch; past the bound it drops and counts. The link is a veth pair shaped with tbf in a
// lab namespace, and the sender has a small send buffer, so the queue fills for real.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { Lab, waitFor } from '../harness/netns.ts';
import { needs } from '../harness/prereq.ts';
import type { UdpStats } from '../../src/net/udp.ts';

const flow = fileURLToPath(new URL('./fixtures/flow.js', import.meta.url));
const skip = needs({ root: true, commands: ['ip', 'tc'] });

function collect(p: ChildProcess): () => string {
  let text = '';
  p.stdout?.on('data', (d: Buffer) => { text += d.toString(); });
  p.stderr?.on('data', (d: Buffer) => { text += d.toString(); });
  return () => text;
}

function result(text: string): Record<string, unknown> {
  const line = text.split('\n').find((l) => l.startsWith('{') && l.includes('sha256'));
  assert.ok(line, `no result in: ${text}`);
  return JSON.parse(line) as Record<string, unknown>;
}

describe('UDP send backpressure', { skip }, () => {
  const lab = new Lab('bp');
  after(() => lab.dispose());

  async function run(rate: string, n: number, batch: number): Promise<{ sent: number; got: number; stats: UdpStats }> {
    const a = lab.ns(`a${rate}`), b = lab.ns(`b${rate}`);
    lab.link(a, b, { a4: '198.19.7.1', b4: '198.19.7.2' });
    if (rate === 'mtu1000') lab.exec(a, ['ip', 'link', 'set', 'veth0', 'mtu', '1000']);
    else lab.exec(a, ['tc', 'qdisc', 'add', 'dev', 'veth0', 'root', 'tbf', 'rate', rate, 'burst', '16kb', 'latency', '400ms']);
    const sink = lab.spawn(b, [process.execPath, flow, 'udp-sink', '5401', String(n), '4']);
    const so = collect(sink);
    await waitFor('udp sink', () => so().includes('listening'), 10_000, 20);
    const src = lab.spawn(a, [process.execPath, flow, 'udp-source', '198.19.7.2', '5401', String(n), '1000', String(batch), ...(rate === 'mtu1000' ? [] : ['16384'])]);
    const ao = collect(src);
    await waitFor('source done', () => src.exitCode !== null, 30_000, 20);
    await waitFor('sink done', () => sink.exitCode !== null, 10_000, 20);
    const s = result(ao()), r = result(so());
    return { sent: s.sent as number, got: r.count as number, stats: s.stats as UdpStats };
  }

  it('waits for a full send queue to drain and loses nothing', async () => {
    const r = await run('200mbit', 600, 128);
    assert.ok(r.stats.txWaits > 0, `the queue filled and was waited for: ${JSON.stringify(r.stats)}`);
    assert.equal(r.stats.txWaitDrops, 0, JSON.stringify(r.stats));
    assert.equal(r.sent, 600);
    assert.equal(r.got, 600);
  });

  it('resends a GSO message the kernel refuses (segments above the route MTU: EMSGSIZE) one by one, losing nothing', async () => {
    const r = await run('mtu1000', 200, 64);
    assert.equal(r.got, 200, JSON.stringify(r.stats));
    assert.equal(r.sent, 200);
    assert.equal(r.stats.txGsoErrno, 90, `EMSGSIZE: ${JSON.stringify(r.stats)}`);
    assert.equal(r.stats.txGsoFallbacks, 4, 'each of the 4 batches tried GSO once');
    assert.equal(r.stats.txGsoMessages, 0);
    assert.equal(r.stats.offload.gso, true, 'EMSGSIZE concerns one path: GSO stays on for the socket');
  });

  it('drops and counts what is left once the bounded wait is spent', async () => {
    const r = await run('1mbit', 300, 128);
    assert.ok(r.stats.txWaitDrops > 0, JSON.stringify(r.stats));
    assert.equal(r.stats.txDropped, r.stats.txWaitDrops, 'every drop is a counted wait drop');
    assert.equal(r.sent + r.stats.txDropped, 300);
  });
});
