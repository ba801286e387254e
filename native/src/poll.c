// Batched readers driven by the Node event loop: a libuv uv_poll_t per fd; on readable, packets
// are read straight into the caller's slot buffer (TUN: read() until EAGAIN; UDP: recvmmsg) and
// the caller's callback runs once per batch, synchronously, before the slots are reused.
#include "meshd.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "offload.h"

#ifndef UDP_GRO
#define UDP_GRO 104
#endif
#ifndef SOL_UDP
#define SOL_UDP 17
#endif

// UDP_GRO: messages per recvmmsg, each up to the largest UDP payload; their datagrams are split
// into the caller's slots.
#define GRO_MSGS 4
#define GRO_MSG_BUF 65536
#define GRO_CTRL_LEN (CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(uint32_t)))

#define KIND_TUN 0
#define KIND_UDP 1

// Batches read per wakeup before yielding to the loop (the fd is level-triggered, so whatever is
// left wakes us again on the next loop iteration, after timers and other fds had their turn).
#define MAX_BATCHES_PER_WAKEUP 4

typedef struct reader reader;

// Counters, readable with pollStats; they outlive the reader for as long as the JS handle does.
typedef struct {
  double packets, batches, wakeups, truncated, errors;
  double kernel_drops;  // UDP: datagrams the kernel dropped for a full receive queue (SO_RXQ_OVFL)
  double gso_reads;     // TUN: super-packets read (virtio gso_type != NONE)
  double gso_segments;  // TUN: packets split out of them
  double csum_done;     // TUN: single packets whose partial checksum was completed
  double bad_gso;       // TUN: reads with a malformed virtio header or super-packet, dropped
  double gro_msgs;      // UDP: received messages that held more than one datagram (UDP_GRO)
  double gro_segments;  // UDP: datagrams split out of them
  int last_errno;
} poll_stats;

// What the JS handle (an External) points to. `r` is NULL once the reader is gone; the box is
// freed by whichever of (handle finalized, reader closed) happens last.
typedef struct {
  reader *r;
  bool orphan;  // the handle was finalized while the reader still ran
  poll_stats st;
} poll_box;

struct reader {
  uv_poll_t h;
  napi_env env;
  int fd, kind;
  uint8_t *buf;
  size_t slot_size, headroom, slots;
  int32_t *lens;
  uint8_t *addrs;
  napi_ref buf_ref, lens_ref, addrs_ref, cb_ref, this_ref;
  napi_async_context actx;
  struct mmsghdr *msgs;
  struct iovec *iov;
  struct sockaddr_in6 *names;
  uint8_t *ctrl;  // per-slot control buffer for the SO_RXQ_OVFL counter
  bool vnet;      // TUN opened with IFF_VNET_HDR: reads carry a virtio header and may be GSO
  bool gro;       // UDP socket with UDP_GRO on: messages may hold many datagrams
  uint8_t *stage; // TUN vnet: one read; UDP GRO: GRO_MSGS messages
  // TUN vnet: the super-packet being split (segments left over when the slots ran out).
  split_ctx sc;
  size_t next_seg;
  bool pending;
  // UDP GRO: received messages and where splitting stands.
  struct mmsghdr gmsgs[GRO_MSGS];
  struct iovec giov[GRO_MSGS];
  struct sockaddr_in6 gnames[GRO_MSGS];
  uint8_t gctrl[GRO_MSGS][GRO_CTRL_LEN];
  size_t gseg[GRO_MSGS];
  bool gskip[GRO_MSGS];
  int g_got, g_m;
  size_t g_off;
  poll_box *box;
  int in_cb;      // nesting depth of our JS callback
  bool closing;   // uv_close called: no more reads; memory goes in on_closed
  bool released;  // JS references and async context released
};

static void box_release(poll_box *b) {
  if (b && b->orphan) free(b);
}

static void on_closed(uv_handle_t *h) {
  reader *r = (reader *)h->data;
  if (r->box) {
    r->box->r = NULL;
    box_release(r->box);
  }
  free(r->msgs);
  free(r->iov);
  free(r->names);
  free(r->ctrl);
  free(r->stage);
  free(r);
}

static void env_cleanup(void *arg);

