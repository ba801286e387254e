import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { sanitizeHostname, sanitizeLabel } from '../../src/util/dnsname.ts';

describe('sanitizeHostname (as tailscale util/dnsname)', () => {
  it('keeps a valid label as it is', () => {
    assert.equal(sanitizeHostname('ci-runner-42'), 'ci-runner-42');
  });
  it('lowercases and turns inner separators into dashes', () => {
    assert.equal(sanitizeHostname('Owner/Repo Build_7@main'), 'ownerrepo-build-7-main');
    assert.equal(sanitizeHostname('my.host.example'), 'my-host-example');
  });
  it('drops .local, .localdomain and .lan, and leading or trailing junk', () => {
    assert.equal(sanitizeHostname('box.local'), 'box');
    assert.equal(sanitizeHostname('box.localdomain'), 'box');
    assert.equal(sanitizeHostname('--_box_--'), 'box');
  });
  it('cuts at 63 bytes and never ends with a dash', () => {
    const long = `${'a'.repeat(62)}_b${'c'.repeat(10)}`;
    const out = sanitizeLabel(long);
    assert.ok(out.length <= 63);
    assert.match(out, /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/);
  });
  it('returns "" when nothing usable is left', () => {
    assert.equal(sanitizeHostname('__..__'), '');
  });
});
