// Prints golden bytes from the real tailscale v1.102.3 packages (net/stun, disco, derp, nacl/box)
// for the TypeScript tests. Run: cd test/vectors/golden && GOFLAGS=-mod=mod go run .

package main

import (
	"encoding/json"
	"fmt"
	"net/netip"

	"golang.org/x/crypto/nacl/box"
	"tailscale.com/derp"
	"tailscale.com/disco"
	"tailscale.com/net/stun"
)

func main() {
	var tx stun.TxID
	for i := range tx {
		tx[i] = byte(i + 1)
	}
	fmt.Printf("stun_request %x\n", stun.Request(tx))
	fmt.Printf("stun_response_v4 %x\n", stun.Response(tx, netip.MustParseAddrPort("127.0.0.1:41641")))
	fmt.Printf("stun_response_v6 %x\n", stun.Response(tx, netip.MustParseAddrPort("[2001:db8::1]:3478")))
	// disco: fixed keys and nonce
	var privA, privB [32]byte
	for i := range privA {
		privA[i] = byte(i + 1)
		privB[i] = byte(100 + i)
	}
	var pubA, pubB [32]byte
	pa, pb := pubOf(privA), pubOf(privB)
	pubA, pubB = pa, pb
	var shared [32]byte
	box.Precompute(&shared, &pubB, &privA)
	var nonce [24]byte
	for i := range nonce {
		nonce[i] = byte(200 + i)
	}
	var nk [32]byte
	for i := range nk {
		nk[i] = byte(50 + i)
	}
	ping := &disco.Ping{TxID: [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}}
	copyNode(ping, nk)
	inner := ping.AppendMarshal(nil)
	pkt := []byte(disco.Magic)
	pkt = append(pkt, pubA[:]...)
	pkt = append(pkt, nonce[:]...)
	pkt = box.SealAfterPrecomputation(pkt, inner, &nonce, &shared)
	fmt.Printf("disco_privA %x\ndisco_pubA %x\ndisco_privB %x\ndisco_pubB %x\n", privA, pubA, privB, pubB)
	fmt.Printf("disco_ping_packet %x\n", pkt)
	cmm := &disco.CallMeMaybe{MyNumber: []netip.AddrPort{netip.MustParseAddrPort("192.168.1.2:41641"), netip.MustParseAddrPort("[2001:db8::2]:41641")}}
	fmt.Printf("disco_cmm_inner %x\n", cmm.AppendMarshal(nil))
	ci, _ := json.Marshal(derp.ClientInfo{Version: derp.ProtocolVersion, CanAckPings: true})
	fmt.Printf("derp_clientinfo_json %s\n", ci)
	ci2, _ := json.Marshal(derp.ClientInfo{Version: derp.ProtocolVersion})
	fmt.Printf("derp_clientinfo_json_noack %s\n", ci2)
}
