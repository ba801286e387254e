// TUN devices: tunOpen, setMtu, setUp, and the batched tunWrite.
// Linux: Documentation/networking/tuntap.rst; IFF_NO_PI so every read/write is one bare IP packet.
#include "meshd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "offload.h"

// Extra IFF_* bits a caller may add to IFF_TUN | IFF_NO_PI.
#define TUN_EXTRA_FLAGS (IFF_MULTI_QUEUE | IFF_VNET_HDR | IFF_TUN_EXCL)

static const char *tun_advice(int err, const char *name, char *buf, size_t size) {
  switch (err) {
    case ENOENT:
    case ENODEV:
      return "/dev/net/tun missing: load the tun module (modprobe tun), or run inside a host that provides it";
    case EPERM:
    case EACCES:
      return "opening a TUN device needs root or CAP_NET_ADMIN";
    case EBUSY:
      snprintf(buf, size, "device %s is in use: another process holds it open; close it or pick another name", name);
      return buf;
    case EINVAL:
      snprintf(buf, size,
               "cannot create TUN device %s: the name is invalid or taken by an interface of another kind; pick another name",
               name);
      return buf;
    case EMFILE:
    case ENFILE:
      return "too many open files: raise the fd limit (ulimit -n) or close unused fds";
    default:
      return NULL;
  }
}

// tunOpen(name: string, flags: number) -> { fd, name }
static napi_value js_tun_open(napi_env env, napi_callback_info info) {
  ARGS(2);
  char name[IFNAMSIZ];
  size_t len;
  if (!arg_string(env, argv[0], "name", name, sizeof name, &len)) return NULL;
  uint32_t flags;
  if (!arg_uint32(env, argv[1], "flags", &flags)) return NULL;
  if (flags & ~(uint32_t)TUN_EXTRA_FLAGS) return throw_range(env, "flags may only hold IFF_MULTI_QUEUE, IFF_VNET_HDR, IFF_TUN_EXCL");
  char ctx[64], adv[200];
  snprintf(ctx, sizeof ctx, "tunOpen %s", len ? name : "(kernel-chosen name)");

  int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return throw_errno(env, e, "open", ctx, tun_advice(e, name, adv, sizeof adv));
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name, len);
  ifr.ifr_flags = (short)(IFF_TUN | IFF_NO_PI | flags);
  if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, e, "ioctl TUNSETIFF", ctx, tun_advice(e, name, adv, sizeof adv));
  }
  napi_value out, v;
  napi_create_object(env, &out);
  napi_create_int32(env, fd, &v);
  napi_set_named_property(env, out, "fd", v);
  napi_create_string_utf8(env, ifr.ifr_name, strnlen(ifr.ifr_name, IFNAMSIZ), &v);
  napi_set_named_property(env, out, "name", v);
  return out;
}

static const char *ifreq_advice(int err, const char *name, char *buf, size_t size) {
  switch (err) {
    case ENODEV:
      snprintf(buf, size, "no interface %s in this network namespace: open the TUN device first", name);
      return buf;
    case EPERM:
    case EACCES:
      return "changing an interface needs root or CAP_NET_ADMIN";
    default:
      return NULL;
  }
}

static int ctl_socket(void) {
  return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
}

// setMtu(name: string, mtu: number) -> undefined
static napi_value js_set_mtu(napi_env env, napi_callback_info info) {
  ARGS(2);
  char name[IFNAMSIZ];
  size_t len;
  if (!arg_string(env, argv[0], "name", name, sizeof name, &len)) return NULL;
  uint32_t mtu;
  if (!arg_uint32(env, argv[1], "mtu", &mtu)) return NULL;
  if (mtu < 68 || mtu > 65535) return throw_range(env, "mtu must be between 68 and 65535");
  char ctx[64], adv[200];
  snprintf(ctx, sizeof ctx, "setMtu %s %u", name, mtu);
  int s = ctl_socket();
  if (s < 0) return throw_errno(env, errno, "socket", ctx, NULL);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name, len);
  ifr.ifr_mtu = (int)mtu;
  int r = ioctl(s, SIOCSIFMTU, &ifr);
  int e = errno;
  close(s);
  if (r < 0) {
    const char *a = e == EINVAL ? "the device refuses this MTU: pick one in its supported range" : ifreq_advice(e, name, adv, sizeof adv);
    return throw_errno(env, e, "ioctl SIOCSIFMTU", ctx, a);
  }
  return NULL;
}

