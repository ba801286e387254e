// Known answers for NaCl box from the NaCl distribution's tests/box.c and libsodium's
// test/default/box_easy.c (alicesk/bobpk/nonce/m -> c), and the X25519 keys of RFC 7748 6.1.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { x25519 as nobleX25519 } from '@noble/curves/ed25519.js';
import {
  boxBefore, boxOpenAfter, boxSealAfter, generateKeyPair, hsalsa20, open, publicKeyOf, seal, x25519,
} from '../../src/crypto/box.ts';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

const alicesk = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
const alicepk = hex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
const bobsk = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
const bobpk = hex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
const nonce = hex('69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37');
const m = hex(`be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a1ac728d45e6c6129
  6cdc3c01233561f41db66cce314adb310e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde
  048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f93776384864 5e0705`);
const c = hex(`f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186a
  c0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae
  90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74 e355a5`);
// crypto_box_beforenm(bobpk, alicesk): "firstkey" of NaCl's tests/firstkey.c.
const firstkey = hex('1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389');

describe('crypto/box', () => {
  it('derives the RFC 7748 public keys and shared secret', () => {
    assert.equal(toHex(publicKeyOf(alicesk)), toHex(alicepk));
    assert.equal(toHex(publicKeyOf(bobsk)), toHex(bobpk));
    assert.equal(toHex(x25519(alicesk, bobpk)),
      '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
    assert.equal(toHex(x25519(bobsk, alicepk)), toHex(x25519(alicesk, bobpk)));
  });

  it('agrees with the @noble/curves reference X25519 on random keys', () => {
    for (let i = 0; i < 20; i++) {
      const a = generateKeyPair();
      const b = generateKeyPair();
      assert.equal(toHex(nobleX25519.getPublicKey(a.privateKey)), toHex(a.publicKey));
      assert.equal(toHex(x25519(a.privateKey, b.publicKey)), toHex(nobleX25519.getSharedSecret(a.privateKey, b.publicKey)));
    }
  });

  it('precomputes the NaCl firstkey from either side (box.before)', () => {
    assert.equal(toHex(boxBefore(bobpk, alicesk)), toHex(firstkey));
    assert.equal(toHex(boxBefore(alicepk, bobsk)), toHex(firstkey));
  });

  it('HSalsa20 of the shared secret with the nonce prefix gives NaCl secondkey', () => {
    // tests/secondkey.c
    assert.equal(toHex(hsalsa20(firstkey, nonce.subarray(0, 16))),
      'dc908dda0b9344a953629b733820778880f3ceb421bb61b91cbd4c3e66256ce4');
  });

  it('seals the NaCl known answer as tag ‖ ciphertext and opens it back', () => {
    const k = boxBefore(bobpk, alicesk);
    assert.equal(m.length, 131);
    assert.equal(toHex(boxSealAfter(k, nonce, m)), toHex(c));
    const back = boxOpenAfter(boxBefore(alicepk, bobsk), nonce, c);
    assert.ok(back);
    assert.equal(toHex(back), toHex(m));
  });

  it('seals an empty message to the libsodium box_easy tag', () => {
    const k = boxBefore(bobpk, alicesk);
    assert.equal(toHex(boxSealAfter(k, nonce, new Uint8Array(0))), '2539121d8e234e652d651fa4c8cff880');
  });

  it('refuses forged, truncated and wrong-key boxes without throwing', () => {
    const k = boxBefore(bobpk, alicesk);
    for (let i = 0; i < c.length; i += 7) {
      const bad = c.slice();
      bad[i]! ^= 1;
      assert.equal(boxOpenAfter(k, nonce, bad), undefined, `flipped byte ${i}`);
    }
    assert.equal(boxOpenAfter(k, nonce, c.subarray(0, 15)), undefined);
    assert.equal(boxOpenAfter(k, nonce, c.subarray(0, c.length - 1)), undefined);
    assert.equal(boxOpenAfter(new Uint8Array(32), nonce, c), undefined);
  });

  it('seal/open use the Go layout nonce(24) ‖ tag(16) ‖ ciphertext', () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    const kab = boxBefore(b.publicKey, a.privateKey);
    const kba = boxBefore(a.publicKey, b.privateKey);
    const msg = new TextEncoder().encode('{"version":2}');
    const sealed = seal(kab, msg);
    assert.equal(sealed.length, msg.length + 40);
    assert.equal(toHex(sealed.subarray(24)), toHex(boxSealAfter(kab, sealed.subarray(0, 24), msg)));
    assert.equal(toHex(open(kba, sealed)!), toHex(msg));
    assert.equal(open(kba, sealed.subarray(0, 39)), undefined);
  });

  it('rejects a low-order public key with a clear error', () => {
    assert.throws(() => boxBefore(new Uint8Array(32), alicesk), /X25519/);
    assert.throws(() => boxBefore(new Uint8Array(31), alicesk), /32 bytes/);
  });
});
