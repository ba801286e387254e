import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ipv4, WgPipe, typeOf } from '../harness/wgpipe.ts';
import { defaultCrypto } from '../../src/crypto/backend.ts';
import type { CryptoBackend } from '../../src/crypto/types.ts';

describe('Device handshake and data', () => {
  it('completes a handshake on first packet and delivers data both ways', () => {
    const p = new WgPipe();
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 100));
    p.deliver();
    assert.equal(p.tunB.length, 1);
    assert.deepEqual(p.tunB[0], ipv4('10.0.0.1', '10.0.0.2', 100));
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 50));
    p.deliver();
    assert.deepEqual(p.tunA, [ipv4('10.0.0.2', '10.0.0.1', 50)]);
    assert.deepEqual(p.log.map(typeOf), [1, 2, 4, 4]);
  });

  it('completes a handshake when datagrams arrive in Node Buffers (as DERP delivers them)', () => {
    const p = new WgPipe();
    p.buffers = true;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 100));
    p.deliver();
    assert.deepEqual(p.tunB.map((x) => Uint8Array.from(x)), [ipv4('10.0.0.1', '10.0.0.2', 100)]);
  });
});

describe('Device peer setup at scale', () => {
  it('computes a peer\'s static-static DH and cookie keys only when that peer handshakes, not when it is configured', () => {
    const base = defaultCrypto();
    let dh = 0, hashes = 0;
    const crypto: CryptoBackend = {
      ...base,
      // The backends are class instances: keep their methods, count the two calls.
      x25519: Object.assign(Object.create(base.x25519) as CryptoBackend['x25519'], {
        shared: (priv: Uint8Array, pub: Uint8Array) => { dh++; return base.x25519.shared(priv, pub); },
      }),
      blake2s: Object.assign(Object.create(base.blake2s) as CryptoBackend['blake2s'], {
        hash: (...parts: Uint8Array[]) => { hashes++; return base.blake2s.hash(...parts); },
      }),
    };
    const p = new WgPipe({ crypto });
    const dh0 = dh, hashes0 = hashes;
    for (let i = 1; i <= 500; i++) {
      const key = new Uint8Array(32);
      key[0] = 9; key[30] = i >> 8; key[31] = i & 255;
      p.a.setPeer(key, { allowedIPs: [`10.9.${i >> 8}.${i & 255}/32`] });
    }
    assert.equal(p.a.peers().length, 501);
    assert.equal(dh - dh0, 0, 'no DH for 500 configured peers');
    assert.equal(hashes - hashes0, 0, 'no mac1/cookie key hashes for 500 configured peers');
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 100));
    p.deliver();
    assert.deepEqual(p.tunB, [ipv4('10.0.0.1', '10.0.0.2', 100)], 'the handshake with the one active peer still works');
    assert.equal(dh - dh0, 8, 'the 8 DH of one handshake (es, ss, ee, se on each side), none for the other 500 peers');
  });
});
