// The agent's memory: where it is (Node's view, V8's spaces, glibc malloc's arenas; for the metrics
// and the soak in scripts/chaos.mjs), and handing glibc's free pages back to the kernel.
//
// Why trim: in a 10-minute soak (README "Chaos lab and soak") the bytes malloc had handed out stayed
// flat (~4.7 MB) while the free bytes it kept inside its arenas wandered between 1 and 6 MB with the
// traffic: glibc returns memory to the kernel only from the top of the main heap, and Node's threads
// allocate in several arenas. That free memory was most of the RSS "growth" after warm-up. Go's
// runtime returns unused heap pages in the background (its scavenger); meshd does the same for
// malloc with malloc_trim(0) from the addon, every TRIM_INTERVAL_MS when at least TRIM_MIN_FREE
// bytes are free. MESHD_MALLOC_TRIM=0 turns it off.
import { getHeapSpaceStatistics, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { PerformanceObserver, constants as perfConstants } from 'node:perf_hooks';
import { native, type NativeMallocInfo } from '../native/index.ts';

/** How often the keeper looks at malloc's free bytes. */
export const TRIM_INTERVAL_MS = 10_000;
/** How often the keeper forces a full GC (Go's runtime: forcegcperiod, 2 minutes). */
export const GC_INTERVAL_MS = 120_000;
/** Free bytes inside malloc's arenas below which a trim is not worth a call. */
export const TRIM_MIN_FREE = 1 << 20;

/** Where the process's memory is, in bytes by kind (labels of meshd_process_memory_bytes), and the addon's live AEAD keys. */
export interface MemoryBreakdown {
  bytes: Record<string, number>;
  aeadKeys: number;
}

/**
 * Node's view (RSS, V8 heap, external and ArrayBuffer bytes), V8's spaces (committed bytes of
 * new, old, code and large-object space), glibc's (mallinfo2 through the addon: arena bytes in use
 * and free, chunks mmap'd alone) and the addon's live AEAD keys.
 */
export function memoryBreakdown(): MemoryBreakdown {
  watchMajorGc();
  const u = process.memoryUsage();
  const bytes: Record<string, number> = {
    rss: u.rss, heap_total: u.heapTotal, heap_used: u.heapUsed, external: u.external, array_buffers: u.arrayBuffers,
  };
  if (heapAfterMajorGc > 0) bytes.heap_live = heapAfterMajorGc;
  for (const s of getHeapSpaceStatistics()) {
    if (s.physical_space_size > 0) bytes[`v8_${s.space_name}`] = s.physical_space_size;
  }
  let aeadKeys = 0;
  try {
    const a = native() as ReturnType<typeof native> & { aeadStats?: () => { liveKeys: number } };
    const m = a.mallocInfo?.();
    if (m) Object.assign(bytes, { malloc_arena: m.arena, malloc_mmap: m.mmap, malloc_in_use: m.inUse, malloc_free: m.free });
    aeadKeys = a.aeadStats?.().liveKeys ?? 0;
  } catch { /* no addon (unit tests without a build): Node's view only */ }
  return { bytes, aeadKeys };
}

let gcObserver: PerformanceObserver | undefined;
let heapAfterMajorGc = 0;

/**
 * Keeps the V8 heap's used bytes as seen just after each full (mark-compact) GC: the live data, as
 * opposed to heap_used, which includes garbage not collected yet. A leak on the JS heap shows as
 * heap_live growing; heap_total growing alone is V8 letting the heap grow before its next full GC.
 */
export function watchMajorGc(): void {
  if (gcObserver) return;
  gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (((e as { detail?: unknown }).detail as { kind?: number } | undefined)?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) {
        heapAfterMajorGc = getHeapStatistics().used_heap_size;
      }
    }
  });
  gcObserver.observe({ entryTypes: ['gc'] });
}

/** What the keeper did: full GCs and malloc trims, and the time each took (seconds, summed). */
export interface KeeperStats {
  gcs: number;
  gcSeconds: number;
  trims: number;
  trimSeconds: number;
}

/** The allocator and collector the keeper drives (the addon's malloc calls, V8's gc). */
export interface KeeperHooks {
  mallocInfo?: (() => NativeMallocInfo | undefined) | undefined;
  mallocTrim?: (() => boolean) | undefined;
  fullGc?: (() => void) | undefined;
}

