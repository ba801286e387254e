// Control-plane key types and their text forms (TS:types/key/*.go).
//
// Every key is a 32-byte Curve25519 value. In JSON a key is a type prefix plus 64 hex digits:
//   mkey:<hex>      machine public key (Noise static key toward control)
//   nodekey:<hex>   node public key (the WireGuard key)
//   discokey:<hex>  disco public key
//   chalpub:<hex>   node-key challenge (early payload)
//   nlpub:<hex>     tailnet-lock public key
//   privkey:<hex>   a private key (machine or node) in files
// The encoder writes lower case; the parser accepts either case. A bare hex string or "" is an error,
// as on the Go side.
import { createPrivateKey, createPublicKey, generateKeyPairSync, diffieHellman, timingSafeEqual } from 'node:crypto';

declare const brand: unique symbol;
type Key32<B extends string> = Uint8Array & { readonly [brand]: B };

/** Machine public key: the client's Noise static key, or the server's. */
export type MachinePublic = Key32<'MachinePublic'>;
/** Node public key: the WireGuard key headscale registers. */
export type NodePublic = Key32<'NodePublic'>;
/** Disco public key: the key peers use for disco messages. */
export type DiscoPublic = Key32<'DiscoPublic'>;
/** Any X25519 private key (raw 32 bytes); which one is said by the variable holding it. */
export type PrivateKey = Key32<'Private'>;

/** Key text prefixes used on the wire and in files. */
export const KeyPrefix = {
  machine: 'mkey:',
  node: 'nodekey:',
  disco: 'discokey:',
  challenge: 'chalpub:',
  tailnetLock: 'nlpub:',
  private: 'privkey:',
} as const;
/** One of the key text prefixes. */
export type KeyPrefix = (typeof KeyPrefix)[keyof typeof KeyPrefix];

/** Length of every control-plane key in bytes. */
export const KEY_LEN = 32;

/** An X25519 key pair as raw bytes. */
export interface KeyPair<P extends Uint8Array> {
  readonly privateKey: PrivateKey;
  readonly publicKey: P;
}

const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');

function checkLen(b: Uint8Array, what: string): void {
  if (b.length !== KEY_LEN) throw new RangeError(`${what}: expected ${KEY_LEN} bytes, got ${b.length}`);
}

/** Generates a fresh X25519 key pair with node:crypto; the caller picks the public key type. */
export function generateKeyPair<P extends Uint8Array>(): KeyPair<P> {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  const d = privateKey.export({ format: 'jwk' }).d;
  const x = publicKey.export({ format: 'jwk' }).x;
  if (!d || !x) throw new Error('x25519: node:crypto returned a key without raw parts');
  return {
    privateKey: new Uint8Array(Buffer.from(d, 'base64url')) as PrivateKey,
    publicKey: new Uint8Array(Buffer.from(x, 'base64url')) as P,
  };
}

/** Derives the X25519 public key of a raw private key. */
export function publicKeyOf<P extends Uint8Array>(priv: Uint8Array): P {
  checkLen(priv, 'private key');
  const ko = createPrivateKey({ key: Buffer.concat([PKCS8_X25519, priv]), format: 'der', type: 'pkcs8' });
  const x = createPublicKey(ko).export({ format: 'jwk' }).x;
  if (!x) throw new Error('x25519: no public part');
  return new Uint8Array(Buffer.from(x, 'base64url')) as P;
}

/**
 * X25519(priv, pub). Throws when the result is all zero (a low-order public key), as Go's
 * curve25519.X25519 does; the handshake must not continue with such a secret.
 */
export function x25519(priv: Uint8Array, pub: Uint8Array): Uint8Array {
  checkLen(priv, 'private key');
  checkLen(pub, 'public key');
  let out: Buffer;
  try {
    out = diffieHellman({
      privateKey: createPrivateKey({ key: Buffer.concat([PKCS8_X25519, priv]), format: 'der', type: 'pkcs8' }),
      publicKey: createPublicKey({ key: Buffer.concat([SPKI_X25519, pub]), format: 'der', type: 'spki' }),
    });
  } catch (e) {
    throw new Error(`x25519: low-order or invalid public key (${(e as Error).message})`);
  }
  if (out.every((b) => b === 0)) throw new Error('x25519: low-order public key (all-zero shared secret)');
  return new Uint8Array(out);
}

/** Formats a key as `prefix` + 64 lower-case hex digits. */
export function formatKey(prefix: KeyPrefix, key: Uint8Array): string {
  checkLen(key, prefix);
  return prefix + Buffer.from(key.buffer, key.byteOffset, key.byteLength).toString('hex');
}

/** Parses `prefix` + 64 hex digits (either case); throws a RangeError naming what is wrong. */
export function parseKey<P extends Uint8Array>(prefix: KeyPrefix, text: string): P {
  if (typeof text !== 'string' || !text.startsWith(prefix)) {
    throw new RangeError(`key ${JSON.stringify(String(text).slice(0, 20))}: missing prefix ${prefix}`);
  }
  const hex = text.slice(prefix.length);
  if (hex.length !== KEY_LEN * 2 || !/^[0-9a-fA-F]+$/.test(hex)) {
    throw new RangeError(`key ${prefix}…: expected ${KEY_LEN * 2} hex digits`);
  }
  return new Uint8Array(Buffer.from(hex, 'hex')) as P;
}

/** Formats a machine public key (`mkey:`). */
export const formatMachinePublic = (k: MachinePublic): string => formatKey(KeyPrefix.machine, k);
/** Parses a machine public key (`mkey:`). */
export const parseMachinePublic = (s: string): MachinePublic => parseKey<MachinePublic>(KeyPrefix.machine, s);
/** Formats a node public key (`nodekey:`). */
export const formatNodePublic = (k: NodePublic): string => formatKey(KeyPrefix.node, k);
/** Parses a node public key (`nodekey:`). */
export const parseNodePublic = (s: string): NodePublic => parseKey<NodePublic>(KeyPrefix.node, s);
/** Formats a disco public key (`discokey:`). */
export const formatDiscoPublic = (k: DiscoPublic): string => formatKey(KeyPrefix.disco, k);
/** Parses a disco public key (`discokey:`). */
export const parseDiscoPublic = (s: string): DiscoPublic => parseKey<DiscoPublic>(KeyPrefix.disco, s);
/** Formats a private key (`privkey:`) for a state file. */
export const formatPrivate = (k: PrivateKey): string => formatKey(KeyPrefix.private, k);
/** Parses a private key (`privkey:`) from a state file. */
export const parsePrivate = (s: string): PrivateKey => parseKey<PrivateKey>(KeyPrefix.private, s);

/** True when every byte is zero (Go's IsZero: "no key"). */
export function isZeroKey(k: Uint8Array): boolean {
  let acc = 0;
  for (const b of k) acc |= b;
  return acc === 0;
}

/** Constant-time equality of two keys of the same type. */
export function keysEqual<K extends Uint8Array>(a: K, b: K): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
