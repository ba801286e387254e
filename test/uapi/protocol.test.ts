import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canonicalCidr, formatGet, parseSet, UapiError, type UapiSet, type UapiState } from '../../src/uapi/protocol.ts';
import { UapiServer } from '../../src/uapi/server.ts';

const K1 = '11'.repeat(32);
const K2 = '22'.repeat(32);

describe('UAPI set parsing', () => {
  it('reads device keys and peer sections in order', () => {
    const op = parseSet([
      `private_key=${K1}`, 'listen_port=51820', 'fwmark=7', 'replace_peers=true',
      `public_key=${K2}`, 'endpoint=[2001:db8::1]:51821', 'persistent_keepalive_interval=25',
      'replace_allowed_ips=true', 'allowed_ip=100.64.0.7/32', 'allowed_ip=fd7a:115c:a1e0::7/128', 'protocol_version=1',
      `public_key=${K1}`, 'remove=true',
    ]);
    assert.equal(op.listenPort, 51820);
    assert.equal(op.fwmark, 7);
    assert.equal(op.replacePeers, true);
    assert.equal(op.peers.length, 2);
    const p = op.peers[0]!;
    assert.deepEqual(p.endpoint, { ip: '2001:db8::1', port: 51821 });
    assert.equal(p.persistentKeepalive, 25);
    assert.deepEqual(p.allowedIPs, ['100.64.0.7/32', 'fd7a:115c:a1e0::7/128']);
    assert.equal(op.peers[1]!.remove, true);
  });

  it('treats an all-zero private key as removing the key', () => {
    assert.equal(parseSet([`private_key=${'00'.repeat(32)}`]).privateKey, null);
  });

  it('rejects a bad line with EINVAL and a message naming the field', () => {
    for (const [line, field] of [
      ['private_key=zz', 'private_key'], ['listen_port=70000', 'listen_port'], ['bogus=1', 'bogus'],
    ] as const) {
      assert.throws(() => parseSet([line]), (e: unknown) => e instanceof UapiError && e.errno === -22 && e.message.includes(field));
    }
    assert.throws(() => parseSet([`public_key=${K2}`, 'endpoint=nothost:1']), /endpoint/);
    assert.throws(() => parseSet([`public_key=${K2}`, 'allowed_ip=10.0.0.0/33']), /allowed_ip/);
    assert.throws(() => parseSet(['no equals sign']), (e: unknown) => e instanceof UapiError && e.errno === -71);
  });

  it('canonicalises allowed IPs by clearing host bits', () => {
    assert.equal(canonicalCidr('198.19.5.77/24'), '198.19.5.0/24');
    assert.equal(canonicalCidr('0.0.0.0/0'), '0.0.0.0/0');
    assert.equal(canonicalCidr('fd7a:115c:a1e0:ab12:4843:cd96:6258:b240/48'), 'fd7a:115c:a1e0::/48');
    assert.equal(canonicalCidr('::ffff:1.2.3.4/128'), '::ffff:102:304/128');
  });
});

describe('UAPI get formatting', () => {
  it('prints peers with handshake time split into seconds and nanoseconds', () => {
    const text = formatGet({
      privateKey: new Uint8Array(32).fill(0x11), listenPort: 51820, fwmark: 0,
      peers: [{ publicKey: new Uint8Array(32).fill(0x22), presharedKey: new Uint8Array(32), endpoint: '198.18.0.2:51820',
        lastHandshakeWallMs: 1_700_000_000_123, txBytes: 5, rxBytes: 6, persistentKeepalive: 0, allowedIPs: ['100.64.0.2/32'] }],
    });
    assert.equal(text, [
      `private_key=${K1}`, 'listen_port=51820', `public_key=${K2}`, `preshared_key=${'00'.repeat(32)}`, 'protocol_version=1',
      'endpoint=198.18.0.2:51820', 'last_handshake_time_sec=1700000000', 'last_handshake_time_nsec=123000000',
      'tx_bytes=5', 'rx_bytes=6', 'persistent_keepalive_interval=0', 'allowed_ip=100.64.0.2/32', '',
    ].join('\n'));
  });
});

describe('UAPI server', () => {
  it('answers get and set over a unix socket, and a bad set changes nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshd-uapi-'));
    const applied: UapiSet[] = [];
    const state: UapiState = { privateKey: null, listenPort: 1234, fwmark: 0, peers: [] };
    const server = new UapiServer(join(dir, 'x.sock'), {
      uapiGet: () => state,
      uapiSet: (op) => { applied.push(op); },
    });
    await server.listen();
    try {
      assert.equal(statSync(server.path).mode & 0o777, 0o600);
      const talk = (req: string) => new Promise<string>((resolve, reject) => {
        const c = createConnection(server.path);
        let out = '';
        c.setEncoding('utf8');
        c.on('data', (d: string) => { out += d; if (out.endsWith('\n\n')) { c.end(); resolve(out); } });
        c.on('error', reject);
        c.write(req);
      });
      assert.equal(await talk('get=1\n\n'), 'listen_port=1234\nerrno=0\n\n');
      assert.equal(await talk(`set=1\nlisten_port=4321\npublic_key=${K2}\nallowed_ip=100.64.0.2/32\n\n`), 'errno=0\n\n');
      assert.equal(applied.length, 1);
      assert.equal(await talk(`set=1\nlisten_port=4321\npublic_key=${K2}\nallowed_ip=nonsense\n\n`), 'errno=-22\n\n');
      assert.equal(applied.length, 1, 'the invalid set must not be applied at all');
    } finally {
      await server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses to take over a socket another live server answers on', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshd-uapi-'));
    const t = { uapiGet: (): UapiState => ({ privateKey: null, listenPort: 0, fwmark: 0, peers: [] }), uapiSet: () => {} };
    const a = new UapiServer(join(dir, 'y.sock'), t);
    await a.listen();
    try {
      await assert.rejects(new UapiServer(join(dir, 'y.sock'), t).listen(), /in use/);
    } finally {
      await a.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
