// TUN/UDP offload helpers (see offload.h): checksums, virtio-net header, GSO split, GRO planning.
// The rules follow wireguard-go's tun/offload_linux.go as summarised in
// shared/reference/offloads.md section 1; the code is our own.
#include "offload.h"

#include <arpa/inet.h>
#include <string.h>

void vnet_decode(const uint8_t *p, vnet_hdr *h) {
  h->flags = p[0];
  h->gso_type = p[1];
  memcpy(&h->hdr_len, p + 2, 2);
  memcpy(&h->gso_size, p + 4, 2);
  memcpy(&h->csum_start, p + 6, 2);
  memcpy(&h->csum_offset, p + 8, 2);
}

void vnet_encode(const vnet_hdr *h, uint8_t *p) {
  p[0] = h->flags;
  p[1] = h->gso_type;
  memcpy(p + 2, &h->hdr_len, 2);
  memcpy(p + 4, &h->gso_size, 2);
  memcpy(p + 6, &h->csum_start, 2);
  memcpy(p + 8, &h->csum_offset, 2);
}

static inline uint16_t rd16(const uint8_t *p) {
  return (uint16_t)(p[0] << 8 | p[1]);
}
static inline void wr16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline uint32_t rd32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void wr32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}
// Stores a folded native-order sum so that the bytes are in network order.
static inline void wrsum(uint8_t *p, uint16_t s) {
  memcpy(p, &s, 2);
}

// a + b with the carry added back in (one's-complement addition on 64-bit words).
static inline uint64_t add_c(uint64_t a, uint64_t b) {
  uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) r++;  // cannot overflow again: r <= 2^64 - 2 here
  return r;
}

uint64_t csum_add(uint64_t acc, const uint8_t *p, size_t n) {
  // 64-bit native loads added with end-around carry: 8 bytes per add, two independent chains.
  // The one's-complement sum of native-order 64-bit words folds to that of the 16-bit words.
  uint64_t a = acc, b = 0;
  while (n >= 32) {
    uint64_t w[4];
    memcpy(w, p, 32);
    a = add_c(a, w[0]);
    b = add_c(b, w[1]);
    a = add_c(a, w[2]);
    b = add_c(b, w[3]);
    p += 32;
    n -= 32;
  }
  while (n >= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    a = add_c(a, w);
    p += 8;
    n -= 8;
  }
  a = add_c(a, b);
  if (n >= 4) {
    uint32_t w;
    memcpy(&w, p, 4);
    a = add_c(a, w);
    p += 4;
    n -= 4;
  }
  if (n >= 2) {
    uint16_t w;
    memcpy(&w, p, 2);
    a = add_c(a, w);
    p += 2;
    n -= 2;
  }
  if (n) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    a = add_c(a, p[0]);
#else
    a = add_c(a, (uint64_t)p[0] << 8);
#endif
  }
  return a;
}

uint16_t csum_fold(uint64_t acc) {
  acc = (acc & 0xffffffff) + (acc >> 32);
  acc = (acc & 0xffffffff) + (acc >> 32);
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return (uint16_t)acc;
}

uint64_t csum_pseudo(const uint8_t *ip, bool v6, uint8_t proto, uint32_t l4len) {
  uint64_t acc = v6 ? csum_add(0, ip + 8, 32) : csum_add(0, ip + 12, 8);
  return add_c(add_c(acc, htons(proto)), htons((uint16_t)l4len));
}

