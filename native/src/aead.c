// ChaCha20-Poly1305 (RFC 8439) for WireGuard transport data through OpenSSL 3 EVP, taken from the
// node executable itself: Node links OpenSSL statically and exports its symbols, so this file is
// compiled against Node's own OpenSSL headers (include/node/openssl) and linked without -lcrypto.
// A load-time check refuses a runtime OpenSSL whose major.minor differs from the headers'.
//
// Keys live in a native table: aeadKey() makes one keyed EVP_CIPHER_CTX per thread that may use it
// (the JS thread and the one crypto worker) and returns a small integer id; aeadFree() frees them
// (EVP_CIPHER_CTX_free cleanses the key schedule). aeadSeal/aeadOpen process a whole batch, in place,
// in one call, described by typed arrays the caller preallocates and reuses: nothing is allocated
// per packet and no N-API object is created per packet.
//
// Counters cross as a Float64Array: the WireGuard core keeps them as JS numbers below 2^53
// (src/wg/replay.ts), which a double holds exactly; C converts to uint64 and writes the nonce as
// 4 zero bytes then the counter little-endian (whitepaper 5.4.6).
//
// Both cores: when a call has at least `parallelMin` packets (aeadParallel), one persistent worker
// thread shares the batch with the calling thread, chunk by chunk, and the call returns when both
// are done (fork-join), so results come back in order.
#include "meshd.h"

#ifdef MESHD_NO_OPENSSL
// Built without Node's OpenSSL headers (native/build.sh): only the reason is exported.
bool init_aead(napi_env env, napi_value exports) {
  napi_value v;
  napi_create_string_utf8(env, "the addon was built without Node's OpenSSL headers (include/node/openssl)", NAPI_AUTO_LENGTH, &v);
  return napi_set_named_property(env, exports, "aeadError", v) == napi_ok;
}
#else

#include <dlfcn.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/opensslv.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAG_LEN 16
#define CHUNK 1024
#define MAX_CHUNKS 256 // at most 262,144 live keys (two per keypair)
#define NTHREADS 2     // context 0: the calling JS thread; context 1: the crypto worker

typedef struct {
  EVP_CIPHER_CTX *ctx[NTHREADS];
  uint32_t key[8]; // the key as ChaCha20's little-endian words, for the direct path (cleansed on free)
  int enc;
  int next_free; // free list link (id), 0 = none
} key_slot;

// Chunks never move once allocated, so a reader needs no lock; only aeadKey/aeadFree take table_mu.
static key_slot *chunks[MAX_CHUNKS];
static int nchunks;
static int free_head; // id of the first free slot, 0 = none
static int live_keys;
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;

static EVP_CIPHER *cipher;     // fetched once per process
static const char *load_error; // why the native AEAD is unavailable, or NULL

static key_slot *slot_of(int id) {
  if (id <= 0) return NULL;
  int i = id - 1;
  int c = i / CHUNK;
  if (c >= nchunks) return NULL;
  key_slot *s = &chunks[c][i % CHUNK];
  return s->ctx[0] != NULL ? s : NULL;
}

// ---- one packet ------------------------------------------------------------------------------

static inline void nonce_of(double counter, uint8_t iv[12]) {
  uint64_t c = (uint64_t)counter;
  memset(iv, 0, 4);
  for (int b = 0; b < 8; b++) iv[4 + b] = (uint8_t)(c >> (8 * b));
}

// ---- the direct path ----------------------------------------------------------------------------
//
// EVP costs more than the cipher for a WireGuard packet: per packet, EVP_CipherInit_ex2 (IV),
// EVP_CTRL_AEAD_SET_TAG and Final each go through OSSL_PARAM arrays located by strcmp, which perf
// showed at ~10% of the data plane's main thread in a netstack download, against ~22% for ChaCha20
// and Poly1305 themselves. The same assembly is reachable without EVP: Node's OpenSSL exports
// ChaCha20_ctr32 and Poly1305_Init/Update/Final (the functions its ChaCha20-Poly1305 provider calls).
// They are internal to OpenSSL, so they are looked up at load time (dlsym) and the EVP path stays
// the fallback when any is missing (a Node linked against a shared libcrypto). RFC 8439 2.8 with
// no AAD: Poly1305 key = ChaCha20 block 0; data from block 1; MAC over ciphertext || pad16 ||
// le64(0) || le64(len). Opening checks the tag before it decrypts.
typedef void (*chacha_fn)(unsigned char *out, const unsigned char *in, size_t len, const unsigned int key[8], const unsigned int ctr[4]);
typedef size_t (*poly_size_fn)(void);
typedef void (*poly_init_fn)(void *st, const unsigned char key[32]);
typedef void (*poly_update_fn)(void *st, const unsigned char *in, size_t len);
typedef void (*poly_final_fn)(void *st, unsigned char mac[16]);
static chacha_fn chacha20_ctr32;
static poly_init_fn poly_init;
static poly_update_fn poly_update;
static poly_final_fn poly_final;
#define POLY_STATE_MAX 1024
static _Thread_local _Alignas(64) unsigned char poly_state[POLY_STATE_MAX];
static atomic_int use_direct; // 1 when the functions were found and not turned off (aeadDirect)
static int direct_found;

