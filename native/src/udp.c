// UDP sockets: udpOpen and the batched udpSend (sendmmsg), plus the endpoint raw-form conversions.
// Raw form (src/net/endpoint.ts): [0..16) IPv6 or ::ffff:a.b.c.d, [16..18) port BE, [18] 4|6, [19] 0.
#include "meshd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

// UDP GSO: most datagrams per UDP_SEGMENT send (kernel UDP_MAX_SEGMENTS is 64 before Linux 6.9,
// 128 since: the lower value works everywhere) and most payload bytes (65535 - 20 - 8).
#define GSO_MAX_SEGS 64
#define GSO_MAX_BYTES 65507
// Datagrams shorter than this never start a UDP_SEGMENT run. A run is one skb until the device
// segments it, and whatever drops skbs before that (a full qdisc, a firewall on a veth path) drops
// the whole run. For bulk data that is one TSO burst either way (tailscaled sends the same); for a
// batch of TCP ACKs (96-144 bytes in WireGuard) it is every ACK of a flight's tail at once, and the
// data's sender stalls until its RTO (chaos lab loss10: 4 ACKs in one 384-byte skb dropped, 0.27 s
// stall, then the RTO grows with each repeat). wireguard-go reads ACKs off its TUN one per batch
// and so never coalesces them; small datagrams gain little from GSO anyway.
#define GSO_MIN_SEG 256

// Per-socket send state shared with JS: a Float64Array the caller owns (UdpSocket keeps one).
#define UC_FLAGS 0          // bit 0: GSO on (the addon clears it after EIO or EINVAL)
#define UC_CALLS 1          // sendmmsg calls
#define UC_GSO_MSGS 2       // messages sent with UDP_SEGMENT
#define UC_GSO_DGRAMS 3     // datagrams inside them
#define UC_WAITS 4          // backpressure waits (EAGAIN/ENOBUFS)
#define UC_WAIT_DROPS 5     // datagrams dropped after the wait budget ran out
#define UC_GSO_FALLBACKS 6  // GSO sends refused (EIO/EINVAL/EMSGSIZE) and resent one by one
#define UC_GSO_ERRNO 7      // errno of the latest refused GSO send
#define UC_CTL_LEN 8
#define UC_F_GSO 1
// Set by the caller while the path loses packets: datagrams go one per message for now (bit 0, the
// capability, stays). A GSO run is one skb until the device segments it, and a drop before that
// takes the whole run; a TCP inside recovers from a lost run only by its retransmission timeout.
#define UC_F_GSO_PAUSED 2

void sockaddr_to_raw(const struct sockaddr *sa, uint8_t *raw) {
  memset(raw, 0, EP_RAW_LEN);
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
    raw[10] = 0xff;
    raw[11] = 0xff;
    memcpy(raw + 12, &s4->sin_addr, 4);
    memcpy(raw + 16, &s4->sin_port, 2);
    raw[18] = 4;
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    memcpy(raw, &s6->sin6_addr, 16);
    memcpy(raw + 16, &s6->sin6_port, 2);
    raw[18] = IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) ? 4 : 6;
  }
}

// Builds the destination for a socket of `domain` from raw; returns its length, 0 when the
// socket cannot reach that family (an IPv6 destination on an AF_INET socket) or raw is unset.
static socklen_t raw_to_sockaddr(int domain, const uint8_t *raw, struct sockaddr_in6 *out) {
  uint8_t fam = raw[18];
  if (domain == AF_INET6) {
    memset(out, 0, sizeof *out);
    out->sin6_family = AF_INET6;
    memcpy(&out->sin6_port, raw + 16, 2);
    if (fam == 4) {
      uint8_t *a = out->sin6_addr.s6_addr;  // ::ffff:a.b.c.d, whatever bytes 0..11 hold
      a[10] = 0xff;
      a[11] = 0xff;
      memcpy(a + 12, raw + 12, 4);
    } else if (fam == 6) {
      memcpy(&out->sin6_addr, raw, 16);
    } else {
      return 0;
    }
    return sizeof(struct sockaddr_in6);
  }
  if (domain == AF_INET && fam == 4) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)out;
    memset(s4, 0, sizeof *s4);
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_port, raw + 16, 2);
    memcpy(&s4->sin_addr, raw + 12, 4);
    return sizeof(struct sockaddr_in);
  }
  return 0;
}

