import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { blake2s } from '@noble/hashes/blake2.js';
import { kdf1, kdf2, kdf3, nobleBlake2s, nodeBlake2s } from '../../src/crypto/blake2s.ts';
import { loadNativeHandshake } from '../../src/crypto/handshake-native.ts';
import { hex, rand, toHex } from '../harness/bytes.ts';

const nativeLoad = loadNativeHandshake(undefined, {});
if (nativeLoad.blake2s === null) throw new Error(`native BLAKE2s did not load: ${nativeLoad.error} (run npm run build)`);
const nativeBlake2s = nativeLoad.blake2s;
const backends = [nodeBlake2s, nobleBlake2s, nativeBlake2s] as const;
const names = ['node', 'reference', 'native'] as const;

/** RFC 7693 Appendix E: deterministic test sequence. */
function selftestSeq(len: number, seed: number): Uint8Array {
  const out = new Uint8Array(len);
  let a = Math.imul(0xdead4bad, seed) >>> 0;
  let b = 1;
  for (let i = 0; i < len; i++) {
    const t = (a + b) >>> 0;
    a = b;
    b = t;
    out[i] = (t >>> 24) & 0xff;
  }
  return out;
}

// wireguard-go device/kdf_test.go: key, input, T1, T2, T3.
const KDF_VECTORS = [
  ['746573742d6b6579', '746573742d696e707574',
    '6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633',
    'df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a',
    'fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24'],
  ['776972656775617264', '776972656775617264',
    '491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8',
    '1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f',
    '31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160'],
  ['', '',
    '8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0',
    '58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e',
    '0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e'],
] as const;

describe('BLAKE2s', () => {
  backends.forEach((b, i) => {
    describe(names[i]!, () => {
      it('hashes "abc" to the RFC 7693 Appendix B value', () => {
        assert.equal(toHex(b.hash(new TextEncoder().encode('abc'))),
          '508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982');
      });

      it('hashes the concatenation of its parts', () => {
        const x = rand(100);
        assert.deepEqual(b.hash(x.subarray(0, 7), x.subarray(7, 64), x.subarray(64)), b.hash(x));
      });

      it('matches wireguard-go kdf_test.go for KDF1, KDF2 and KDF3', () => {
        for (const [key, input, t1, t2, t3] of KDF_VECTORS) {
          const r3 = kdf3(b, hex(key), hex(input));
          assert.deepEqual(r3.map(toHex), [t1, t2, t3]);
          assert.deepEqual(kdf2(b, hex(key), hex(input)).map(toHex), [t1, t2]);
          assert.equal(toHex(kdf1(b, hex(key), hex(input))), t1);
        }
      });

      it('computes a 16-byte keyed MAC that is not a truncation of BLAKE2s-256', () => {
        const key = rand(32);
        const data = rand(60);
        const mac = b.mac(key, data);
        assert.equal(mac.length, 16);
        assert.notDeepEqual(mac, blake2s(data, { key }).subarray(0, 16));
      });
    });
  });

  it('keyed BLAKE2s matches the blake2s-kat keyed vectors (key 00..1f)', () => {
    const key = Uint8Array.from({ length: 32 }, (_, i) => i);
    assert.equal(toHex(blake2s(new Uint8Array(0), { key })), '48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49');
    assert.equal(toHex(blake2s(Uint8Array.of(0), { key })), '40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1');
  });

  it('keyed BLAKE2s with 16..32-byte outputs matches the RFC 7693 Appendix E self-test grand hash', () => {
    const parts: Uint8Array[] = [];
    for (const outlen of [16, 20, 28, 32]) {
      for (const inlen of [0, 3, 64, 65, 255, 1024]) {
        const input = selftestSeq(inlen, inlen);
        parts.push(blake2s(input, { dkLen: outlen }));
        const key = selftestSeq(outlen, outlen);
        const mac = outlen === 16 ? nodeBlake2s.mac(key, input) : blake2s(input, { key, dkLen: outlen });
        if (outlen === 16) assert.deepEqual(nativeBlake2s.mac(key, input), mac);
        parts.push(mac);
      }
    }
    assert.equal(toHex(nodeBlake2s.hash(...parts)), '6a411f08ce25adcdfb02aba641451cec53c598b24f4fc787fbdc88797f4c1dfe');
  });

  it('gives the same HASH and HMAC on node and reference for random inputs', () => {
    for (let n = 0; n < 100; n++) {
      const key = rand(n % 70);
      const data = rand(n * 7);
      assert.deepEqual(nodeBlake2s.hash(data), nobleBlake2s.hash(data));
      assert.deepEqual(nodeBlake2s.hmac(key, data), nobleBlake2s.hmac(key, data));
      assert.deepEqual(nativeBlake2s.hmac(key, data, key, data), nobleBlake2s.hmac(key, data, key, data));
      const mkey = rand(1 + (n % 32));
      assert.deepEqual(nativeBlake2s.mac(mkey, data), nobleBlake2s.mac(mkey, data));
    }
  });
});
