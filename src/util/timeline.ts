// Start-up timeline for measuring where the time from `meshd up` to the first packet goes: with
// MESHD_TIMELINE=1 in the environment (the agent `up` spawns inherits it), each step writes one
// line `timeline EPOCH_MS PID +MS_SINCE_PROCESS_START STEP` to stderr (the agent's goes to its
// log). Off by default; no cost but one boolean test when off. scripts/bench-nat.mjs --timeline
// collects the lines of both processes and tailscaled's log (TS_DEBUG_LOG_TIME) for comparison.

const on = process.env.MESHD_TIMELINE === '1';

/** True when MESHD_TIMELINE=1: callers may skip building a detail string. */
export const timelineOn = on;

/** Marks a start-up step (once per name is the caller's business). */
export function timeline(step: string): void {
  if (!on) return;
  const since = performance.now();
  process.stderr.write(`timeline ${(performance.timeOrigin + since).toFixed(1)} ${process.pid} +${since.toFixed(1)} ${step}\n`);
}
