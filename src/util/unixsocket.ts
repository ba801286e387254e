// Unix-socket servers for local control (the agent's local API, the wg configuration socket):
// refuse to take over a socket another live process answers on, replace a stale file, and set
// the socket's mode.
import { chmodSync, mkdirSync, unlinkSync } from 'node:fs';
import { createConnection, type Server } from 'node:net';
import { dirname } from 'node:path';

/** True when something accepts connections on the socket path. */
export function socketAnswers(path: string, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const c = createConnection(path);
    const t = setTimeout(() => { c.destroy(); resolve(false); }, timeoutMs);
    c.once('connect', () => { clearTimeout(t); c.destroy(); resolve(true); });
    c.once('error', () => { clearTimeout(t); resolve(false); });
  });
}

/**
 * Makes `server` listen on `path`: creates the directory with `dirMode`, throws `inUse` when a live
 * process answers there, removes a stale file, and chmods the socket to `mode`.
 */
export async function listenUnix(server: Server, path: string, opts: { dirMode: number; mode: number; inUse: string; forceDirMode?: boolean }): Promise<void> {
  mkdirSync(dirname(path), { recursive: true, mode: opts.dirMode });
  if (opts.forceDirMode) chmodSync(dirname(path), opts.dirMode);
  if (await socketAnswers(path)) throw new Error(opts.inUse);
  removeSocket(path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => { server.off('error', reject); resolve(); });
  });
  chmodSync(path, opts.mode);
}

/** Removes a socket file; absent is fine. */
export function removeSocket(path: string): void {
  try { unlinkSync(path); } catch { /* not there */ }
}
