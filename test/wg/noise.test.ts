import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nodeCrypto, referenceCrypto } from '../../src/crypto/backend.ts';
import type { CryptoBackend } from '../../src/crypto/types.ts';
import {
  consumeInitiation, consumeResponse, createInitiation, createResponse, deriveKeys, Handshake, HandshakeState, Noise,
  type StaticIdentity,
} from '../../src/wg/noise.ts';
import { seededRandom, toHex } from '../harness/bytes.ts';

function identity(c: CryptoBackend, random: (n: number) => Uint8Array): StaticIdentity {
  const privateKey = c.x25519.generatePrivate(random);
  return { privateKey, publicKey: c.x25519.publicFromPrivate(privateKey) };
}

function setup(ci: CryptoBackend, cr: CryptoBackend, seed = 1) {
  const random = seededRandom(seed);
  const ni = new Noise(ci);
  const nr = new Noise(cr);
  const idI = identity(ci, random);
  const idR = identity(cr, random);
  const hsI = new Handshake(idR.publicKey);
  hsI.precomputedStaticStatic = ci.x25519.shared(idI.privateKey, idR.publicKey);
  const peerOnR = { handshake: new Handshake(idI.publicKey) };
  peerOnR.handshake.precomputedStaticStatic = cr.x25519.shared(idR.privateKey, idI.publicKey);
  return { random, ni, nr, idI, idR, hsI, peerOnR };
}

const WALL = Date.UTC(2026, 0, 1);

describe('Noise IKpsk2 handshake', () => {
  for (const [ci, cr] of [[nodeCrypto, nodeCrypto], [nodeCrypto, referenceCrypto], [referenceCrypto, nodeCrypto]] as const) {
    it(`completes with matching transport keys (initiator ${ci.name}, responder ${cr.name})`, () => {
      const s = setup(ci, cr);
      const init = createInitiation(s.ni, s.idI, s.hsI, 0x1111, s.random, WALL)!;
      assert.equal(s.hsI.state, HandshakeState.InitiationCreated);
      const peer = consumeInitiation(s.nr, s.idR, init, (k) => (toHex(k) === toHex(s.idI.publicKey) ? s.peerOnR : undefined), 1000);
      assert.equal(peer, s.peerOnR);
      assert.equal(s.peerOnR.handshake.remoteIndex, 0x1111);
      const resp = createResponse(s.nr, s.peerOnR.handshake, 0x2222, s.random)!;
      assert.equal(consumeResponse(s.ni, s.idI, s.hsI, resp), true);
      const ki = deriveKeys(s.ni, s.hsI)!;
      const kr = deriveKeys(s.nr, s.peerOnR.handshake)!;
      assert.equal(ki.isInitiator, true);
      assert.equal(kr.isInitiator, false);
      assert.deepEqual(ki.send, kr.recv);
      assert.deepEqual(ki.recv, kr.send);
      assert.notDeepEqual(ki.send, ki.recv);
      assert.equal(ki.remoteIndex, 0x2222);
      assert.equal(kr.remoteIndex, 0x1111);
      assert.equal(s.hsI.state, HandshakeState.Zeroed);
      assert.ok(s.hsI.chainKey.every((b) => b === 0), 'the chaining key is zeroed');
    });
  }

  it('produces byte-identical messages on node and reference crypto for the same randomness', () => {
    const a = setup(nodeCrypto, nodeCrypto, 42);
    const b = setup(referenceCrypto, referenceCrypto, 42);
    const ia = createInitiation(a.ni, a.idI, a.hsI, 5, a.random, WALL)!;
    const ib = createInitiation(b.ni, b.idI, b.hsI, 5, b.random, WALL)!;
    assert.equal(toHex(ia), toHex(ib));
  });

  it('mixes the pre-shared key into the keys (psk2), and a psk mismatch fails the response', () => {
    const s = setup(nodeCrypto, nodeCrypto);
    s.hsI.presharedKey = new Uint8Array(32).fill(1);
    s.peerOnR.handshake.presharedKey = new Uint8Array(32).fill(2);
    const init = createInitiation(s.ni, s.idI, s.hsI, 1, s.random, WALL)!;
    consumeInitiation(s.nr, s.idR, init, () => s.peerOnR, 0);
    const resp = createResponse(s.nr, s.peerOnR.handshake, 2, s.random)!;
    assert.equal(consumeResponse(s.ni, s.idI, s.hsI, resp), false);
  });

  it('refuses an initiation for the wrong responder, from an unknown peer, replayed, or too soon', () => {
    const s = setup(nodeCrypto, nodeCrypto);
    const init = createInitiation(s.ni, s.idI, s.hsI, 1, s.random, WALL)!;
    const other = identity(nodeCrypto, s.random);
    assert.equal(consumeInitiation(s.nr, other, init, () => s.peerOnR, 0), 'invalid');
    assert.equal(consumeInitiation(s.nr, s.idR, init, () => undefined, 0), 'unknownPeer');
    assert.equal(consumeInitiation(s.nr, s.idR, init, () => s.peerOnR, 0), s.peerOnR);
    assert.equal(consumeInitiation(s.nr, s.idR, init, () => s.peerOnR, 1000), 'replay');
    const later = createInitiation(s.ni, s.idI, s.hsI, 2, s.random, WALL + 1000)!;
    assert.equal(consumeInitiation(s.nr, s.idR, later, () => s.peerOnR, 10), 'flood');
    assert.equal(consumeInitiation(s.nr, s.idR, later, () => s.peerOnR, 20), s.peerOnR);
  });

  it('refuses a tampered initiation and a response for another handshake', () => {
    const s = setup(nodeCrypto, nodeCrypto);
    const init = createInitiation(s.ni, s.idI, s.hsI, 1, s.random, WALL)!;
    const bad = init.slice();
    bad[50]! ^= 1;
    assert.equal(consumeInitiation(s.nr, s.idR, bad, () => s.peerOnR, 0), 'invalid');
    consumeInitiation(s.nr, s.idR, init, () => s.peerOnR, 0);
    const resp = createResponse(s.nr, s.peerOnR.handshake, 2, s.random)!;
    const wrongIndex = resp.slice();
    wrongIndex[8] = 9;
    assert.equal(consumeResponse(s.ni, s.idI, s.hsI, wrongIndex), false);
    const tampered = resp.slice();
    tampered[20]! ^= 1;
    assert.equal(consumeResponse(s.ni, s.idI, s.hsI, tampered), false);
    assert.equal(consumeResponse(s.ni, s.idI, s.hsI, resp), true);
    assert.equal(consumeResponse(s.ni, s.idI, s.hsI, resp), false, 'only once');
  });

  it('cannot create an initiation when the static-static DH is unusable', () => {
    const s = setup(nodeCrypto, nodeCrypto);
    s.hsI.precomputedStaticStatic = null;
    assert.equal(createInitiation(s.ni, s.idI, s.hsI, 1, s.random, WALL), null);
  });
});
