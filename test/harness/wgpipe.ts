// Two WireGuard Devices joined by an in-memory UDP "network" on a fake clock. Datagrams queue in
// flight until deliver() (or run()) moves them; a test can drop, duplicate, inspect or re-inject
// them, move a device to another source address (roaming), and step time in 100 ms ticks.
import { Device, type Clock, type WgSink } from '../../src/wg/device.ts';
import { Endpoints, type Endpoint } from '../../src/net/endpoint.ts';
import type { CryptoBackend } from '../../src/crypto/types.ts';
import { defaultCrypto } from '../../src/crypto/backend.ts';
import { MessageType, readU32LE } from '../../src/wg/messages.ts';

/** A clock the test moves by hand. */
export class FakeClock implements Clock {
  /** Monotonic ms. */
  t = 10_000;
  /** Wall time at t = 0. */
  wallBase = Date.UTC(2026, 0, 1);

  now(): number {
    return this.t;
  }

  wall(): number {
    return this.wallBase + this.t;
  }
}

/** One datagram on the simulated network. */
export interface Datagram {
  /** Source address. */
  from: Endpoint;
  /** Destination address. */
  to: Endpoint;
  /** UDP payload (a copy). */
  bytes: Uint8Array;
}

/** The WireGuard message type of a datagram (0 if not 1..4). */
export function typeOf(d: Datagram): number {
  const t = d.bytes.length >= 4 ? readU32LE(d.bytes, 0) : 0;
  return t >= 1 && t <= 4 ? t : 0;
}

/** True for a transport message carrying no data (32 bytes). */
export function isKeepalive(d: Datagram): boolean {
  return typeOf(d) === MessageType.Transport && d.bytes.length === 32;
}

/** A minimal IPv4 packet: 20-byte header (total length, protocol UDP, src, dst) and a patterned payload. */
export function ipv4(src: string, dst: string, payloadLen: number, fill = 0xab): Uint8Array {
  const p = new Uint8Array(20 + payloadLen);
  p[0] = 0x45;
  p[2] = (p.length >> 8) & 0xff;
  p[3] = p.length & 0xff;
  p[8] = 64;
  p[9] = 17;
  p.set(src.split('.').map(Number), 12);
  p.set(dst.split('.').map(Number), 16);
  for (let i = 20; i < p.length; i++) p[i] = (fill + i) & 0xff;
  return p;
}

/** Options for a pipe. */
export interface PipeOptions {
  /** Crypto for both devices. */
  crypto?: CryptoBackend;
  /** Crypto for B only (to run node against reference). */
  cryptoB?: CryptoBackend;
  /** TUN MTU. */
  mtu?: number;
  /** Whether B starts knowing A's endpoint (default true); false is the usual "server" setup. */
  bKnowsA?: boolean;
  /** Random source for both devices. */
  random?: (n: number) => Uint8Array;
  /** DeviceOptions.initiationResendMs for both devices. */
  initiationResendMs?: number;
  /** DeviceOptions.roaming for both devices (default true). */
  roaming?: boolean;
}

type Side = 'a' | 'b';

/** Two devices, A (10.0.0.1) and B (10.0.0.2), over an in-memory network. */
export class WgPipe {
  /** The shared fake clock. */
  readonly clock = new FakeClock();
  /** Endpoint interner. */
  readonly eps = new Endpoints();
  /** Device A. */
  readonly a: Device;
  /** Device B. */
  readonly b: Device;
  /** A's private key. */
  readonly aKey: Uint8Array;
  /** B's private key. */
  readonly bKey: Uint8Array;
  /** A's public key. */
  readonly aPub: Uint8Array;
  /** B's public key. */
  readonly bPub: Uint8Array;
  /** Source address A sends from (change it to roam). */
  aAddr: Endpoint;
  /** Source address B sends from. */
  bAddr: Endpoint;
  /** Packets written to A's TUN (copies). */
  readonly tunA: Uint8Array[] = [];
  /** Packets written to B's TUN. */
  readonly tunB: Uint8Array[] = [];
  /** Deliver datagrams in Node Buffers instead of plain Uint8Arrays. */
  buffers = false;
  /** Datagrams waiting for delivery. */
  readonly inFlight: Datagram[] = [];
  /** Every datagram ever sent, in order. */
  readonly log: Datagram[] = [];
  /** Datagrams for which this returns true are lost. */
  dropIf: ((d: Datagram) => boolean) | null = null;
  /** Sinks for A and B. */
  readonly sinkA: WgSink;
  readonly sinkB: WgSink;
  private readonly routes = new Map<Endpoint, Side>();