static void find_direct(void) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  poly_size_fn size = (poly_size_fn)dlsym(RTLD_DEFAULT, "Poly1305_ctx_size");
  chacha20_ctr32 = (chacha_fn)dlsym(RTLD_DEFAULT, "ChaCha20_ctr32");
  poly_init = (poly_init_fn)dlsym(RTLD_DEFAULT, "Poly1305_Init");
  poly_update = (poly_update_fn)dlsym(RTLD_DEFAULT, "Poly1305_Update");
  poly_final = (poly_final_fn)dlsym(RTLD_DEFAULT, "Poly1305_Final");
  direct_found = size != NULL && chacha20_ctr32 != NULL && poly_init != NULL && poly_update != NULL && poly_final != NULL &&
                 size() <= POLY_STATE_MAX;
  atomic_store(&use_direct, direct_found && getenv("MESHD_AEAD_EVP") == NULL);
#endif
}

// The tag of c[0, len) under the one-time key from block 0 of (key, ctr) into mac.
static void direct_tag(const uint32_t key[8], uint32_t ctr[4], const uint8_t *c, size_t len, uint8_t mac[16]) {
  static const uint8_t zero[16];
  uint8_t block[64] = {0};
  ctr[0] = 0;
  chacha20_ctr32(block, block, 64, key, ctr);
  poly_init(poly_state, block);
  OPENSSL_cleanse(block, sizeof block);
  poly_update(poly_state, c, len);
  if (len % 16) poly_update(poly_state, zero, 16 - len % 16);
  uint8_t lens[16] = {0};
  for (int b = 0; b < 8; b++) lens[8 + b] = (uint8_t)((uint64_t)len >> (8 * b));
  poly_update(poly_state, lens, 16);
  poly_final(poly_state, mac);
}

static inline void ctr_of(double counter, uint32_t ctr[4]) {
  uint64_t c = (uint64_t)counter;
  ctr[0] = 0;
  ctr[1] = 0;
  ctr[2] = (uint32_t)c;
  ctr[3] = (uint32_t)(c >> 32);
}

static int seal_direct(const uint32_t key[8], double counter, uint8_t *p, int len) {
  uint32_t ctr[4];
  ctr_of(counter, ctr);
  ctr[0] = 1;
  if (len > 0) chacha20_ctr32(p, p, (size_t)len, key, ctr);
  direct_tag(key, ctr, p, (size_t)len, p + len);
  return 1;
}

static int open_direct(const uint32_t key[8], double counter, uint8_t *p, int len) {
  if (len < TAG_LEN || !(counter >= 0 && counter < 18446744073709551616.0)) return 0;
  size_t ct = (size_t)len - TAG_LEN;
  uint32_t ctr[4];
  uint8_t mac[16];
  ctr_of(counter, ctr);
  direct_tag(key, ctr, p, ct, mac);
  int ok = CRYPTO_memcmp(mac, p + ct, TAG_LEN) == 0;
  if (!ok) {
    OPENSSL_cleanse(p, ct);
    return 0;
  }
  ctr[0] = 1;
  if (ct > 0) chacha20_ctr32(p, p, ct, key, ctr);
  return 1;
}

// Seals p[0, len) in place and writes the tag at p+len. Returns 1 on success.
static int seal_one(EVP_CIPHER_CTX *ctx, double counter, uint8_t *p, int len) {
  uint8_t iv[12];
  int outl = 0, fl = 0;
  nonce_of(counter, iv);
  if (EVP_CipherInit_ex2(ctx, NULL, NULL, iv, -1, NULL) != 1) return 0;
  if (len > 0 && EVP_CipherUpdate(ctx, p, &outl, p, len) != 1) return 0;
  if (EVP_CipherFinal_ex(ctx, p + outl, &fl) != 1) return 0;
  return EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, p + len) == 1;
}