// Closes the poll handle at once: the fd leaves epoll now, so the caller may close it (and the
// number may be reused) right after. Memory is freed later, in on_closed, after any callback.
static void close_handle(reader *r) {
  if (r->closing) return;
  r->closing = true;
  uv_poll_stop(&r->h);
  napi_remove_env_cleanup_hook(r->env, env_cleanup, r);
  uv_close((uv_handle_t *)&r->h, on_closed);
}

// Releases what keeps JS objects alive. Never while our callback runs: napi_make_callback is
// still using the async context then.
static void release_js(reader *r) {
  if (r->released) return;
  r->released = true;
  napi_env env = r->env;
  napi_handle_scope scope;
  bool scoped = napi_open_handle_scope(env, &scope) == napi_ok;
  napi_delete_reference(env, r->buf_ref);
  napi_delete_reference(env, r->lens_ref);
  if (r->addrs_ref) napi_delete_reference(env, r->addrs_ref);
  napi_delete_reference(env, r->cb_ref);
  napi_delete_reference(env, r->this_ref);
  napi_async_destroy(env, r->actx);
  if (scoped) napi_close_handle_scope(env, scope);
}

// The environment is going away (process exit, worker termination): no JS may run now, and the
// environment frees the references itself.
static void env_cleanup(void *arg) {
  reader *r = arg;
  if (r->closing) return;
  r->closing = true;
  r->released = true;
  uv_poll_stop(&r->h);
  uv_close((uv_handle_t *)&r->h, on_closed);
}

static bool transient(int e) {
  switch (e) {
    case ECONNREFUSED: case EHOSTUNREACH: case ENETUNREACH: case EHOSTDOWN: case ENETDOWN:
    case ENOBUFS: case ENOMEM: case EPERM: case EACCES: case EMSGSIZE: case ETIMEDOUT:
      return true;
    default:
      return false;
  }
}

// Books a read error other than EAGAIN/EINTR: counted, and fatal (ends reading) unless transient.
static void note_read_error(reader *r, int e, int *fatal) {
  r->box->st.errors++;
  r->box->st.last_errno = e;
  if (!transient(e)) *fatal = e;
}

// Reads one batch. Returns packets placed in slots 0..n-1; *full when the batch filled up (more
// may be waiting); *fatal = errno of an error that ends reading, else 0.
static size_t read_tun(reader *r, bool *full, int *fatal) {
  size_t n = 0, cap = r->slot_size - r->headroom;
  *full = false;
  while (n < r->slots) {
    ssize_t got = read(r->fd, r->buf + n * r->slot_size + r->headroom, cap);
    if (got < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) return n;
      note_read_error(r, e, fatal);
      return n;
    }
    if ((size_t)got > cap) {  // the kernel reports the full length of a packet it cut short
      r->box->st.truncated++;
      continue;
    }
    r->lens[n++] = (int32_t)got;
  }
  *full = true;
  return n;
}

#define CTRL_LEN CMSG_SPACE(sizeof(uint32_t))

static size_t read_udp(reader *r, bool *full, int *fatal) {
  *full = false;
  for (size_t i = 0; i < r->slots; i++) {
    r->msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
    r->msgs[i].msg_hdr.msg_controllen = CTRL_LEN;
    r->msgs[i].msg_hdr.msg_flags = 0;
  }
  int got;
  do got = recvmmsg(r->fd, r->msgs, (unsigned)r->slots, MSG_DONTWAIT, NULL);
  while (got < 0 && errno == EINTR);
  if (got < 0) {
    int e = errno;
    if (e == EAGAIN || e == EWOULDBLOCK) return 0;
    note_read_error(r, e, fatal);
    return 0;
  }
  size_t w = 0;
  for (size_t i = 0; i < (size_t)got; i++) {
    struct mmsghdr *m = &r->msgs[i];
    if (m->msg_hdr.msg_controllen > 0) {
      // The socket's cumulative drop count when this datagram was queued (only sent once nonzero).
      for (struct cmsghdr *c = CMSG_FIRSTHDR(&m->msg_hdr); c; c = CMSG_NXTHDR(&m->msg_hdr, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
          uint32_t drops;
          memcpy(&drops, CMSG_DATA(c), sizeof drops);
          if ((double)drops > r->box->st.kernel_drops) r->box->st.kernel_drops = drops;
        }
      }
    }
    if (m->msg_hdr.msg_flags & MSG_TRUNC) {  // larger than a slot: dropped and counted
      r->box->st.truncated++;
      continue;
    }
    if (w != i) {  // close the gap a dropped datagram left (rare)
      memmove(r->buf + w * r->slot_size + r->headroom, r->buf + i * r->slot_size + r->headroom, m->msg_len);
    }
    r->lens[w] = (int32_t)m->msg_len;
    sockaddr_to_raw((struct sockaddr *)&r->names[i], r->addrs + w * EP_RAW_LEN);
    w++;
  }
  *full = (size_t)got == r->slots;
  return w;
}

