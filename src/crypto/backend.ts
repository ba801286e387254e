// The crypto backends: `nodeCrypto` (node:crypto where it has the primitive), `referenceCrypto`
// (@noble only), and `defaultCrypto()`: nodeCrypto with the native batched transport AEAD
// (src/crypto/transport.ts) when the addon's OpenSSL path loads, else nodeCrypto as it is. A backend
// without `transport` runs transport data through its per-packet `aead` (the device wraps it in a
// PerPacketTransport). Tests run the WireGuard core on all of them and compare them on random inputs.
import { NobleChaChaPoly, NodeChaChaPoly, nobleXChaChaPoly } from './aead.ts';
import { nobleBlake2s, nodeBlake2s } from './blake2s.ts';
import { nobleX25519Backend, nodeX25519 } from './x25519.ts';
import { loadNativeTransport, type NativeLoad } from './transport.ts';
import { loadNativeHandshake, type NativeHandshakeLoad } from './handshake-native.ts';
import type { CryptoBackend } from './types.ts';

const nodeAead = new NodeChaChaPoly();
const nobleAead = new NobleChaChaPoly();

/** Fast backend: node:crypto for X25519, BLAKE2s-256, HMAC and ChaCha20-Poly1305; @noble for the rest. */
export const nodeCrypto: CryptoBackend = {
  name: 'node',
  x25519: nodeX25519,
  blake2s: nodeBlake2s,
  aead: nodeAead,
  xaead: nobleXChaChaPoly,
};

/** Reference backend: @noble/curves, @noble/hashes and @noble/ciphers only. */
export const referenceCrypto: CryptoBackend = {
  name: 'reference',
  x25519: nobleX25519Backend,
  blake2s: nobleBlake2s,
  aead: nobleAead,
  xaead: nobleXChaChaPoly,
};

/**
 * nodeCrypto with the native transport AEAD and the native handshake X25519 / BLAKE2s MAC and HMAC
 * (src/crypto/handshake-native.ts), each where it loads; nodeCrypto's own primitive where not.
 */
export function cryptoWith(load: NativeLoad, hs: NativeHandshakeLoad = { x25519: null, blake2s: null, error: 'not loaded' }): CryptoBackend {
  let b: CryptoBackend = nodeCrypto;
  if (hs.x25519 !== null) b = { ...b, name: 'native', x25519: hs.x25519 };
  if (hs.blake2s !== null) b = { ...b, name: 'native', blake2s: hs.blake2s };
  if (hs.aead) b = { ...b, name: 'native', aead: hs.aead };
  if (load.transport !== null) b = { ...b, name: 'native', transport: load.transport };
  return b;
}

let cached: { backend: CryptoBackend; load: NativeLoad; hs: NativeHandshakeLoad } | undefined;

/** The backend the device uses by default (loaded once): the native parts that load, else node. */
export function defaultCrypto(): CryptoBackend {
  cached ??= (() => {
    const load = loadNativeTransport(), hs = loadNativeHandshake();
    return { backend: cryptoWith(load, hs), load, hs };
  })();
  return cached.backend;
}

/** Why the handshake primitives are not (all) native (null when they are). */
export function nativeHandshakeError(): string | null {
  defaultCrypto();
  return cached!.hs.error;
}

/** Why the default backend is not native (null when it is). */
export function nativeAeadError(): string | null {
  defaultCrypto();
  return cached!.load.error;
}
