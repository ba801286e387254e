#!/usr/bin/env bash
# Builds the N-API addon from native/src/*.c against the running Node's headers.
# Nothing is downloaded: the headers come with Node (…/include/node).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
srcs=("$here"/src/*.c)
[ -e "${srcs[0]}" ] || { echo "native: no sources yet, nothing to build"; exit 0; }
node_bin=$(command -v node)
prefix=$(cd "$(dirname "$(readlink -f "$node_bin")")/.." && pwd)
inc=""
for d in "$prefix/include/node" /usr/include/node /usr/local/include/node; do
  if [ -f "$d/node_api.h" ]; then inc=$d; break; fi
done
[ -n "$inc" ] || { echo "native: node_api.h not found (looked in $prefix/include/node, /usr/include/node): install Node's headers (Debian: libnode-dev or nodejs-dev)" >&2; exit 1; }
cc=${CC:-cc}
command -v "$cc" >/dev/null || { echo "native: no C compiler ($cc): apt-get install gcc" >&2; exit 1; }
mkdir -p "$here/build"
# aead.c uses Node's own OpenSSL headers; without them the addon is built without the AEAD (the
# crypto falls back to node:crypto and says why).
ossl=(); [ -f "$inc/openssl/evp.h" ] || { ossl=(-DMESHD_NO_OPENSSL); echo "native: $inc/openssl missing: building without the native AEAD" >&2; }
"$cc" -O2 -g -Wall -Wextra -Werror=implicit-function-declaration -fPIC -shared -pthread "${ossl[@]}" \
  -DNAPI_VERSION=8 -I"$inc" -o "$here/build/meshd_native.node.tmp" "${srcs[@]}"
mv "$here/build/meshd_native.node.tmp" "$here/build/meshd_native.node"
echo "native: built native/build/meshd_native.node"
