// The allowed-IPs table's indexes (by prefix and by value) that make a network map re-sending every
// peer cheap: they must agree with the table after inserts, moves and removals.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { AllowedIPs } from '../../src/wg/allowedips.ts';
import { Device } from '../../src/wg/device.ts';
import { nodeCrypto } from '../../src/crypto/backend.ts';
import { rand } from '../harness/bytes.ts';
import { FakeClock } from '../harness/wgpipe.ts';

const v4 = (s: string): Uint8Array => new Uint8Array(s.split('.').map(Number));

describe('AllowedIPs indexes', () => {
  it('keeps prefixesOf, hasExactly and lookups consistent through inserts, moves and removals', () => {
    const t = new AllowedIPs<string>();
    t.insert('10.0.0.0/24', 'a');
    t.insert('10.0.1.0/24', 'a');
    t.insert('10.0.2.0/24', 'b');
    assert.deepEqual(t.prefixesOf('a'), ['10.0.0.0/24', '10.0.1.0/24']);
    assert.equal(t.hasExactly('a', ['10.0.1.0/24', '10.0.0.0/24']), true);
    assert.equal(t.hasExactly('a', ['10.0.0.0/24']), false);
    t.insert('10.0.1.0/24', 'b'); // moves, as in wireguard-go
    assert.deepEqual(t.prefixesOf('a'), ['10.0.0.0/24']);
    assert.deepEqual(t.prefixesOf('b'), ['10.0.1.0/24', '10.0.2.0/24']);
    assert.equal(t.lookupV4(v4('10.0.1.7'), 0), 'b');
    t.removeValue('b');
    assert.deepEqual(t.prefixesOf('b'), []);
    assert.equal(t.hasExactly('b', []), true);
    assert.equal(t.lookupV4(v4('10.0.1.7'), 0), undefined);
    assert.equal(t.lookupV4(v4('10.0.0.7'), 0), 'a');
    t.remove('10.0.0.0/24');
    assert.deepEqual(t.prefixesOf('a'), []);
    t.insert('10.0.0.0/24', 'c');
    assert.equal(t.lookupV4(v4('10.0.0.1'), 0), 'c');
  });

  it('lists prefixes in insertion order after a replace reuses freed slots (wg setconf of showconf changes nothing)', () => {
    const t = new AllowedIPs<string>();
    t.insert('100.64.0.2/32', 'p');
    t.insert('fd7a:115c:a1e0::2/128', 'p');
    t.removeValue('p');
    t.insert('100.64.0.2/32', 'p');
    t.insert('fd7a:115c:a1e0::2/128', 'p');
    assert.deepEqual(t.prefixesOf('p'), ['100.64.0.2/32', 'fd7a:115c:a1e0::2/128']);
  });

  it('re-applies 2,000 unchanged peers with replaceAllowedIPs without losing a route, and a changed set still replaces', () => {
    const d = new Device({ clock: new FakeClock() });
    d.setPrivateKey(nodeCrypto.x25519.generatePrivate(rand));
    const keys = Array.from({ length: 2000 }, () => nodeCrypto.x25519.publicFromPrivate(nodeCrypto.x25519.generatePrivate(rand)));
    const apply = (): void => keys.forEach((k, i) => d.setPeer(k, { allowedIPs: [`100.80.${i >> 8}.${i & 255}/32`], replaceAllowedIPs: true }));
    apply();
    apply();
    const peers = d.peers();
    assert.equal(peers.length, 2000);
    assert.deepEqual(peers[1234]!.allowedIPs, ['100.80.4.210/32']);
    d.setPeer(keys[7]!, { allowedIPs: ['100.81.0.7/32', '100.81.0.8/32'], replaceAllowedIPs: true });
    assert.deepEqual(d.peers()[7]!.allowedIPs, ['100.81.0.7/32', '100.81.0.8/32']);
    d.setPeer(keys[7]!, { allowedIPs: ['100.81.0.9/32'] }); // without replace: added
    assert.deepEqual(d.peers()[7]!.allowedIPs, ['100.81.0.7/32', '100.81.0.8/32', '100.81.0.9/32']);
  });
});
