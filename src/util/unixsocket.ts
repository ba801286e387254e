// Unix-socket servers for local control (the agent's local API, the wg configuration socket):
// refuse to take over a socket another live process answers on, replace a stale file, and create
// the socket with its final mode.
//
// Modes: only directories meshd creates get `dirMode`; an existing directory is never chmodded
// (the socket may live in a shared directory like /tmp, where its own mode protects it). The
// socket is bound under a restrictive umask, as wireguard-go does, so it never exists with a
// looser mode than `mode`, not even between bind and chmod.
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
 * Creates `dir` and its missing parents with `mode` (exactly, whatever the umask); returns the
 * directories it created, outermost first. Existing directories are left as they are.
 */
export function mkdirOwned(dir: string, mode: number): string[] {
  const first = mkdirSync(dir, { recursive: true, mode });
  if (first === undefined) return [];
  const created: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    created.unshift(d);
    if (d === first || dirname(d) === d) break;
  }
  for (const d of created) chmodSync(d, mode);
  return created;
}

/**
 * Makes `server` listen on `path`: creates a missing directory with `dirMode`, throws `inUse` when
 * a live process answers there, removes a stale file, and binds the socket with mode `mode`.
 */
export async function listenUnix(server: Server, path: string, opts: { dirMode: number; mode: number; inUse: string }): Promise<void> {
  mkdirOwned(dirname(path), opts.dirMode);
  if (await socketAnswers(path)) throw new Error(opts.inUse);
  removeSocket(path);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // bind() happens inside listen(), synchronously: the umask covers exactly the socket's creation.
    const old = process.umask(0o777 & ~opts.mode);
    try {
      server.listen(path, () => { server.off('error', reject); resolve(); });
    } finally {
      process.umask(old);
    }
  });
  chmodSync(path, opts.mode);
}

/** Removes a socket file; absent is fine. */
export function removeSocket(path: string): void {
  try { unlinkSync(path); } catch { /* not there */ }
}