// TUN with IFF_VNET_HDR: each read is a virtio header and a packet, maybe a GSO super-packet,
// split into MTU-sized packets, one per slot. Segments that do not fit the remaining slots wait
// for the next batch (r->pending); may_read = false only drains them.
static size_t read_tun_vnet(reader *r, bool *full, int *fatal, bool may_read) {
  size_t n = 0, cap = r->slot_size - r->headroom;
  *full = false;
  for (;;) {
    while (r->pending && n < r->slots) {
      size_t i = r->next_seg;
      ssize_t l = split_segment(&r->sc, i, r->buf + n * r->slot_size + r->headroom, cap);
      if (l < 0) r->box->st.truncated++;
      else r->lens[n++] = (int32_t)l;
      if (++r->next_seg >= r->sc.nseg) r->pending = false;
    }
    if (n >= r->slots) {
      *full = true;
      return n;
    }
    if (!may_read) return n;
    ssize_t got = read(r->fd, r->stage, VNET_HDR_LEN + GSO_MAX_PACKET);
    if (got < 0) {
      int e = errno;
      if (e == EINTR) continue;
      if (e == EAGAIN || e == EWOULDBLOCK) return n;
      note_read_error(r, e, fatal);
      return n;
    }
    if (split_prepare(&r->sc, r->stage, (size_t)got) != 0) {
      r->box->st.bad_gso++;
      continue;
    }
    if (r->sc.gso) {
      r->box->st.gso_reads++;
      r->box->st.gso_segments += (double)r->sc.nseg;
    } else if (r->sc.needs_csum) {
      r->box->st.csum_done++;
    }
    r->pending = true;
    r->next_seg = 0;
  }
}

// UDP with UDP_GRO: recvmmsg into GRO_MSGS large buffers, then split each message into datagrams
// of its gso_size (the last may be shorter), one per slot, each with the message's source.
static size_t read_udp_gro(reader *r, bool *full, int *fatal, bool may_read) {
  size_t n = 0, cap = r->slot_size - r->headroom;
  *full = false;
  for (;;) {
    while (r->g_m < r->g_got && n < r->slots) {
      int m = r->g_m;
      if (r->gskip[m]) {
        r->g_m++;
        continue;
      }
      size_t len = r->gmsgs[m].msg_len, off = r->g_off, seg = r->gseg[m];
      size_t l = len - off < seg ? len - off : seg;
      if (l > cap) {
        r->box->st.truncated++;
      } else {
        memcpy(r->buf + n * r->slot_size + r->headroom, r->stage + (size_t)m * GRO_MSG_BUF + off, l);
        r->lens[n] = (int32_t)l;
        sockaddr_to_raw((struct sockaddr *)&r->gnames[m], r->addrs + n * EP_RAW_LEN);
        n++;
      }
      off += l;
      if (off >= len || l == 0) {
        r->g_m++;
        r->g_off = 0;
      } else {
        r->g_off = off;
      }
    }
    if (n >= r->slots || r->g_m < r->g_got) {
      *full = true;
      return n;
    }
    if (!may_read) return n;
    for (int i = 0; i < GRO_MSGS; i++) {
      r->gmsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in6);
      r->gmsgs[i].msg_hdr.msg_controllen = GRO_CTRL_LEN;
      r->gmsgs[i].msg_hdr.msg_flags = 0;
    }
    int got;
    do got = recvmmsg(r->fd, r->gmsgs, GRO_MSGS, MSG_DONTWAIT, NULL);
    while (got < 0 && errno == EINTR);
    if (got < 0) {
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK) return n;
      note_read_error(r, e, fatal);
      return n;
    }
    for (int i = 0; i < got; i++) {
      struct msghdr *h = &r->gmsgs[i].msg_hdr;
      size_t len = r->gmsgs[i].msg_len;
      int gso = 0;
      // Every cmsg is looked at: UDP_GRO need not come first (tailscale/tailscale#17835).
      for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_UDP && c->cmsg_type == UDP_GRO && c->cmsg_len >= CMSG_LEN(sizeof(uint16_t))) {
          if (c->cmsg_len >= CMSG_LEN(sizeof(int))) memcpy(&gso, CMSG_DATA(c), sizeof gso);
          else {
            uint16_t g16;
            memcpy(&g16, CMSG_DATA(c), sizeof g16);
            gso = g16;
          }
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
          uint32_t drops;
          memcpy(&drops, CMSG_DATA(c), sizeof drops);
          if ((double)drops > r->box->st.kernel_drops) r->box->st.kernel_drops = drops;
        }
      }
      r->gskip[i] = (h->msg_flags & MSG_TRUNC) != 0;
      if (r->gskip[i]) r->box->st.truncated++;
      r->gseg[i] = gso > 0 ? (size_t)gso : (len > 0 ? len : 1);
      if (!r->gskip[i] && gso > 0 && len > (size_t)gso) {
        r->box->st.gro_msgs++;
        r->box->st.gro_segments += (double)((len + (size_t)gso - 1) / (size_t)gso);
      }
    }
    r->g_got = got;
    r->g_m = 0;
    r->g_off = 0;
    if (got < GRO_MSGS) {
      // The queue is drained: split what came and stop.
      may_read = false;
    }
  }
}