// setUp(name: string, up: boolean) -> undefined
static napi_value js_set_up(napi_env env, napi_callback_info info) {
  ARGS(2);
  char name[IFNAMSIZ];
  size_t len;
  if (!arg_string(env, argv[0], "name", name, sizeof name, &len)) return NULL;
  bool up;
  if (!arg_bool(env, argv[1], "up", &up)) return NULL;
  char ctx[64], adv[200];
  snprintf(ctx, sizeof ctx, "setUp %s %s", name, up ? "up" : "down");
  int s = ctl_socket();
  if (s < 0) return throw_errno(env, errno, "socket", ctx, NULL);
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  memcpy(ifr.ifr_name, name, len);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0) {
    int e = errno;
    close(s);
    return throw_errno(env, e, "ioctl SIOCGIFFLAGS", ctx, ifreq_advice(e, name, adv, sizeof adv));
  }
  short want = up ? (short)(ifr.ifr_flags | IFF_UP) : (short)(ifr.ifr_flags & ~IFF_UP);
  if (want != ifr.ifr_flags) {
    ifr.ifr_flags = want;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0) {
      int e = errno;
      close(s);
      return throw_errno(env, e, "ioctl SIOCSIFFLAGS", ctx, ifreq_advice(e, name, adv, sizeof adv));
    }
  }
  close(s);
  return NULL;
}

// Checks offsets/lens/count against a buffer of buflen bytes; throws RangeError on a bad entry.
bool check_slices(napi_env env, size_t buflen, const int32_t *offs, size_t noffs, const int32_t *lens, size_t nlens,
                  uint32_t count) {
  if (count > noffs || count > nlens) return throw_range(env, "count exceeds offsets.length or lens.length"), false;
  for (uint32_t i = 0; i < count; i++) {
    int32_t o = offs[i], l = lens[i];
    if (o < 0 || l < 0 || (size_t)o + (size_t)l > buflen) {
      char msg[128];
      snprintf(msg, sizeof msg, "packet %u [%d, +%d) lies outside buf (%zu bytes)", i, o, l, buflen);
      throw_range(env, msg);
      return false;
    }
  }
  return true;
}

// Per-TUN write state shared with JS: a Float64Array the caller owns (Tun keeps one per device).
#define TX_FLAGS 0         // TX_F_* bits; the addon clears TX_F_TCP_GRO|TX_F_UDP_GRO on EINVAL
#define TX_WRITES 1        // write()/writev() calls that succeeded
#define TX_FRAMES 2        // coalesced super-packets written
#define TX_MERGED 3        // packets that went out inside a coalesced super-packet
#define TX_WAITS 4         // backpressure waits (EAGAIN/ENOBUFS)
#define TX_WAIT_DROPS 5    // packets dropped after the wait budget ran out
#define TX_GRO_FALLBACKS 6 // coalesced writes refused with EINVAL (then written one by one)
#define TX_BAD_CSUM 7      // packets not coalesced because a checksum was wrong
#define TX_CTL_LEN 8
#define TX_F_VNET 1
#define TX_F_TCP_GRO 2
#define TX_F_UDP_GRO 4

typedef struct {
  uint32_t written;
  int fatal;     // errno that must throw (bad fd)
  bool stopped;  // wait budget spent: the rest of the batch is dropped
} tx_result;

static bool fatal_fd_err(int e) {
  return e == EBADF || e == EFAULT || e == EBADFD;
}

