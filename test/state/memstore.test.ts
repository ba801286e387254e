import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MemoryStore } from '../../src/state/memstore.ts';

describe('MemoryStore (--state mem:)', () => {
  it('creates an identity once and keeps it, with updates merged', async () => {
    const s = new MemoryStore();
    assert.equal(await s.read(), undefined);
    const a = await s.loadOrCreateIdentity('http://hs');
    assert.equal(a.created, true);
    const b = await s.loadOrCreateIdentity('http://hs');
    assert.equal(b.created, false);
    assert.deepEqual(b.identity.nodePublic, a.identity.nodePublic);
    await s.update({ hostname: 'ci' });
    assert.equal((await s.read())?.hostname, 'ci');
    assert.equal((await s.read())?.serverUrl, 'http://hs');
  });
  it('rotates the node key but keeps the machine key', async () => {
    const s = new MemoryStore();
    const a = (await s.loadOrCreateIdentity()).identity;
    const b = await s.rotateNodeKey();
    assert.notDeepEqual(b.nodePublic, a.nodePublic);
    assert.deepEqual(b.machinePublic, a.machinePublic);
  });
});
