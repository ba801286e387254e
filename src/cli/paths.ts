// Default paths of the agent: root gets the system ones, an ordinary user (userspace networking)
// gets per-user ones under XDG base directories.
import { homedir } from 'node:os';
import { join } from 'node:path';

/** The root defaults (README). */
export const ROOT_STATE_DIR = '/var/lib/meshd';
export const ROOT_SOCKET = '/run/meshd/meshd.sock';

const isRoot = (): boolean => process.getuid?.() === 0;

/** State dir: /var/lib/meshd for root, else $XDG_STATE_HOME/meshd or ~/.local/state/meshd. */
export function defaultStateDir(env: NodeJS.ProcessEnv = process.env, root = isRoot()): string {
  if (root) return ROOT_STATE_DIR;
  const xdg = env.XDG_STATE_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(env.HOME || homedir(), '.local', 'state'), 'meshd');
}

/** Socket: /run/meshd/meshd.sock for root, else $XDG_RUNTIME_DIR/meshd/meshd.sock or STATE_DIR/meshd.sock. */
export function defaultSocket(env: NodeJS.ProcessEnv = process.env, root = isRoot()): string {
  if (root) return ROOT_SOCKET;
  const rt = env.XDG_RUNTIME_DIR;
  if (rt && rt.startsWith('/')) return join(rt, 'meshd', 'meshd.sock');
  return join(defaultStateDir(env, root), 'meshd.sock');
}
