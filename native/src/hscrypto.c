// Handshake primitives through Node's own OpenSSL (as aead.c; linked without -lcrypto): X25519 on
// raw keys kept as EVP_PKEY objects, and BLAKE2s keyed MAC / HMAC-BLAKE2s-256 through EVP_MAC. The
// WireGuard handshake (src/wg/noise.ts) stays in TypeScript; src/crypto/x25519.ts and blake2s.ts
// wrap these, and the tests check them against @noble and the RFC 7748 / RFC 7693 vectors.
//
// Why: through node:crypto one X25519 costs a JWK parse, a KeyObject and an EVP_PKEY per call, and a
// keyed BLAKE2s (no node:crypto API) ran on @noble; under load that made a responder answer tens of
// handshakes per second. Importing a raw private key computes its public key (one scalar
// multiplication), so a key is imported once and kept: x25519Key() returns an external that owns the
// EVP_PKEY (freed when the external is collected) and x25519Derive() reuses it.
//
// All calls run on the calling JS thread. The two EVP_MAC contexts (one pair per thread) are kept and
// re-keyed per call.
#include "meshd.h"

#ifdef MESHD_NO_OPENSSL
bool init_hscrypto(napi_env env, napi_value exports) {
  (void)env; (void)exports;
  return true;  // nothing exported: src/crypto falls back to node:crypto / @noble
}
#else

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <string.h>

// Contexts per thread: each Node worker that loads the addon gets its own.
static _Thread_local EVP_MAC *mac_blake2s, *mac_hmac;
static _Thread_local EVP_MAC_CTX *ctx_blake2s, *ctx_hmac;

static bool u8(napi_env env, napi_value v, const char *what, size_t want_min, size_t want_max, uint8_t **p, size_t *n) {
  void *d;
  if (!arg_typed(env, v, napi_uint8_array, what, &d, n)) return false;
  if (*n < want_min || *n > want_max) {
    char msg[120];
    snprintf(msg, sizeof msg, "%s must be %zu..%zu bytes, got %zu", what, want_min, want_max, *n);
    throw_range(env, msg);
    return false;
  }
  *p = d;
  return true;
}

static void pkey_finalize(napi_env env, void *data, void *hint) {
  (void)env; (void)hint;
  EVP_PKEY_free((EVP_PKEY *)data);  // cleanses the private key
}

// x25519Key(priv: Uint8Array(32)): External | null -- the key as an EVP_PKEY (computes its public key once).
static napi_value js_x25519_key(napi_env env, napi_callback_info info) {
  ARGS(1);
  uint8_t *k; size_t n;
  if (!u8(env, argv[0], "private key", 32, 32, &k, &n)) return NULL;
  napi_value out;
  EVP_PKEY *pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, NULL, k, 32);
  if (pk == NULL) { napi_get_null(env, &out); return out; }
  if (napi_create_external(env, pk, pkey_finalize, NULL, &out) != napi_ok) { EVP_PKEY_free(pk); return NULL; }
  return out;
}

static EVP_PKEY *key_arg(napi_env env, napi_value v) {
  napi_valuetype t;
  napi_typeof(env, v, &t);
  if (t != napi_external) { throw_type(env, "key must be an x25519Key() handle"); return NULL; }
  void *p = NULL;
  napi_get_value_external(env, v, &p);
  return p;
}

// x25519KeyPublic(key, out: Uint8Array(32)): void.
static napi_value js_x25519_public(napi_env env, napi_callback_info info) {
  ARGS(2);
  EVP_PKEY *pk = key_arg(env, argv[0]);
  if (pk == NULL) return NULL;
  uint8_t *o; size_t n, len = 32;
  if (!u8(env, argv[1], "out", 32, 32, &o, &n)) return NULL;
  if (EVP_PKEY_get_raw_public_key(pk, o, &len) != 1 || len != 32) return throw_type(env, "x25519: OpenSSL could not export the public key");
  return NULL;
}