int split_prepare(split_ctx *c, const uint8_t *frame, size_t flen) {
  memset(c, 0, sizeof *c);
  if (flen <= VNET_HDR_LEN) return SPLIT_EINVAL;
  vnet_decode(frame, &c->h);
  c->pkt = frame + VNET_HDR_LEN;
  c->len = flen - VNET_HDR_LEN;
  c->nseg = 1;
  c->needs_csum = c->h.flags & VNET_F_NEEDS_CSUM;
  const uint8_t *p = c->pkt;
  uint8_t ver = p[0] >> 4;
  c->v6 = ver == 6;
  uint8_t gt = c->h.gso_type & (uint8_t)~VNET_GSO_ECN;
  if (gt == VNET_GSO_NONE) {
    if (c->needs_csum && (size_t)c->h.csum_start + c->h.csum_offset + 2 > c->len) return SPLIT_EINVAL;
    return 0;
  }
  if (ver == 4) {
    if (gt != VNET_GSO_TCPV4 && gt != VNET_GSO_UDP_L4) return SPLIT_EINVAL;
    if (c->len < 20 || c->h.csum_start != (size_t)(p[0] & 15) * 4) return SPLIT_EINVAL;
  } else if (ver == 6) {
    if (gt != VNET_GSO_TCPV6 && gt != VNET_GSO_UDP_L4) return SPLIT_EINVAL;
    if (c->h.csum_start < 40) return SPLIT_EINVAL;
  } else {
    return SPLIT_EINVAL;
  }
  size_t cs = c->h.csum_start;
  c->csum_start = cs;
  c->proto = gt == VNET_GSO_UDP_L4 ? 17 : 6;
  // hdr_len is not trusted (on a forwarding path it can span the whole first packet): recompute.
  if (c->proto == 6) {
    if (cs + 20 > c->len) return SPLIT_EINVAL;
    size_t doff = (size_t)(p[cs + 12] >> 4) * 4;
    if (doff < 20 || doff > 60) return SPLIT_EINVAL;
    c->hdr_len = cs + doff;
  } else {
    c->hdr_len = cs + 8;
  }
  if (c->hdr_len > c->len || c->h.gso_size == 0) return SPLIT_EINVAL;
  c->gso = true;
  c->gso_size = c->h.gso_size;
  size_t payload = c->len - c->hdr_len;
  c->nseg = payload == 0 ? 1 : (payload + c->gso_size - 1) / c->gso_size;
  return 0;
}

size_t split_segment_len(const split_ctx *c, size_t i) {
  if (!c->gso) return c->len;
  size_t start = c->hdr_len + i * c->gso_size;
  size_t rest = c->len > start ? c->len - start : 0;
  return c->hdr_len + (rest < c->gso_size ? rest : c->gso_size);
}

ssize_t split_segment(const split_ctx *c, size_t i, uint8_t *out, size_t cap) {
  size_t L = split_segment_len(c, i);
  if (L > cap || i >= c->nseg) return -1;
  if (!c->gso) {
    memcpy(out, c->pkt, L);
    if (c->needs_csum) {
      // The checksum field holds the kernel's pseudo-header sum: sum from csum_start with it as
      // the seed and store the complement.
      size_t cs = c->h.csum_start, at = cs + c->h.csum_offset;
      uint16_t s = (uint16_t)~csum_fold(csum_add(0, out + cs, L - cs));
      if (s == 0 && c->h.csum_offset == 6) s = 0xffff;  // UDP: 0 means "no checksum"
      wrsum(out + at, s);
    }
    return (ssize_t)L;
  }
  size_t hl = c->hdr_len, cs = c->csum_start, plen = L - hl;
  memcpy(out, c->pkt, hl);
  memcpy(out + hl, c->pkt + hl + i * c->gso_size, plen);
  if (!c->v6) {
    wr16(out + 2, (uint16_t)L);
    wr16(out + 4, (uint16_t)(rd16(c->pkt + 4) + i));
    out[10] = out[11] = 0;
    wrsum(out + 10, (uint16_t)~csum_fold(csum_add(0, out, cs)));
  } else {
    wr16(out + 4, (uint16_t)(L - 40));
  }
  uint8_t *l4 = out + cs;
  size_t l4len = L - cs;
  uint8_t *field;
  if (c->proto == 6) {
    wr32(l4 + 4, rd32(c->pkt + cs + 4) + (uint32_t)(i * c->gso_size));
    if (i + 1 < c->nseg) l4[13] &= (uint8_t)~(0x01 | 0x08);  // FIN and PSH only on the last
    field = l4 + 16;
  } else {
    wr16(l4 + 4, (uint16_t)l4len);
    field = l4 + 6;
  }
  field[0] = field[1] = 0;
  uint16_t s = (uint16_t)~csum_fold(csum_add(csum_pseudo(out, c->v6, c->proto, (uint32_t)l4len), l4, l4len));
  if (s == 0 && c->proto == 17) s = 0xffff;
  wrsum(field, s);
  return (ssize_t)L;
}

// ---- write-side coalescing ----

typedef struct {
  bool v6;
  uint8_t proto;
  uint16_t iph, l4h;
  uint32_t plen;
} cand;

