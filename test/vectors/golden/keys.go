package main

import (
	"go4.org/mem"
	"golang.org/x/crypto/curve25519"
	"tailscale.com/disco"
	"tailscale.com/types/key"
)

func pubOf(priv [32]byte) (pub [32]byte) {
	curve25519.ScalarBaseMult(&pub, &priv)
	return
}

func copyNode(p *disco.Ping, nk [32]byte) { p.NodeKey = key.NodePublicFromRaw32(mem.B(nk[:])) }
