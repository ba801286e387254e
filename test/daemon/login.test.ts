// The register step `up` shares between the agent and the CLI that registers for it
// (src/daemon/login.ts): the prefs and Hostinfo a fresh agent's `up` registers with.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { upHostinfo, upPrefs } from '../../src/daemon/login.ts';
import { Routing } from '../../src/daemon/routing.ts';
import { DEFAULT_PREFS, type RoutePrefs } from '../../src/router/plan.ts';

/** What Agent.doUp does with a fresh Routing: the flags, then the stored prefs, then the flags again. */
function agentPrefs(req: Partial<RoutePrefs>, stored: RoutePrefs | undefined): RoutePrefs {
  const r = new Routing('t0', () => {});
  r.setPrefs(req);
  if (stored) { r.setPrefs(stored); r.setPrefs(req); }
  return r.prefs;
}

describe('the register step of up', () => {
  it('lays the flags given over the stored prefs as the agent does', () => {
    const stored: RoutePrefs = { ...DEFAULT_PREFS, advertiseRoutes: ['10.2.0.0/16'], acceptRoutes: true, exitNode: '100.64.0.9' };
    for (const req of [{}, { advertiseRoutes: ['10.1.0.1/24'] }, { exitNode: '' , advertiseExitNode: true }, { acceptRoutes: false }]) {
      assert.deepEqual(upPrefs(req, stored), agentPrefs(req, stored), JSON.stringify(req));
      assert.deepEqual(upPrefs(req, undefined), agentPrefs(req, undefined), JSON.stringify(req));
    }
    assert.deepEqual(upPrefs({ advertiseRoutes: ['10.1.0.1/24'] }, undefined).advertiseRoutes, ['10.1.0.0/24']);
  });

  it('names a conflict of the flags as bad_route', () => {
    assert.throws(() => upPrefs({ advertiseExitNode: true, exitNode: '100.64.0.2' }, undefined), (e: Error & { code?: string }) => e.code === 'bad_route' && /cannot offer an exit node and use one/.test(e.message));
    assert.throws(() => upPrefs({ advertiseRoutes: ['10.1.0.0'] }, undefined), /bad route "10.1.0.0"/);
  });

  it('asks for tags only without an auth key, and sends the routes an exit node offers', () => {
    const prefs = upPrefs({ advertiseExitNode: true, advertiseRoutes: ['10.1.0.0/24'] }, undefined);
    assert.deepEqual(upHostinfo('n1', prefs, ['tag:ci'], false), { Hostname: 'n1', RoutableIPs: ['10.1.0.0/24', '0.0.0.0/0', '::/0'], RequestTags: ['tag:ci'] });
    assert.deepEqual(upHostinfo(undefined, DEFAULT_PREFS, ['tag:ci'], true), { RoutableIPs: [] });
  });
});
