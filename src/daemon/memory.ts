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
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import { PerformanceObserver, constants as perfConstants } from 'node:perf_hooks';
import { native, type NativeMallocInfo } from '../native/index.ts';

/** How often the trimmer looks at malloc's free bytes. */
export const TRIM_INTERVAL_MS = 10_000;
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

/** What the trimmer did: calls, bytes of arena free before them, and the time they took. */
export interface TrimStats {
  trims: number;
  freedBeforeBytes: number;
  seconds: number;
}

/**
 * Calls malloc_trim when malloc holds at least `minFree` free bytes, at most once per `intervalMs`.
 * Takes the allocator's functions and the time, so the decision is tested without glibc.
 */
export class MallocTrimmer {
  readonly stats: TrimStats = { trims: 0, freedBeforeBytes: 0, seconds: 0 };
  private last = -Infinity;
  private readonly info: () => NativeMallocInfo | undefined;
  private readonly trim: () => boolean;
  private readonly intervalMs: number;
  private readonly minFree: number;

  constructor(info: () => NativeMallocInfo | undefined, trim: () => boolean, intervalMs = TRIM_INTERVAL_MS, minFree = TRIM_MIN_FREE) {
    this.info = info;
    this.trim = trim;
    this.intervalMs = intervalMs;
    this.minFree = minFree;
  }

  /** Trims when due and worth it; true when malloc_trim was called. */
  tick(nowMs: number): boolean {
    if (nowMs - this.last < this.intervalMs) return false;
    this.last = nowMs;
    const m = this.info();
    if (!m || m.free < this.minFree) return false;
    const t0 = process.hrtime.bigint();
    this.trim();
    this.stats.seconds += Number(process.hrtime.bigint() - t0) / 1e9;
    this.stats.trims++;
    this.stats.freedBeforeBytes += m.free;
    return true;
  }
}

/** The trimmer for this process, or undefined when the addon has no malloc_trim or MESHD_MALLOC_TRIM=0. */
export function processTrimmer(env: NodeJS.ProcessEnv = process.env): MallocTrimmer | undefined {
  if (/^(0|false|off|no)$/i.test(env.MESHD_MALLOC_TRIM ?? '')) return undefined;
  let a: ReturnType<typeof native>;
  try { a = native(); } catch { return undefined; }
  const { mallocInfo, mallocTrim } = a;
  if (!mallocInfo || !mallocTrim) return undefined;
  return new MallocTrimmer(() => mallocInfo.call(a), () => mallocTrim.call(a));
}
