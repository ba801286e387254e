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
#include <unistd.h>

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

// tunWrite(fd, buf: Uint8Array, offsets: Int32Array, lens: Int32Array, count) -> number written.
// Per-packet failures (EAGAIN, ENOBUFS, EINVAL for a malformed packet, EIO when down) drop that
// packet; only a bad fd throws.
static napi_value js_tun_write(napi_env env, napi_callback_info info) {
  ARGS(5);
  int32_t fd;
  uint8_t *buf;
  int32_t *offs, *lens;
  size_t buflen, noffs, nlens;
  uint32_t count;
  if (!arg_int32(env, argv[0], "fd", &fd)) return NULL;
  if (!arg_typed(env, argv[1], napi_uint8_array, "buf", (void **)&buf, &buflen)) return NULL;
  if (!arg_typed(env, argv[2], napi_int32_array, "offsets", (void **)&offs, &noffs)) return NULL;
  if (!arg_typed(env, argv[3], napi_int32_array, "lens", (void **)&lens, &nlens)) return NULL;
  if (!arg_uint32(env, argv[4], "count", &count)) return NULL;
  if (!check_slices(env, buflen, offs, noffs, lens, nlens, count)) return NULL;
  uint32_t written = 0;
  for (uint32_t i = 0; i < count; i++) {
    ssize_t r;
    do r = write(fd, buf + offs[i], (size_t)lens[i]);
    while (r < 0 && errno == EINTR);
    if (r >= 0) {
      written++;
      continue;
    }
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) break;  // queue full: drop the rest of the batch
    if (e == EBADF || e == EFAULT || e == EBADFD) {
      return throw_errno(env, e, "write", "tunWrite", "the TUN fd is not open: it was closed already");
    }
    // Anything else concerns this packet only (EINVAL, EIO, ENOBUFS, ENOMEM): drop it.
  }
  napi_value v;
  napi_create_uint32(env, written, &v);
  return v;
}

bool init_tun(napi_env env, napi_value exports) {
  if (!export_fn(env, exports, "tunOpen", js_tun_open) || !export_fn(env, exports, "setMtu", js_set_mtu) ||
      !export_fn(env, exports, "setUp", js_set_up) || !export_fn(env, exports, "tunWrite", js_tun_write))
    return false;
  napi_value f, v;
  napi_create_object(env, &f);
  napi_create_uint32(env, IFF_MULTI_QUEUE, &v);
  napi_set_named_property(env, f, "IFF_MULTI_QUEUE", v);
  napi_create_uint32(env, IFF_VNET_HDR, &v);
  napi_set_named_property(env, f, "IFF_VNET_HDR", v);
  napi_create_uint32(env, IFF_TUN_EXCL, &v);
  napi_set_named_property(env, f, "IFF_TUN_EXCL", v);
  return napi_set_named_property(env, exports, "tunFlags", f) == napi_ok;
}