/**
 * Hands memory the agent no longer uses back to the kernel, from a timer on `now`:
 * - every `gcIntervalMs`, at the first tick the data plane is quiet, a full GC (V8 lets up to several MB of garbage pile up in old space before
 *   its own next full GC; Go's runtime likewise forces a GC at least every 2 minutes, forcegcperiod),
 *   then malloc_trim for what it freed (ArrayBuffer stores live in malloc);
 * - every `trimIntervalMs` a malloc_trim when at least `minFree` bytes are free in malloc's arenas.
 * The hooks are injected, so the schedule is tested without V8 or glibc.
 */
export class MemoryKeeper {
  readonly stats: KeeperStats = { gcs: 0, gcSeconds: 0, trims: 0, trimSeconds: 0 };
  private lastTrim = -Infinity;
  private lastGc: number | undefined;
  private lastPackets = Number.NaN;
  private readonly hooks: KeeperHooks;
  private readonly trimIntervalMs: number;
  private readonly gcIntervalMs: number;
  private readonly minFree: number;

  constructor(hooks: KeeperHooks, opts: { trimIntervalMs?: number; gcIntervalMs?: number; minFree?: number } = {}) {
    this.hooks = hooks;
    this.trimIntervalMs = opts.trimIntervalMs ?? TRIM_INTERVAL_MS;
    this.gcIntervalMs = opts.gcIntervalMs ?? GC_INTERVAL_MS;
    this.minFree = opts.minFree ?? TRIM_MIN_FREE;
  }

  /**
   * Runs what is due at `nowMs`; returns what it did. `packets` is a count of data packets the agent
   * moved so far: a due full GC waits for a tick at which it did not change since the tick before (a
   * forced full GC stops the event loop for tens of ms on a loaded 2-core machine, measured in the
   * soak, so it runs only when the data plane is quiet; a busy agent leaves it to V8's own schedule).
   * The first full GC is due one interval after the first tick.
   */
  tick(nowMs: number, packets = 0): { gc: boolean; trim: boolean } {
    let gc = false;
    const { fullGc, mallocInfo, mallocTrim } = this.hooks;
    if (this.lastGc === undefined) this.lastGc = nowMs;
    const quiet = packets === this.lastPackets;
    this.lastPackets = packets;
    if (fullGc && quiet && nowMs - this.lastGc >= this.gcIntervalMs) {
      this.lastGc = nowMs;
      const t0 = process.hrtime.bigint();
      fullGc();
      this.stats.gcSeconds += Number(process.hrtime.bigint() - t0) / 1e9;
      this.stats.gcs++;
      gc = true;
    }
    if (!mallocTrim || !mallocInfo || (!gc && nowMs - this.lastTrim < this.trimIntervalMs)) return { gc, trim: false };
    this.lastTrim = nowMs;
    const m = mallocInfo();
    if (!m || m.free < this.minFree) return { gc, trim: false };
    const t0 = process.hrtime.bigint();
    mallocTrim();
    this.stats.trimSeconds += Number(process.hrtime.bigint() - t0) / 1e9;
    this.stats.trims++;
    return { gc, trim: true };
  }
}

const OFF = /^(0|false|off|no)$/i;

/**
 * The keeper for this process: malloc trims through the addon (unless MESHD_MALLOC_TRIM=0 or the
 * addon lacks them) and periodic full GCs (unless MESHD_FORCE_GC=0; V8's gc() is reached by
 * turning on --expose-gc at run time and taking the function from a fresh context, as the flag
 * cannot be passed in NODE_OPTIONS). Undefined when both are off.
 */
export function processKeeper(env: NodeJS.ProcessEnv = process.env): MemoryKeeper | undefined {
  const hooks: KeeperHooks = {};
  if (!OFF.test(env.MESHD_MALLOC_TRIM ?? '')) {
    try {
      const a = native();
      if (a.mallocInfo && a.mallocTrim) {
        hooks.mallocInfo = () => a.mallocInfo!();
        hooks.mallocTrim = () => a.mallocTrim!();
      }
    } catch { /* no addon: no trims */ }
  }
  if (!OFF.test(env.MESHD_FORCE_GC ?? '')) {
    try {
      setFlagsFromString('--expose-gc');
      const gc = runInNewContext('gc') as unknown;
      if (typeof gc === 'function') hooks.fullGc = () => (gc as () => void)();
    } catch { /* V8 refused the flag: V8 schedules its own full GCs */ }
  }
  return hooks.fullGc || hooks.mallocTrim ? new MemoryKeeper(hooks) : undefined;
}