// Is the packet a coalescing candidate (wireguard-go's packetIsGROCandidate plus checks)?
static bool candidate(const uint8_t *p, size_t len, unsigned flags, cand *c) {
  if (len < 20 || len > GSO_MAX_PACKET) return false;
  uint8_t ver = p[0] >> 4;
  if (ver == 4) {
    if (p[0] != 0x45) return false;                   // IP options disqualify
    if (rd16(p + 2) != len) return false;             // length field = buffer length
    if (rd16(p + 6) & 0x3fff) return false;           // MF or a fragment offset: never
    if (csum_fold(csum_add(0, p, 20)) != 0xffff) return false;  // bad IPv4 header checksum
    c->v6 = false;
    c->proto = p[9];
    c->iph = 20;
  } else if (ver == 6) {
    if (len < 40 || (size_t)rd16(p + 4) + 40 != len) return false;
    c->v6 = true;
    c->proto = p[6];  // extension headers (fragments among them) are never coalesced
    c->iph = 40;
  } else {
    return false;
  }
  size_t iph = c->iph;
  if (c->proto == 6 && (flags & GRO_TCP)) {
    if (len < iph + 20) return false;
    size_t doff = (size_t)(p[iph + 12] >> 4) * 4;
    if (doff < 20 || iph + doff > len) return false;
    uint8_t fl = p[iph + 13];
    if (fl != 0x10 && fl != 0x18) return false;  // exactly ACK or ACK|PSH: no FIN/SYN/RST/URG/ECE/CWR
    c->l4h = (uint16_t)doff;
  } else if (c->proto == 17 && (flags & GRO_UDP)) {
    if (len < iph + 8 || rd16(p + iph + 4) != len - iph) return false;
    c->l4h = 8;
  } else {
    return false;
  }
  c->plen = (uint32_t)(len - iph - c->l4h);
  return c->plen > 0;
}

// Is the L4 checksum valid? An IPv4 UDP checksum of 0 ("none", RFC 768) is acceptable.
static bool l4_ok(const uint8_t *p, size_t len, bool v6, uint8_t proto, size_t iph) {
  if (proto == 17 && !v6 && p[iph + 6] == 0 && p[iph + 7] == 0) return true;
  uint64_t acc = csum_add(csum_pseudo(p, v6, proto, (uint32_t)(len - iph)), p + iph, len - iph);
  return csum_fold(acc) == 0xffff;
}

static bool same_flow(const uint8_t *p, const uint8_t *h, const cand *c) {
  if (c->v6) {
    if (memcmp(p + 8, h + 8, 32) != 0) return false;
  } else if (memcmp(p + 12, h + 12, 8) != 0) {
    return false;
  }
  if (memcmp(p + c->iph, h + c->iph, 4) != 0) return false;  // ports
  if (c->proto == 6 && memcmp(p + c->iph + 8, h + c->iph + 8, 4) != 0) return false;  // ACK number
  return true;
}

static bool ip_fields_match(const uint8_t *p, const uint8_t *h, bool v6) {
  if (v6) return p[0] == h[0] && (p[1] & 0xf0) == (h[1] & 0xf0) && p[7] == h[7];  // version+TC, hop limit
  return p[1] == h[1] && (p[6] >> 5) == (h[6] >> 5) && p[8] == h[8];             // ToS, DF/reserved, TTL
}

// 1 merged; 0 not; -1 the packet's checksum is bad (it must not be merged into later either).
static int try_merge(gro_plan *pl, gro_item *it, int32_t i, const uint8_t *p, size_t len, const cand *c,
                     const uint8_t *buf, const int32_t *offs, const int32_t *lens) {
  if (it->closed || it->nseg >= GRO_MAX_SEGS) return 0;
  const uint8_t *h = buf + offs[it->head];
  if (!ip_fields_match(p, h, c->v6) || c->l4h != it->l4h) return 0;
  if (c->proto == 6) {
    if (memcmp(p + c->iph + 20, h + c->iph + 20, c->l4h - 20u) != 0) return 0;  // options differ
    if (rd32(p + c->iph + 4) != it->next_seq) return 0;  // not contiguous
  }
  if (c->plen > it->gso) return 0;
  if ((size_t)it->iph + it->l4h + it->payload + c->plen > GSO_MAX_PACKET) return 0;
  if (!it->verified) {
    if (!l4_ok(h, (size_t)lens[it->head], it->v6, it->kind, it->iph)) {
      it->closed = true;  // written as is; the kernel drops it
      pl->bad_csum++;
      return 0;
    }
    it->verified = true;
  }
  if (!l4_ok(p, len, c->v6, c->proto, c->iph)) {
    pl->bad_csum++;
    return -1;
  }
  pl->next[it->last] = i;
  pl->next[i] = -1;
  it->last = i;
  it->nseg++;
  it->payload += c->plen;
  if (c->proto == 6) {
    it->next_seq += c->plen;
    if (p[c->iph + 13] & 0x08) it->psh = it->closed = true;  // PSH ends the run
  }
  if (c->plen < it->gso) it->closed = true;  // a short segment must be the last
  return 1;
}

