import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { nodeCrypto } from '../../src/crypto/backend.ts';
import { CookieChecker, CookieGenerator, COOKIE_REFRESH_TIME_MS } from '../../src/wg/cookie.ts';
import { INITIATION_SIZE } from '../../src/wg/messages.ts';
import { rand } from '../harness/bytes.ts';

function setup() {
  const priv = nodeCrypto.x25519.generatePrivate(rand);
  const pub = nodeCrypto.x25519.publicFromPrivate(priv);
  const checker = new CookieChecker(nodeCrypto, rand);
  checker.init(pub);
  const gen = new CookieGenerator(nodeCrypto, pub);
  const msg = rand(INITIATION_SIZE);
  msg.set([1, 0, 0, 0]);
  return { checker, gen, msg, src: Uint8Array.of(198, 18, 0, 1, 0xca, 0x6c) };
}

describe('mac1, mac2 and cookie replies', () => {
  it('accepts mac1 made for our key and rejects mac1 for another key or a changed message', () => {
    const { checker, gen, msg } = setup();
    gen.addMacs(msg, 0);
    assert.equal(checker.checkMac1(msg), true);
    const changed = msg.slice();
    changed[10]! ^= 1;
    assert.equal(checker.checkMac1(changed), false);
    const other = new CookieGenerator(nodeCrypto, rand(32));
    const m2 = msg.slice();
    other.addMacs(m2, 0);
    assert.equal(checker.checkMac1(m2), false);
  });

  it('leaves mac2 zero without a cookie, and makes a valid mac2 after consuming a cookie reply', () => {
    const { checker, gen, msg, src } = setup();
    gen.addMacs(msg, 0);
    assert.ok(msg.subarray(132).every((b) => b === 0));
    assert.equal(checker.checkMac2(msg, src, 0), false);
    const reply = checker.createReply(msg, 1, src, 0);
    assert.equal(reply.length, 64);
    assert.equal(gen.consumeReply(reply, 0), true);
    gen.addMacs(msg, 100);
    assert.equal(checker.checkMac2(msg, src, 100), true);
    assert.equal(checker.checkMac2(msg, Uint8Array.of(198, 18, 0, 9, 0xca, 0x6c), 100), false, 'cookie is bound to the source address');
  });

  it('takes a cookie reply only once, and only for the mac1 we last sent', () => {
    const { checker, gen, msg, src } = setup();
    gen.addMacs(msg, 0);
    const reply = checker.createReply(msg, 1, src, 0);
    const forged = reply.slice();
    forged[40]! ^= 1;
    assert.equal(gen.consumeReply(forged, 0), false);
    assert.equal(gen.consumeReply(reply, 0), true);
    assert.equal(gen.consumeReply(reply, 0), false);
  });

  it('stops using a cookie after 120 s, and the checker renews its secret after 120 s', () => {
    const { checker, gen, msg, src } = setup();
    gen.addMacs(msg, 0);
    gen.consumeReply(checker.createReply(msg, 1, src, 0), 0);
    gen.addMacs(msg, COOKIE_REFRESH_TIME_MS + 1);
    assert.ok(msg.subarray(132).every((b) => b === 0));
    assert.equal(checker.checkMac2(msg, src, COOKIE_REFRESH_TIME_MS + 1), false);
  });
});
