// Module entry of the meshd N-API addon, plus the error and argument helpers declared in meshd.h
// and the generic close(fd).
#include "meshd.h"

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

napi_value throw_errno(napi_env env, int err, const char *syscall, const char *ctx, const char *advice) {
  const char *name = strerrorname_np(err);
  char code[32];
  if (name) snprintf(code, sizeof code, "%s", name);
  else snprintf(code, sizeof code, "E%d", err);
  char msg[512];
  if (advice && advice[0]) snprintf(msg, sizeof msg, "%s: %s (%s from %s)", ctx, advice, code, syscall);
  else snprintf(msg, sizeof msg, "%s: %s (%s from %s)", ctx, strerror(err), code, syscall);
  napi_value jcode, jmsg, e, jerrno, jsys;
  if (napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &jcode) != napi_ok) return NULL;
  if (napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &jmsg) != napi_ok) return NULL;
  if (napi_create_error(env, jcode, jmsg, &e) != napi_ok) return NULL;
  napi_create_int32(env, -err, &jerrno);
  napi_set_named_property(env, e, "errno", jerrno);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &jsys);
  napi_set_named_property(env, e, "syscall", jsys);
  napi_throw(env, e);
  return NULL;
}

napi_value throw_type(napi_env env, const char *msg) {
  napi_throw_type_error(env, "ERR_INVALID_ARG_TYPE", msg);
  return NULL;
}

napi_value throw_range(napi_env env, const char *msg) {
  napi_throw_range_error(env, "ERR_OUT_OF_RANGE", msg);
  return NULL;
}

static bool want(napi_env env, napi_value v, napi_valuetype t, const char *what, const char *tname) {
  napi_valuetype got;
  if (napi_typeof(env, v, &got) != napi_ok || got != t) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a %s", what, tname);
    throw_type(env, msg);
    return false;
  }
  return true;
}

bool arg_int32(napi_env env, napi_value v, const char *what, int32_t *out) {
  if (!want(env, v, napi_number, what, "number")) return false;
  double d;
  napi_get_value_double(env, v, &d);
  if (!(d >= INT32_MIN && d <= INT32_MAX) || d != (double)(int32_t)d) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a 32-bit integer", what);
    throw_range(env, msg);
    return false;
  }
  *out = (int32_t)d;
  return true;
}

bool arg_uint32(napi_env env, napi_value v, const char *what, uint32_t *out) {
  if (!want(env, v, napi_number, what, "number")) return false;
  double d;
  napi_get_value_double(env, v, &d);
  if (!(d >= 0 && d <= UINT32_MAX) || d != (double)(uint32_t)d) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be an unsigned 32-bit integer", what);
    throw_range(env, msg);
    return false;
  }
  *out = (uint32_t)d;
  return true;
}

bool arg_bool(napi_env env, napi_value v, const char *what, bool *out) {
  if (!want(env, v, napi_boolean, what, "boolean")) return false;
  napi_get_value_bool(env, v, out);
  return true;
}

bool arg_string(napi_env env, napi_value v, const char *what, char *buf, size_t size, size_t *len) {
  if (!want(env, v, napi_string, what, "string")) return false;
  size_t need;
  napi_get_value_string_utf8(env, v, NULL, 0, &need);
  if (need + 1 > size) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s is too long (%zu bytes, at most %zu)", what, need, size - 1);
    throw_range(env, msg);
    return false;
  }
  napi_get_value_string_utf8(env, v, buf, size, len);
  return true;
}

static const char *typed_name(napi_typedarray_type t) {
  switch (t) {
    case napi_uint8_array: return "Uint8Array";
    case napi_int32_array: return "Int32Array";
    default: return "typed array";
  }
}

bool arg_typed(napi_env env, napi_value v, napi_typedarray_type type, const char *what, void **data, size_t *count) {
  bool is = false;
  napi_is_typedarray(env, v, &is);
  napi_typedarray_type got;
  size_t n = 0;
  void *p = NULL;
  if (is) napi_get_typedarray_info(env, v, &got, &n, &p, NULL, NULL);
  if (!is || got != type) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s must be a %s", what, typed_name(type));
    throw_type(env, msg);
    return false;
  }
  if (p == NULL && n > 0) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s has a detached buffer", what);
    throw_type(env, msg);
    return false;
  }
  *data = p;
  *count = n;
  return true;
}