// The data pointer of a typed array held by ref, or NULL when its buffer was detached.
static void *held_data(napi_env env, napi_ref ref, size_t *count) {
  napi_value v, ab;
  napi_typedarray_type t;
  void *data = NULL;
  size_t len = 0, off = 0;
  bool det = true;
  if (napi_get_reference_value(env, ref, &v) != napi_ok || v == NULL) return NULL;
  if (napi_get_typedarray_info(env, v, &t, &len, &data, &ab, &off) != napi_ok) return NULL;
  if (napi_is_detached_arraybuffer(env, ab, &det) != napi_ok || det) return NULL;
  *count = len;
  return data;
}

// JS may have detached (transferred) the buffers since the last read: the raw pointers are
// fetched again before every read. false = a buffer is gone or shrank; reading must stop.
static bool refresh_buffers(reader *r) {
  size_t n = 0;
  uint8_t *buf = held_data(r->env, r->buf_ref, &n);
  if (!buf || n < r->slots * r->slot_size) return false;
  int32_t *lens = held_data(r->env, r->lens_ref, &n);
  if (!lens || n < r->slots) return false;
  if (r->addrs_ref) {
    uint8_t *addrs = held_data(r->env, r->addrs_ref, &n);
    if (!addrs || n < r->slots * EP_RAW_LEN) return false;
    r->addrs = addrs;
  }
  if (buf != r->buf && r->iov) {
    for (size_t i = 0; i < r->slots; i++) r->iov[i].iov_base = buf + i * r->slot_size + r->headroom;
  }
  r->buf = buf;
  r->lens = lens;
  return true;
}

// Calls the JS callback with one argument; an exception becomes an uncaught exception.
static void call_js(reader *r, int32_t arg) {
  napi_env env = r->env;
  napi_value cb, self, a, res;
  if (napi_get_reference_value(env, r->cb_ref, &cb) != napi_ok || cb == NULL) return;
  napi_get_reference_value(env, r->this_ref, &self);
  napi_create_int32(env, arg, &a);
  r->in_cb++;
  napi_status s = napi_make_callback(env, r->actx, self, cb, 1, &a, &res);
  r->in_cb--;
  if (s == napi_pending_exception) {
    napi_value e;
    napi_get_and_clear_last_exception(env, &e);
    napi_fatal_exception(env, e);
  }
}

