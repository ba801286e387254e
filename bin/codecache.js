// Loads a CommonJS bundle (dist/bundle/cli/agent.cjs, scripts/bundle.mjs) with a V8 code cache, so
// its functions are not compiled again at each start. Node 20 has no compile cache for ES modules
// (module.enableCompileCache came in Node 22), but vm.Script takes V8's cachedData. The cache file,
// FILE.v8cache, is the build id of the bundle's first line (`// meshd-build ID`) and V8's data; it
// is made once at build time (`node bin/codecache.js --write FILE`, after loading the modules the
// agent uses) and only read afterwards. A missing cache, another build's, or one V8 rejects (another
// Node or V8 flags) costs nothing but the compile time: the script compiles as usual.
//   MESHD_CODE_CACHE=0 ignores the cache.
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { dirname } from 'node:path';
import vm from 'node:vm';

const ID = /^\/\/ meshd-build ([0-9a-f]{12})\n/;
/** Bytes before V8's data in a cache file: the build id, in ASCII. */
const HEADER = 12;

/** How the last loadCached went (for the start-up timeline and tests). */
export const cacheStats = { used: false, rejected: false, bytes: 0 };

/** The bundle compiled, with `file`'s cache when it matches; returns the script and its module.exports. */
function compile(file, useCache) {
  const src = readFileSync(file, 'utf8');
  const id = ID.exec(src)?.[1];
  let cachedData;
  if (useCache && id && process.env.MESHD_CODE_CACHE !== '0') {
    try {
      const buf = readFileSync(`${file}.v8cache`);
      if (buf.subarray(0, HEADER).toString('latin1') === id) cachedData = buf.subarray(HEADER);
    } catch { /* no cache: compile */ }
  }
  // The wrapper Node gives a CommonJS module, so the bundle sees require, module and __filename.
  const script = new vm.Script(`(function (exports, require, module, __filename, __dirname) {${src}\n})`, {
    filename: file,
    ...(cachedData ? { cachedData } : {}),
    importModuleDynamically: vm.constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  cacheStats.used = cachedData !== undefined && !script.cachedDataRejected;
  cacheStats.rejected = cachedData !== undefined && script.cachedDataRejected === true;
  cacheStats.bytes = cachedData?.length ?? 0;
  const module = { exports: {} };
  script.runInThisContext().call(module.exports, module.exports, createRequire(file), module, file, dirname(file));
  return { script, id, exports: module.exports };
}

/** module.exports of the CommonJS bundle `file`, compiled with its code cache when one fits. */
export function loadCached(file) {
  return compile(file, true).exports;
}

/** Makes `file`'s cache: compiles it, runs its warm() export, writes FILE.v8cache (atomically). */
async function writeCache(file) {
  const { script, id, exports } = compile(file, false);
  if (!id) throw new Error(`${file} has no meshd-build line`);
  if (typeof exports.warm === 'function') await exports.warm();
  const data = script.createCachedData();
  const tmp = `${file}.v8cache.${process.pid}.tmp`;
  writeFileSync(tmp, Buffer.concat([Buffer.from(id, 'latin1'), data]), { mode: 0o644 });
  renameSync(tmp, `${file}.v8cache`);
  console.log(`code cache: ${data.length} bytes for ${file}`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href && process.argv[2] === '--write' && process.argv[3]) {
  try {
    await writeCache(process.argv[3]);
  } catch (e) {
    console.error(`code cache: ${e.message}`);
    process.exitCode = 1;
  }
}