// writev with EINTR retry and bounded backpressure. Returns 0 or an errno (EAGAIN = budget spent).
static int write_wait(int fd, const struct iovec *iov, int n, int64_t *used, double *ctl) {
  for (;;) {
    ssize_t r = writev(fd, iov, n);
    if (r >= 0) return 0;
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) {
      if (!bp_wait(fd, e, used)) return EAGAIN;
      ctl[TX_WAITS]++;
      continue;
    }
    return e;
  }
}

// The kernel refused a coalesced frame (EINVAL: kernels with e269d79c7d35 reject some GSO
// writes). Re-split it and write the segments one by one; returns how many were written.
static uint32_t write_split(int fd, const struct iovec *iov, int n, int64_t *used, double *ctl, tx_result *res) {
  size_t total = 0;
  for (int k = 0; k < n; k++) total += iov[k].iov_len;
  uint8_t *frame = malloc(total), *seg = malloc(VNET_HDR_LEN + GSO_MAX_PACKET);
  uint32_t ok = 0;
  split_ctx c;
  if (frame && seg) {
    size_t at = 0;
    for (int k = 0; k < n; k++) {
      memcpy(frame + at, iov[k].iov_base, iov[k].iov_len);
      at += iov[k].iov_len;
    }
    if (split_prepare(&c, frame, total) == 0) {
      memset(seg, 0, VNET_HDR_LEN);
      for (size_t i = 0; i < c.nseg; i++) {
        ssize_t l = split_segment(&c, i, seg + VNET_HDR_LEN, GSO_MAX_PACKET);
        if (l < 0) continue;
        struct iovec one = {seg, VNET_HDR_LEN + (size_t)l};
        int e = write_wait(fd, &one, 1, used, ctl);
        if (e == 0) {
          ok++;
          ctl[TX_WRITES]++;
        } else if (fatal_fd_err(e)) {
          res->fatal = e;
          break;
        }
      }
    }
  }
  free(frame);
  free(seg);
  return ok;
}

// Writes count packets to a TUN opened with IFF_VNET_HDR, coalescing what may be coalesced.
// The head packet of each coalesced frame is rewritten in place (lengths, checksums, PSH).
// One plan per thread (JS threads each call tunWrite on their own), reused: no allocation per batch.
static _Thread_local gro_plan tl_plan;

static void tun_write_vnet(int fd, uint8_t *buf, const int32_t *offs, const int32_t *lens, uint32_t count,
                           double *ctl, tx_result *res) {
  static const uint8_t zero_hdr[VNET_HDR_LEN];
  gro_plan *pl = &tl_plan;
  struct iovec iov[GRO_MAX_SEGS + 2];
  int64_t used = 0;
  for (uint32_t base = 0; base < count && !res->fatal && !res->stopped; base += MAX_PLAN) {
    uint32_t n = count - base < MAX_PLAN ? count - base : MAX_PLAN;
    unsigned f = (unsigned)ctl[TX_FLAGS];
    unsigned gro = (f & TX_F_TCP_GRO ? GRO_TCP : 0) | (f & TX_F_UDP_GRO ? GRO_UDP : 0);
    if (gro) {
      gro_plan_build(pl, buf, offs + base, lens + base, n, gro);
      ctl[TX_BAD_CSUM] += pl->bad_csum;
    }
    int nitems = gro ? pl->nitems : (int)n;
    for (int k = 0; k < nitems; k++) {
      uint8_t hdr[VNET_HDR_LEN];
      int niov = 0, nseg = 1;
      if (gro) {
        const gro_item *it = &pl->items[k];
        gro_item_finish(pl, it, buf, offs + base, lens + base, hdr);
        nseg = it->nseg;
        iov[0] = (struct iovec){nseg > 1 ? hdr : (void *)zero_hdr, VNET_HDR_LEN};
        iov[1] = (struct iovec){buf + offs[base + it->head], (size_t)lens[base + it->head]};
        niov = 2;
        size_t skip = (size_t)it->iph + it->l4h;
        for (int32_t j = pl->next[it->head]; j >= 0; j = pl->next[j]) {
          iov[niov++] = (struct iovec){buf + offs[base + j] + skip, (size_t)lens[base + j] - skip};
        }
      } else {
        iov[0] = (struct iovec){(void *)zero_hdr, VNET_HDR_LEN};
        iov[1] = (struct iovec){buf + offs[base + k], (size_t)lens[base + k]};
        niov = 2;
      }
      int e = write_wait(fd, iov, niov, &used, ctl);
      if (e == 0) {
        res->written += (uint32_t)nseg;
        ctl[TX_WRITES]++;
        if (nseg > 1) {
          ctl[TX_FRAMES]++;
          ctl[TX_MERGED] += nseg;
        }
        continue;
      }
      if (fatal_fd_err(e)) {
        res->fatal = e;
        break;
      }
      if (e == EAGAIN) {  // wait budget spent: drop what is left of the batch, count it
        uint32_t left = 0;
        if (gro) {
          for (int q = k; q < nitems; q++) left += pl->items[q].nseg;
        } else {
          left = (uint32_t)(nitems - k);
        }
        ctl[TX_WAIT_DROPS] += left + (count - base - n);
        res->stopped = true;
        break;
      }
      if (e == EINVAL && nseg > 1) {
        // Kernel pitfall (offloads.md section 5 #1): stop coalescing on this device for good.
        ctl[TX_FLAGS] = (double)(f & ~(unsigned)(TX_F_TCP_GRO | TX_F_UDP_GRO));
        ctl[TX_GRO_FALLBACKS]++;
        res->written += write_split(fd, iov, niov, &used, ctl, res);
        if (res->fatal) break;
      }
      // Anything else concerns this packet or frame only (EIO when down, ...): dropped.
    }
  }
}