static void on_poll(uv_poll_t *h, int status, int events) {
  (void)events;
  reader *r = (reader *)h->data;
  if (r->closing) return;
  napi_handle_scope scope;
  if (napi_open_handle_scope(r->env, &scope) != napi_ok) return;
  r->box->st.wakeups++;
  if (status < 0) {
    r->box->st.errors++;
    r->box->st.last_errno = -status;
    close_handle(r);
    call_js(r, status);  // libuv codes are -errno on Linux
    release_js(r);
    napi_close_handle_scope(r->env, scope);
    return;
  }
  for (int b = 0;; b++) {
    bool full = false;
    int fatal = 0;
    // Past the batch limit only segments already read and split are delivered: the fd may not
    // wake us for them.
    bool may_read = b < MAX_BATCHES_PER_WAKEUP;
    if (!may_read && !r->pending && r->g_m >= r->g_got) break;
    if (!refresh_buffers(r)) {
      r->box->st.errors++;
      r->box->st.last_errno = EFAULT;
      close_handle(r);
      call_js(r, -EFAULT);
      break;
    }
    size_t n;
    if (r->kind == KIND_TUN) n = r->vnet ? read_tun_vnet(r, &full, &fatal, may_read) : may_read ? read_tun(r, &full, &fatal) : 0;
    else n = r->gro ? read_udp_gro(r, &full, &fatal, may_read) : may_read ? read_udp(r, &full, &fatal) : 0;
    if (n > 0) {
      r->box->st.packets += (double)n;
      r->box->st.batches++;
      call_js(r, (int32_t)n);
      if (r->closing) break;
    }
    if (fatal) {
      close_handle(r);
      call_js(r, -fatal);
      break;
    }
    if (!full) break;
  }
  if (r->closing) release_js(r);  // pollStop ran in the callback, or a fatal error
  napi_close_handle_scope(r->env, scope);
}

static void box_finalize(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  poll_box *b = data;
  if (b->r) {
    b->orphan = true;  // the reader still runs; it frees the box when it closes
    return;
  }
  free(b);
}

static bool opt_flag(napi_env env, napi_value obj, const char *key, bool *out) {
  napi_value v;
  bool present;
  *out = false;
  if (!prop_get(env, obj, key, &v, &present)) return false;
  if (!present) return true;
  char what[32];
  snprintf(what, sizeof what, "rx.%s", key);
  return arg_bool(env, v, what, out);
}