// Opens p[0, len) in place (the last 16 bytes are the tag). On failure the plaintext area is zeroed.
static int open_one(EVP_CIPHER_CTX *ctx, double counter, uint8_t *p, int len) {
  if (len < TAG_LEN || !(counter >= 0 && counter < 18446744073709551616.0)) return 0;
  int ct = len - TAG_LEN;
  uint8_t iv[12];
  int outl = 0, fl = 0;
  nonce_of(counter, iv);
  int ok = EVP_CipherInit_ex2(ctx, NULL, NULL, iv, -1, NULL) == 1 &&
           EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, p + ct) == 1 &&
           (ct == 0 || EVP_CipherUpdate(ctx, p, &outl, p, ct) == 1) && EVP_CipherFinal_ex(ctx, p + outl, &fl) == 1;
  if (!ok) OPENSSL_cleanse(p, (size_t)ct);
  return ok;
}

// ---- a batch ---------------------------------------------------------------------------------

typedef struct {
  int enc;
  uint8_t *buf;
  const int32_t *ids;
  const double *ctrs;
  const int32_t *offs;
  const int32_t *lens;
  uint8_t *ok; // open: 1 authenticated, 0 rejected (and zeroed)
} batch;

// Runs packets [from, to) of b with thread t's contexts; returns how many succeeded.
static uint32_t run_range(const batch *b, uint32_t from, uint32_t to, int t) {
  uint32_t n = 0;
  int direct = atomic_load_explicit(&use_direct, memory_order_relaxed);
  for (uint32_t i = from; i < to; i++) {
    key_slot *s = slot_of(b->ids[i]);
    uint8_t *p = b->buf + b->offs[i];
    int r = direct ? (b->enc ? seal_direct(s->key, b->ctrs[i], p, b->lens[i]) : open_direct(s->key, b->ctrs[i], p, b->lens[i]))
                   : (b->enc ? seal_one(s->ctx[t], b->ctrs[i], p, b->lens[i]) : open_one(s->ctx[t], b->ctrs[i], p, b->lens[i]));
    if (b->ok) b->ok[i] = (uint8_t)r;
    n += (uint32_t)r;
  }
  return n;
}

// ---- the crypto worker (fork-join with shared chunks) -----------------------------------------
//
// A call of at least parallel_min jobs is posted to the worker, and both threads then claim chunks
// of CHUNK_JOBS jobs from one atomic index until none are left. When the calling thread runs out of
// chunks it tries to cancel the post: if the worker has not taken it yet (not scheduled: the other
// core is busy), the call returns at once, having done everything itself; otherwise it waits for
// the worker's current chunk. So the split never waits for a worker that is not running, and order
// and results are exactly as on one thread (each job has its own slot).

#define CHUNK_JOBS 8

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER; // held by the JS thread using the worker
static pthread_mutex_t wk_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wk_cv = PTHREAD_COND_INITIALIZER;
static pthread_t wk_thread;
static int wk_started;
enum { WK_IDLE, WK_POSTED, WK_TAKEN, WK_DONE };
static atomic_int wk_state;
static batch wk_batch;
static atomic_uint wk_next; // next job to claim
static uint32_t wk_end, wk_done;
static uint32_t parallel_min; // 0 = never use the worker
static atomic_ulong stat_parallel, stat_serial, stat_worker_jobs;

// Claims and runs chunks until none are left; returns how many succeeded (and jobs done in *jobs).
static uint32_t run_chunks(const batch *b, uint32_t end, int t, uint32_t *jobs) {
  uint32_t n = 0, j = 0;
  for (;;) {
    uint32_t i = atomic_fetch_add_explicit(&wk_next, CHUNK_JOBS, memory_order_relaxed);
    if (i >= end) break;
    uint32_t e = i + CHUNK_JOBS < end ? i + CHUNK_JOBS : end;
    n += run_range(b, i, e, t);
    j += e - i;
  }
  *jobs = j;
  return n;
}

static void *worker_main(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&wk_mu);
    for (;;) {
      int want = WK_POSTED;
      if (atomic_compare_exchange_strong(&wk_state, &want, WK_TAKEN)) break;
      pthread_cond_wait(&wk_cv, &wk_mu);
    }
    pthread_mutex_unlock(&wk_mu);
    uint32_t jobs = 0;
    wk_done = run_chunks(&wk_batch, wk_end, 1, &jobs);
    atomic_fetch_add(&stat_worker_jobs, jobs);
    atomic_store_explicit(&wk_state, WK_DONE, memory_order_release);
  }
  return NULL;
}