// Plain TUN (no virtio header): one write() per packet, with bounded backpressure.
static void tun_write_plain(int fd, uint8_t *buf, const int32_t *offs, const int32_t *lens, uint32_t count,
                            double *ctl, tx_result *res) {
  int64_t used = 0;
  for (uint32_t i = 0; i < count; i++) {
    struct iovec one = {buf + offs[i], (size_t)lens[i]};
    int e;
    if (ctl) {
      e = write_wait(fd, &one, 1, &used, ctl);
    } else {
      ssize_t r;
      do r = write(fd, one.iov_base, one.iov_len);
      while (r < 0 && errno == EINTR);
      e = r < 0 ? errno : 0;
    }
    if (e == 0) {
      res->written++;
      if (ctl) ctl[TX_WRITES]++;
      continue;
    }
    if (fatal_fd_err(e)) {
      res->fatal = e;
      return;
    }
    if (e == EAGAIN || e == EWOULDBLOCK) {  // no ctl: queue full; with ctl: wait budget spent
      if (ctl) ctl[TX_WAIT_DROPS] += count - i;
      res->stopped = true;
      return;
    }
    // EINVAL (not IPv4/IPv6), EIO (down), ENOBUFS, ENOMEM: this packet only.
  }
}

// tunWrite(fd, buf: Uint8Array, offsets: Int32Array, lens: Int32Array, count, ctl?: Float64Array) -> number written.
static napi_value js_tun_write(napi_env env, napi_callback_info info) {
  ARGS(6);
  int32_t fd;
  uint8_t *buf;
  int32_t *offs, *lens;
  double *ctl = NULL;
  size_t buflen, noffs, nlens, nctl = 0;
  uint32_t count;
  if (!arg_int32(env, argv[0], "fd", &fd)) return NULL;
  if (!arg_typed(env, argv[1], napi_uint8_array, "buf", (void **)&buf, &buflen)) return NULL;
  if (!arg_typed(env, argv[2], napi_int32_array, "offsets", (void **)&offs, &noffs)) return NULL;
  if (!arg_typed(env, argv[3], napi_int32_array, "lens", (void **)&lens, &nlens)) return NULL;
  if (!arg_uint32(env, argv[4], "count", &count)) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[5], &t);
  if (t != napi_undefined) {
    if (!arg_typed(env, argv[5], napi_float64_array, "ctl", (void **)&ctl, &nctl)) return NULL;
    if (nctl < TX_CTL_LEN) return throw_range(env, "ctl must hold at least 8 numbers");
  }
  if (!check_slices(env, buflen, offs, noffs, lens, nlens, count)) return NULL;
  tx_result res = {0};
  if (ctl && ((unsigned)ctl[TX_FLAGS] & TX_F_VNET)) tun_write_vnet(fd, buf, offs, lens, count, ctl, &res);
  else tun_write_plain(fd, buf, offs, lens, count, ctl, &res);
  if (res.fatal) return throw_errno(env, res.fatal, "write", "tunWrite", "the TUN fd is not open: it was closed already");
  napi_value v;
  napi_create_uint32(env, res.written, &v);
  return v;
}

