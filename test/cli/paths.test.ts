// Default paths: root keeps the system ones; an ordinary user (userspace networking) gets XDG ones.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { defaultSocket, defaultStateDir } from '../../src/cli/paths.ts';
import { socksAuthFromEnv } from '../../src/cli/tailnet.ts';

describe('default agent paths', () => {
  it('uses /var/lib/meshd and /run/meshd/meshd.sock for root', () => {
    assert.equal(defaultStateDir({ XDG_STATE_HOME: '/x' }, true), '/var/lib/meshd');
    assert.equal(defaultSocket({ XDG_RUNTIME_DIR: '/run/user/1000' }, true), '/run/meshd/meshd.sock');
  });

  it('uses XDG_STATE_HOME/meshd and XDG_RUNTIME_DIR/meshd/meshd.sock for a user', () => {
    assert.equal(defaultStateDir({ XDG_STATE_HOME: '/home/u/.st', HOME: '/home/u' }, false), '/home/u/.st/meshd');
    assert.equal(defaultSocket({ XDG_RUNTIME_DIR: '/run/user/1000', HOME: '/home/u' }, false), '/run/user/1000/meshd/meshd.sock');
  });

  it('falls back to ~/.local/state/meshd and a socket in the state dir, ignoring relative XDG paths', () => {
    assert.equal(defaultStateDir({ HOME: '/home/u' }, false), '/home/u/.local/state/meshd');
    assert.equal(defaultStateDir({ HOME: '/home/u', XDG_STATE_HOME: 'rel' }, false), '/home/u/.local/state/meshd');
    assert.equal(defaultSocket({ HOME: '/home/u' }, false), '/home/u/.local/state/meshd/meshd.sock');
  });

  it('reads SOCKS5 credentials from the environment, both or neither', () => {
    assert.equal(socksAuthFromEnv({}), undefined);
    assert.deepEqual(socksAuthFromEnv({ MESHD_SOCKS5_USER: 'a', MESHD_SOCKS5_PASSWORD: 'b' }), { user: 'a', pass: 'b' });
    assert.throws(() => socksAuthFromEnv({ MESHD_SOCKS5_USER: 'a' }), /set both MESHD_SOCKS5_USER and MESHD_SOCKS5_PASSWORD/);
  });
});