// Processes jobs [start, end) of the batch; returns how many succeeded.
static uint32_t run_batch(const batch *b, uint32_t start, uint32_t end) {
  uint32_t count = end - start;
  if (parallel_min == 0 || count < parallel_min || pthread_mutex_trylock(&pool_mu) != 0) {
    atomic_fetch_add(&stat_serial, 1);
    return run_range(b, start, end, 0);
  }
  if (!wk_started) {
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    int err = pthread_create(&wk_thread, &at, worker_main, NULL);
    pthread_attr_destroy(&at);
    if (err != 0) {
      pthread_mutex_unlock(&pool_mu);
      atomic_fetch_add(&stat_serial, 1);
      return run_range(b, start, end, 0);
    }
    wk_started = 1;
  }
  atomic_fetch_add(&stat_parallel, 1);
  wk_batch = *b;
  wk_end = end;
  wk_done = 0;
  atomic_store_explicit(&wk_next, start, memory_order_relaxed);
  pthread_mutex_lock(&wk_mu);
  atomic_store_explicit(&wk_state, WK_POSTED, memory_order_release);
  pthread_cond_signal(&wk_cv);
  pthread_mutex_unlock(&wk_mu);
  uint32_t jobs;
  uint32_t n = run_chunks(b, end, 0, &jobs);
  int want = WK_POSTED;
  if (!atomic_compare_exchange_strong(&wk_state, &want, WK_IDLE)) {
    // The worker took the post: wait for its last chunk.
    while (atomic_load_explicit(&wk_state, memory_order_acquire) != WK_DONE) sched_yield();
    n += wk_done;
    atomic_store(&wk_state, WK_IDLE);
  }
  pthread_mutex_unlock(&pool_mu);
  return n;
}

// ---- JS functions ----------------------------------------------------------------------------

static napi_value unavailable(napi_env env) {
  char msg[256];
  snprintf(msg, sizeof msg, "native AEAD unavailable: %s", load_error ? load_error : "not initialised");
  napi_throw_error(env, "ERR_MESHD_NATIVE_AEAD", msg);
  return NULL;
}

// aeadKey(key: Uint8Array(32), encrypt: boolean): number -- a keyed context per thread; returns its id.
static napi_value js_key(napi_env env, napi_callback_info info) {
  ARGS(2);
  if (cipher == NULL) return unavailable(env);
  void *kp;
  size_t klen;
  bool enc;
  if (!arg_typed(env, argv[0], napi_uint8_array, "key", &kp, &klen)) return NULL;
  if (!arg_bool(env, argv[1], "encrypt", &enc)) return NULL;
  if (klen != 32) return throw_range(env, "key must be 32 bytes");
  EVP_CIPHER_CTX *ctx[NTHREADS] = {0};
  for (int t = 0; t < NTHREADS; t++) {
    ctx[t] = EVP_CIPHER_CTX_new();
    if (ctx[t] == NULL || EVP_CipherInit_ex2(ctx[t], cipher, kp, NULL, enc ? 1 : 0, NULL) != 1) {
      for (int u = 0; u <= t; u++) EVP_CIPHER_CTX_free(ctx[u]);
      napi_throw_error(env, "ERR_MESHD_NATIVE_AEAD", "aeadKey: OpenSSL could not key a ChaCha20-Poly1305 context");
      return NULL;
    }
  }
  pthread_mutex_lock(&table_mu);
  if (free_head == 0) {
    if (nchunks == MAX_CHUNKS || (chunks[nchunks] = calloc(CHUNK, sizeof(key_slot))) == NULL) {
      pthread_mutex_unlock(&table_mu);
      for (int t = 0; t < NTHREADS; t++) EVP_CIPHER_CTX_free(ctx[t]);
      return throw_range(env, "aeadKey: too many live keys (free released keypairs with aeadFree)");
    }
    int base = nchunks * CHUNK;
    for (int i = CHUNK - 1; i >= 0; i--) {
      chunks[nchunks][i].next_free = free_head;
      free_head = base + i + 1;
    }
    nchunks++;
  }
  int id = free_head;
  key_slot *s = &chunks[(id - 1) / CHUNK][(id - 1) % CHUNK];
  free_head = s->next_free;
  s->next_free = 0;
  s->enc = enc;
  memcpy(s->key, kp, 32); // little-endian words (find_direct checks the byte order)
  for (int t = 0; t < NTHREADS; t++) s->ctx[t] = ctx[t];
  live_keys++;
  pthread_mutex_unlock(&table_mu);
  napi_value v;
  napi_create_int32(env, id, &v);
  return v;
}