// tunSetOffload(fd, flags) -> undefined; TUNSETOFFLOAD with TUN_F_* bits.
static napi_value js_tun_set_offload(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  uint32_t flags;
  if (!arg_int32(env, argv[0], "fd", &fd)) return NULL;
  if (!arg_uint32(env, argv[1], "flags", &flags)) return NULL;
  if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0) {
    int e = errno;
    return throw_errno(env, e, "ioctl TUNSETOFFLOAD", "tunSetOffload",
                       e == EINVAL ? "the kernel refuses these offloads: open the TUN without IFF_VNET_HDR" : NULL);
  }
  return NULL;
}

// Builds two coalescible segments (payloads 100 and 50: the short tail kernels with the bug
// refuse) to 127.0.0.1 with TTL 0, which the kernel drops after accepting the write.
static void build_probe(uint8_t *buf, int32_t *offs, int32_t *lens, bool udp) {
  for (int i = 0; i < 2; i++) {
    uint8_t *p = buf + i * 256;
    size_t l4h = udp ? 8 : 20, plen = i == 0 ? 100 : 50, len = 20 + l4h + plen;
    memset(p, 0, len);
    p[0] = 0x45;
    p[2] = (uint8_t)(len >> 8);
    p[3] = (uint8_t)len;
    p[6] = 0x40;  // DF
    p[8] = 0;     // TTL 0
    p[9] = udp ? 17 : 6;
    p[12] = p[16] = 127;
    p[15] = p[19] = 1;
    uint8_t *l4 = p + 20;
    l4[0] = 0xff;  // ports 65535 -> 65534
    l4[1] = 0xff;
    l4[2] = 0xff;
    l4[3] = 0xfe;
    if (udp) {
      l4[4] = (uint8_t)((8 + plen) >> 8);
      l4[5] = (uint8_t)(8 + plen);
    } else {
      uint32_t seq = 1 + (uint32_t)(i * 100);
      l4[4] = (uint8_t)(seq >> 24), l4[5] = (uint8_t)(seq >> 16), l4[6] = (uint8_t)(seq >> 8), l4[7] = (uint8_t)seq;
      l4[11] = 1;     // ack 1
      l4[12] = 0x50;  // data offset 5
      l4[13] = 0x10;  // ACK
      l4[14] = 0xff;  // window
    }
    memset(l4 + l4h, 0xa5, plen);
    uint16_t ipsum = (uint16_t)~csum_fold(csum_add(0, p, 20));
    memcpy(p + 10, &ipsum, 2);
    size_t l4len = len - 20;
    uint16_t s = (uint16_t)~csum_fold(csum_add(csum_pseudo(p, false, udp ? 17 : 6, (uint32_t)l4len), l4, l4len));
    memcpy(l4 + (udp ? 6 : 16), &s, 2);
    offs[i] = i * 256;
    lens[i] = (int32_t)len;
  }
}

