// Locates the package root (the directory holding meshd's package.json) from any compiled module.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

let cached: string | undefined;

/** Absolute path of the meshd package root. */
export function packageRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 10; i++) {
    const p = join(dir, 'package.json');
    if (existsSync(p) && (JSON.parse(readFileSync(p, 'utf8')) as { name?: string }).name === 'meshd') return (cached = dir);
    dir = dirname(dir);
  }
  throw new Error('meshd: cannot find the package root (package.json named meshd)');
}
