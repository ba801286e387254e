// Loader and types for the N-API addon in native/ (ABI contract: native/README.md). Only the
// wrappers in src/tun/ and src/net/ should call it; everything else uses Tun and UdpSocket.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getSystemErrorName } from 'node:util';

/** Receive slots as the addon reads them: slot i's data starts at i*slotSize+headroom. */
export interface NativeRx {
  buf: Uint8Array;
  slotSize: number;
  headroom: number;
  slots: number;
  lens: Int32Array;
  addrs?: Uint8Array | undefined;
}

/** Counters of one reader, from pollStats. */
export interface PollStats {
  packets: number;
  batches: number;
  wakeups: number;
  truncated: number;
  errors: number;
  /** UDP: datagrams the kernel dropped because the receive queue was full (SO_RXQ_OVFL). */
  kernelDrops: number;
  lastErrno: number;
  active: boolean;
}

/** Opaque reader handle returned by pollStart. */
export type PollHandle = { readonly __brand: 'meshd.PollHandle' };

/** Options of udpOpen; family 6 is dual-stack (IPV6_V6ONLY=0). */
export interface NativeUdpOptions {
  family: 4 | 6;
  port: number;
  bindAddress?: string;
  mark?: number;
  rcvbuf?: number;
  sndbuf?: number;
}

/** The addon's exports, exactly as native/README.md documents them. */
export interface NativeAddon {
  readonly abiVersion: number;
  readonly endpointRawLen: number;
  readonly maxBatch: number;
  readonly tunFlags: { readonly IFF_MULTI_QUEUE: number; readonly IFF_VNET_HDR: number; readonly IFF_TUN_EXCL: number };
  tunOpen(name: string, flags: number): { fd: number; name: string };
  setMtu(name: string, mtu: number): void;
  setUp(name: string, up: boolean): void;
  tunWrite(fd: number, buf: Uint8Array, offsets: Int32Array, lens: Int32Array, count: number): number;
  udpOpen(opts: NativeUdpOptions): { fd: number; port: number; rcvbuf: number; sndbuf: number };
  udpSend(fd: number, buf: Uint8Array, offsets: Int32Array, lens: Int32Array, addrs: Uint8Array, count: number): number;
  pollStart(fd: number, kind: 'tun' | 'udp', rx: NativeRx, callback: (count: number) => void): PollHandle;
  pollStop(handle: PollHandle): void;
  pollRef(handle: PollHandle, ref: boolean): void;
  pollStats(handle: PollHandle): PollStats;
  /** A non-blocking, unconnected TCP socket (dual-stack when the host has IPv6) with SO_MARK when mark != 0. */
  tcpSocket(mark: number): { fd: number; family: 4 | 6 };
  close(fd: number): void;
}

/** An error thrown by the addon for a failed syscall: code is the errno name, errno its negative. */
export interface NativeError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

/** True when err came from a failed syscall in the addon (or looks like one: code + errno + syscall). */
export function isNativeError(err: unknown): err is NativeError {
  return err instanceof Error && typeof (err as Partial<NativeError>).code === 'string' &&
    typeof (err as Partial<NativeError>).errno === 'number' && typeof (err as Partial<NativeError>).syscall === 'string';
}

/** Turns a negative errno from a native reader's callback into an Error with code and errno. */
export function readerError(what: string, negErrno: number): Error & { code: string; errno: number } {
  let code: string;
  try { code = getSystemErrorName(negErrno); } catch { code = `E${-negErrno}`; }
  const err = new Error(`${what}: reading stopped after ${code}: reopen the device or socket`) as Error & { code: string; errno: number };
  err.code = code;
  err.errno = negErrno;
  return err;
}

/** ABI version this TypeScript expects (native/README.md). */
export const NATIVE_ABI_VERSION = 1;

let cached: NativeAddon | undefined;

function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`native addon: no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

/** Path of the built addon, native/build/meshd_native.node under the package root. */
export function nativeAddonPath(): string {
  return join(packageRoot(), 'native', 'build', 'meshd_native.node');
}

/** Loads the addon once; throws "native addon missing: run npm run build:native" when it is not built. */
export function native(): NativeAddon {
  if (cached) return cached;
  const path = nativeAddonPath();
  if (!existsSync(path)) {
    const err = new Error(`native addon missing: run npm run build:native (looked for ${path})`) as Error & { code: string };
    err.code = 'ERR_MESHD_NATIVE_MISSING';
    throw err;
  }
  const addon = createRequire(import.meta.url)(path) as NativeAddon;
  if (addon.abiVersion !== NATIVE_ABI_VERSION) {
    throw new Error(`native addon at ${path} has ABI ${addon.abiVersion}, this code wants ${NATIVE_ABI_VERSION}: run npm run build:native`);
  }
  cached = addon;
  return addon;
}