// aeadFree(id): frees the contexts (OpenSSL cleanses the key). Unknown or already freed ids are ignored.
static napi_value js_free(napi_env env, napi_callback_info info) {
  ARGS(1);
  int32_t id;
  if (!arg_int32(env, argv[0], "id", &id)) return NULL;
  pthread_mutex_lock(&table_mu);
  key_slot *s = slot_of(id);
  if (s != NULL) {
    for (int t = 0; t < NTHREADS; t++) {
      EVP_CIPHER_CTX_free(s->ctx[t]);
      s->ctx[t] = NULL;
    }
    OPENSSL_cleanse(s->key, sizeof s->key);
    s->next_free = free_head;
    free_head = id;
    live_keys--;
  }
  pthread_mutex_unlock(&table_mu);
  return NULL;
}

// Shared argument parsing of aeadSeal/aeadOpen:
//   (buf, ids: Int32Array, ctrs: Float64Array, offs: Int32Array, lens: Int32Array, [ok: Uint8Array,] start, end)
static bool parse_batch(napi_env env, napi_value *argv, int enc, batch *b, uint32_t *start, uint32_t *end) {
  void *buf, *ids, *ctrs, *offs, *lens, *ok = NULL;
  size_t buflen, nids, nctrs, noffs, nlens, nok = 0;
  if (!arg_typed(env, argv[0], napi_uint8_array, "buf", &buf, &buflen)) return false;
  if (!arg_typed(env, argv[1], napi_int32_array, "ids", &ids, &nids)) return false;
  bool isf = false;
  napi_typedarray_type ft;
  napi_is_typedarray(env, argv[2], &isf);
  if (isf) napi_get_typedarray_info(env, argv[2], &ft, &nctrs, &ctrs, NULL, NULL);
  if (!isf || ft != napi_float64_array) {
    throw_type(env, "counters must be a Float64Array");
    return false;
  }
  if (!arg_typed(env, argv[3], napi_int32_array, "offsets", &offs, &noffs)) return false;
  if (!arg_typed(env, argv[4], napi_int32_array, "lens", &lens, &nlens)) return false;
  int ci = 5;
  if (!enc) {
    if (!arg_typed(env, argv[5], napi_uint8_array, "ok", &ok, &nok)) return false;
    ci = 6;
  }
  if (!arg_uint32(env, argv[ci], "start", start) || !arg_uint32(env, argv[ci + 1], "end", end)) return false;
  uint32_t n = *end;
  if (*start > n || n > nids || n > nctrs || n > noffs || n > nlens || (!enc && n > nok)) {
    throw_range(env, "start..end is not a range inside the arrays");
    return false;
  }
  const int32_t *o = offs, *l = lens, *k = ids;
  const double *c = ctrs;
  for (uint32_t i = *start; i < n; i++) {
    int64_t end = (int64_t)o[i] + l[i] + (enc ? TAG_LEN : 0);
    if (o[i] < 0 || l[i] < 0 || end > (int64_t)buflen) {
      throw_range(env, "a packet lies outside buf (sealing needs 16 bytes after it for the tag)");
      return false;
    }
    key_slot *s = slot_of(k[i]);
    if (s == NULL || s->enc != enc) {
      throw_range(env, enc ? "ids holds an id that is not a live sealing key" : "ids holds an id that is not a live opening key");
      return false;
    }
    if (enc && !(c[i] >= 0 && c[i] < 18446744073709551616.0)) {
      throw_range(env, "a counter is not in 0..2^64");
      return false;
    }
  }
  b->enc = enc;
  b->buf = buf;
  b->ids = k;
  b->ctrs = c;
  b->offs = o;
  b->lens = l;
  b->ok = ok;
  return true;
}

// aeadSeal(buf, ids, ctrs, offs, lens, start, end): seals buf[offs[i], offs[i]+lens[i]) in place and
// writes the tag after it, for start <= i < end, under key ids[i] with nonce counter ctrs[i].
// Returns end - start.
static napi_value js_seal(napi_env env, napi_callback_info info) {
  ARGS(7);
  if (cipher == NULL) return unavailable(env);
  batch b;
  uint32_t start, end;
  if (!parse_batch(env, argv, 1, &b, &start, &end)) return NULL;
  uint32_t n = run_batch(&b, start, end);
  if (n != end - start) {
    napi_throw_error(env, "ERR_MESHD_NATIVE_AEAD", "aeadSeal: OpenSSL failed to seal a packet");
    return NULL;
  }
  napi_value v;
  napi_create_uint32(env, n, &v);
  return v;
}