bool prop_get(napi_env env, napi_value obj, const char *key, napi_value *out, bool *present) {
  napi_value v;
  if (napi_get_named_property(env, obj, key, &v) != napi_ok) return false;
  napi_valuetype t;
  napi_typeof(env, v, &t);
  *present = t != napi_undefined;
  *out = v;
  return true;
}

bool export_fn(napi_env env, napi_value exports, const char *name, napi_callback fn) {
  napi_value f;
  if (napi_create_function(env, name, NAPI_AUTO_LENGTH, fn, NULL, &f) != napi_ok) return false;
  return napi_set_named_property(env, exports, name, f) == napi_ok;
}

// close(fd): closes any fd this addon opened. Callers stop polling it first.
static napi_value js_close(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (!arg_int32(env, argv[0], "fd", &fd)) return NULL;
  if (close(fd) < 0 && errno != EINTR) {
    return throw_errno(env, errno, "close", "close", errno == EBADF ? "the fd is not open: it was closed already" : NULL);
  }
  return NULL;
}

// dupFd(fd) -> a new close-on-exec fd for the same open socket (F_DUPFD_CLOEXEC). Lets several
// event-loop handles watch one listening socket: libuv accepts one connection per readiness event
// and handle, so N handles accept up to N connections per loop iteration.
static napi_value js_dup_fd(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t fd;
  if (!arg_int32(env, argv[0], "fd", &fd)) return NULL;
  int r = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r < 0) return throw_errno(env, errno, "fcntl", "dupFd", NULL);
  napi_value v;
  napi_create_int32(env, r, &v);
  return v;
}

// mallocInfo() -> { arena, mmap, inUse, free, topPad }: glibc's mallinfo2() in bytes (all arenas):
// heap obtained with brk/mmap'd arenas, large chunks mmap'd on their own, bytes allocated, bytes free
// inside the arenas, and the releasable top of the main arena. For the agent's memory metrics.
static napi_value js_malloc_info(napi_env env, napi_callback_info info) {
  (void)info;
  struct mallinfo2 m = mallinfo2();
  napi_value o, v;
  napi_create_object(env, &o);
  napi_create_double(env, (double)m.arena, &v);
  napi_set_named_property(env, o, "arena", v);
  napi_create_double(env, (double)m.hblkhd, &v);
  napi_set_named_property(env, o, "mmap", v);
  napi_create_double(env, (double)m.uordblks, &v);
  napi_set_named_property(env, o, "inUse", v);
  napi_create_double(env, (double)m.fordblks, &v);
  napi_set_named_property(env, o, "free", v);
  napi_create_double(env, (double)m.keepcost, &v);
  napi_set_named_property(env, o, "topPad", v);
  return o;
}

// mallocTrim() -> boolean: glibc's malloc_trim(0): gives free pages inside every arena back to the
// kernel (MADV_DONTNEED), not only the top of the main heap; true when something was released.
static napi_value js_malloc_trim(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value v;
  napi_get_boolean(env, malloc_trim(0) != 0, &v);
  return v;
}

bool init_aead(napi_env env, napi_value exports); // aead.c
bool init_hscrypto(napi_env env, napi_value exports); // hscrypto.c
bool init_sock(napi_env env, napi_value exports); // sock.c
bool init_csum(napi_env env, napi_value exports); // csum.c

static napi_value init(napi_env env, napi_value exports) {
  if (!export_fn(env, exports, "close", js_close)) return NULL;
  if (!export_fn(env, exports, "dupFd", js_dup_fd)) return NULL;
  if (!export_fn(env, exports, "mallocInfo", js_malloc_info) || !export_fn(env, exports, "mallocTrim", js_malloc_trim)) return NULL;
  if (!init_tun(env, exports) || !init_udp(env, exports) || !init_poll(env, exports)) return NULL;
  if (!init_aead(env, exports) || !init_hscrypto(env, exports)) return NULL;
  if (!init_sock(env, exports) || !init_csum(env, exports)) return NULL;
  napi_value v;
  napi_create_uint32(env, 3, &v);  // native/README.md: bump on any change of the contract
  napi_set_named_property(env, exports, "abiVersion", v);
  napi_create_uint32(env, EP_RAW_LEN, &v);
  napi_set_named_property(env, exports, "endpointRawLen", v);
  napi_create_uint32(env, MAX_BATCH, &v);
  napi_set_named_property(env, exports, "maxBatch", v);
  return exports;
}

NAPI_MODULE(meshd_native, init)