static bool opt_uint(napi_env env, napi_value obj, const char *key, uint32_t *out, bool *present) {
  napi_value v;
  if (!prop_get(env, obj, key, &v, present)) return false;
  if (!*present) return true;
  char what[64];
  snprintf(what, sizeof what, "options.%s", key);
  return arg_uint32(env, v, what, out);
}

static bool set_buf(int fd, int force, int plain, uint32_t size) {
  int v = size > INT32_MAX ? INT32_MAX : (int)size;
  if (setsockopt(fd, SOL_SOCKET, force, &v, sizeof v) == 0) return true;
  return setsockopt(fd, SOL_SOCKET, plain, &v, sizeof v) == 0;
}

// udpOpen({ family: 4|6, port, bindAddress?, mark?, rcvbuf?, sndbuf?, gro? }) -> { fd, port, rcvbuf, sndbuf, gso, gro }
static napi_value js_udp_open(napi_env env, napi_callback_info info) {
  ARGS(1);
  napi_valuetype t;
  napi_typeof(env, argv[0], &t);
  if (t != napi_object) return throw_type(env, "options must be an object");
  napi_value v;
  bool present;
  uint32_t family, port, mark = 0, rcvbuf = 0, sndbuf = 0;
  bool has_mark, has_rcv, has_snd;
  if (!opt_uint(env, argv[0], "family", &family, &present)) return NULL;
  if (!present || (family != 4 && family != 6)) return throw_type(env, "options.family must be 4 or 6");
  if (!opt_uint(env, argv[0], "port", &port, &present)) return NULL;
  if (!present || port > 65535) return throw_range(env, "options.port must be an integer in 0..65535");
  if (!opt_uint(env, argv[0], "mark", &mark, &has_mark)) return NULL;
  if (!opt_uint(env, argv[0], "rcvbuf", &rcvbuf, &has_rcv)) return NULL;
  if (!opt_uint(env, argv[0], "sndbuf", &sndbuf, &has_snd)) return NULL;
  bool want_gro = false;
  if (!prop_get(env, argv[0], "gro", &v, &present)) return NULL;
  if (present && !arg_bool(env, v, "options.gro", &want_gro)) return NULL;
  char addr[INET6_ADDRSTRLEN + 1] = "";
  if (!prop_get(env, argv[0], "bindAddress", &v, &present)) return NULL;
  if (present && !arg_string(env, v, "options.bindAddress", addr, sizeof addr, NULL)) return NULL;

  struct sockaddr_in6 sa;
  socklen_t salen;
  memset(&sa, 0, sizeof sa);
  if (family == 4) {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&sa;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    if (addr[0] && inet_pton(AF_INET, addr, &s4->sin_addr) != 1) {
      napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "options.bindAddress must be an IPv4 address for family 4");
      return NULL;
    }
    salen = sizeof(struct sockaddr_in);
  } else {
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons((uint16_t)port);
    struct in_addr a4;
    if (addr[0] && inet_pton(AF_INET6, addr, &sa.sin6_addr) != 1) {
      if (inet_pton(AF_INET, addr, &a4) != 1) {
        napi_throw_type_error(env, "ERR_INVALID_ARG_VALUE", "options.bindAddress must be an IP address");
        return NULL;
      }
      sa.sin6_addr.s6_addr[10] = 0xff;
      sa.sin6_addr.s6_addr[11] = 0xff;
      memcpy(sa.sin6_addr.s6_addr + 12, &a4, 4);
    }
    salen = sizeof(struct sockaddr_in6);
  }
  const char *shown = addr[0] ? addr : family == 4 ? "0.0.0.0" : "::";
  char ctx[96], adv[200];
  snprintf(ctx, sizeof ctx, "udpOpen %s%s%s:%u", family == 6 ? "[" : "", shown, family == 6 ? "]" : "", port);

  int fd = socket(family == 4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_UDP);
  if (fd < 0) {
    int e = errno;
    const char *a = e == EAFNOSUPPORT ? "this host has no IPv6 (disabled or not built in): use family 4" : NULL;
    return throw_errno(env, e, "socket", ctx, a);
  }
  int zero = 0;
  if (family == 6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "setsockopt IPV6_V6ONLY", ctx, "cannot make the socket dual-stack: use family 4");
  }
  if (has_mark && setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof mark) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "setsockopt SO_MARK", ctx,
                       e == EPERM ? "setting a socket mark needs root or CAP_NET_ADMIN" : NULL);
  }
  // Socket buffers: the *FORCE variants pass net.core.[rw]mem_max but need CAP_NET_ADMIN; the
  // plain ones are capped by those sysctls. Best effort: the result is reported, not enforced.
  if (has_rcv) set_buf(fd, SO_RCVBUFFORCE, SO_RCVBUF, rcvbuf);
  int one = 1;  // receive-queue drop counter for pollStats().kernelDrops; best effort
  setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one);
  if (has_snd) set_buf(fd, SO_SNDBUFFORCE, SO_SNDBUF, sndbuf);
  if (bind(fd, (struct sockaddr *)&sa, salen) < 0) {
    int e = errno;
    close(fd);
    const char *a = NULL;
    switch (e) {
      case EADDRINUSE:
        snprintf(adv, sizeof adv, "port %u is in use by another socket: pick another port, or 0 for any free one", port);
        a = adv;
        break;
      case EADDRNOTAVAIL:
        snprintf(adv, sizeof adv, "%s is not an address of this network namespace: bind to one that is, or leave bindAddress unset", shown);
        a = adv;
        break;
      case EACCES:
        a = "ports below 1024 need root or CAP_NET_BIND_SERVICE: pick a higher port";
        break;
    }
    return throw_errno(env, e, "bind", ctx, a);
  }
  struct sockaddr_in6 got;
  socklen_t gotlen = sizeof got;
  getsockname(fd, (struct sockaddr *)&got, &gotlen);
  int rb = 0, sb = 0;
  socklen_t ol = sizeof rb;
  getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rb, &ol);
  ol = sizeof sb;
  getsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, &ol);
  // Offloads, probed as wireguard-go does: GSO if UDP_SEGMENT can be read; GRO if it reads back 1
  // after being set (getsockopt(UDP_GRO) exists since Linux 5.12, as GRO that works for us).
  int val = 0;
  ol = sizeof val;
  bool gso = getsockopt(fd, SOL_UDP, UDP_SEGMENT, &val, &ol) == 0;
  bool gro = false;
  if (want_gro) {
    int on = 1;
    val = 0;
    ol = sizeof val;
    if (setsockopt(fd, SOL_UDP, UDP_GRO, &on, sizeof on) == 0 && getsockopt(fd, SOL_UDP, UDP_GRO, &val, &ol) == 0 &&
        val == 1) {
      gro = true;
    } else {
      int off = 0;
      setsockopt(fd, SOL_UDP, UDP_GRO, &off, sizeof off);
    }
  }

  napi_value out;
  napi_create_object(env, &out);
  napi_create_int32(env, fd, &v);
  napi_set_named_property(env, out, "fd", v);
  // sin_port and sin6_port sit at the same offset.
  napi_create_uint32(env, ntohs(got.sin6_port), &v);
  napi_set_named_property(env, out, "port", v);
  napi_create_int32(env, rb, &v);
  napi_set_named_property(env, out, "rcvbuf", v);
  napi_create_int32(env, sb, &v);
  napi_set_named_property(env, out, "sndbuf", v);
  napi_get_boolean(env, gso, &v);
  napi_set_named_property(env, out, "gso", v);
  napi_get_boolean(env, gro, &v);
  napi_set_named_property(env, out, "gro", v);
  return out;
}

