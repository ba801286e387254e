// Transport-data AEAD in batches (TransportAead): the native backend, which seals or opens a whole
// batch in one call in native/src/aead.c (OpenSSL's ChaCha20 and Poly1305 called directly where
// Node's OpenSSL exports them, else EVP contexts kept per key), and the
// per-packet adapter that runs the node:crypto and @noble backends behind the same interface (they
// stay as the references the native path is checked against).
import { native } from '../native/index.ts';
import { AeadBatch, type ChaChaPoly, type TransportAead, type TransportKey } from './types.ts';

export { AeadBatch } from './types.ts';

/** Runs a per-packet ChaChaPoly over a batch, job by job. */
export class PerPacketTransport implements TransportAead {
  readonly name: string;
  private readonly aead: ChaChaPoly;

  constructor(name: string, aead: ChaChaPoly) {
    this.name = name;
    this.aead = aead;
  }

  prepare(key: Uint8Array, _encrypt: boolean): TransportKey {
    const raw = key.slice();
    return { raw, id: 0, aead: this.aead.prepareKey(raw) };
  }

  release(key: TransportKey): void {
    key.raw.fill(0);
  }

  seal(buf: Uint8Array, b: AeadBatch, start: number, end: number): void {
    for (let i = start; i < end; i++) this.aead.sealInPlace(b.keys[i]!.aead!, b.ctrs[i]!, buf, b.offs[i]!, b.lens[i]!);
  }

  open(buf: Uint8Array, b: AeadBatch, start: number, end: number): number {
    let n = 0;
    for (let i = start; i < end; i++) {
      const ok = this.aead.openInPlace(b.keys[i]!.aead!, b.ctrs[i]!, buf, b.offs[i]!, b.lens[i]!);
      b.ok[i] = ok ? 1 : 0;
      if (ok) n++;
    }
    return n;
  }
}

/** The addon's AEAD exports (native/README.md, "AEAD"). */
export interface NativeAeadAddon {
  /** null when the native AEAD is usable, else why not (e.g. an OpenSSL version mismatch). */
  readonly aeadError: string | null;
  /** OpenSSL_version() of the process. */
  readonly aeadOpenssl: string;
  aeadKey(key: Uint8Array, encrypt: boolean): number;
  aeadFree(id: number): void;
  aeadSeal(buf: Uint8Array, ids: Int32Array, ctrs: Float64Array, offs: Int32Array, lens: Int32Array, start: number, end: number): number;
  aeadOpen(buf: Uint8Array, ids: Int32Array, ctrs: Float64Array, offs: Int32Array, lens: Int32Array, ok: Uint8Array, start: number, end: number): number;
  aeadParallel(minBatch: number): number;
  aeadStats(): { liveKeys: number; parallelBatches: number; serialBatches: number; workerJobs: number };
  /** Whether the direct path (OpenSSL's ChaCha20 and Poly1305 without EVP) is in use; `on` selects it (where found) or EVP. Returns the previous state. */
  aeadDirect(on?: boolean): boolean;
}

/**
 * Packets per call from which the native backend splits a batch with its worker thread (fork-join
 * on both cores); below it one thread does all. 0 = never. Measured with scripts/bench-wg-core.mjs,
 * see src/wg/README.md. MESHD_AEAD_PARALLEL_MIN overrides it.
 */
export const DEFAULT_PARALLEL_MIN = 0;

interface NativeKey extends TransportKey {
  freed: boolean;
}

/** ChaCha20-Poly1305 batches in one native call each (OpenSSL from Node's own process, without EVP where it can). */
export class NativeTransport implements TransportAead {
  readonly name = 'native';

  private readonly addon: NativeAeadAddon;

  constructor(addon: NativeAeadAddon) {
    this.addon = addon;
  }

  prepare(key: Uint8Array, encrypt: boolean): TransportKey {
    // The key lives only in the OpenSSL contexts: no copy stays on the JS heap.
    const k: NativeKey = { raw: new Uint8Array(0), id: this.addon.aeadKey(key, encrypt), aead: undefined, freed: false };
    return k;
  }

