// The userspace stack's thread (see src/daemon/netstack-thread.ts): runs the whole Userspace
// (netstack, forwarder, SOCKS5 and HTTP proxies, their host sockets) on its own event loop, so
// WireGuard and magicsock keep the main thread. Packets come and go through two shared rings;
// control (start, map, counters, close) and log lines go over the parent port.
import { parentPort, workerData } from 'node:worker_threads';
import { Userspace } from './userspace.ts';
import { PacketRing, ringConsumer, type FrameBatch } from '../netstack/ring-shared.ts';
import { useNativeSum } from '../netstack/ip.ts';
import { native } from '../native/index.ts';
import type { NetworkMap } from '../control/netmap.ts';
import type { ThreadInit, ToWorker } from './netstack-thread.ts';

const port = parentPort;
if (port === null) throw new Error('netstack-worker.ts runs only as a worker thread');
const init = workerData as ThreadInit;
const log = (line: string): void => port.postMessage({ t: 'log', line });

// Checksums over segments in the addon where it is built (without it, JavaScript: the same sums).
try { useNativeSum(native().sum16?.bind(native())); } catch { /* no addon: JavaScript sums */ }

const us = new Userspace({ ...init.opts, log });
const dev = us.device, stack = dev.stack, driver = dev.driver;
const toStack = new PacketRing(init.toStack, init.toStackShape);
const fromStack = new PacketRing(init.fromStack, init.fromStackShape);
const countersHdr = new Int32Array(init.counters, 0, 2);
const countersBytes = new Uint8Array(init.counters, 8);
let closed = false;

// Stack output is built in the ring's frames (the rest of each frame published at the device's flush).
dev.outputTo(fromStack);

let inPackets = 0;
const inputFrame = (b: FrameBatch): void => {
  const buf = b.buf, lens = b.lens, n = b.count;
  for (let k = 0; k < n; k++) stack.input(buf, b.offset(k), lens[k]!);
  inPackets += n;
};

/** Takes what the data plane wrote (the clock read once per drain), then looks again or sleeps. */
const input = ringConsumer(toStack, inputFrame, init.toStackShape.frames, {
  before: () => stack.holdClock(),
  after: (frames) => { stack.releaseClock(); if (frames > 0) driver.schedule(); },
});

function writeCounters(): void {
  const c = us.counters();
  c['netstack.threadInPackets'] = inPackets;
  c['netstack.threadInWakeups'] = input.wakeups;
  // How long the worker slept for input (mostly 0.2-5 ms in a download: it waits for the data plane).
  const sl = input.sleeps;
  c['netstack.threadInSleeps50us'] = sl[0]!;
  c['netstack.threadInSleeps200us'] = sl[1]!;
  c['netstack.threadInSleeps1ms'] = sl[2]!;
  c['netstack.threadInSleeps5ms'] = sl[3]!;
  c['netstack.threadInSleepsLonger'] = sl[4]!;
  c['netstack.threadOutFrames'] = fromStack.published;
  c['netstack.threadOutNotifies'] = fromStack.notified;
  // What the device dropped before the ring (its staged output full): the data plane counted it in-thread.
  c['netstack.stageDrops'] = dev.stats().txDropped;
  const text = Buffer.from(JSON.stringify(c));
  const n = Math.min(text.length, countersBytes.length);
  countersBytes.set(text.subarray(0, n));
  Atomics.store(countersHdr, 1, n);
  Atomics.add(countersHdr, 0, 1);
  Atomics.notify(countersHdr, 0);
}

port.on('message', (m: ToWorker) => {
  switch (m.t) {
    case 'map':
      us.setMap(m.map as unknown as NetworkMap, m.allowed, m.promiscuous);
      break;
    case 'counters':
      writeCounters();
      break;
    case 'close':
      closed = true;
      input.stop();
      us.close();
      dev.close();
      port.postMessage({ t: 'closed' });
      port.close();
      break;
  }
});

us.start().then(() => {
  port.postMessage({ t: 'started', listening: { ...us.listening } });
  if (!closed) input.start();
}, (e: Error) => {
  port.postMessage({ t: 'error', message: e.message });
});
