#!/usr/bin/env bash
# Builds the real peers the e2e tests use, from the Go module proxy, into ${PEERS_BIN:-$HOME/go/bin}:
#   headscale v0.29.2; tailscaled, tailscale and derper v1.102.3; and, for scripts/bench.mjs, the
#   current wireguard-go (TUN TSO/GRO, UDP GSO/GRO) as wireguard-go-current (it reports v0.0.20250522).
# `go install pkg@version` is not used because it asks the proxy for the module's version list
# (to check deprecation), which the proxy here refuses; building from a scratch module that
# requires the exact version needs only that version. Cached: existing binaries of the right
# version are kept.
set -euo pipefail
HEADSCALE_VERSION=v0.29.2
TAILSCALE_VERSION=v1.102.3
WIREGUARD_GO_VERSION=v0.0.0-20260522210424-ecfc5a8d5446
bin=${PEERS_BIN:-$HOME/go/bin}
mkdir -p "$bin"
command -v go >/dev/null || { echo "install-peers: go is missing: install Go 1.26 (https://go.dev/dl)" >&2; exit 1; }

build() { # module version outname pkg
  local mod=$1 ver=$2 out=$3 pkg=$4
  local stamp="$bin/.$out.version"
  if [ -x "$bin/$out" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$ver" ]; then
    echo "install-peers: $out $ver already built"; return 0
  fi
  local work; work=$(mktemp -d)
  ( cd "$work" && go mod init peers >/dev/null 2>&1 && go get "$mod@$ver" >/dev/null 2>&1 &&
    GOFLAGS=-mod=mod go build -o "$bin/$out.tmp" "$pkg" ) || { rm -rf "$work"; echo "install-peers: building $out $ver failed" >&2; return 1; }
  rm -rf "$work"
  mv "$bin/$out.tmp" "$bin/$out"
  echo "$ver" > "$stamp"
  echo "install-peers: built $out $ver"
}

want=${*:-headscale tailscaled tailscale derper wireguard-go-current}
for w in $want; do
  case $w in
    headscale) build github.com/juanfont/headscale $HEADSCALE_VERSION headscale github.com/juanfont/headscale/cmd/headscale ;;
    tailscaled) build tailscale.com $TAILSCALE_VERSION tailscaled tailscale.com/cmd/tailscaled ;;
    tailscale) build tailscale.com $TAILSCALE_VERSION tailscale tailscale.com/cmd/tailscale ;;
    derper) build tailscale.com $TAILSCALE_VERSION derper tailscale.com/cmd/derper ;;
    wireguard-go-current) build golang.zx2c4.com/wireguard $WIREGUARD_GO_VERSION wireguard-go-current golang.zx2c4.com/wireguard ;;
    *) echo "install-peers: unknown peer $w" >&2; exit 2 ;;
  esac
done