// x25519Derive(key, pub: Uint8Array(32), out: Uint8Array(32)): boolean -- false for a bad public key
// or an all-zero result (OpenSSL refuses low-order points); out is zeroed then.
static napi_value js_x25519_derive(napi_env env, napi_callback_info info) {
  ARGS(3);
  EVP_PKEY *pk = key_arg(env, argv[0]);
  if (pk == NULL) return NULL;
  uint8_t *pub, *o; size_t n;
  if (!u8(env, argv[1], "public key", 32, 32, &pub, &n) || !u8(env, argv[2], "out", 32, 32, &o, &n)) return NULL;
  bool ok = false;
  EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, pub, 32);
  EVP_PKEY_CTX *ctx = peer != NULL ? EVP_PKEY_CTX_new(pk, NULL) : NULL;
  size_t len = 32;
  if (ctx != NULL && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
      EVP_PKEY_derive(ctx, o, &len) == 1 && len == 32) ok = true;
  if (!ok) OPENSSL_cleanse(o, 32);
  EVP_PKEY_CTX_free(ctx);
  EVP_PKEY_free(peer);
  napi_value r;
  napi_get_boolean(env, ok, &r);
  return r;
}

// Runs ctx over up to three data parts into out; the key is 1..64 bytes.
// The contexts' parameters (digest, output size) are set once at load: passing them per init would
// fetch the digest again on every call.
static napi_value mac_run(napi_env env, napi_callback_info info, EVP_MAC_CTX *ctx, size_t outlen, size_t keymin, size_t keymax) {
  ARGS(5);
  uint8_t *o, *k; size_t on, kn;
  if (!u8(env, argv[0], "out", outlen, outlen, &o, &on) || !u8(env, argv[1], "key", keymin, keymax, &k, &kn)) return NULL;
  if (EVP_MAC_init(ctx, k, kn, NULL) != 1) return throw_type(env, "blake2s: OpenSSL refused the key");
  for (size_t i = 2; i < argc && i < 5; i++) {
    napi_valuetype t;
    napi_typeof(env, argv[i], &t);
    if (t == napi_undefined) continue;
    uint8_t *d; size_t dn;
    if (!u8(env, argv[i], "data", 0, (size_t)1 << 30, &d, &dn)) return NULL;
    if (dn > 0 && EVP_MAC_update(ctx, d, dn) != 1) return throw_type(env, "blake2s: EVP_MAC_update failed");
  }
  size_t got = 0;
  if (EVP_MAC_final(ctx, o, &got, outlen) != 1 || got != outlen) return throw_type(env, "blake2s: EVP_MAC_final failed");
  return NULL;
}

// blake2sMac(out: Uint8Array(16), key: Uint8Array(1..32), a, b?, c?): keyed BLAKE2s, digest length 16.
static napi_value js_blake2s_mac(napi_env env, napi_callback_info info) {
  return mac_run(env, info, ctx_blake2s, 16, 1, 32);
}

// blake2sHmac(out: Uint8Array(32), key: Uint8Array(1..64), a, b?, c?): HMAC-BLAKE2s-256.
static napi_value js_blake2s_hmac(napi_env env, napi_callback_info info) {
  return mac_run(env, info, ctx_hmac, 32, 1, 64);
}

// chachaPolyInPlace(encrypt: boolean, key: Uint8Array(32), counter: number, buf: Uint8Array, aad?: Uint8Array): boolean
// ChaCha20-Poly1305 with the WireGuard nonce (4 zero bytes, counter LE) over all of buf, in place, for
// handshake messages (with AAD; transport data goes through aead.c's batches). Seal: buf is
// plaintext then 16 bytes for the tag. Open: buf is ciphertext then tag; false (plaintext zeroed) when
// it does not authenticate. One context per thread, re-keyed per call.
static _Thread_local EVP_CIPHER_CTX *ctx_chacha;
static _Thread_local EVP_CIPHER *cipher_chacha;

