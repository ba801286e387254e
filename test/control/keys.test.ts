import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { x25519 as nobleX25519 } from '@noble/curves/ed25519.js';
import {
  formatKey, parseKey, formatNodePublic, parseNodePublic, parseMachinePublic, formatDiscoPublic, parseDiscoPublic,
  formatPrivate, parsePrivate, generateKeyPair, publicKeyOf, x25519, keysEqual, isZeroKey, KeyPrefix,
  type NodePublic, type DiscoPublic,
} from '../../src/control/keys.ts';

const hex = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'hex'));

describe('key text formats', () => {
  it('writes a prefix and 64 lower-case hex digits', () => {
    const k = hex('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff') as NodePublic;
    assert.equal(formatNodePublic(k), 'nodekey:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff');
    assert.equal(formatDiscoPublic(k as unknown as DiscoPublic).slice(0, 10), 'discokey:0');
    assert.equal(formatKey(KeyPrefix.machine, k), 'mkey:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff');
  });

  it('parses either case and round-trips', () => {
    const text = 'nodekey:00112233445566778899AABBCCDDEEFF00112233445566778899aabbccddeeff';
    const k = parseNodePublic(text);
    assert.equal(formatNodePublic(k), text.toLowerCase());
    const { privateKey } = generateKeyPair();
    assert.deepEqual(parsePrivate(formatPrivate(privateKey)), privateKey);
  });

  it('rejects a missing or wrong prefix, a bare hex string, an empty string and bad lengths', () => {
    const h = 'ab'.repeat(32);
    assert.throws(() => parseNodePublic(h), /missing prefix nodekey:/);
    assert.throws(() => parseNodePublic(''), /missing prefix/);
    assert.throws(() => parseNodePublic(`mkey:${h}`), /missing prefix nodekey:/);
    assert.throws(() => parseMachinePublic(`mkey:${h}00`), /64 hex digits/);
    assert.throws(() => parseDiscoPublic(`discokey:${'zz'.repeat(32)}`), /64 hex digits/);
    assert.throws(() => parseKey(KeyPrefix.private, 'privkey:'), /64 hex digits/);
  });
});

describe('X25519 through node:crypto', () => {
  it('derives the RFC 7748 section 6.1 public keys and shared secret', () => {
    const a = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
    const b = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
    assert.equal(Buffer.from(publicKeyOf(a)).toString('hex'), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
    assert.equal(Buffer.from(publicKeyOf(b)).toString('hex'), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
    assert.equal(Buffer.from(x25519(a, publicKeyOf(b))).toString('hex'), '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
  });

  it('generates pairs whose public half matches an independent implementation', () => {
    const { privateKey, publicKey } = generateKeyPair();
    assert.equal(privateKey.length, 32);
    assert.deepEqual(publicKey, nobleX25519.getPublicKey(privateKey));
  });

  it('refuses a low-order public key (all-zero shared secret)', () => {
    const { privateKey } = generateKeyPair();
    assert.throws(() => x25519(privateKey, new Uint8Array(32)), /low-order/);
  });

  it('compares keys in constant time and detects the zero key', () => {
    const k = generateKeyPair().publicKey;
    assert.equal(keysEqual(k, Uint8Array.from(k)), true);
    assert.equal(keysEqual(k, generateKeyPair().publicKey), false);
    assert.equal(isZeroKey(new Uint8Array(32)), true);
    assert.equal(isZeroKey(k), false);
  });
});
