import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv } from 'node:crypto';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { NobleChaChaPoly, NodeChaChaPoly, nobleXChaChaPoly, writeNonce } from '../../src/crypto/aead.ts';
import { loadNativeHandshake } from '../../src/crypto/handshake-native.ts';
import { hex, rand, toHex } from '../harness/bytes.ts';

// RFC 8439 section 2.8.2.
const KEY = Uint8Array.from({ length: 32 }, (_, i) => 0x80 + i);
const AAD = hex('50515253c0c1c2c3c4c5c6c7');
const SUNSCREEN = new TextEncoder().encode(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
const RFC8439_CT = 'd31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b' +
  '1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc' +
  '3ff4def08e4b7a9de576d26586cec64b6116';
const RFC8439_TAG = '1ae10b594f09e26a7e902ecbd0600691';

const nativeAead = loadNativeHandshake(undefined, {}).aead;
if (!nativeAead) throw new Error('the native handshake AEAD did not load (run npm run build)');
const impls = [new NodeChaChaPoly(), new NobleChaChaPoly(), nativeAead] as const;
const names = ['node', 'reference', 'native'] as const;

describe('ChaCha20-Poly1305', () => {
  it('node:crypto matches RFC 8439 section 2.8.2', () => {
    const c = createCipheriv('chacha20-poly1305', KEY, hex('070000004041424344454647'), { authTagLength: 16 });
    c.setAAD(AAD, { plaintextLength: SUNSCREEN.length });
    const ct = c.update(SUNSCREEN);
    c.final();
    assert.equal(ct.toString('hex'), RFC8439_CT);
    assert.equal(c.getAuthTag().toString('hex'), RFC8439_TAG);
  });

  it('@noble/ciphers matches RFC 8439 section 2.8.2', () => {
    const out = chacha20poly1305(KEY, hex('070000004041424344454647'), AAD).encrypt(SUNSCREEN);
    assert.equal(toHex(out), RFC8439_CT + RFC8439_TAG);
  });

  it('builds the WireGuard nonce as 4 zero bytes then the counter little-endian', () => {
    const n = new Uint8Array(12).fill(0xee);
    writeNonce(n, 0x0102030405060);
    assert.equal(toHex(n), '00000000' + '6050403020100000');
    writeNonce(n, 2 ** 53 - 1);
    assert.equal(toHex(n), '00000000' + 'ffffffffffff1f00');
  });

  impls.forEach((a, i) => {
    describe(names[i]!, () => {
      it('seals in place exactly as RFC 8439 AEAD with the WireGuard nonce', () => {
        const key = rand(32);
        const pt = rand(100);
        const aad = rand(32);
        const counter = 123456789012;
        const buf = new Uint8Array(8 + 100 + 16 + 8);
        buf.set(pt, 8);
        a.sealInPlace(a.prepareKey(key), counter, buf, 8, 100, aad);
        const nonce = new Uint8Array(12);
        writeNonce(nonce, counter);
        assert.deepEqual(buf.subarray(8, 124), chacha20poly1305(key, nonce, aad).encrypt(pt));
        assert.ok(buf.subarray(0, 8).every((b) => b === 0) && buf.subarray(124).every((b) => b === 0));
      });

      it('opens in place and rejects a flipped bit, a wrong counter, a wrong AAD and a short input', () => {
        const k = a.prepareKey(rand(32));
        const pt = rand(64);
        const sealed = new Uint8Array(80);
        sealed.set(pt);
        a.sealInPlace(k, 7, sealed, 0, 64);
        const good = sealed.slice();
        assert.equal(a.openInPlace(k, 7, good, 0, 80), true);
        assert.deepEqual(good.subarray(0, 64), pt);
        const flipped = sealed.slice();
        flipped[3]! ^= 1;
        assert.equal(a.openInPlace(k, 7, flipped, 0, 80), false);
        assert.equal(a.openInPlace(k, 8, sealed.slice(), 0, 80), false);
        assert.equal(a.openInPlace(k, 7, sealed.slice(), 0, 80, rand(4)), false);
        assert.equal(a.openInPlace(k, 7, sealed.slice(), 0, 15), false);
      });

      it('seals and opens an empty plaintext (a keepalive) as a bare tag', () => {
        const k = a.prepareKey(rand(32));
        const buf = new Uint8Array(16);
        a.sealInPlace(k, 0, buf, 0, 0);
        assert.equal(a.openInPlace(k, 0, buf, 0, 16), true);
      });
    });
  });

  it('gives identical output on node, reference and native for random inputs', () => {
    const [fast, ref] = impls;
    for (let n = 0; n < 100; n++) {
      const key = rand(32);
      const len = (n * 37) % 1500;
      const pt = rand(len);
      const counter = n * 1000003;
      const aad = n % 2 === 0 ? rand(32) : undefined;
      const b1 = new Uint8Array(len + 16); b1.set(pt);
      const b2 = new Uint8Array(len + 16); b2.set(pt);
      fast.sealInPlace(fast.prepareKey(key), counter, b1, 0, len, aad);
      ref.sealInPlace(ref.prepareKey(key), counter, b2, 0, len, aad);
      assert.deepEqual(b1, b2);
      const b3 = new Uint8Array(len + 16); b3.set(pt);
      nativeAead.sealInPlace(nativeAead.prepareKey(key), counter, b3, 0, len, aad);
      assert.deepEqual(b3, b2);
      assert.equal(nativeAead.openInPlace(nativeAead.prepareKey(key), counter, b3, 0, len + 16, aad), true);
      assert.deepEqual(b3.subarray(0, len), pt);
      assert.equal(ref.openInPlace(ref.prepareKey(key), counter, b1, 0, len + 16, aad), true);
      assert.deepEqual(b1.subarray(0, len), pt);
    }
  });
});

describe('XChaCha20-Poly1305', () => {
  it('matches draft-irtf-cfrg-xchacha-03 Appendix A.3.1', () => {
    const nonce = Uint8Array.from({ length: 24 }, (_, i) => 0x40 + i);
    const out = nobleXChaChaPoly.seal(KEY, nonce, SUNSCREEN, AAD);
    assert.equal(toHex(out),
      'bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb' +
      '731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452' +
      '2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9' +
      '21f9664c97637da9768812f615c68b13b52e' + 'c0875924c1c7987947deafd8780acf49');
    assert.deepEqual(nobleXChaChaPoly.open(KEY, nonce, out, AAD), SUNSCREEN);
  });

  it('returns null instead of throwing when authentication fails', () => {
    const nonce = rand(24);
    const out = nobleXChaChaPoly.seal(KEY, nonce, rand(16), AAD);
    out[0]! ^= 1;
    assert.equal(nobleXChaChaPoly.open(KEY, nonce, out, AAD), null);
  });
});
