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
  /** TUN opened with IFF_VNET_HDR: reads carry a virtio-net header; GSO super-packets are split into slots. */
  vnet?: boolean;
  /** UDP socket with UDP_GRO on: coalesced datagrams are split into slots. */
  gro?: boolean;
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
  /** TUN (vnet): GSO super-packets read. */
  gsoReads: number;
  /** TUN (vnet): packets split out of super-packets. */
  gsoSegments: number;
  /** TUN (vnet): single packets whose partial (NEEDS_CSUM) checksum was completed. */
  csumCompleted: number;
  /** TUN (vnet): reads dropped for a malformed virtio header or super-packet. */
  badGso: number;
  /** UDP (GRO): received messages that held several datagrams. */
  groMessages: number;
  /** UDP (GRO): datagrams split out of them. */
  groSegments: number;
  lastErrno: number;
  active: boolean;
}

/** glibc's allocator in bytes (mallinfo2): arenas (brk + mmap'd), chunks mmap'd alone, in use, free in arenas, releasable top. */
export interface NativeMallocInfo {
  arena: number;
  mmap: number;
  inUse: number;
  free: number;
  topPad: number;
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
  /** Turn UDP_GRO on (kept only when it reads back as on). */
  gro?: boolean;
}

/** The addon's exports, exactly as native/README.md documents them. */
export interface NativeAddon {
  readonly abiVersion: number;
  readonly endpointRawLen: number;
  readonly maxBatch: number;
  readonly tunFlags: { readonly IFF_MULTI_QUEUE: number; readonly IFF_VNET_HDR: number; readonly IFF_TUN_EXCL: number };
  readonly tunOffloadFlags: { readonly CSUM: number; readonly TSO4: number; readonly TSO6: number; readonly USO4: number; readonly USO6: number };
  tunOpen(name: string, flags: number): { fd: number; name: string };
  setMtu(name: string, mtu: number): void;
  setUp(name: string, up: boolean): void;
  /** ctl: TUN write state (TUN_CTL_* indexes); without it every packet is one plain write(). */
  tunWrite(fd: number, buf: Uint8Array, offsets: Int32Array, lens: Int32Array, count: number, ctl?: Float64Array): number;
  tunSetOffload(fd: number, flags: number): void;
  /** 0 when the kernel takes a coalesced (GSO) write, else the errno (EINVAL: do not coalesce). */
  tunProbeGro(fd: number, udp: boolean): number;
  /** Test entry: splits frame (virtio header + packet) into slots of out; -1 when malformed. */
  offloadSplit(frame: Uint8Array, out: Uint8Array, slotSize: number, headroom: number, lens: Int32Array): number;
  /** Test entry: coalesces packets as tunWrite would (flags 1 TCP, 2 UDP); frames are virtio header + packet. */
  offloadCoalesce(buf: Uint8Array, offsets: Int32Array, lens: Int32Array, count: number, flags: number): { frames: Uint8Array[]; badCsum: number };
  udpOpen(opts: NativeUdpOptions): { fd: number; port: number; rcvbuf: number; sndbuf: number; gso: boolean; gro: boolean };
  /** ctl: UDP send state (UDP_CTL_* indexes): GSO and backpressure need it. */
  udpSend(fd: number, buf: Uint8Array, offsets: Int32Array, lens: Int32Array, addrs: Uint8Array, count: number, ctl?: Float64Array): number;
  pollStart(fd: number, kind: 'tun' | 'udp', rx: NativeRx, callback: (count: number) => void): PollHandle;
  pollStop(handle: PollHandle): void;
  pollRef(handle: PollHandle, ref: boolean): void;
  pollStats(handle: PollHandle): PollStats;
  /** A non-blocking, unconnected TCP socket (dual-stack when the host has IPv6) with SO_MARK when mark != 0. */
  tcpSocket(mark: number): { fd: number; family: 4 | 6 };
  close(fd: number): void;
  /** A new close-on-exec fd for the same open file (F_DUPFD_CLOEXEC); absent in addons built before it. */
  dupFd?(fd: number): number;
  /** sum + the Internet checksum's one's-complement sum of buf[off, off+len), folded to 16 bits (src/netstack/ip.ts sum16). */
  sum16?(buf: Uint8Array, off: number, len: number, sum: number): number;
  /** Copies src[srcOffs[i], +lens[i]) to dst at dstOffs[i] for i < n, every span checked first (no ABI bump: callers check that it exists). */
  copyBatch?(src: Uint8Array, srcOffs: Int32Array, dst: Uint8Array, dstOffs: Int32Array, lens: Int32Array, n: number): number;
  /** glibc mallinfo2() in bytes, all arenas (no ABI bump: callers check that it exists). */
  mallocInfo?(): NativeMallocInfo;
  /** glibc malloc_trim(0): free pages in every arena back to the kernel; true when some were. */
  mallocTrim?(): boolean;
}

/** Indexes of the Float64Array tunWrite keeps its state in (native/README.md). */
export const TUN_CTL = {
  FLAGS: 0, WRITES: 1, FRAMES: 2, MERGED: 3, WAITS: 4, WAIT_DROPS: 5, GRO_FALLBACKS: 6, BAD_CSUM: 7, LEN: 8,
  F_VNET: 1, F_TCP_GRO: 2, F_UDP_GRO: 4,
} as const;

/** Indexes of the Float64Array udpSend keeps its state in (native/README.md). */
export const UDP_CTL = {
  FLAGS: 0, CALLS: 1, GSO_MSGS: 2, GSO_DGRAMS: 3, WAITS: 4, WAIT_DROPS: 5, GSO_FALLBACKS: 6, GSO_ERRNO: 7, LEN: 8,
  F_GSO: 1,
  /** Set by the caller: no GSO runs for now (the path loses packets); F_GSO, the capability, stays. */
  F_GSO_PAUSED: 2,
} as const;

/** Runtime kill switches for offloads, from the environment (README: "Offloads"). */
export interface OffloadSwitches {
  /** MESHD_DISABLE_TUN_OFFLOAD: no IFF_VNET_HDR at all (no TSO/USO reads, no coalesced writes). */
  tunOffload: boolean;
  /** MESHD_DISABLE_TUN_GRO: keep TSO reads but write every packet on its own. */
  tunGro: boolean;
  /** MESHD_DISABLE_UDP_GSO: no UDP_SEGMENT sends. */
  udpGso: boolean;
  /** MESHD_DISABLE_UDP_GRO: no UDP_GRO on the socket. */
  udpGro: boolean;
}

function envOn(v: string | undefined): boolean {
  return v !== undefined && v !== '' && v !== '0' && v.toLowerCase() !== 'false';
}

/** Which offloads the environment allows (true = allowed). */
export function offloadSwitches(env: NodeJS.ProcessEnv = process.env): OffloadSwitches {
  return {
    tunOffload: !envOn(env.MESHD_DISABLE_TUN_OFFLOAD),
    tunGro: !envOn(env.MESHD_DISABLE_TUN_GRO),
    udpGso: !envOn(env.MESHD_DISABLE_UDP_GSO),
    udpGro: !envOn(env.MESHD_DISABLE_UDP_GRO),
  };
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
  const msg = code === 'EFAULT'
    ? `${what}: reading stopped: a receive buffer was detached (transferred) while the reader held it; keep reader buffers in their thread (EFAULT)`
    : `${what}: reading stopped after ${code}: reopen the device or socket`;
  const err = new Error(msg) as Error & { code: string; errno: number };
  err.code = code;
  err.errno = negErrno;
  return err;
}

/** ABI version this TypeScript expects (native/README.md). */
export const NATIVE_ABI_VERSION = 3;

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
