// Userspace networking on a second thread: the whole Userspace (netstack, forwarder, proxies and
// their host sockets) runs in a node:worker_threads Worker (src/daemon/netstack-worker.ts) while
// WireGuard, magicsock and the UDP socket stay on the main thread. Alone on a machine the agent's
// single JavaScript thread was the limit (tailscaled spreads the same work over goroutines); this
// puts the second core to work.
//
//   main thread                                     worker
//   DataPlane --writeBatch--> [toStack ring]   --> Netstack.input
//   DataPlane <--onBatch----- [fromStack ring] <-- NetstackDevice output
//   start / map / counters / close ---- MessagePort ----> Userspace
//
// The rings (src/netstack/ring-shared.ts) carry batches of IP packets in shared memory: one copy
// per packet, no message per batch (a sleeping consumer is woken with Atomics.notify). A full ring
// drops and counts, as a full TUN queue would. A worker that fails ends the agent with the error.
// MESHD_NETSTACK_THREAD=0 runs the Userspace on the main thread instead (for comparison).
import { setFlagsFromString } from 'node:v8';
import { Worker } from 'node:worker_threads';
import type { NetworkMap } from '../control/netmap.ts';
import type { HostDevice, HostDeviceStats } from '../tun/device.ts';
import type { PollStats } from '../native/index.ts';
import { DEFAULT_HEADROOM, DEFAULT_TAILROOM, slotSizeFor, type RxBatch, type TxBatch } from '../net/batch.ts';
import { PacketRing, ringConsumer, useNativeCopy, type FrameBatch, type RingShape } from '../netstack/ring-shared.ts';
import { native } from '../native/index.ts';
import type { Logf } from '../util/log.ts';
import type { UserspaceOptions } from './userspace.ts';

// Decrypted packets go into the ring with one native copy per frame (ring-shared.ts pushBatch).
try { useNativeCopy(native().copyBatch?.bind(native())); } catch { /* no addon: Buffer.copy per packet */ }

/** What the worker gets at start (structured-cloned; the SharedArrayBuffers are shared). */
export interface ThreadInit {
  opts: Omit<UserspaceOptions, 'log'>;
  toStack: SharedArrayBuffer;
  toStackShape: RingShape;
  fromStack: SharedArrayBuffer;
  fromStackShape: RingShape;
  /** [seq, len] then JSON bytes of the latest counters. */
  counters: SharedArrayBuffer;
}

/** The parts of a network map the Userspace reads (names, addresses), cloneable. */
interface MapLite {
  self: { name: string; addresses: readonly string[] } | undefined;
  peers: Map<number, { name: string; hostname: string; addresses: readonly string[] }>;
}

/** Messages to the worker. */
export type ToWorker =
  | { t: 'map'; map: MapLite; allowed: Map<number, string[]>; promiscuous: boolean }
  | { t: 'counters' }
  | { t: 'close' };

/** Messages from the worker. */
type FromWorker =
  | { t: 'log'; line: string }
  | { t: 'started'; listening: { socks5?: string; http?: string } }
  | { t: 'error'; message: string }
  | { t: 'closed' };

/**
 * Ring shapes (about 5.8 MB of shared memory each way at MTU 1280). Into the stack: 128 frames of
 * 32, since the data plane writes what each UDP batch decrypted (56 packets on average in a 200 MB
 * transfer, often a handful) and each write takes a frame of its own; 32 frames of 128 dropped 39
 * packets in 3 x 200 MB each way (the worker behind for a moment; 29 RTO expiries followed). Out
 * of the stack: the device's staged batches of 128, so 32 frames of 128.
 */
const TO_STACK = { frames: 128, slots: 32 }, FROM_STACK = { frames: 32, slots: 128 };
/** Shared memory for one counters snapshot (JSON). */
const COUNTERS_BYTES = 64 * 1024;
/** Longest wait for counters from a busy worker before the last snapshot is shown. */
const COUNTERS_WAIT_MS = 500;
/** How long the worker has to close its listeners before it is terminated. */
const CLOSE_GRACE_MS = 1000;
/** Frames handed to the data plane per turn of the event loop before yielding to UDP. */
const FRAMES_PER_TURN = 8;
/**
 * V8 tiering flags for an agent in userspace mode, set before the worker starts. A fresh agent ran
 * its per-connection code (SOCKS5, dial, TcpRelay, node's net.Socket) in the interpreter and
 * baseline tiers for its first ~1,500 connections: a function called a few times per connection
 * reaches V8's TurboFan budget (3 ticks of 66 KiB of bytecode, then 500 calls after each
 * inline-cache change) only after hundreds of connections, and bench-netstack's rounds 2 and 3 of
 * 500 still spent 40% of the agent's CPU compiling. A quarter of the budget and 100 calls after an
 * IC change move that compiling into the first ~500 connections (the same work, done earlier).
 * V8 flags are per process, so the main thread tiers up sooner too. MESHD_JIT_FLAGS overrides
 * them ('' or '0': V8's defaults).
 */
export const JIT_FLAGS = '--interrupt-budget=16384 --minimum-invocations-after-ic-update=100';