// Sends one message's datagrams one by one (after a refused GSO send). Returns how many went.
static uint32_t send_each(int fd, struct msghdr *m, double *ctl, int64_t *used, int *fatal) {
  uint32_t ok = 0;
  for (size_t k = 0; k < m->msg_iovlen; k++) {
    struct msghdr one = {.msg_name = m->msg_name, .msg_namelen = m->msg_namelen, .msg_iov = &m->msg_iov[k], .msg_iovlen = 1};
    for (;;) {
      ssize_t r = sendmsg(fd, &one, MSG_DONTWAIT);
      if (r >= 0) {
        ok++;
        break;
      }
      int e = errno;
      if (e == EINTR) continue;
      if ((e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) && ctl && bp_wait(fd, e, used)) {
        ctl[UC_WAITS]++;
        continue;
      }
      if (e == EBADF || e == ENOTSOCK || e == EFAULT) *fatal = e;
      break;
    }
    if (*fatal) break;
  }
  return ok;
}

// udpSend(fd, buf, offsets, lens, addrs, count, ctl?: Float64Array) -> number sent.
// With ctl and GSO on, runs of same-size datagrams to one endpoint (the last may be shorter) go as
// one UDP_SEGMENT message. EAGAIN/ENOBUFS wait for the socket to drain (bounded) when ctl is
// given, else drop the rest of the batch; an error that concerns one datagram drops it only.
static napi_value js_udp_send(napi_env env, napi_callback_info info) {
  ARGS(7);
  int32_t fd;
  uint8_t *buf, *addrs;
  int32_t *offs, *lens;
  double *ctl = NULL;
  size_t buflen, noffs, nlens, naddrs, nctl = 0;
  uint32_t count;
  if (!arg_int32(env, argv[0], "fd", &fd)) return NULL;
  if (!arg_typed(env, argv[1], napi_uint8_array, "buf", (void **)&buf, &buflen)) return NULL;
  if (!arg_typed(env, argv[2], napi_int32_array, "offsets", (void **)&offs, &noffs)) return NULL;
  if (!arg_typed(env, argv[3], napi_int32_array, "lens", (void **)&lens, &nlens)) return NULL;
  if (!arg_typed(env, argv[4], napi_uint8_array, "addrs", (void **)&addrs, &naddrs)) return NULL;
  if (!arg_uint32(env, argv[5], "count", &count)) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[6], &t);
  if (t != napi_undefined) {
    if (!arg_typed(env, argv[6], napi_float64_array, "ctl", (void **)&ctl, &nctl)) return NULL;
    if (nctl < UC_CTL_LEN) return throw_range(env, "ctl must hold at least 8 numbers");
  }
  if (!check_slices(env, buflen, offs, noffs, lens, nlens, count)) return NULL;
  if ((size_t)count * EP_RAW_LEN > naddrs) return throw_range(env, "addrs holds fewer than count endpoints (20 bytes each)");

  int domain = 0;
  socklen_t dl = sizeof domain;
  if (count > 0 && getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dl) < 0) {
    return throw_errno(env, errno, "getsockopt SO_DOMAIN", "udpSend", "the fd is not an open UDP socket");
  }
  struct mmsghdr msgs[MAX_BATCH];
  struct iovec iov[MAX_BATCH];
  struct sockaddr_in6 names[MAX_BATCH];
  uint8_t ctrl[MAX_BATCH][CMSG_SPACE(sizeof(uint16_t))];
  uint16_t seg[MAX_BATCH];
  uint32_t bytes[MAX_BATCH];
  bool closed[MAX_BATCH];
  uint32_t sent = 0, next = 0;
  int64_t used = 0;
  int fatal = 0;
  bool stop = false;
  while (next < count && !stop && !fatal) {
    bool gso = ctl && ((unsigned)ctl[UC_FLAGS] & (UC_F_GSO | UC_F_GSO_PAUSED)) == UC_F_GSO;
    unsigned n = 0, niov = 0;
    while (next < count && niov < MAX_BATCH) {
      uint32_t i = next++;
      socklen_t sl = raw_to_sockaddr(domain, addrs + (size_t)i * EP_RAW_LEN, &names[n]);
      if (sl == 0) continue;  // unreachable family or unset endpoint: drop
      uint32_t l = (uint32_t)lens[i];
      iov[niov].iov_base = buf + offs[i];
      iov[niov].iov_len = l;
      if (gso && n > 0) {
        struct msghdr *p = &msgs[n - 1].msg_hdr;
        if (!closed[n - 1] && p->msg_namelen == sl && memcmp(p->msg_name, &names[n], sl) == 0 && l > 0 &&
            l <= seg[n - 1] && p->msg_iovlen < GSO_MAX_SEGS && bytes[n - 1] + l <= GSO_MAX_BYTES) {
          p->msg_iovlen++;
          bytes[n - 1] += l;
          if (l < seg[n - 1]) closed[n - 1] = true;  // a shorter datagram ends the run
          niov++;
          continue;
        }
      }
      struct msghdr *h = &msgs[n].msg_hdr;
      h->msg_name = &names[n];
      h->msg_namelen = sl;
      h->msg_iov = &iov[niov];
      h->msg_iovlen = 1;
      h->msg_control = NULL;
      h->msg_controllen = 0;
      h->msg_flags = 0;
      seg[n] = l > 0xffff ? 0xffff : (uint16_t)l;
      bytes[n] = l;
      closed[n] = l < GSO_MIN_SEG || l > GSO_MAX_BYTES / 2;
      niov++;
      n++;
    }
    for (unsigned k = 0; k < n; k++) {
      struct msghdr *h = &msgs[k].msg_hdr;
      if (h->msg_iovlen < 2) continue;
      // Unused control space must not be passed: only messages with several datagrams get one.
      h->msg_control = ctrl[k];
      h->msg_controllen = CMSG_SPACE(sizeof(uint16_t));
      struct cmsghdr *c = CMSG_FIRSTHDR(h);
      c->cmsg_level = SOL_UDP;
      c->cmsg_type = UDP_SEGMENT;
      c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
      memcpy(CMSG_DATA(c), &seg[k], sizeof(uint16_t));
    }
    unsigned j = 0;
    while (j < n) {
      int r = sendmmsg(fd, msgs + j, n - j, MSG_DONTWAIT);
      if (ctl) ctl[UC_CALLS]++;
      if (r > 0) {
        for (unsigned k = j; k < j + (unsigned)r; k++) {
          size_t d = msgs[k].msg_hdr.msg_iovlen;
          sent += (uint32_t)d;
          if (ctl && d > 1) {
            ctl[UC_GSO_MSGS]++;
            ctl[UC_GSO_DGRAMS] += (double)d;
          }
        }
        j += (unsigned)r;
        continue;
      }
      int e = r == 0 ? EAGAIN : errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) {
        if (ctl && bp_wait(fd, e, &used)) {
          ctl[UC_WAITS]++;
          continue;
        }
        if (ctl) {
          double left = 0;
          for (unsigned k = j; k < n; k++) left += (double)msgs[k].msg_hdr.msg_iovlen;
          ctl[UC_WAIT_DROPS] += left + (double)(count - next);
        }
        stop = true;  // queue full: drop the rest of the batch
        break;
      }
      if (e == EBADF || e == ENOTSOCK || e == EFAULT) {
        fatal = e;
        break;
      }
      struct msghdr *h = &msgs[j].msg_hdr;
      if (h->msg_iovlen > 1 && (e == EIO || e == EINVAL || e == EMSGSIZE)) {
        // EIO: the egress device cannot checksum (offloads.md section 5 #5); EINVAL: too many
        // segments or an old virtio device. GSO stays off for this socket; EMSGSIZE (gso_size
        // above the path MTU) only resends this message.
        if (e != EMSGSIZE) ctl[UC_FLAGS] = (double)((unsigned)ctl[UC_FLAGS] & ~(unsigned)UC_F_GSO);
        ctl[UC_GSO_FALLBACKS]++;
        ctl[UC_GSO_ERRNO] = e;
        sent += send_each(fd, h, ctl, &used, &fatal);
        if (fatal) break;
      }
      j++;  // this message's own failure: drop it, send the rest
    }
  }
  if (fatal) return throw_errno(env, fatal, "sendmmsg", "udpSend", "the fd is not an open UDP socket");
  napi_value v;
  napi_create_uint32(env, sent, &v);
  return v;
}

bool init_udp(napi_env env, napi_value exports) {
  return export_fn(env, exports, "udpOpen", js_udp_open) && export_fn(env, exports, "udpSend", js_udp_send);
}
