// Entry point for the coverage-guided engine (@jazzer.js/core), used by scripts/fuzz.mjs when that
// engine runs on the machine: MESHD_FUZZ_TARGET names the target in ./targets.ts.
import { TARGETS, runOne } from './targets.ts';

const target = TARGETS.find((t) => t.name === process.env.MESHD_FUZZ_TARGET);
if (!target) throw new Error(`MESHD_FUZZ_TARGET must be one of ${TARGETS.map((t) => t.name).join(', ')}`);

/** Called by jazzer with each input; a thrown error is a crash. */
export function fuzz(data: Buffer): void {
  const e = runOne(target!, new Uint8Array(data));
  if (e) throw e;
}
