// Marked TCP for the tailnet's own connections: the fd carries SO_MARK, Node connects it, and TLS,
// the TS2021 control protocol and DERP work on top.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { createServer as createHttpsServer } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { markedDialer, type TcpDialer } from '../../src/net/tcp.ts';
import { fetchServerKey } from '../../src/control/ts2021.ts';
import { ControlClient } from '../../src/control/client.ts';
import { encodeMapFrame } from '../../src/control/mapframe.ts';
import { formatNodePublic, generateKeyPair } from '../../src/control/keys.ts';
import { DerpClient } from '../../src/derp/client.ts';
import { FakeControl } from '../harness/fakecontrol.ts';
import { FakeDerp } from '../derp/fake-server.ts';

const root = process.getuid?.() === 0;
const MARK = 0x80000;

/** The dialer the agent uses (marked as root; mark 0 otherwise), counting the sockets it made. */
function spyDialer(): { dial: TcpDialer; sockets: Socket[] } {
  const inner = markedDialer(root ? MARK : 0);
  const sockets: Socket[] = [];
  return { sockets, dial: (h, p) => { const s = inner(h, p); sockets.push(s); return s; } };
}

/** The fwmark ss shows for our end of a connection to `port`, or undefined. */
function fwmarkTo(port: number): string | undefined {
  const r = spawnSync('ss', ['-tne', 'dport', '=', `:${port}`], { encoding: 'utf8' });
  return /fwmark:(0x[0-9a-f]+)/.exec(r.stdout ?? '')?.[1];
}

describe('markedDialer', () => {
  let echo: Server;
  let port = 0;
  before(async () => {
    echo = createServer((c) => c.pipe(c));
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', r));
    port = (echo.address() as AddressInfo).port;
  });
  after(() => { echo.close(); });

  it('connects by name and by IPv4 literal, carries SO_MARK, and moves bytes both ways', { skip: root ? false : 'needs root (CAP_NET_ADMIN) for SO_MARK' }, async () => {
    for (const host of ['localhost', '127.0.0.1']) {
      const s = markedDialer(MARK)(host, port);
      await once(s, 'connect');
      assert.equal(fwmarkTo(port), '0x80000', `${host}: the kernel socket carries the bypass mark`);
      s.write('ping');
      const [d] = await once(s, 'data') as [Buffer];
      assert.equal(d.toString(), 'ping');
      s.destroy();
      await once(s, 'close');
    }
  });

  it('reports a refused connection as an ECONNREFUSED error event', async () => {
    const s = markedDialer(0)('127.0.0.1', 1);
    const [e] = await once(s, 'error') as [NodeJS.ErrnoException];
    assert.equal(e.code, 'ECONNREFUSED');
  });
});

describe('control and DERP over marked sockets', () => {
  let dir = '';
  before(() => { dir = mkdtempSync(join(tmpdir(), 'meshd-tcp-')); });
  after(() => { rmSync(dir, { recursive: true, force: true }); });

  it('fetches the control key over https on a marked socket, checking the certificate against the name', async () => {
    const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', join(dir, 'k.pem'), '-out', join(dir, 'c.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const key = generateKeyPair();
    const srv = createHttpsServer({ key: readFileSync(join(dir, 'k.pem')), cert: readFileSync(join(dir, 'c.pem')) }, (_req, res) => {
      res.end(JSON.stringify({ publicKey: `mkey:${Buffer.from(key.publicKey).toString('hex')}` }));
    });
    await new Promise<void>((res) => srv.listen(0, '127.0.0.1', res));
    const p = (srv.address() as AddressInfo).port;
    try {
      const { dial, sockets } = spyDialer();
      const got = await fetchServerKey({ url: `https://localhost:${p}`, caFile: join(dir, 'c.pem'), dial }, 138);
      assert.deepEqual(Buffer.from(got), Buffer.from(key.publicKey));
      assert.equal(sockets.length, 1, 'the request went through the dialer');
      await assert.rejects(fetchServerKey({ url: `https://127.0.0.1:${p}`, caFile: join(dir, 'c.pem'), dial }, 138), /not trusted|IP: 127\.0\.0\.1 is not in the cert/,
        'a certificate for another name is refused (the mapped socket address does not replace the URL host)');
    } finally {
      srv.close();
    }
  });

  it('registers and streams the map over TS2021 with every control connection from the dialer', async () => {
    const fc = await FakeControl.start();
    const { dial, sockets } = spyDialer();
    const c = new ControlClient({ serverUrl: fc.url, machineKey: generateKeyPair().privateKey, nodeKey: generateKeyPair().privateKey, dial });
    try {
      fc.handler = (_path, _body, stream) => {
        stream.respond({ ':status': 200 });
        stream.write(encodeMapFrame({ Node: { ID: 1, Key: formatNodePublic(c.nodePublic), Addresses: ['100.64.0.1/32'] } }));
      };
      let maps = 0;
      const s = c.streamMap({ onMap: () => { maps++; }, endpoints: [] });
      const end = Date.now() + 10_000;
      while (maps === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      assert.equal(maps, 1);
      assert.ok(sockets.length >= 2, `GET /key and the upgrade both dialled through it (${sockets.length})`);
      if (root) assert.equal(fwmarkTo(Number(new URL(fc.url).port)), '0x80000');
      await s.close();
    } finally {
      await c.close();
      await fc.stop();
    }
  });

  it('connects to DERP through the dialer', async () => {
    const s = new FakeDerp();
    await s.listen();
    const { dial, sockets } = spyDialer();
    const c = new DerpClient({ url: s.url, privateKey: generateKeyPair().privateKey, allowInsecureHttp: true, dial });
    try {
      c.start();
      await once(c, 'connected');
      assert.equal(sockets.length, 1);
      if (root) assert.equal(fwmarkTo(s.port), '0x80000');
    } finally {
      c.close();
      await s.close();
    }
  });
});
