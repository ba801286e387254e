// Injected, prefixed logging. Per-packet tracing is off by default (NODE_DEBUG=meshd).
import { debuglog } from 'node:util';

/** A log function for one component. */
export type Logf = (msg: string) => void;

/** Debug tracing for hot paths: enabled with NODE_DEBUG=meshd. */
export const trace = debuglog('meshd');

/** A logger writing `prefix: msg` lines with a timestamp to stderr. */
export function stderrLogger(prefix: string): Logf {
  return (msg) => process.stderr.write(`${new Date().toISOString()} ${prefix}: ${msg}\n`);
}

/** A logger that drops everything. */
export const nullLogger: Logf = () => {};