// tunProbeGro(fd, udp: boolean) -> 0 when the kernel takes a coalesced write, else the errno
// (EINVAL: turn coalescing off; EIO: the link is down, probe again after link-up).
static napi_value js_tun_probe_gro(napi_env env, napi_callback_info info) {
  ARGS(2);
  int32_t fd;
  bool udp;
  if (!arg_int32(env, argv[0], "fd", &fd)) return NULL;
  if (!arg_bool(env, argv[1], "udp", &udp)) return NULL;
  uint8_t buf[512];
  int32_t offs[2], lens[2];
  build_probe(buf, offs, lens, udp);
  gro_plan *pl = malloc(sizeof *pl);
  if (!pl) return throw_errno(env, ENOMEM, "malloc", "tunProbeGro", NULL);
  gro_plan_build(pl, buf, offs, lens, 2, udp ? GRO_UDP : GRO_TCP);
  int result = 0;
  if (pl->nitems != 1) {
    result = ENOTSUP;  // our own planner did not coalesce: a bug, reported rather than hidden
  } else {
    uint8_t hdr[VNET_HDR_LEN];
    gro_item_finish(pl, &pl->items[0], buf, offs, lens, hdr);
    struct iovec iov[3] = {{hdr, VNET_HDR_LEN}, {buf, (size_t)lens[0]}, {buf + 256 + 28 + (udp ? 0 : 12), 50}};
    ssize_t r;
    do r = writev(fd, iov, 3);
    while (r < 0 && errno == EINTR);
    if (r < 0) result = errno;
  }
  free(pl);
  if (fatal_fd_err(result)) return throw_errno(env, result, "writev", "tunProbeGro", "the TUN fd is not open");
  napi_value v;
  napi_create_int32(env, result, &v);
  return v;
}

// ---- test entry points: the pure split and coalesce code without a kernel ----

// offloadSplit(frame: Uint8Array, out: Uint8Array, slotSize, headroom, lens: Int32Array) -> segments, or -1 (malformed)
static napi_value js_offload_split(napi_env env, napi_callback_info info) {
  ARGS(5);
  uint8_t *frame, *out;
  int32_t *lens;
  size_t flen, olen, nlens;
  uint32_t slot, head;
  if (!arg_typed(env, argv[0], napi_uint8_array, "frame", (void **)&frame, &flen)) return NULL;
  if (!arg_typed(env, argv[1], napi_uint8_array, "out", (void **)&out, &olen)) return NULL;
  if (!arg_uint32(env, argv[2], "slotSize", &slot)) return NULL;
  if (!arg_uint32(env, argv[3], "headroom", &head)) return NULL;
  if (!arg_typed(env, argv[4], napi_int32_array, "lens", (void **)&lens, &nlens)) return NULL;
  if (head >= slot) return throw_range(env, "headroom must be smaller than slotSize");
  split_ctx c;
  int32_t n = -1;
  if (split_prepare(&c, frame, flen) == 0) {
    n = 0;
    for (size_t i = 0; i < c.nseg; i++) {
      if ((size_t)(n + 1) * slot > olen || (size_t)n >= nlens) return throw_range(env, "out has too few slots");
      ssize_t l = split_segment(&c, i, out + (size_t)n * slot + head, slot - head);
      if (l < 0) return throw_range(env, "a segment does not fit a slot");
      lens[n++] = (int32_t)l;
    }
  }
  napi_value v;
  napi_create_int32(env, n, &v);
  return v;
}