void gro_plan_build(gro_plan *pl, const uint8_t *buf, const int32_t *offs, const int32_t *lens, uint32_t count,
                    unsigned flags) {
  pl->nitems = 0;
  pl->bad_csum = 0;
  for (uint32_t i = 0; i < count && i < MAX_PLAN; i++) {
    const uint8_t *p = buf + offs[i];
    size_t len = (size_t)lens[i];
    pl->next[i] = -1;
    cand c;
    bool is = flags != 0 && candidate(p, len, flags, &c);
    int merged = 0;
    if (is) {
      // Only the newest item of the flow is considered: order within a flow is kept.
      for (int k = pl->nitems - 1; k >= 0; k--) {
        gro_item *x = &pl->items[k];
        if (x->kind != c.proto || x->v6 != c.v6 || x->iph != c.iph) continue;
        if (!same_flow(p, buf + offs[x->head], &c)) continue;
        merged = try_merge(pl, x, (int32_t)i, p, len, &c, buf, offs, lens);
        break;
      }
      if (merged == 1) continue;
    }
    gro_item *it = &pl->items[pl->nitems++];
    memset(it, 0, sizeof *it);
    it->head = it->last = (int32_t)i;
    it->nseg = 1;
    if (!is) {
      it->closed = true;
      continue;
    }
    it->kind = c.proto;
    it->v6 = c.v6;
    it->iph = c.iph;
    it->l4h = c.l4h;
    it->gso = (uint16_t)c.plen;
    it->payload = c.plen;
    it->closed = merged < 0;  // known bad: never merged into
    it->verified = false;
    if (c.proto == 6) {
      it->next_seq = rd32(p + c.iph + 4) + c.plen;
      if (p[c.iph + 13] & 0x08) it->closed = true;  // nothing is appended after PSH
    }
  }
}

size_t gro_item_finish(const gro_plan *pl, const gro_item *it, uint8_t *buf, const int32_t *offs, const int32_t *lens,
                       uint8_t hdr[VNET_HDR_LEN]) {
  (void)pl;
  uint8_t *h = buf + offs[it->head];
  memset(hdr, 0, VNET_HDR_LEN);
  if (it->nseg <= 1) return (size_t)lens[it->head];
  size_t iph = it->iph, total = iph + it->l4h + it->payload, l4len = total - iph;
  if (!it->v6) {
    wr16(h + 2, (uint16_t)total);
    h[10] = h[11] = 0;
    wrsum(h + 10, (uint16_t)~csum_fold(csum_add(0, h, 20)));
  } else {
    wr16(h + 4, (uint16_t)(total - 40));
  }
  vnet_hdr v = {.flags = VNET_F_NEEDS_CSUM, .hdr_len = (uint16_t)(iph + it->l4h), .gso_size = it->gso,
                .csum_start = (uint16_t)iph};
  if (it->kind == 6) {
    if (it->psh) h[iph + 13] |= 0x08;
    // Partial checksum: the uncomplemented pseudo-header sum over the whole L4 length.
    wrsum(h + iph + 16, csum_fold(csum_pseudo(h, it->v6, 6, (uint32_t)l4len)));
    v.gso_type = it->v6 ? VNET_GSO_TCPV6 : VNET_GSO_TCPV4;
    v.csum_offset = 16;
  } else {
    wr16(h + iph + 4, (uint16_t)l4len);
    wrsum(h + iph + 6, csum_fold(csum_pseudo(h, it->v6, 17, (uint32_t)l4len)));
    v.gso_type = VNET_GSO_UDP_L4;
    v.csum_offset = 6;
  }
  vnet_encode(&v, hdr);
  return total;
}