// pollStart(fd, kind: 'tun'|'udp', rx: {buf, slotSize, headroom, slots, lens, addrs?, vnet?, gro?}, callback) -> handle
static napi_value js_poll_start(napi_env env, napi_callback_info info) {
  ARGS(4);
  int32_t fd;
  if (!arg_int32(env, argv[0], "fd", &fd)) return NULL;
  char kind[8];
  if (!arg_string(env, argv[1], "kind", kind, sizeof kind, NULL)) return NULL;
  int k;
  if (strcmp(kind, "tun") == 0) k = KIND_TUN;
  else if (strcmp(kind, "udp") == 0) k = KIND_UDP;
  else return throw_type(env, "kind must be 'tun' or 'udp'");
  napi_valuetype t;
  napi_typeof(env, argv[2], &t);
  if (t != napi_object) return throw_type(env, "rx must be an object");
  napi_typeof(env, argv[3], &t);
  if (t != napi_function) return throw_type(env, "callback must be a function");

  napi_value jbuf, jlens, jaddrs, v;
  bool present;
  uint8_t *buf, *addrs = NULL;
  int32_t *lens;
  size_t buflen, nlens, naddrs = 0;
  uint32_t slot_size, headroom, slots;
  if (!prop_get(env, argv[2], "buf", &jbuf, &present)) return NULL;
  if (!arg_typed(env, jbuf, napi_uint8_array, "rx.buf", (void **)&buf, &buflen)) return NULL;
  if (!prop_get(env, argv[2], "lens", &jlens, &present)) return NULL;
  if (!arg_typed(env, jlens, napi_int32_array, "rx.lens", (void **)&lens, &nlens)) return NULL;
  if (!prop_get(env, argv[2], "slotSize", &v, &present) || !arg_uint32(env, v, "rx.slotSize", &slot_size)) return NULL;
  if (!prop_get(env, argv[2], "headroom", &v, &present) || !arg_uint32(env, v, "rx.headroom", &headroom)) return NULL;
  if (!prop_get(env, argv[2], "slots", &v, &present) || !arg_uint32(env, v, "rx.slots", &slots)) return NULL;
  if (!prop_get(env, argv[2], "addrs", &jaddrs, &present)) return NULL;
  if (k == KIND_UDP) {
    if (!present) return throw_type(env, "rx.addrs is required for kind 'udp'");
    if (!arg_typed(env, jaddrs, napi_uint8_array, "rx.addrs", (void **)&addrs, &naddrs)) return NULL;
  }
  bool vnet = false, gro = false;
  if (k == KIND_TUN && !opt_flag(env, argv[2], "vnet", &vnet)) return NULL;
  if (k == KIND_UDP && !opt_flag(env, argv[2], "gro", &gro)) return NULL;
  if (slots < 1 || slots > MAX_BATCH) return throw_range(env, "rx.slots must be in 1..128");
  if (headroom >= slot_size) return throw_range(env, "rx.headroom must be smaller than rx.slotSize");
  if ((size_t)slot_size * slots > buflen) return throw_range(env, "rx.buf is smaller than slots * slotSize");
  if (nlens < slots) return throw_range(env, "rx.lens is shorter than slots");
  if (k == KIND_UDP && naddrs < (size_t)slots * EP_RAW_LEN) return throw_range(env, "rx.addrs is shorter than slots * 20");

  reader *r = calloc(1, sizeof *r);
  poll_box *box = calloc(1, sizeof *box);
  if (!r || !box) {
    free(r);
    free(box);
    return throw_errno(env, ENOMEM, "calloc", "pollStart", NULL);
  }
  r->env = env;
  r->fd = fd;
  r->kind = k;
  r->buf = buf;
  r->slot_size = slot_size;
  r->headroom = headroom;
  r->slots = slots;
  r->lens = lens;
  r->addrs = addrs;
  r->box = box;
  r->vnet = vnet;
  r->gro = gro;
  box->r = r;
  if (vnet || gro) {
    r->stage = malloc(vnet ? VNET_HDR_LEN + GSO_MAX_PACKET : (size_t)GRO_MSGS * GRO_MSG_BUF);
    if (!r->stage) {
      free(r);
      free(box);
      return throw_errno(env, ENOMEM, "malloc", "pollStart", NULL);
    }
    for (int i = 0; gro && i < GRO_MSGS; i++) {
      r->giov[i].iov_base = r->stage + (size_t)i * GRO_MSG_BUF;
      r->giov[i].iov_len = GRO_MSG_BUF;
      r->gmsgs[i].msg_hdr.msg_name = &r->gnames[i];
      r->gmsgs[i].msg_hdr.msg_iov = &r->giov[i];
      r->gmsgs[i].msg_hdr.msg_iovlen = 1;
      r->gmsgs[i].msg_hdr.msg_control = r->gctrl[i];
    }
  }
  if (k == KIND_UDP) {
    r->msgs = calloc(slots, sizeof *r->msgs);
    r->iov = calloc(slots, sizeof *r->iov);
    r->names = calloc(slots, sizeof *r->names);
    r->ctrl = calloc(slots, CTRL_LEN);
    if (!r->msgs || !r->iov || !r->names || !r->ctrl) {
      free(r->msgs);
      free(r->iov);
      free(r->names);
      free(r->ctrl);
      free(r->stage);
      free(r);
      free(box);
      return throw_errno(env, ENOMEM, "calloc", "pollStart", NULL);
    }
    for (size_t i = 0; i < slots; i++) {
      r->iov[i].iov_base = buf + i * slot_size + headroom;
      r->iov[i].iov_len = slot_size - headroom;
      r->msgs[i].msg_hdr.msg_name = &r->names[i];
      r->msgs[i].msg_hdr.msg_iov = &r->iov[i];
      r->msgs[i].msg_hdr.msg_iovlen = 1;
      r->msgs[i].msg_hdr.msg_control = r->ctrl + i * CTRL_LEN;
    }
  }

  uv_loop_t *loop;
  napi_get_uv_event_loop(env, &loop);
  int e = uv_poll_init(loop, &r->h, fd);
  if (e == 0) {
    r->h.data = r;
    e = uv_poll_start(&r->h, UV_READABLE, on_poll);
    if (e != 0) {
      // The handle is initialized: it must be closed, and on_closed frees r.
      r->box = NULL;
      uv_close((uv_handle_t *)&r->h, on_closed);
      free(box);
      return throw_errno(env, -e, "uv_poll_start", "pollStart", NULL);
    }
  } else {
    free(r->msgs);
    free(r->iov);
    free(r->names);
    free(r->ctrl);
    free(r->stage);
    free(r);
    free(box);
    return throw_errno(env, -e, "uv_poll_init", "pollStart",
                       -e == EBADF ? "the fd is not open" : -e == EPERM ? "this fd cannot be polled (a regular file?)" : NULL);
  }

  napi_value handle, name;
  napi_create_external(env, box, box_finalize, NULL, &handle);
  napi_create_reference(env, jbuf, 1, &r->buf_ref);
  napi_create_reference(env, jlens, 1, &r->lens_ref);
  if (k == KIND_UDP) napi_create_reference(env, jaddrs, 1, &r->addrs_ref);
  napi_create_reference(env, argv[3], 1, &r->cb_ref);
  napi_create_reference(env, argv[2], 1, &r->this_ref);
  napi_create_string_utf8(env, k == KIND_TUN ? "meshd.TunRead" : "meshd.UdpRead", NAPI_AUTO_LENGTH, &name);
  napi_async_init(env, argv[2], name, &r->actx);
  napi_add_env_cleanup_hook(env, env_cleanup, r);
  return handle;
}

