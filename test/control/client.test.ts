import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { backoffDelay, ControlClient, CAPABILITY_VERSION, MAP_WATCHDOG_MS } from '../../src/control/client.ts';
import { registerError, toControlError } from '../../src/control/errors.ts';
import { TransportError } from '../../src/control/ts2021.ts';
import { buildHostinfo } from '../../src/control/hostinfo.ts';
import { MESHD_VERSION } from '../../src/version.ts';
import { generateKeyPair } from '../../src/control/keys.ts';

describe('control client pieces', () => {
  it('speaks capability version 138 (headscale v0.29.2 accepts >= 113) and watches the stream for 120 s', () => {
    assert.equal(CAPABILITY_VERSION, 138);
    assert.equal(MAP_WATCHDOG_MS, 120_000);
  });

  it('backs off exponentially with jitter in [d/2, d], capped', () => {
    for (let n = 0; n < 12; n++) {
      const d = Math.min(30_000, 1000 * 2 ** n);
      for (let i = 0; i < 50; i++) {
        const v = backoffDelay(n, 1000, 30_000);
        assert.ok(v >= d / 2 && v <= d, `attempt ${n}: ${v} not in [${d / 2}, ${d}]`);
      }
    }
  });

  it('maps headscale register errors to stable codes with one-line advice', () => {
    const cases: Array<[string, string]> = [
      ['invalid pre auth key', 'auth_key_invalid'],
      ['invalid authkey', 'auth_key_invalid'],
      ['failed to parse auth-key', 'auth_key_invalid'],
      ['authkey expired', 'auth_key_expired'],
      ['authkey already used', 'auth_key_used'],
      ['node key already in use by another machine', 'registration_rejected'],
    ];
    for (const [text, code] of cases) {
      const e = registerError(text);
      assert.equal(e.code, code, text);
      assert.equal(e.retryable, false);
      assert.equal(e.serverMessage, text);
      assert.ok(!e.message.includes('\n'));
      assert.match(e.message, /retrying will not help/);
    }
  });

  it('calls a refused connection unreachable and retryable', () => {
    const te = new TransportError('connect', 'cannot reach', { unreachable: true, cause: Object.assign(new Error('x'), { code: 'ECONNREFUSED' }) });
    const e = toControlError(te, 'http://127.0.0.1:9');
    assert.equal(e.code, 'server_unreachable');
    assert.equal(e.retryable, true);
    assert.match(e.message, /ECONNREFUSED/);
  });

  it('sends a full Hostinfo: OS linux, IPNVersion meshd-<version>, hostname, with overrides', () => {
    const h = buildHostinfo({ Hostname: 'n1', RoutableIPs: ['0.0.0.0/0', '::/0'] });
    assert.equal(h.OS, 'linux');
    assert.equal(h.IPNVersion, `meshd-${MESHD_VERSION}`);
    assert.equal(h.Hostname, 'n1');
    assert.deepEqual(h.RoutableIPs, ['0.0.0.0/0', '::/0']);
    assert.ok(h.OSVersion && h.GoArch);
    const c = new ControlClient({ serverUrl: 'http://127.0.0.1:9', machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey });
    c.setHostinfo({ NetInfo: { PreferredDERP: 999 } });
    assert.equal(c.hostinfo.NetInfo?.PreferredDERP, 999);
    assert.equal(c.hostinfo.OS, 'linux');
  });

  it('keeps MESHD_VERSION equal to package.json', () => {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
    assert.equal(MESHD_VERSION, pkg.version);
  });

  it('rejects a malformed pinned server key at construction', () => {
    assert.throws(() => new ControlClient({ serverUrl: 'http://127.0.0.1:9', machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, serverKey: 'mkey:00' }), /64 hex/);
  });
});