/** The V8 flags to set for userspace mode (see JIT_FLAGS), or undefined for none. */
export function jitFlags(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const v = env['MESHD_JIT_FLAGS'];
  if (v === undefined) return JIT_FLAGS;
  const t = v.trim();
  return t === '' || t === '0' ? undefined : t;
}

let jitFlagsSet = false;
/**
 * Sets jitFlags() once per process (V8 reads these flags at each tier-up decision, so late is
 * fine); returns the flags set by this call (undefined: none asked for, or set before).
 */
export function applyJitFlags(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const f = jitFlags(env);
  if (f === undefined || jitFlagsSet) return undefined;
  jitFlagsSet = true;
  setFlagsFromString(f);
  return f;
}

/** True unless MESHD_NETSTACK_THREAD=0 asks for the in-thread Userspace. */
export function netstackThreadEnabled(env: NodeJS.ProcessEnv = process.env): boolean {
  return env['MESHD_NETSTACK_THREAD'] !== '0';
}

/** The data plane's host device whose host is the worker's netstack: packets move through the rings. */
export class ThreadDevice implements HostDevice {
  readonly name = 'userspace-networking';
  readonly mtu: number;
  private readonly toStack: PacketRing;
  private readonly fromStack: PacketRing;
  private onBatch: ((b: RxBatch) => void) | undefined;
  private readonly consumer: ReturnType<typeof ringConsumer>;
  private readonly rx: PollStats = { packets: 0, batches: 0, wakeups: 0, truncated: 0, errors: 0, kernelDrops: 0, gsoReads: 0, gsoSegments: 0, csumCompleted: 0, badGso: 0, groMessages: 0, groSegments: 0, lastErrno: 0, active: true };
  private txPackets = 0;
  private closed = false;
  /** A publish of the partly filled frame is due at the end of this turn (see writeBatch). */
  private publishDue = false;
  private readonly publishLater = (): void => { this.publishDue = false; this.toStack.publish(); };

  constructor(toStack: PacketRing, fromStack: PacketRing, mtu: number) {
    this.toStack = toStack;
    this.fromStack = fromStack;
    this.mtu = mtu;
    this.consumer = ringConsumer(fromStack, (b) => this.frame(b), FRAMES_PER_TURN);
  }

  startReading(onBatch: (batch: RxBatch) => void): RxBatch {
    this.onBatch = onBatch;
    this.consumer.start();
    // Every frame is a view of the same buffer: the data plane's shareBuffer sees one buffer.
    return this.fromStack.batches[0]!;
  }

  private frame(b: FrameBatch): void {
    this.rx.packets += b.count;
    this.rx.batches++;
    this.onBatch?.(b);
  }

  writeBatch(tx: TxBatch): number {
    const n = tx.count, ring = this.toStack, buf = tx.buf, offs = tx.offsets, lens = tx.lens;
    if (!this.closed) {
      ring.pushBatch(buf, offs, lens, n);
      // A worker that is still behind on earlier frames will not look at this one sooner, so the
      // frame stays open for the rest of this turn's UDP batches (published when full, or at the
      // turn's end) instead of taking a frame per write: the ring then holds ~4000 packets when the
      // worker falls behind, not 128 frames of a few packets each (a bigger receive window let a
      // download overflow it while the worker was descheduled: 865 drops in 3 x 200 MB).
      if (ring.pending > 0) {
        if (!this.publishDue) { this.publishDue = true; setImmediate(this.publishLater); }
      } else ring.publish();
    }
    this.txPackets += n;
    tx.clear();
    return n;
  }

  /** Frames published to the worker, and how many of those woke it. */
  get inFrames(): number { return this.toStack.published; }
  get inNotifies(): number { return this.toStack.notified; }
  /** Packets dropped for a full ring: to the worker (it fell behind) and from it (the data plane did). */
  get dropsIn(): number { return this.toStack.dropped; }
  get dropsOut(): number { return this.fromStack.dropped; }

  stats(): HostDeviceStats {
    this.rx.wakeups = this.consumer.wakeups;
    return { rx: this.rx, txPackets: this.txPackets, txDropped: this.toStack.dropped + this.fromStack.dropped };
  }

  close(): void {
    this.closed = true;
    this.onBatch = undefined;
    this.consumer.stop();
  }
}

/** Options of {@link UserspaceThread}. */
export interface UserspaceThreadOptions extends UserspaceOptions {
  /** Called once when the worker fails or exits on its own (the agent should stop). */
  onFatal?: (err: Error) => void;
  /** Worker entry (default: netstack-worker.js next to this module). */
  entry?: URL;
}

/** The Userspace of src/daemon/userspace.ts, run in a worker thread; same surface for the agent. */
export class UserspaceThread {
  readonly device: ThreadDevice;
  /** Addresses the proxies listen on (after start). */
  readonly listening: { socks5?: string; http?: string } = {};
  private readonly worker: Worker;
  private readonly log: Logf;
  private readonly onFatal: ((err: Error) => void) | undefined;
  private readonly countersHdr: Int32Array;
  private readonly countersBytes: Uint8Array;
  private lastCounters: Record<string, number> = {};
  private started: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private closing = false;
  private failed = false;

