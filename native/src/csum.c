// The Internet checksum (RFC 1071) over a span of a typed array, for the userspace TCP/IP stack:
// verifying each received segment and filling in each sent one is ~15% of the netstack worker's
// CPU in JavaScript (~400 ns per 1240-byte segment); here ~150 ns including the call.
#include "meshd.h"

#include <stdint.h>
#include <string.h>

// One's-complement sum of p[0, len) as little-endian 16-bit words, folded to 16 bits. RFC 1071
// 2(B): byte-order independent, so byte-swapping the result gives the big-endian (network) sum.
static uint32_t sum_le(const uint8_t *p, size_t len) {
  uint64_t acc = 0;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    acc += (w & 0xffffffffu) + (w >> 32);
  }
  for (; i + 2 <= len; i += 2) {
    uint16_t h;
    memcpy(&h, p + i, 2);
    acc += h;
  }
  if (i < len) acc += p[i]; // the odd last byte is the high byte of a network-order word
  while (acc >> 16) acc = (acc & 0xffff) + (acc >> 16);
  return (uint32_t)acc;
}

// sum16(buf: Uint8Array, off, len, sum) -> sum + the network-order one's-complement sum of
// buf[off, off+len), folded to 16 bits (the caller folds the total, as src/netstack/ip.ts sum16).
static napi_value js_sum16(napi_env env, napi_callback_info info) {
  ARGS(4);
  napi_typedarray_type t;
  size_t n = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, argv[0], &t, &n, &data, NULL, NULL) != napi_ok || t != napi_uint8_array) {
    return throw_type(env, "sum16: buf must be a Uint8Array");
  }
  uint32_t off, len;
  double sum;
  if (!arg_uint32(env, argv[1], "off", &off) || !arg_uint32(env, argv[2], "len", &len)) return NULL;
  if (napi_get_value_double(env, argv[3], &sum) != napi_ok) return throw_type(env, "sum16: sum must be a number");
  if ((uint64_t)off + len > n || (data == NULL && len > 0)) return throw_range(env, "sum16: off + len lies past the end of buf");
  uint32_t s = sum_le((const uint8_t *)data + off, len);
  s = ((s & 0xff) << 8) | (s >> 8);
  napi_value v;
  napi_create_double(env, sum + s, &v);
  return v;
}

// copyBatch(src: Uint8Array, srcOffs: Int32Array, dst: Uint8Array, dstOffs: Int32Array, lens: Int32Array, n)
// copies src[srcOffs[i], +lens[i]) to dst[dstOffs[i], ...) for i < n, every span checked first; returns n.
// For the data plane's copy of decrypted packets into the ring to the netstack worker: Node 20's
// Buffer.copy from an offset makes a Uint8Array per call (perf: ~9% of the main thread's samples in
// a download with the memmove), this is one call per batch and no object.
static napi_value js_copy_batch(napi_env env, napi_callback_info info) {
  ARGS(6);
  void *src, *so, *dst, *dofs, *ls;
  size_t ns, nso, nd, ndo, nl;
  uint32_t n;
  if (!arg_typed(env, argv[0], napi_uint8_array, "src", &src, &ns) || !arg_typed(env, argv[1], napi_int32_array, "srcOffs", &so, &nso) ||
      !arg_typed(env, argv[2], napi_uint8_array, "dst", &dst, &nd) || !arg_typed(env, argv[3], napi_int32_array, "dstOffs", &dofs, &ndo) ||
      !arg_typed(env, argv[4], napi_int32_array, "lens", &ls, &nl) || !arg_uint32(env, argv[5], "n", &n)) {
    return NULL;
  }
  if (n > nso || n > ndo || n > nl) return throw_range(env, "copyBatch: n is past the end of the offset arrays");
  const int32_t *sof = so, *dof = dofs, *len = ls;
  for (uint32_t i = 0; i < n; i++) {
    if (sof[i] < 0 || dof[i] < 0 || len[i] < 0 || (uint64_t)sof[i] + (uint64_t)len[i] > ns || (uint64_t)dof[i] + (uint64_t)len[i] > nd) {
      return throw_range(env, "copyBatch: a span lies outside its buffer");
    }
  }
  for (uint32_t i = 0; i < n; i++) memcpy((uint8_t *)dst + dof[i], (const uint8_t *)src + sof[i], (size_t)len[i]);
  napi_value v;
  napi_create_uint32(env, n, &v);
  return v;
}

bool init_csum(napi_env env, napi_value exports) {
  return export_fn(env, exports, "sum16", js_sum16) && export_fn(env, exports, "copyBatch", js_copy_batch);
}
