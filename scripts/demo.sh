#!/usr/bin/env bash
# The README's first command: builds meshd and the real peers it needs, then runs the lab demo:
# headscale and three meshd nodes in network namespaces, status, pings, a transfer, teardown.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: needs root (network namespaces, TUN devices): run with sudo" >&2; exit 1; }
for c in ip ping; do command -v $c >/dev/null || { echo "demo: $c is missing: apt-get install iproute2 iputils-ping" >&2; exit 1; }; done
[ -f native/build/meshd_native.node ] && [ -d dist ] || npm run build
bash scripts/install-peers.sh headscale
node scripts/lab.mjs demo "$@"