// offloadCoalesce(buf, offsets, lens, count, flags: 1 TCP | 2 UDP) -> { frames: Uint8Array[], badCsum }
// Each frame is the 10-byte virtio header followed by the packet the kernel would get. buf's
// head packets are rewritten in place as tunWrite does.
static napi_value js_offload_coalesce(napi_env env, napi_callback_info info) {
  ARGS(5);
  uint8_t *buf;
  int32_t *offs, *lens;
  size_t buflen, noffs, nlens;
  uint32_t count, flags;
  if (!arg_typed(env, argv[0], napi_uint8_array, "buf", (void **)&buf, &buflen)) return NULL;
  if (!arg_typed(env, argv[1], napi_int32_array, "offsets", (void **)&offs, &noffs)) return NULL;
  if (!arg_typed(env, argv[2], napi_int32_array, "lens", (void **)&lens, &nlens)) return NULL;
  if (!arg_uint32(env, argv[3], "count", &count)) return NULL;
  if (!arg_uint32(env, argv[4], "flags", &flags)) return NULL;
  if (count > MAX_PLAN) return throw_range(env, "count must be at most 128");
  if (!check_slices(env, buflen, offs, noffs, lens, nlens, count)) return NULL;
  gro_plan *pl = malloc(sizeof *pl);
  if (!pl) return throw_errno(env, ENOMEM, "malloc", "offloadCoalesce", NULL);
  gro_plan_build(pl, buf, offs, lens, count, flags);
  napi_value out, arr, v;
  napi_create_object(env, &out);
  napi_create_array_with_length(env, (size_t)pl->nitems, &arr);
  for (int k = 0; k < pl->nitems; k++) {
    const gro_item *it = &pl->items[k];
    uint8_t hdr[VNET_HDR_LEN];
    size_t total = gro_item_finish(pl, it, buf, offs, lens, hdr);
    void *data;
    napi_value ab, ta;
    napi_create_arraybuffer(env, VNET_HDR_LEN + total, &data, &ab);
    uint8_t *d = data;
    memcpy(d, hdr, VNET_HDR_LEN);
    memcpy(d + VNET_HDR_LEN, buf + offs[it->head], (size_t)lens[it->head]);
    size_t at = VNET_HDR_LEN + (size_t)lens[it->head], skip = (size_t)it->iph + it->l4h;
    for (int32_t j = pl->next[it->head]; j >= 0; j = pl->next[j]) {
      memcpy(d + at, buf + offs[j] + skip, (size_t)lens[j] - skip);
      at += (size_t)lens[j] - skip;
    }
    napi_create_typedarray(env, napi_uint8_array, VNET_HDR_LEN + total, ab, 0, &ta);
    napi_set_element(env, arr, (uint32_t)k, ta);
  }
  napi_set_named_property(env, out, "frames", arr);
  napi_create_uint32(env, pl->bad_csum, &v);
  napi_set_named_property(env, out, "badCsum", v);
  free(pl);
  return out;
}

bool init_tun(napi_env env, napi_value exports) {
  if (!export_fn(env, exports, "tunOpen", js_tun_open) || !export_fn(env, exports, "setMtu", js_set_mtu) ||
      !export_fn(env, exports, "setUp", js_set_up) || !export_fn(env, exports, "tunWrite", js_tun_write) ||
      !export_fn(env, exports, "tunSetOffload", js_tun_set_offload) ||
      !export_fn(env, exports, "tunProbeGro", js_tun_probe_gro) ||
      !export_fn(env, exports, "offloadSplit", js_offload_split) ||
      !export_fn(env, exports, "offloadCoalesce", js_offload_coalesce))
    return false;
  napi_value f, v;
  napi_create_object(env, &f);
  napi_create_uint32(env, IFF_MULTI_QUEUE, &v);
  napi_set_named_property(env, f, "IFF_MULTI_QUEUE", v);
  napi_create_uint32(env, IFF_VNET_HDR, &v);
  napi_set_named_property(env, f, "IFF_VNET_HDR", v);
  napi_create_uint32(env, IFF_TUN_EXCL, &v);
  napi_set_named_property(env, f, "IFF_TUN_EXCL", v);
  if (napi_set_named_property(env, exports, "tunFlags", f) != napi_ok) return false;
  napi_create_object(env, &f);
  napi_create_uint32(env, TUN_F_CSUM, &v);
  napi_set_named_property(env, f, "CSUM", v);
  napi_create_uint32(env, TUN_F_TSO4, &v);
  napi_set_named_property(env, f, "TSO4", v);
  napi_create_uint32(env, TUN_F_TSO6, &v);
  napi_set_named_property(env, f, "TSO6", v);
  napi_create_uint32(env, TUN_F_USO4, &v);
  napi_set_named_property(env, f, "USO4", v);
  napi_create_uint32(env, TUN_F_USO6, &v);
  napi_set_named_property(env, f, "USO6", v);
  return napi_set_named_property(env, exports, "tunOffloadFlags", f) == napi_ok;
}