  release(key: TransportKey): void {
    const k = key as NativeKey;
    if (k.freed) return;
    k.freed = true;
    this.addon.aeadFree(k.id);
  }

  seal(buf: Uint8Array, b: AeadBatch, start: number, end: number): void {
    if (end > start) this.addon.aeadSeal(buf, b.ids, b.ctrs, b.offs, b.lens, start, end);
  }

  open(buf: Uint8Array, b: AeadBatch, start: number, end: number): number {
    return end > start ? this.addon.aeadOpen(buf, b.ids, b.ctrs, b.offs, b.lens, b.ok, start, end) : 0;
  }

  /** Sets the batch size from which the worker thread takes half (0 = never); returns the old one. */
  setParallelMin(n: number): number {
    return this.addon.aeadParallel(n);
  }

  /** Selects the direct path (true, where Node's OpenSSL exports it) or EVP (false); returns the previous state. Process-wide. */
  setDirect(on: boolean): boolean {
    return this.addon.aeadDirect(on);
  }

  /** Whether seal and open run without EVP (ChaCha20_ctr32 and Poly1305 found in Node's OpenSSL, MESHD_AEAD_EVP unset). */
  get direct(): boolean {
    return this.addon.aeadDirect();
  }

  /** Live native keys, how many calls ran split or on one thread, and jobs the worker did. */
  stats(): { liveKeys: number; parallelBatches: number; serialBatches: number; workerJobs: number } {
    return this.addon.aeadStats();
  }
}

/** The outcome of loading the native backend: the backend, or why it is not there. */
export type NativeLoad = { transport: NativeTransport; error: null } | { transport: null; error: string };

/**
 * Loads the native backend: null with the reason when the addon is not built, its OpenSSL does not
 * match Node's, it lacks the AEAD exports, or MESHD_NATIVE_AEAD=0. A self-test (one seal and open
 * checked against a known answer) guards against a miswired OpenSSL.
 */
export function loadNativeTransport(
  load: () => unknown = native, env: NodeJS.ProcessEnv = process.env,
): NativeLoad {
  if (env['MESHD_NATIVE_AEAD'] === '0') return { transport: null, error: 'turned off by MESHD_NATIVE_AEAD=0' };
  let addon: NativeAeadAddon;
  try {
    addon = load() as NativeAeadAddon;
  } catch (e) {
    return { transport: null, error: (e as Error).message };
  }
  if (typeof addon.aeadError === 'string') return { transport: null, error: addon.aeadError };
  if (typeof addon.aeadSeal !== 'function' || typeof addon.aeadKey !== 'function') {
    return { transport: null, error: 'the native addon has no AEAD: run npm run build:native' };
  }
  try {
    const t = new NativeTransport(addon);
    if (!selfTest(t)) return { transport: null, error: 'the native AEAD failed its known-answer test' };
    const min = Number(env['MESHD_AEAD_PARALLEL_MIN'] ?? DEFAULT_PARALLEL_MIN);
    t.setParallelMin(Number.isInteger(min) && min >= 0 ? min : DEFAULT_PARALLEL_MIN);
    return { transport: t, error: null };
  } catch (e) {
    return { transport: null, error: (e as Error).message };
  }
}

// Key 0..31, counter 0x0102030405, 15 bytes 0..14: ChaCha20-Poly1305 output computed with node:crypto.
const KAT = '318208d3d7ceb5cbdb140622c00fa9' + '771103fc85088c40812aecec1a6fa734';

function selfTest(t: NativeTransport): boolean {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i);
  const b = new AeadBatch(1);
  const buf = new Uint8Array(31);
  for (let i = 0; i < 15; i++) buf[i] = i;
  const s = t.prepare(key, true), o = t.prepare(key, false);
  try {
    b.set(0, s, 0x0102030405, 0, 15);
    t.seal(buf, b, 0, 1);
    if (Buffer.from(buf).toString('hex') !== KAT) return false;
    b.set(0, o, 0x0102030405, 0, 31);
    if (t.open(buf, b, 0, 1) !== 1) return false;
    return buf.subarray(0, 15).every((v, i) => v === i);
  } finally {
    t.release(s);
    t.release(o);
  }
}
