import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { whoisIn } from '../../src/daemon/whois.ts';
import type { NetworkMap } from '../../src/control/netmap.ts';

const node = (id: number, name: string, addrs: string[], user: number, tags: string[] = []) =>
  ({ id, name: `${name}.meshd.test.`, hostname: name, addresses: addrs, user, tags, keyExpiry: undefined });
const map = {
  self: node(1, 'me', ['100.64.0.1/32', 'fd7a:115c:a1e0::1/128'], 7),
  peers: new Map([[2, node(2, 'ci', ['100.64.0.2/32', 'fd7a:115c:a1e0::2/128'], 2147455555, ['tag:ci'])]]),
  userProfiles: new Map([[7, { ID: 7, LoginName: 'alice', DisplayName: 'Alice' }]]),
} as unknown as NetworkMap;

describe('whoisIn', () => {
  it('finds this node and its user', () => {
    const w = whoisIn(map, '100.64.0.1');
    assert.equal(w.node.self, true);
    assert.deepEqual(w.user, { id: 7, loginName: 'alice', displayName: 'Alice' });
  });
  it('finds a tagged peer by IPv6 with a port, owned by its tags', () => {
    const w = whoisIn(map, '[FD7A:115C:A1E0::2]:22');
    assert.equal(w.node.hostname, 'ci');
    assert.deepEqual(w.node.tags, ['tag:ci']);
    assert.equal(w.user.loginName, 'tagged-devices');
  });
  it('says which address no node has', () => {
    assert.throws(() => whoisIn(map, '100.64.0.9:80'), { code: 'no_such_peer', message: 'no node in the tailnet has the address 100.64.0.9:80' });
  });
});
