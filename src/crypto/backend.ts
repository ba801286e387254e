// The two crypto backends: `nodeCrypto` (fast, node:crypto where it has the primitive) and
// `referenceCrypto` (@noble only). Tests run the WireGuard core on both and compare them on random
// inputs; the device uses nodeCrypto unless told otherwise.
import { NobleChaChaPoly, NodeChaChaPoly, nobleXChaChaPoly } from './aead.ts';
import { nobleBlake2s, nodeBlake2s } from './blake2s.ts';
import { nobleX25519Backend, nodeX25519 } from './x25519.ts';
import type { CryptoBackend } from './types.ts';

/** Fast backend: node:crypto for X25519, BLAKE2s-256, HMAC and ChaCha20-Poly1305; @noble for the rest. */
export const nodeCrypto: CryptoBackend = {
  name: 'node',
  x25519: nodeX25519,
  blake2s: nodeBlake2s,
  aead: new NodeChaChaPoly(),
  xaead: nobleXChaChaPoly,
};

/** Reference backend: @noble/curves, @noble/hashes and @noble/ciphers only. */
export const referenceCrypto: CryptoBackend = {
  name: 'reference',
  x25519: nobleX25519Backend,
  blake2s: nobleBlake2s,
  aead: new NobleChaChaPoly(),
  xaead: nobleXChaChaPoly,
};