static poll_box *get_box(napi_env env, napi_value v) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_external) {
    throw_type(env, "handle must be a value returned by pollStart");
    return NULL;
  }
  void *p;
  napi_get_value_external(env, v, &p);
  return p;
}

// pollStop(handle) -> undefined. Idempotent; safe inside the callback (reading ends after it returns).
static napi_value js_poll_stop(napi_env env, napi_callback_info info) {
  ARGS(1);
  poll_box *b = get_box(env, argv[0]);
  if (!b) return NULL;
  reader *r = b->r;
  if (!r || r->closing) return NULL;
  close_handle(r);
  if (r->in_cb == 0) release_js(r);  // else on_poll releases after the callback returns
  return NULL;
}

// pollRef(handle, ref: boolean) -> undefined. An unref'd reader does not keep the process alive.
static napi_value js_poll_ref(napi_env env, napi_callback_info info) {
  ARGS(2);
  poll_box *b = get_box(env, argv[0]);
  if (!b) return NULL;
  bool ref;
  if (!arg_bool(env, argv[1], "ref", &ref)) return NULL;
  if (b->r && !b->r->closing) {
    if (ref) uv_ref((uv_handle_t *)&b->r->h);
    else uv_unref((uv_handle_t *)&b->r->h);
  }
  return NULL;
}

// pollStats(handle) -> { packets, batches, wakeups, truncated, errors, kernelDrops, lastErrno, active }
static napi_value js_poll_stats(napi_env env, napi_callback_info info) {
  ARGS(1);
  poll_box *b = get_box(env, argv[0]);
  if (!b) return NULL;
  napi_value o, v;
  napi_create_object(env, &o);
#define NUM(key, val)                 \
  napi_create_double(env, (val), &v); \
  napi_set_named_property(env, o, key, v);
  NUM("packets", b->st.packets);
  NUM("batches", b->st.batches);
  NUM("wakeups", b->st.wakeups);
  NUM("truncated", b->st.truncated);
  NUM("errors", b->st.errors);
  NUM("kernelDrops", b->st.kernel_drops);
  NUM("gsoReads", b->st.gso_reads);
  NUM("gsoSegments", b->st.gso_segments);
  NUM("csumCompleted", b->st.csum_done);
  NUM("badGso", b->st.bad_gso);
  NUM("groMessages", b->st.gro_msgs);
  NUM("groSegments", b->st.gro_segments);
  NUM("lastErrno", b->st.last_errno ? -(double)b->st.last_errno : 0);
#undef NUM
  napi_get_boolean(env, b->r != NULL && !b->r->closing, &v);
  napi_set_named_property(env, o, "active", v);
  return o;
}

bool init_poll(napi_env env, napi_value exports) {
  return export_fn(env, exports, "pollStart", js_poll_start) && export_fn(env, exports, "pollStop", js_poll_stop) &&
         export_fn(env, exports, "pollRef", js_poll_ref) && export_fn(env, exports, "pollStats", js_poll_stats);
}
