// The early agent start of `meshd up` (src/cli/agentspawn.ts): bin/meshd.js guesses the daemon
// flags from argv before commander loads; `up` adopts that agent only when the guess gives the very
// command line it would start the agent with. A daemon flag added to one side and not the other
// shows here, instead of as a silently slower `up`.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { agentArgs, parseEarlyUp } from '../../src/cli/agentspawn.ts';
import { checkedAgentFlags, type DaemonFlags } from '../../src/cli/tailnet.ts';
import { defaultSocket, defaultStateDir } from '../../src/cli/paths.ts';

/** What `up` computes after commander (with main.ts's defaults) parsed the same command line. */
function upArgs(socket: string, given: DaemonFlags): string[] {
  return agentArgs(socket, checkedAgentFlags({ stateDir: defaultStateDir(), tun: 'meshd0', port: '41641', ...given }));
}

function early(argv: string[]): string[] {
  const e = parseEarlyUp(argv);
  assert.ok(e, `an up command line: ${argv.join(' ')}`);
  return agentArgs(e.socket, e.flags);
}

describe('the early agent start of meshd up', () => {
  it('guesses the same agent command line as up computes, for the daemon flags in either form', () => {
    assert.deepEqual(
      early(['up', '--login-server', 'http://hs:8080', '--authkey', 'file:/k', '--hostname', 'n1', '--state-dir', '/s', '--timeout', '45s']),
      upArgs(defaultSocket(), { stateDir: '/s' }));
    assert.deepEqual(
      early(['--socket', '/tmp/a.sock', 'up', '--state', 'mem:', '--tun=userspace-networking', '--port', '0', '--verbose',
        '--socks5-server', 'localhost:1080', '--outbound-http-proxy-listen=localhost:8080', '--login-server', 'http://hs']),
      upArgs('/tmp/a.sock', { state: 'mem:', tun: 'userspace-networking', port: '0', verbose: true, socks5Server: 'localhost:1080', outboundHttpProxyListen: 'localhost:8080' }));
    assert.deepEqual(early(['--socket=/x.sock', 'up', '--debug', '9090', '--port=041641']), upArgs('/x.sock', { debug: '9090', port: '041641' }));
  });

  it('tells apart what is not an up command line, or asks for help', () => {
    assert.equal(parseEarlyUp(['status']), undefined);
    assert.equal(parseEarlyUp(['--socket', '/x', 'down']), undefined);
    assert.equal(parseEarlyUp(['up', '--help']), undefined);
    assert.equal(parseEarlyUp(['up', '--state-dir']), undefined, 'a flag without its value');
    assert.equal(parseEarlyUp(['status', 'up']), undefined, 'up as an argument of another command');
  });

  it('passes the login server and CA file on as a hint, outside the command line up compares', () => {
    const e = parseEarlyUp(['up', '--login-server', 'http://hs:8080', '--ca-file=/ca.pem', '--authkey', 'file:/k']);
    assert.deepEqual(e?.hint, { loginServer: 'http://hs:8080', caFile: '/ca.pem' });
    assert.deepEqual(agentArgs(e!.socket, e!.flags), upArgs(defaultSocket(), {}));
    assert.equal(parseEarlyUp(['up', '--state', 'mem:'])?.hint, undefined, 'no login server, no hint');
  });

  it('gives a different command line when the flags differ, so up starts its own agent', () => {
    assert.notDeepEqual(early(['up', '--tun', 'meshd1']), upArgs(defaultSocket(), {}));
  });
});
