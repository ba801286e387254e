// `meshd up --login-server https://...` against an unmodified headscale v0.29.2 serving TLS with
// certificates this test makes with openssl (its own CA): trusted through --ca-file, and the one
// line a user sees for an untrusted certificate, one for another host name, and an expired one.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { needs, sh } from '../harness/prereq.ts';
import { TailnetLab, HS_IP, type LabNode } from '../harness/hslab.ts';
import type { Status } from '../../src/daemon/localapi.ts';

const skip = needs({ root: true, tun: true, commands: ['headscale', 'ip', 'openssl'] });

/** A CA and three server certificates: for HS_IP, for another IP, and for HS_IP but expired. */
function makeCerts(dir: string): void {
  const ossl = (args: string[]): void => { sh('openssl', args, { timeoutMs: 20_000 }); };
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  ossl(['req', '-x509', ...ec, '-keyout', join(dir, 'ca.key'), '-out', join(dir, 'ca.crt'), '-days', '2', '-subj', '/CN=meshd test CA']);
  const leaf = (name: string, ip: string, days: string, serial: string): void => {
    ossl(['req', ...ec, '-keyout', join(dir, `${name}.key`), '-out', join(dir, `${name}.csr`), '-subj', `/CN=${ip}`]);
    writeFileSync(join(dir, `${name}.ext`), `subjectAltName=IP:${ip}\n`);
    ossl(['x509', '-req', '-in', join(dir, `${name}.csr`), '-CA', join(dir, 'ca.crt'), '-CAkey', join(dir, 'ca.key'),
      '-set_serial', serial, '-days', days, '-extfile', join(dir, `${name}.ext`), '-out', join(dir, `${name}.crt`)]);
  };
  leaf('good', HS_IP, '2', '2');
  leaf('otherhost', '198.18.0.99', '2', '3');
  leaf('expired', HS_IP, '-1', '4'); // notAfter a day before now
}

describe('meshd up against headscale over TLS', { skip }, () => {
  let lab: TailnetLab;
  let n: LabNode;
  let key: string;
  let certs: string;

  /** Serves the named certificate (headscale restarted to load it). */
  async function serve(name: string): Promise<void> {
    await lab.stopHeadscale();
    copyFileSync(join(certs, `${name}.crt`), join(lab.hsDir, 'tls.crt'));
    copyFileSync(join(certs, `${name}.key`), join(lab.hsDir, 'tls.key'));
    await lab.startHeadscale();
  }
  function up(extra: string[]): { status: number | null; stdout: string; stderr: string } {
    const keyFile = join(n.dir, 'authkey');
    writeFileSync(keyFile, key, { mode: 0o600 });
    return lab.meshd(n, ['up', '--login-server', lab.url, '--authkey', `file:${keyFile}`, '--hostname', 'tls', '--state', 'mem:', '--timeout', '20s', ...extra], 40_000);
  }
  function assertRefused(r: { status: number | null; stderr: string }, want: RegExp): void {
    assert.notEqual(r.status, 0);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0]!, want);
    assert.notEqual(lab.lab.tryExec(n.ns, ['ip', 'link', 'show', 'meshd0']).status, 0, 'no TUN left');
    assert.equal(sh('ip', ['netns', 'pids', n.ns]).trim(), '', 'no agent left');
  }

  before(async () => {
    lab = new TailnetLab('tls', { tls: true });
    certs = join(lab.dir, 'certs');
    sh('mkdir', ['-p', certs]);
    makeCerts(certs);
    copyFileSync(join(certs, 'good.crt'), join(lab.hsDir, 'tls.crt'));
    copyFileSync(join(certs, 'good.key'), join(lab.hsDir, 'tls.key'));
    await lab.startHeadscale();
    key = lab.authKey({ ephemeral: true });
    n = lab.addNode('tls');
  });
  after(async () => { await lab?.dispose(); });

  it('joins over https when the CA is given with --ca-file', () => {
    assert.match(lab.url, /^https:/);
    const r = up(['--ca-file', join(certs, 'ca.crt')]);
    assert.equal(r.status, 0, `up: ${r.stderr}\n${lab.headscaleLog().slice(-1500)}`);
    const st = JSON.parse(lab.meshd(n, ['status', '--json']).stdout) as Status;
    assert.equal(st.self.state, 'Running');
    assert.equal(st.self.controlURL, lab.url);
    assert.ok(lab.nodeList().some((x) => x.given_name === 'tls'), 'headscale lists the node');
    assert.equal(lab.meshd(n, ['down']).status, 0);
  });

  it('refuses a certificate from a CA it was not given, naming that', () => {
    assertRefused(up([]), /^meshd: control server https:\/\/198\.18\.0\.1:8080 presents a TLS certificate this machine does not trust \(.+\): give its CA with the CA-file option/);
  });

  it('refuses a certificate for another host name, naming both', async () => {
    await serve('otherhost');
    assertRefused(up(['--ca-file', join(certs, 'ca.crt')]), /^meshd: control server https:\/\/198\.18\.0\.1:8080 presents a TLS certificate for another name \(.*198\.18\.0\.1.*198\.18\.0\.99.*\)/);
  });

  it('refuses an expired certificate, saying it expired', async () => {
    await serve('expired');
    assertRefused(up(['--ca-file', join(certs, 'ca.crt')]), /^meshd: control server https:\/\/198\.18\.0\.1:8080 presents an expired TLS certificate/);
  });
});
