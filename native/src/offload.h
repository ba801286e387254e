// TUN and UDP offload helpers: Internet checksums, the virtio-net header, splitting a GSO
// super-packet read from a TUN (IFF_VNET_HDR) into MTU-sized packets, and planning which packets
// of a write batch coalesce into one GSO super-packet ("GRO" in userspace). Pure functions over
// bytes: no I/O here. Facts: shared/reference/offloads.md sections 1 and 2 (wireguard-go's
// tun/offload_linux.go is the model for the rules).
#ifndef MESHD_OFFLOAD_H
#define MESHD_OFFLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

// UAPI values missing from older headers (linux/if_tun.h, linux/virtio_net.h; since Linux 6.2).
#ifndef TUN_F_USO4
#define TUN_F_USO4 0x20
#endif
#ifndef TUN_F_USO6
#define TUN_F_USO6 0x40
#endif
#define VNET_HDR_LEN 10
#define VNET_F_NEEDS_CSUM 1
#define VNET_GSO_NONE 0
#define VNET_GSO_TCPV4 1
#define VNET_GSO_TCPV6 4
#define VNET_GSO_UDP_L4 5
#define VNET_GSO_ECN 0x80

// Largest IP packet a TUN read or a coalesced write may hold.
#define GSO_MAX_PACKET 65535
// Most segments one coalesced TUN write carries (also bounds its iovec count). 64 is the kernel's
// UDP_MAX_SEGMENTS before Linux 6.9, so UDP frames are accepted by every kernel with USO.
#define GRO_MAX_SEGS 64

// The virtio_net_hdr fields, host order (TUN uses native byte order unless TUNSETVNETBE/LE).
typedef struct {
  uint8_t flags, gso_type;
  uint16_t hdr_len, gso_size, csum_start, csum_offset;
} vnet_hdr;

void vnet_decode(const uint8_t *p, vnet_hdr *h);
void vnet_encode(const vnet_hdr *h, uint8_t *p);

// One's-complement sum of n bytes at p, added to acc without folding (native word order: fold
// and store with memcpy to get network order). p should start at an even offset of the packet.
uint64_t csum_add(uint64_t acc, const uint8_t *p, size_t n);
// Folds to 16 bits (not complemented).
uint16_t csum_fold(uint64_t acc);
// Pseudo-header sum for L4 protocol proto and L4 length l4len of the packet at ip (v4 or v6).
uint64_t csum_pseudo(const uint8_t *ip, bool v6, uint8_t proto, uint32_t l4len);

// A super-packet being split: built by split_prepare, then split_segment(i) for i < nseg.
typedef struct {
  const uint8_t *pkt;
  size_t len;
  vnet_hdr h;
  bool v6, gso, needs_csum;
  uint8_t proto;
  size_t csum_start, hdr_len, gso_size, nseg;
} split_ctx;

// Result codes of split_prepare besides 0 (ok).
#define SPLIT_EINVAL -1  // malformed header or packet: drop and count

// Parses frame (virtio header + IP packet) of flen bytes. 0 on success; SPLIT_EINVAL otherwise.
int split_prepare(split_ctx *c, const uint8_t *frame, size_t flen);
// Writes segment i as a complete IP packet with valid checksums into out (cap bytes); returns its
// length, or -1 when it does not fit.
ssize_t split_segment(const split_ctx *c, size_t i, uint8_t *out, size_t cap);
// Length segment i will have (to check slot capacity before writing).
size_t split_segment_len(const split_ctx *c, size_t i);

// Coalescing plan for one write batch of up to MAX_PLAN packets.
#define MAX_PLAN 128
#define GRO_TCP 1  // flags for gro_plan_build
#define GRO_UDP 2

typedef struct {
  int32_t head, last;  // packet indexes; chain through gro_plan.next
  uint16_t nseg, iph, l4h, gso;
  uint8_t kind;  // 0 = written as is, 6 = TCP, 17 = UDP
  bool v6, closed, verified, psh;
  uint32_t payload, next_seq;
} gro_item;

typedef struct {
  gro_item items[MAX_PLAN];
  int32_t next[MAX_PLAN];
  int nitems;
  uint32_t bad_csum;  // packets not coalesced because a checksum was wrong
} gro_plan;

// Groups packets (buf + offs[i], lens[i]) for i < count (count <= MAX_PLAN) into items, in order of
// first appearance. Packets are only read.
void gro_plan_build(gro_plan *pl, const uint8_t *buf, const int32_t *offs, const int32_t *lens, uint32_t count,
                    unsigned flags);
// For an item: rewrites the head packet's length fields and checksums in place when it merged
// segments and fills the virtio header (zero for a plain packet). Returns the total packet length.
size_t gro_item_finish(const gro_plan *pl, const gro_item *it, uint8_t *buf, const int32_t *offs, const int32_t *lens,
                       uint8_t hdr[VNET_HDR_LEN]);

#endif