  constructor(opts: PipeOptions = {}) {
    const crypto = opts.crypto ?? defaultCrypto();
    const mk = (c: CryptoBackend): Device => new Device({
      clock: this.clock,
      crypto: c,
      ...(opts.mtu !== undefined ? { mtu: opts.mtu } : {}),
      ...(opts.random !== undefined ? { random: opts.random } : {}),
      ...(opts.initiationResendMs !== undefined ? { initiationResendMs: opts.initiationResendMs } : {}),
      ...(opts.roaming !== undefined ? { roaming: opts.roaming } : {}),
    });
    this.a = mk(crypto);
    this.b = mk(opts.cryptoB ?? crypto);
    const rnd = opts.random ?? ((n: number) => new Uint8Array(globalThis.crypto.getRandomValues(new Uint8Array(n))));
    this.aKey = crypto.x25519.generatePrivate(rnd);
    this.bKey = crypto.x25519.generatePrivate(rnd);
    this.a.setPrivateKey(this.aKey);
    this.b.setPrivateKey(this.bKey);
    this.aPub = this.a.publicKey()!;
    this.bPub = this.b.publicKey()!;
    this.aAddr = this.eps.of('198.18.0.1', 51820);
    this.bAddr = this.eps.of('198.18.0.2', 51820);
    this.routes.set(this.aAddr, 'a');
    this.routes.set(this.bAddr, 'b');
    this.a.setPeer(this.bPub, { endpoint: this.bAddr, allowedIPs: ['10.0.0.2/32'] });
    this.b.setPeer(this.aPub, { endpoint: opts.bKnowsA === false ? null : this.aAddr, allowedIPs: ['10.0.0.1/32'] });
    this.sinkA = this.makeSink('a');
    this.sinkB = this.makeSink('b');
  }

  private makeSink(side: Side): WgSink {
    return {
      sendUdp: (buf, off, len, to) => {
        const d = { from: side === 'a' ? this.aAddr : this.bAddr, to, bytes: buf.slice(off, off + len) };
        this.log.push(d);
        this.inFlight.push(d);
      },
      writeTun: (buf, off, len) => {
        (side === 'a' ? this.tunA : this.tunB).push(buf.slice(off, off + len));
      },
    };
  }

  /** Makes `addr` reach the given side (for roaming). */
  route(addr: Endpoint, side: Side): void {
    this.routes.set(addr, side);
  }

  /** The device and sink for a side. */
  side(s: Side): { dev: Device; sink: WgSink } {
    return s === 'a' ? { dev: this.a, sink: this.sinkA } : { dev: this.b, sink: this.sinkB };
  }

  /** Sends an IP packet into a device's TUN side, in a buffer with headroom like the I/O layer's. */
  send(s: Side, packet: Uint8Array): void {
    const buf = new Uint8Array(16 + packet.length + 64);
    buf.set(packet, 16);
    const { dev, sink } = this.side(s);
    dev.sendPacketInPlace(buf, 16, packet.length, buf.length - 16, sink);
  }

  /** Hands one datagram to whichever device listens on its destination (as if it arrived from d.from). */
  inject(d: Datagram): void {
    const side = this.routes.get(d.to);
    if (side === undefined) return;
    // As a Buffer when asked: DERP delivers Buffers, whose slice() is a view, not a copy.
    const buf = this.buffers ? Buffer.alloc(d.bytes.length + 48) : new Uint8Array(d.bytes.length + 48);
    buf.set(d.bytes, 24);
    const { dev, sink } = this.side(side);
    dev.receiveDatagramInPlace(buf, 24, d.bytes.length, d.from, sink);
  }

  /** Delivers everything in flight, including what the deliveries cause. */
  deliver(): void {
    for (let n = 0; this.inFlight.length > 0; n++) {
      if (n > 100_000) throw new Error('wgpipe: delivery does not settle');
      const d = this.inFlight.shift()!;
      if (this.dropIf?.(d) === true) continue;
      this.inject(d);
    }
  }

  /** Runs both devices for `ms` of fake time in `step` ms ticks, delivering after each tick. */
  run(ms: number, step = 100): void {
    const end = this.clock.t + ms;
    while (this.clock.t < end) {
      this.clock.t = Math.min(end, this.clock.t + step);
      this.a.tick(this.sinkA);
      this.b.tick(this.sinkB);
      this.deliver();
    }
  }

  /** Datagrams in the log since index `from` that match. */
  sentSince(from: number, pred: (d: Datagram) => boolean = () => true): Datagram[] {
    return this.log.slice(from).filter(pred);
  }
}
