// Inbound flows from peers to host sockets, as tailscaled's netstack forwards them
// (wgengine/netstack acceptTCP/forwardTCP, acceptUDP/forwardUDP):
//   TCP to one of our addresses, port P  -> 127.0.0.1:P (then ::1 for IPv6), dialled before the
//     SYN is answered; a refused dial answers the SYN with a RST. Half-closes are propagated.
//   TCP to another address (exit node, subnet router; the stack is promiscuous) -> that address.
//   UDP likewise, through a host socket per flow; idle flows end after 2 min (30 s for port 53),
//     at most maxUdpFlows at once (the oldest goes first).
import { connect, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import type { NetstackDriver } from './device.ts';
import { formatAddr } from './ip.ts';
import type { Tcb, TcpError, TcpHandler } from './tcp.ts';
import { TcpStream } from './stream.ts';
import type { UdpDatagram } from './stack.ts';
import { relay } from '../proxy/socks5.ts';
import type { Logf } from '../util/log.ts';

/** Counters of the forwarder. */
export interface ForwardCounters {
  tcpForwarded: number;
  tcpRefused: number;
  udpFlows: number;
  udpFlowsEvicted: number;
  udpDropped: number;
}

interface UdpFlow {
  sock: UdpSocket;
  last: number;
  idleMs: number;
  family: 4 | 6;
  local: Uint8Array;
  localPort: number;
  remote: Uint8Array;
  remotePort: number;
  ready: boolean;
  queue: Buffer[];
}

/** Forwards inbound TCP and UDP from the stack to host sockets. */
export class Forwarder {
  readonly counters: ForwardCounters = { tcpForwarded: 0, tcpRefused: 0, udpFlows: 0, udpFlowsEvicted: 0, udpDropped: 0 };
  private readonly driver: NetstackDriver;
  private readonly log: Logf;
  private readonly flows = new Map<string, UdpFlow>();
  private readonly maxUdpFlows: number;
  private sweeper: NodeJS.Timeout | undefined;
  private readonly kick: () => void;

  constructor(driver: NetstackDriver, log: Logf, opts: { maxUdpFlows?: number } = {}) {
    this.driver = driver;
    this.log = log;
    this.maxUdpFlows = opts.maxUdpFlows ?? 1024;
    this.kick = () => driver.schedule();
    const s = driver.stack;
    s.onTcp = (t) => this.onTcp(t);
    s.onUdp = (d) => this.onUdp(d);
    this.sweeper = setInterval(() => this.sweep(), 5_000);
    this.sweeper.unref();
  }

  private onTcp(t: Tcb): void {
    const local = this.driver.stack.isLocal(t.family, t.localAddr, 0);
    const port = t.localPort;
    const hosts = local ? (t.family === 6 ? ['127.0.0.1', '::1'] : ['127.0.0.1']) : [formatAddr(t.family, t.localAddr)];
    let sock: Socket | undefined;
    // Until accepted, a RST from the peer (or the accept timeout) must close the dial.
    const pending: TcpHandler = {
      onData() {}, onEnd() {}, onWritable() {},
      onClose: () => { sock?.destroy(); },
    };
    t.handler = pending;
    const attempt = (i: number): void => {
      const s = connect({ host: hosts[i]!, port, timeout: 5_000 });
      sock = s;
      s.once('timeout', () => s.destroy(Object.assign(new Error('connect timed out'), { code: 'ETIMEDOUT' })));
      s.once('connect', () => {
        s.setTimeout(0);
        if (t.closed) { s.destroy(); return; }
        this.counters.tcpForwarded++;
        const ts = new TcpStream(t, this.kick);
        t.accept(ts);
        t.setKeepalive(true);
        s.setNoDelay(true);
        relay(ts, s);
        this.kick();
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        if (t.handler !== pending) return; // already relaying: the relay handles it
        if (i + 1 < hosts.length && e.code === 'ECONNREFUSED') { attempt(i + 1); return; }
        this.counters.tcpRefused++;
        t.handler = undefined;
        t.reject();
        this.kick();
      });
    };
    attempt(0);
  }

  private onUdp(d: UdpDatagram): void {
    const key = `${formatAddr(d.family, d.src)}|${d.srcPort}|${formatAddr(d.family, d.dst)}|${d.dstPort}`;
    let f = this.flows.get(key);
    const now = Date.now();
    if (f === undefined) {
      if (this.flows.size >= this.maxUdpFlows) {
        const oldest = this.flows.keys().next().value;
        if (oldest !== undefined) { this.flows.get(oldest)?.sock.close(); this.flows.delete(oldest); this.counters.udpFlowsEvicted++; }
      }
      const local = this.driver.stack.isLocal(d.family, d.dst, 0);
      const target = local ? (d.family === 6 ? '::1' : '127.0.0.1') : formatAddr(d.family, d.dst);
      const sock = createSocket(d.family === 6 ? 'udp6' : 'udp4');
      const flow: UdpFlow = {
        sock, last: now, idleMs: d.dstPort === 53 ? 30_000 : 120_000, family: d.family,
        local: d.dst.slice(), localPort: d.dstPort, remote: d.src.slice(), remotePort: d.srcPort, ready: false, queue: [],
      };
      f = flow;
      this.flows.set(key, flow);
      this.counters.udpFlows++;
      sock.on('error', () => { sock.close(); this.flows.delete(key); });
      sock.on('message', (msg) => {
        flow.last = Date.now();
        this.driver.stack.sendUdp(flow.family, flow.local, flow.localPort, flow.remote, flow.remotePort, msg, 0, msg.length);
        this.kick();
      });
      sock.connect(d.dstPort, target, () => {
        flow.ready = true;
        for (const m of flow.queue) sock.send(m);
        flow.queue = [];
      });
    }
    f.last = now;
    const data = Buffer.from(d.buf.subarray(d.off, d.off + d.len));
    if (f.ready) f.sock.send(data);
    else if (f.queue.length < 16) f.queue.push(data);
    else this.counters.udpDropped++;
  }

  private sweep(): void {
    const now = Date.now();
    for (const [k, f] of this.flows) {
      if (now - f.last > f.idleMs) { f.sock.close(); this.flows.delete(k); }
    }
  }

  /** Open UDP flows. */
  get udpFlowCount(): number {
    return this.flows.size;
  }

  /** Closes every UDP flow and stops the sweeper. */
  close(): void {
    if (this.sweeper) clearInterval(this.sweeper);
    this.sweeper = undefined;
    for (const f of this.flows.values()) { try { f.sock.close(); } catch { /* closed */ } }
    this.flows.clear();
  }
}

export type { TcpError };
