// LocalServices: the netstack behind a LocalPacketHandler for the agent's own service addresses
// (MagicDNS's TCP port 53 in TUN mode). A second stack plays the host's kernel.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LocalServices } from '../../src/netstack/local.ts';
import { NetstackDriver } from '../../src/netstack/device.ts';
import { TcpStream } from '../../src/netstack/stream.ts';

describe('LocalServices', () => {
  it('takes only packets to its service addresses, and serves a TCP echo at 100.100.100.100:53 over Duplex streams', async () => {
    let local: LocalServices | undefined;
    const passed: number[] = [];
    const host = new NetstackDriver({ output: (b, o, l) => { if (!local!.handleOutbound(b, o, l)) passed.push(l); } });
    host.setFlush(() => {});
    host.stack.setAddresses(['100.64.0.1/32']);
    local = new LocalServices({
      addresses: ['100.100.100.100', 'fd7a:115c:a1e0::53'],
      deliver: (b, o, l) => { host.stack.input(b, o, l); host.stack.endBatch(); host.schedule(); },
    });
    local.listen('100.100.100.100', 53, (sock) => { sock.pipe(sock); });
    const t = host.stack.connect('100.100.100.100', 53, { onData() {}, onEnd() {}, onWritable() {}, onClose() {} });
    const s = new TcpStream(t, () => host.schedule());
    host.schedule();
    await new Promise<void>((resolve, reject) => { s.once('connect', resolve); s.once('error', reject); });
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    const ended = new Promise<void>((r) => s.once('end', r));
    const msg = Buffer.alloc(100_000, 7);
    s.end(msg);
    await ended;
    assert.equal(Buffer.concat(chunks).length, msg.length);
    assert.ok(Buffer.concat(chunks).equals(msg));
    // A packet to another address goes on (to WireGuard).
    host.stack.connect('100.64.0.9', 80, { onData() {}, onEnd() {}, onWritable() {}, onClose() {} });
    host.schedule();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(passed.length, 1);
    local.close();
    host.close();
  });
});
