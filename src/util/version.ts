// The package version, read once from package.json.
import { readFileSync } from 'node:fs';
import { packageRoot } from './root.ts';

/** meshd's version string, e.g. "0.1.0". */
export const VERSION: string = (JSON.parse(readFileSync(`${packageRoot()}/package.json`, 'utf8')) as { version: string }).version;
