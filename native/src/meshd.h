// Shared helpers for the meshd N-API addon: errors with errno codes and argument checks.
// The ABI every exported function offers is written down in native/README.md.
#ifndef MESHD_H
#define MESHD_H

#define _GNU_SOURCE
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Bytes per endpoint in address arrays (src/net/endpoint.ts ENDPOINT_RAW_LEN):
//   [0..16) IPv6 or IPv4-mapped IPv6, [16..18) port big-endian, [18] family 4|6, [19] 0.
#define EP_RAW_LEN 20

// Most messages handed to sendmmsg/recvmmsg in one syscall (wireguard-go's IdealBatchSize).
#define MAX_BATCH 128

// Throws an Error with code = errno name (e.g. "ENOENT"), errno = -err (Node's convention),
// syscall, and message "<ctx>: <advice>" where advice says what to do; returns NULL.
napi_value throw_errno(napi_env env, int err, const char *syscall, const char *ctx, const char *advice);
// Throws a TypeError (code ERR_INVALID_ARG_TYPE) or RangeError (ERR_OUT_OF_RANGE); returns NULL.
napi_value throw_type(napi_env env, const char *msg);
napi_value throw_range(napi_env env, const char *msg);

// Argument readers: on a wrong type they throw (TypeError naming `what`) and return false.
bool arg_int32(napi_env env, napi_value v, const char *what, int32_t *out);
bool arg_uint32(napi_env env, napi_value v, const char *what, uint32_t *out);
bool arg_bool(napi_env env, napi_value v, const char *what, bool *out);
// Copies a string into buf (size bytes incl. NUL); throws RangeError when it does not fit.
bool arg_string(napi_env env, napi_value v, const char *what, char *buf, size_t size, size_t *len);
// A typed array of the given type: data pointer and element count. Detached buffers are refused.
bool arg_typed(napi_env env, napi_value v, napi_typedarray_type type, const char *what, void **data, size_t *count);
// An optional object property: *present = false when absent or undefined.
bool prop_get(napi_env env, napi_value obj, const char *key, napi_value *out, bool *present);

// Fetches exactly n arguments (missing ones are undefined).
#define ARGS(n)                                                                      \
  size_t argc = (n);                                                                 \
  napi_value argv[(n) > 0 ? (n) : 1];                                                \
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;

// Checks that packets [offs[i], offs[i]+lens[i]) for i < count lie inside a buffer of buflen bytes;
// throws RangeError otherwise.
bool check_slices(napi_env env, size_t buflen, const int32_t *offs, size_t noffs, const int32_t *lens, size_t nlens,
                  uint32_t count);

struct sockaddr;
// Writes a received source address in raw form (20 bytes); IPv4 and v4-mapped IPv6 give family 4.
void sockaddr_to_raw(const struct sockaddr *sa, uint8_t *raw);

// Backpressure when a TUN or socket returns EAGAIN/ENOBUFS on a batch: wait for it to drain
// (poll POLLOUT up to BP_WAIT_MS, or sleep BP_NOBUFS_SLEEP_US for ENOBUFS), charging the time to
// *used_ns. Returns false, without waiting, once *used_ns reached BP_BUDGET_MS: drop then.
#define BP_WAIT_MS 2
#define BP_NOBUFS_SLEEP_US 200
#define BP_BUDGET_MS 20
bool bp_wait(int fd, int err, int64_t *used_ns);

// Per-area registration, called from the module init in addon.c.
bool init_tun(napi_env env, napi_value exports);
bool init_udp(napi_env env, napi_value exports);
bool init_poll(napi_env env, napi_value exports);

// Adds a function property to exports.
bool export_fn(napi_env env, napi_value exports, const char *name, napi_callback fn);

#endif
