import { describe, it, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync, readdirSync, chmodSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { StateStore, StateError } from '../../src/state/store.ts';
import { formatNodePublic, publicKeyOf } from '../../src/control/keys.ts';

const dirs: string[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'meshd-store-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('state directory', () => {
  it('creates the directory 0700 and state.json 0600 with new machine and node keys', async () => {
    const dir = join(tmp(), 'state');
    const store = await StateStore.open(dir);
    const { identity, created, state } = await store.loadOrCreateIdentity('http://127.0.0.1:1');
    assert.equal(created, true);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(statSync(store.file).mode & 0o777, 0o600);
    assert.deepEqual(identity.nodePublic, publicKeyOf(identity.nodePrivate));
    assert.notDeepEqual(identity.machinePrivate, identity.nodePrivate);
    assert.equal(state.serverUrl, 'http://127.0.0.1:1');
  });

  it('shows new keys to onIdentity before writing them, and the file then holds those keys', async () => {
    const dir = join(tmp(), 'state');
    const store = await StateStore.open(dir);
    let seen: string | undefined;
    let fileThen: boolean | undefined;
    const { identity } = await store.loadOrCreateIdentity('http://127.0.0.1:1', (id) => {
      seen = formatNodePublic(id.nodePublic);
      fileThen = readdirSync(dir).includes('state.json');
    });
    assert.equal(seen, formatNodePublic(identity.nodePublic));
    assert.equal(fileThen, false, 'called before the write');
    const again = await (await StateStore.open(dir)).loadOrCreateIdentity(undefined, (id) => { seen = formatNodePublic(id.nodePublic); });
    assert.equal(again.created, false);
    assert.equal(seen, formatNodePublic(identity.nodePublic), 'the stored keys, on load too');
  });

  it('loads the same identity the second time', async () => {
    const dir = join(tmp(), 'state');
    const first = await (await StateStore.open(dir)).loadOrCreateIdentity();
    const again = await (await StateStore.open(dir)).loadOrCreateIdentity();
    assert.equal(again.created, false);
    assert.equal(formatNodePublic(again.identity.nodePublic), formatNodePublic(first.identity.nodePublic));
    assert.deepEqual(again.identity.machinePrivate, first.identity.machinePrivate);
  });

  it('leaves no temp files behind, keeps an existing directory\'s mode and tightens a loose file mode', async () => {
    const dir = join(tmp(), 'state');
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    const store = await StateStore.open(dir);
    assert.equal(statSync(dir).mode & 0o777, 0o755, 'an existing directory is never chmodded');
    await store.loadOrCreateIdentity();
    await store.update({ nodeId: 7, addresses: ['100.64.0.7/32'] });
    assert.deepEqual(readdirSync(dir), ['state.json']);
    chmodSync(store.file, 0o644);
    const s = await store.read();
    assert.equal(s?.nodeId, 7);
    assert.equal(statSync(store.file).mode & 0o777, 0o600);
  });

  it('refuses an existing directory others can write to, with one line saying why, and leaves its mode', async () => {
    for (const [mode, who] of [[0o1777, 'all users'], [0o775, 'its group']] as const) {
      const dir = join(tmp(), 'shared');
      mkdirSync(dir);
      chmodSync(dir, mode);
      await assert.rejects(StateStore.open(dir), (e: Error) => {
        assert.ok(e instanceof StateError);
        assert.equal(e.code, 'state_unwritable');
        assert.match(e.message, new RegExp(`writable by ${who} \\(mode ${mode.toString(8).padStart(4, '0')}\\): choose another with --state-dir`));
        assert.ok(!e.message.includes('\n'));
        return true;
      });
      assert.equal(statSync(dir).mode & 0o7777, mode, 'refused, not chmodded');
      assert.deepEqual(readdirSync(dir), [], 'nothing written there');
    }
  });

  it('creates a missing directory 0700 whatever the umask', async () => {
    const old = process.umask(0);
    try {
      const dir = join(tmp(), 'a', 'state');
      await StateStore.open(dir);
      assert.equal(statSync(dir).mode & 0o777, 0o700);
    } finally {
      process.umask(old);
    }
  });

  it('rotates only the node key', async () => {
    const store = await StateStore.open(join(tmp(), 'state'));
    const { identity } = await store.loadOrCreateIdentity();
    const next = await store.rotateNodeKey();
    assert.deepEqual(next.machinePrivate, identity.machinePrivate);
    assert.notDeepEqual(next.nodePrivate, identity.nodePrivate);
  });

  it('reports a corrupt file with code state_corrupt and what to do', async () => {
    const dir = join(tmp(), 'state');
    const store = await StateStore.open(dir);
    writeFileSync(store.file, '{"version":1,"machineKey":"nope","nodeKey":"x"}', { mode: 0o600 });
    await assert.rejects(store.read(), (e: unknown) => e instanceof StateError && e.code === 'state_corrupt' && /move it away/.test(e.message));
  });
});