static napi_value js_chacha(napi_env env, napi_callback_info info) {
  ARGS(5);
  bool enc;
  double counter;
  uint8_t *k, *b, *aad = NULL; size_t kn, bn, an = 0;
  if (!arg_bool(env, argv[0], "encrypt", &enc) || !u8(env, argv[1], "key", 32, 32, &k, &kn)) return NULL;
  if (napi_get_value_double(env, argv[2], &counter) != napi_ok || !(counter >= 0 && counter < 9007199254740992.0)) return throw_range(env, "counter must be an integer in 0..2^53-1");
  if (!u8(env, argv[3], "buf", 16, (size_t)1 << 30, &b, &bn)) return NULL;
  napi_valuetype t = napi_undefined;
  if (argc > 4) napi_typeof(env, argv[4], &t);
  if (t != napi_undefined && !u8(env, argv[4], "aad", 0, (size_t)1 << 30, &aad, &an)) return NULL;
  if (ctx_chacha == NULL) return throw_type(env, "chacha20-poly1305: OpenSSL has no ChaCha20-Poly1305");
  uint8_t iv[12] = {0};
  uint64_t c = (uint64_t)counter;
  for (int i = 0; i < 8; i++) iv[4 + i] = (uint8_t)(c >> (8 * i));
  int len = (int)(bn - 16), outl = 0, fl = 0;
  bool ok = EVP_CipherInit_ex2(ctx_chacha, cipher_chacha, k, iv, enc ? 1 : 0, NULL) == 1;
  if (ok && !enc) ok = EVP_CIPHER_CTX_ctrl(ctx_chacha, EVP_CTRL_AEAD_SET_TAG, 16, b + len) == 1;
  if (ok && an > 0) ok = EVP_CipherUpdate(ctx_chacha, NULL, &outl, aad, (int)an) == 1;
  if (ok && len > 0) ok = EVP_CipherUpdate(ctx_chacha, b, &outl, b, len) == 1;
  if (ok) ok = EVP_CipherFinal_ex(ctx_chacha, b + outl, &fl) == 1;
  if (ok && enc) ok = EVP_CIPHER_CTX_ctrl(ctx_chacha, EVP_CTRL_AEAD_GET_TAG, 16, b + len) == 1;
  if (!ok) OPENSSL_cleanse(b, (size_t)len);
  napi_value r;
  napi_get_boolean(env, ok, &r);
  return r;
}

bool init_hscrypto(napi_env env, napi_value exports) {
  if (cipher_chacha == NULL) cipher_chacha = EVP_CIPHER_fetch(NULL, "ChaCha20-Poly1305", NULL);
  if (cipher_chacha != NULL && ctx_chacha == NULL) ctx_chacha = EVP_CIPHER_CTX_new();
  if (mac_blake2s == NULL) mac_blake2s = EVP_MAC_fetch(NULL, "BLAKE2SMAC", NULL);
  if (mac_hmac == NULL) mac_hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
  static char digest[] = "BLAKE2S-256";
  size_t size = 16;
  OSSL_PARAM ps[2] = { OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size), OSSL_PARAM_construct_end() };
  OSSL_PARAM ph[2] = { OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end() };
  if (mac_blake2s != NULL && ctx_blake2s == NULL) {
    ctx_blake2s = EVP_MAC_CTX_new(mac_blake2s);
    if (ctx_blake2s != NULL && EVP_MAC_CTX_set_params(ctx_blake2s, ps) != 1) { EVP_MAC_CTX_free(ctx_blake2s); ctx_blake2s = NULL; }
  }
  if (mac_hmac != NULL && ctx_hmac == NULL) {
    ctx_hmac = EVP_MAC_CTX_new(mac_hmac);
    if (ctx_hmac != NULL && EVP_MAC_CTX_set_params(ctx_hmac, ph) != 1) { EVP_MAC_CTX_free(ctx_hmac); ctx_hmac = NULL; }
  }
  bool ok = export_fn(env, exports, "x25519Key", js_x25519_key) && export_fn(env, exports, "x25519KeyPublic", js_x25519_public) &&
            export_fn(env, exports, "x25519Derive", js_x25519_derive);
  if (ok && ctx_blake2s != NULL) ok = export_fn(env, exports, "blake2sMac", js_blake2s_mac);
  if (ok && ctx_hmac != NULL) ok = export_fn(env, exports, "blake2sHmac", js_blake2s_hmac);
  if (ok && ctx_chacha != NULL) ok = export_fn(env, exports, "chachaPolyInPlace", js_chacha);
  return ok;
}

#endif // MESHD_NO_OPENSSL
