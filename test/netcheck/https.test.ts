// DERP latency over HTTP(S) against local servers: a 200 is a latency, anything else an error.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { measureAllHttps } from '../../src/netcheck/https.ts';
import type { DERPRegion } from '../../src/control/wire.ts';

function region(id: number, port: number): DERPRegion {
  return { RegionID: id, RegionCode: `r${id}`, RegionName: `Region ${id}`, Nodes: [{ Name: `${id}a`, RegionID: id, HostName: '127.0.0.1', IPv4: '127.0.0.1', DERPPort: port }] } as DERPRegion;
}

describe('measureAllHttps', () => {
  const paths: string[] = [];
  const ok = createServer((req, res) => { paths.push(req.url ?? ''); res.end(''); });
  const denied = createServer((_req, res) => { res.statusCode = 403; res.end('no'); });
  after(() => { ok.close(); denied.close(); });

  it('times GET /derp/latency-check per region; non-2xx and closed ports are errors', async () => {
    await new Promise<void>((r) => ok.listen(0, '127.0.0.1', r));
    await new Promise<void>((r) => denied.listen(0, '127.0.0.1', r));
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
    const closedPort = (closed.address() as AddressInfo).port;
    closed.close();
    const res = await measureAllHttps([region(1, (ok.address() as AddressInfo).port), region(2, (denied.address() as AddressInfo).port), region(3, closedPort)], { http: true, timeoutMs: 2000 });
    assert.equal(res[0]!.ok, true);
    assert.ok(res[0]!.ok && res[0]!.ms >= 0 && res[0]!.ms < 1000);
    assert.deepEqual(paths, ['/derp/latency-check']);
    assert.deepEqual(res[1], { region: 2, ok: false, error: 'HTTP status 403' });
    assert.equal(res[2]!.ok, false);
  });
});