  constructor(opts: UserspaceThreadOptions) {
    this.log = opts.log;
    this.onFatal = opts.onFatal;
    const mtu = 1280;
    const slot = { slotSize: slotSizeFor(mtu, DEFAULT_HEADROOM, DEFAULT_TAILROOM), headroom: DEFAULT_HEADROOM };
    const toShape: RingShape = { ...TO_STACK, ...slot }, fromShape: RingShape = { ...FROM_STACK, ...slot };
    const toStack = PacketRing.create(toShape), fromStack = PacketRing.create(fromShape);
    const counters = new SharedArrayBuffer(8 + COUNTERS_BYTES);
    this.countersHdr = new Int32Array(counters, 0, 2);
    this.countersBytes = new Uint8Array(counters, 8);
    this.device = new ThreadDevice(toStack, fromStack, mtu);
    const init: ThreadInit = {
      opts: { socks5: opts.socks5, httpProxy: opts.httpProxy, socksAuth: opts.socksAuth },
      toStack: toStack.sab, toStackShape: toShape, fromStack: fromStack.sab, fromStackShape: fromShape, counters,
    };
    const jit = applyJitFlags();
    if (jit !== undefined) this.log(`netstack thread: V8 flags ${jit}`);
    this.worker = new Worker(opts.entry ?? new URL('./netstack-worker.js', import.meta.url), {
      workerData: init,
      name: 'meshd-netstack',
      stdout: false,
      stderr: false,
    });
    this.worker.on('message', (m: FromWorker) => this.onMessage(m));
    this.worker.on('error', (e: Error) => this.fail(new Error(`netstack thread failed: ${e.message}`)));
    this.worker.on('exit', (code) => { if (!this.closing) this.fail(new Error(`netstack thread exited (code ${code})`)); });
  }

  private onMessage(m: FromWorker): void {
    switch (m.t) {
      case 'log': this.log(m.line); break;
      case 'started':
        Object.assign(this.listening, m.listening);
        this.started?.resolve();
        this.started = undefined;
        break;
      case 'error':
        this.started?.reject(new Error(m.message));
        this.started = undefined;
        break;
      case 'closed': void this.worker.terminate(); break;
    }
  }

  private fail(e: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.device.close();
    if (this.started) { this.started.reject(e); this.started = undefined; return; }
    this.log(e.message);
    this.onFatal?.(e);
  }

  /** Waits for the worker's proxy listeners; throws a one-line error when one cannot listen or the worker fails. */
  start(): Promise<void> {
    if (this.failed) return Promise.reject(new Error('netstack thread is not running'));
    return new Promise((resolve, reject) => { this.started = { resolve, reject }; });
  }

  /** Follows the network map (see Userspace.setMap): only names and addresses cross to the worker. */
  setMap(m: NetworkMap, allowed: Map<number, string[]>, promiscuous: boolean): void {
    if (this.failed || this.closing) return;
    const peers: MapLite['peers'] = new Map();
    for (const [id, p] of m.peers) peers.set(id as number, { name: p.name, hostname: p.hostname, addresses: [...p.addresses] });
    const self = m.self ? { name: m.self.name, addresses: [...m.self.addresses] } : undefined;
    const msg: ToWorker = { t: 'map', map: { self, peers }, allowed, promiscuous };
    this.worker.postMessage(msg);
  }

  /** Counters of stack, forwarder and proxies, asked of the worker (waits at most COUNTERS_WAIT_MS, else the last ones). */
  counters(): Record<string, number> {
    if (!this.failed && !this.closing) {
      const seq = Atomics.load(this.countersHdr, 0);
      this.worker.postMessage({ t: 'counters' } satisfies ToWorker);
      if (Atomics.wait(this.countersHdr, 0, seq, COUNTERS_WAIT_MS) !== 'timed-out') {
        const n = Atomics.load(this.countersHdr, 1);
        try {
          this.lastCounters = JSON.parse(Buffer.from(this.countersBytes.slice(0, n)).toString('utf8')) as Record<string, number>;
        } catch { /* a torn snapshot: keep the last */ }
      }
    }
    const d = this.device.stats();
    return { ...this.lastCounters, 'netstack.threadRingDrops': d.txDropped, 'netstack.threadRingDropsIn': this.device.dropsIn, 'netstack.threadRingDropsOut': this.device.dropsOut, 'netstack.threadWakeups': d.rx?.wakeups ?? 0, 'netstack.threadInFrames': this.device.inFrames, 'netstack.threadInNotifies': this.device.inNotifies };
  }

  /** Stops the worker's listeners and connections; the device is closed by the data plane. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    if (this.failed) return;
    this.worker.postMessage({ t: 'close' } satisfies ToWorker);
    const t = setTimeout(() => void this.worker.terminate(), CLOSE_GRACE_MS);
    t.unref();
    this.worker.once('exit', () => clearTimeout(t));
  }
}
