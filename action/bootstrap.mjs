// First run of the action from a plain checkout: the runner has only the repository, so install
// the npm packages (the install script compiles the addon from source, nothing prebuilt is
// downloaded) and build once. Uses Node's built-ins only: @actions/core is not there yet.
import { existsSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (the action's directory). */
export const ROOT = fileURLToPath(new URL('..', import.meta.url));

/** True when packages, the addon and the compiled CLI are all there. */
export function isBuilt() {
  return existsSync(join(ROOT, 'node_modules', '@actions', 'core', 'package.json')) &&
    existsSync(join(ROOT, 'native', 'build', 'meshd_native.node')) &&
    existsSync(join(ROOT, 'dist', 'src', 'cli', 'main.js'));
}

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'], timeout: 600_000 });
  if (r.status !== 0) {
    console.log(`::error::meshd action: ${cmd} ${args.join(' ')} failed (${r.error?.message ?? `exit status ${r.status}`}): the runner needs Node >= 20.19 with its headers and a C compiler`);
    process.exit(1);
  }
}

/** Installs and builds when needed (a minute on a fresh runner; nothing to do afterwards). */
export function ensureBuilt() {
  if (isBuilt()) return;
  console.log('::group::meshd: npm ci and build (first run from this checkout)');
  run('npm', ['ci', '--no-audit', '--no-fund']);
  run('npm', ['run', 'build']);
  console.log('::endgroup::');
}
