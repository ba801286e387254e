// listenUnix: modes only on directories it creates, and a socket that never has a looser mode.
import { describe, it, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { listenUnix, mkdirOwned } from '../../src/util/unixsocket.ts';

const dirs: string[] = [];
const servers: Server[] = [];
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), 'meshd-sock-'));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const s of servers.splice(0)) await new Promise((r) => s.close(r));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const opts = { dirMode: 0o700, mode: 0o600, inUse: 'in use' };

describe('listenUnix', () => {
  it('leaves an existing shared directory (like /tmp) as it is; the socket itself is 0600', async () => {
    const shared = join(tmp(), 'shared');
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    const s = createServer();
    servers.push(s);
    await listenUnix(s, join(shared, 'meshd.sock'), opts);
    assert.equal(statSync(shared).mode & 0o7777, 0o1777, 'the directory was not chmodded');
    assert.equal(statSync(join(shared, 'meshd.sock')).mode & 0o777, 0o600);
  });

  it('creates missing directories with dirMode exactly, whatever the umask', async () => {
    const base = tmp();
    const old = process.umask(0o022);
    try {
      const s = createServer();
      servers.push(s);
      await listenUnix(s, join(base, 'a', 'b', 'meshd.sock'), { ...opts, dirMode: 0o750 });
    } finally {
      process.umask(old);
    }
    assert.equal(statSync(join(base, 'a')).mode & 0o777, 0o750);
    assert.equal(statSync(join(base, 'a', 'b')).mode & 0o777, 0o750);
    assert.equal(statSync(base).mode & 0o777, 0o700, 'the existing parent keeps its mode');
    assert.deepEqual(mkdirOwned(join(base, 'a', 'b'), 0o700), [], 'existing: nothing created, nothing chmodded');
    assert.equal(statSync(join(base, 'a', 'b')).mode & 0o777, 0o750);
  });

  it('binds the socket with its final mode: no window with the umask\'s mode', async () => {
    const path = join(tmp(), 'meshd.sock');
    const old = process.umask(0);
    let atBind = -1;
    const s = createServer();
    servers.push(s);
    // Runs before listenUnix's own listening callback (which chmods): sees the mode bind() gave.
    s.once('listening', () => { atBind = statSync(path).mode & 0o777; });
    let after = -1;
    try {
      await listenUnix(s, path, opts);
      after = process.umask(0);
    } finally {
      process.umask(old);
    }
    assert.equal(atBind, 0o600);
    assert.equal(after, 0, 'the umask is restored');
  });

  it('refuses a socket a live server answers on', async () => {
    const path = join(tmp(), 'meshd.sock');
    const a = createServer();
    servers.push(a);
    await listenUnix(a, path, opts);
    await assert.rejects(listenUnix(createServer(), path, opts), /in use/);
  });
});
