import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { nobleX25519Backend, nodeX25519, clampPrivate, x25519Der } from '../../src/crypto/x25519.ts';
import { loadNativeHandshake } from '../../src/crypto/handshake-native.ts';
import { hex, rand, toHex } from '../harness/bytes.ts';

const nativeLoad = loadNativeHandshake(undefined, {});
if (nativeLoad.x25519 === null) throw new Error(`native X25519 did not load: ${nativeLoad.error} (run npm run build)`);
const nativeX25519 = nativeLoad.x25519;
const backends = [nodeX25519, nobleX25519Backend, nativeX25519] as const;
const names = ['node', 'reference', 'native'] as const;

describe('X25519', () => {
  backends.forEach((x, i) => {
    describe(names[i]!, () => {
      it('matches RFC 7748 section 5.2 (first vector)', () => {
        const out = x.shared(
          hex('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4'),
          hex('e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c'),
        );
        assert.equal(toHex(out!), 'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552');
      });

      it('matches the RFC 7748 section 5.2 iterated vector after one iteration', () => {
        const nine = new Uint8Array(32);
        nine[0] = 9;
        assert.equal(toHex(x.shared(nine, nine)!), '422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079');
      });

      it('matches RFC 7748 section 6.1 for both public keys and the shared secret', () => {
        const a = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
        const b = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
        const aPub = x.publicFromPrivate(a);
        const bPub = x.publicFromPrivate(b);
        assert.equal(toHex(aPub), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
        assert.equal(toHex(bPub), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
        const want = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
        assert.equal(toHex(x.shared(a, bPub)!), want);
        assert.equal(toHex(x.shared(b, aPub)!), want);
      });

      it('returns null for a low-order public key (all-zero shared secret)', () => {
        const priv = x.generatePrivate(rand);
        assert.equal(x.shared(priv, new Uint8Array(32)), null);
        const one = new Uint8Array(32);
        one[0] = 1;
        assert.equal(x.shared(priv, one), null);
      });

      it('generates clamped private keys', () => {
        for (let n = 0; n < 20; n++) {
          const k = x.generatePrivate(rand);
          assert.equal(k[0]! & 7, 0);
          assert.equal(k[31]! & 0x80, 0);
          assert.equal(k[31]! & 0x40, 0x40);
        }
      });

      it('rejects keys of the wrong length with a titled error', () => {
        assert.throws(() => x.publicFromPrivate(new Uint8Array(31)), /x25519: private key must be 32 bytes/);
      });
    });
  });

  it('gives the same public keys and shared secrets on node and reference for random keys', () => {
    for (let n = 0; n < 50; n++) {
      const a = clampPrivate(rand(32));
      const b = clampPrivate(rand(32));
      const aPub = nodeX25519.publicFromPrivate(a);
      assert.deepEqual(aPub, nobleX25519Backend.publicFromPrivate(a));
      const bPub = nobleX25519Backend.publicFromPrivate(b);
      assert.deepEqual(nodeX25519.shared(a, bPub), nobleX25519Backend.shared(a, bPub));
      assert.deepEqual(nodeX25519.shared(b, aPub), nobleX25519Backend.shared(a, bPub));
      assert.deepEqual(nativeX25519.publicFromPrivate(a), aPub);
      assert.deepEqual(nativeX25519.shared(a, bPub), nobleX25519Backend.shared(a, bPub));
      assert.deepEqual(nativeX25519.shared(b, aPub), nobleX25519Backend.shared(a, bPub));
    }
  });

  it('wraps raw keys in the RFC 8410 DER forms that node:crypto parses to the same key', () => {
    const priv = clampPrivate(rand(32));
    const obj = createPrivateKey({ key: x25519Der('private', priv), format: 'der', type: 'pkcs8' });
    const pub = createPublicKey(obj).export({ format: 'der', type: 'spki' });
    assert.deepEqual(new Uint8Array(pub.subarray(12)), nodeX25519.publicFromPrivate(priv));
    assert.deepEqual(pub, x25519Der('public', nodeX25519.publicFromPrivate(priv)));
  });

  it('notices when a cached key array is changed in place', () => {
    const a = clampPrivate(rand(32));
    const pub1 = nodeX25519.publicFromPrivate(a);
    a.set(clampPrivate(rand(32)));
    const pub2 = nodeX25519.publicFromPrivate(a);
    assert.notDeepEqual(pub1, pub2);
    assert.deepEqual(pub2, nobleX25519Backend.publicFromPrivate(a));
    const pub3 = nativeX25519.publicFromPrivate(a);
    a.set(clampPrivate(rand(32)));
    assert.notDeepEqual(nativeX25519.publicFromPrivate(a), pub3);
    assert.deepEqual(nativeX25519.publicFromPrivate(a), nobleX25519Backend.publicFromPrivate(a));
  });

  it('loads the native backend only when its known-answer tests pass, and can be turned off', () => {
    assert.equal(nativeLoad.error, null);
    const off = loadNativeHandshake(undefined, { MESHD_NATIVE_HANDSHAKE: '0' });
    assert.equal(off.x25519, null);
    assert.match(off.error!, /MESHD_NATIVE_HANDSHAKE=0/);
    const broken = loadNativeHandshake(() => ({
      x25519Key: () => ({}), x25519KeyPublic: () => undefined, x25519Derive: (_k: unknown, _p: Uint8Array, o: Uint8Array) => { o.fill(7); return true; },
    }));
    assert.equal(broken.x25519, null);
    assert.match(broken.error!, /RFC 7748 known-answer/);
  });
});