// aeadOpen(buf, ids, ctrs, offs, lens, ok, start, end): opens buf[offs[i], offs[i]+lens[i]) in place
// (tag last) for start <= i < end; ok[i] = 1 when it authenticated, else 0 and the plaintext area is
// zeroed. Returns how many authenticated.
static napi_value js_open(napi_env env, napi_callback_info info) {
  ARGS(8);
  if (cipher == NULL) return unavailable(env);
  batch b;
  uint32_t start, end;
  if (!parse_batch(env, argv, 0, &b, &start, &end)) return NULL;
  uint32_t n = run_batch(&b, start, end);
  napi_value v;
  napi_create_uint32(env, n, &v);
  return v;
}

// aeadParallel(minBatch): batches of at least minBatch packets are split with the worker thread;
// 0 turns the worker off. Returns the previous value.
static napi_value js_parallel(napi_env env, napi_callback_info info) {
  ARGS(1);
  uint32_t m;
  if (!arg_uint32(env, argv[0], "minBatch", &m)) return NULL;
  napi_value v;
  napi_create_uint32(env, parallel_min, &v);
  parallel_min = m == 1 ? 2 : m;
  return v;
}

// aeadDirect(on?: boolean): whether the direct path (ChaCha20_ctr32 + Poly1305, no EVP) is in use;
// on = false selects EVP, true the direct path where it was found. Returns the previous state.
static napi_value js_direct(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  napi_value v;
  napi_get_boolean(env, atomic_load(&use_direct) != 0, &v);
  if (argc >= 1) {
    bool on;
    if (!arg_bool(env, argv[0], "on", &on)) return NULL;
    atomic_store(&use_direct, on && direct_found);
  }
  return v;
}

// aeadStats(): { liveKeys, parallelBatches, serialBatches, workerJobs }.
static napi_value js_stats(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o, v;
  napi_create_object(env, &o);
  napi_create_int32(env, live_keys, &v);
  napi_set_named_property(env, o, "liveKeys", v);
  napi_create_double(env, (double)atomic_load(&stat_parallel), &v);
  napi_set_named_property(env, o, "parallelBatches", v);
  napi_create_double(env, (double)atomic_load(&stat_serial), &v);
  napi_set_named_property(env, o, "serialBatches", v);
  napi_create_double(env, (double)atomic_load(&stat_worker_jobs), &v);
  napi_set_named_property(env, o, "workerJobs", v);
  return o;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error_buf[200];

static void load_once(void) {
  unsigned long rt = OpenSSL_version_num();
  unsigned long ct = OPENSSL_VERSION_NUMBER;
  // 0xMNN00PP0L: major in bits 28-31, minor in 20-27.
  if ((rt >> 20) != (ct >> 20)) {
    snprintf(load_error_buf, sizeof load_error_buf,
             "Node's OpenSSL is %lu.%lu but the addon was built against %lu.%lu headers: run npm run build:native",
             rt >> 28, (rt >> 20) & 0xff, ct >> 28, (ct >> 20) & 0xff);
    load_error = load_error_buf;
    return;
  }
  cipher = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
  if (cipher == NULL) load_error = "OpenSSL has no ChaCha20-Poly1305 (EVP_CIPHER_fetch failed)";
  else find_direct();
}

bool init_aead(napi_env env, napi_value exports) {
  pthread_once(&once, load_once);
  napi_value v;
  if (load_error != NULL) napi_create_string_utf8(env, load_error, NAPI_AUTO_LENGTH, &v);
  else napi_get_null(env, &v);
  if (napi_set_named_property(env, exports, "aeadError", v) != napi_ok) return false;
  napi_create_string_utf8(env, OpenSSL_version(OPENSSL_VERSION), NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, exports, "aeadOpenssl", v);
  return export_fn(env, exports, "aeadKey", js_key) && export_fn(env, exports, "aeadFree", js_free) &&
         export_fn(env, exports, "aeadSeal", js_seal) && export_fn(env, exports, "aeadOpen", js_open) &&
         export_fn(env, exports, "aeadParallel", js_parallel) && export_fn(env, exports, "aeadStats", js_stats) &&
         export_fn(env, exports, "aeadDirect", js_direct);
}

#endif // MESHD_NO_OPENSSL
