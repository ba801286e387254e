// The crypto backends: `nodeCrypto` (node:crypto where it has the primitive), `referenceCrypto`
// (@noble only), and `defaultCrypto()`: nodeCrypto with the native batched transport AEAD
// (src/crypto/transport.ts) when the addon's OpenSSL path loads, else nodeCrypto as it is. A backend
// without `transport` runs transport data through its per-packet `aead` (the device wraps it in a
// PerPacketTransport). Tests run the WireGuard core on all of them and compare them on random inputs.
import { NobleChaChaPoly, NodeChaChaPoly, nobleXChaChaPoly } from './aead.ts';
import { nobleBlake2s, nodeBlake2s } from './blake2s.ts';
import { nobleX25519Backend, nodeX25519 } from './x25519.ts';
import { loadNativeTransport, type NativeLoad } from './transport.ts';
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

/** nodeCrypto with the native transport AEAD, or nodeCrypto when the native one cannot load. */
export function cryptoWith(load: NativeLoad): CryptoBackend {
  return load.transport === null ? nodeCrypto : { ...nodeCrypto, name: 'native', transport: load.transport };
}

let cached: { backend: CryptoBackend; load: NativeLoad } | undefined;

/** The backend the device uses by default (loaded once): native batched AEAD if it loads, else node. */
export function defaultCrypto(): CryptoBackend {
  cached ??= (() => { const load = loadNativeTransport(); return { backend: cryptoWith(load), load }; })();
  return cached.backend;
}

/** Why the default backend is not native (null when it is). */
export function nativeAeadError(): string | null {
  defaultCrypto();
  return cached!.load.error;
}
