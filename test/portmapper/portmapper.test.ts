// Port mapping against a fake gateway on loopback that speaks NAT-PMP, PCP and UPnP IGD (as
// miniupnpd answers), and the codecs on their own.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  parsePcp, parsePmp, parseRootDescription, parseSoapResponse, parseSsdp, pcpMapRequest, pmpMapRequest, soapBody,
} from '../../src/portmapper/codec.ts';
import { gatewayFromRoutes, PortMapper } from '../../src/portmapper/portmapper.ts';

interface FakeOpts { pmp: boolean; pcp: boolean; upnp: boolean }

/** A gateway on 127.0.0.1: NAT-PMP/PCP on one UDP port, SSDP on another, the IGD over HTTP. */
class FakeGateway {
  readonly udp: Socket;
  readonly ssdp: Socket;
  readonly http: Server;
  readonly pmpMaps: { internal: number; suggested: number; lifetime: number }[] = [];
  readonly pcpMaps: { nonce: string; internal: number; lifetime: number }[] = [];
  readonly soap: { action: string; body: string }[] = [];
  readonly mapped = new Map<number, number>(); // external -> internal
  private pcpNonce = new Map<number, string>();
  private readonly o: FakeOpts;
  constructor(o: FakeOpts) {
    this.o = o;
    this.udp = createSocket('udp4');
    this.ssdp = createSocket('udp4');
    this.http = createServer((req, res) => {
      let body = '';
      req.on('data', (d: Buffer) => { body += d.toString(); });
      req.on('end', () => {
        if (req.method === 'GET' && req.url === '/rootDesc.xml') {
          res.end(`<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:2</deviceType><deviceList><device><deviceList><device>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType>
<controlURL>/ctl/IPConn</controlURL></service>
<service><serviceType>urn:schemas-upnp-org:service:WANIPv6FirewallControl:1</serviceType><controlURL>/ctl/IP6FCtl</controlURL></service>
</serviceList></device></deviceList></device></deviceList></device></root>`);
          return;
        }
        const action = /#(\w+)"?$/.exec(String(req.headers.soapaction ?? ''))?.[1] ?? '';
        this.soap.push({ action, body });
        const val = (k: string) => new RegExp(`<${k}>([^<]*)</${k}>`).exec(body)?.[1] ?? '';
        const ok = (inner: string) => res.end(`<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:${action}Response xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:2">${inner}</u:${action}Response></s:Body></s:Envelope>`);
        if (action === 'AddAnyPortMapping') {
          const ext = Number(val('NewExternalPort'));
          this.mapped.set(ext, Number(val('NewInternalPort')));
          ok(`<NewReservedPort>${ext}</NewReservedPort>`);
        } else if (action === 'GetExternalIPAddress') ok('<NewExternalIPAddress>203.0.113.7</NewExternalIPAddress>');
        else if (action === 'DeletePortMapping') { this.mapped.delete(Number(val('NewExternalPort'))); ok(''); }
        else { res.statusCode = 500; res.end('<s:Envelope><s:Body><s:Fault><detail><UPnPError><errorCode>401</errorCode><errorDescription>Invalid Action</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>'); }
      });
    });
    this.udp.on('message', (m, r) => this.onPmp(new Uint8Array(m), r.port));
    this.ssdp.on('message', (m, r) => {
      if (!this.o.upnp || !m.toString().startsWith('M-SEARCH')) return;
      const port = (this.http.address() as AddressInfo).port;
      this.ssdp.send(`HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\nUSN: uuid:1::urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\nSERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\nLOCATION: http://192.168.1.1:${port}/rootDesc.xml\r\n\r\n`, r.port, r.address);
    });
  }
  async start(): Promise<void> {
    await new Promise<void>((r) => this.udp.bind(0, '127.0.0.1', r));
    await new Promise<void>((r) => this.ssdp.bind(0, '127.0.0.1', r));
    await new Promise<void>((r) => this.http.listen(0, '127.0.0.1', r));
  }
  get pmpPort(): number { return this.udp.address().port; }
  get ssdpPort(): number { return this.ssdp.address().port; }
  private onPmp(b: Uint8Array, port: number): void {
    const reply = (x: Uint8Array) => this.udp.send(x, port, '127.0.0.1');
    if (b[0] === 0 && this.o.pmp) {
      const out = new Uint8Array(16);
      const v = new DataView(out.buffer);
      v.setUint32(4, 1000);
      if (b[1] === 0) { out[1] = 0x80; out.set([203, 0, 113, 7], 8); reply(out.subarray(0, 12)); return; }
      const iv = new DataView(b.buffer, b.byteOffset);
      const internal = iv.getUint16(4), suggested = iv.getUint16(6), lifetime = iv.getUint32(8);
      this.pmpMaps.push({ internal, suggested, lifetime });
      out[1] = 0x81;
      v.setUint16(8, internal);
      v.setUint16(10, lifetime === 0 ? 0 : internal);
      v.setUint32(12, lifetime);
      if (lifetime === 0) { for (const [e, i] of this.mapped) if (i === internal) this.mapped.delete(e); } else this.mapped.set(internal, internal);
      reply(out);
      return;
    }
    if (b[0] === 2 && this.o.pcp) {
      const out = new Uint8Array(b.length);
      out.set(b);
      out[1] = 0x80 | b[1]!;
      out[3] = 0;
      new DataView(out.buffer).setUint32(8, 1000);
      out.fill(0, 12, 24);
      if (b[1] === 1) {
        const iv = new DataView(b.buffer, b.byteOffset);
        const internal = iv.getUint16(40), lifetime = iv.getUint32(4);
        const nonce = Buffer.from(b.subarray(24, 36)).toString('hex');
        this.pcpMaps.push({ nonce, internal, lifetime });
        if (lifetime === 0) {
          if (this.pcpNonce.get(internal) !== nonce) out[3] = 2; // NOT_AUTHORIZED, as miniupnpd
          else { this.mapped.delete(internal); this.pcpNonce.delete(internal); }
        } else { this.mapped.set(internal, internal); this.pcpNonce.set(internal, nonce); }
        new DataView(out.buffer).setUint16(42, internal);
        out.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 7], 44);
      }
      reply(out);
    }
  }
  close(): void {
    this.udp.close();
    this.ssdp.close();
    this.http.close();
  }
}

async function setup(o: FakeOpts, now?: () => number): Promise<{ gw: FakeGateway; pm: PortMapper; changes: number[] }> {
  const gw = new FakeGateway(o);
  await gw.start();
  const changes: number[] = [];
  const pm = new PortMapper({
    log: () => {}, localPort: () => 41641, onChange: () => changes.push(1),
    gateway: () => ({ gw: '127.0.0.1', self: '127.0.0.1', iface: 'lo' }), pmpPort: gw.pmpPort, ssdpPort: gw.ssdpPort,
    ...(now ? { now } : {}),
  });
  return { gw, pm, changes };
}

describe('PortMapper against a fake gateway', () => {
  const gws: FakeGateway[] = [];
  after(() => { for (const g of gws) g.close(); });

  it('probes UPnP, NAT-PMP and PCP, maps with NAT-PMP, and deletes the mapping on close', async () => {
    const { gw, pm, changes } = await setup({ pmp: true, pcp: true, upnp: true });
    gws.push(gw);
    assert.deepEqual(await pm.probe(), { upnp: true, pmp: true, pcp: true });
    pm.ensure();
    await pm.settled();
    assert.equal(pm.external, '203.0.113.7:41641');
    assert.equal(pm.mapping?.proto, 'pmp');
    assert.equal(changes.length, 1);
    assert.deepEqual(gw.pmpMaps[0], { internal: 41641, suggested: 0, lifetime: 7200 });
    await pm.close();
    assert.deepEqual(gw.pmpMaps.at(-1), { internal: 41641, suggested: 0, lifetime: 0 }, 'deleted with lifetime 0');
    assert.equal(gw.mapped.size, 0);
    assert.equal(pm.external, undefined);
  });

  it('uses PCP when only PCP answers, and deletes with the same nonce (miniupnpd refuses another)', async () => {
    const { gw, pm } = await setup({ pmp: false, pcp: true, upnp: false });
    gws.push(gw);
    pm.ensure();
    await pm.settled();
    assert.equal(pm.mapping?.proto, 'pcp');
    assert.equal(pm.external, '203.0.113.7:41641');
    await pm.close();
    assert.equal(gw.pcpMaps.length, 2);
    assert.equal(gw.pcpMaps[1]!.lifetime, 0);
    assert.equal(gw.pcpMaps[1]!.nonce, gw.pcpMaps[0]!.nonce);
    assert.equal(gw.mapped.size, 0, 'the mapping is gone');
  });

  it('uses UPnP IGD (AddAnyPortMapping on WANIPConnection:2 at the gateway, not the Location host) when only UPnP answers', async () => {
    const { gw, pm } = await setup({ pmp: false, pcp: false, upnp: true });
    gws.push(gw);
    pm.ensure();
    await pm.settled();
    assert.equal(pm.mapping?.proto, 'upnp');
    assert.equal(pm.external, '203.0.113.7:41641');
    assert.deepEqual(gw.soap.map((s) => s.action), ['AddAnyPortMapping', 'GetExternalIPAddress']);
    assert.match(gw.soap[0]!.body, /<NewProtocol>UDP<\/NewProtocol>.*<NewInternalClient>127\.0\.0\.1<\/NewInternalClient>/s);
    await pm.close();
    assert.equal(gw.soap.at(-1)!.action, 'DeletePortMapping');
    assert.equal(gw.mapped.size, 0);
  });

  it('maps nothing when the gateway offers nothing, and says so in the probe', async () => {
    const { gw, pm, changes } = await setup({ pmp: false, pcp: false, upnp: false });
    gws.push(gw);
    assert.deepEqual(await pm.probe(), { upnp: false, pmp: false, pcp: false });
    pm.ensure();
    await pm.settled();
    assert.equal(pm.external, undefined);
    assert.equal(changes.length, 0);
    await pm.close();
  });

  it('renews at half the lease', async () => {
    let t = 0;
    const { gw, pm } = await setup({ pmp: true, pcp: false, upnp: false }, () => t + performance.now());
    gws.push(gw);
    pm.ensure();
    await pm.settled();
    assert.equal(gw.pmpMaps.length, 1);
    t = 3599_000;
    pm.ensure();
    await pm.settled();
    assert.equal(gw.pmpMaps.length, 1, 'not before half the lease');
    t = 3600_000;
    pm.ensure();
    await pm.settled();
    assert.equal(gw.pmpMaps.length, 2);
    assert.equal(gw.pmpMaps[1]!.suggested, 41641, 'asks for the same external port');
    assert.equal(pm.external, '203.0.113.7:41641');
    await pm.close();
  });
});

describe('port-mapping codecs', () => {
  it('round-trips NAT-PMP and PCP requests into the replies a server builds', () => {
    const m = pmpMapRequest(41641, 0, 7200);
    assert.deepEqual([...m], [0, 1, 0, 0, 0xa2, 0xa9, 0, 0, 0, 0, 0x1c, 0x20]);
    assert.equal(parsePmp(Uint8Array.of(0, 0x80, 0, 3, 0, 0, 0, 9, 198, 18, 0, 101))?.result, 3);
    assert.equal(parsePmp(Uint8Array.of(1, 2, 3)), undefined);
    const nonce = new Uint8Array(12).fill(7);
    const req = pcpMapRequest('192.168.1.2', nonce, 41641, 0, '0.0.0.0', 7200);
    assert.equal(req.length, 60);
    assert.deepEqual([...req.subarray(8, 24)], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 192, 168, 1, 2]);
    const reply = req.slice();
    reply[1] = 0x81;
    reply.set([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 203, 0, 113, 7], 44);
    const r = parsePcp(reply);
    assert.equal(r?.map?.externalIp, '203.0.113.7');
    assert.equal(r?.map?.internalPort, 41641);
    assert.equal(parsePcp(req), undefined, 'a request is not a reply');
  });

  it('reads SSDP answers, root descriptions and SOAP faults as miniupnpd writes them', () => {
    const s = parseSsdp(new TextEncoder().encode('HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\nLocation: http://192.168.1.1:5000/rootDesc.xml\r\nUSN: uuid:x::urn:schemas-upnp-org:device:InternetGatewayDevice:2\r\n\r\n'));
    assert.equal(s?.location, 'http://192.168.1.1:5000/rootDesc.xml');
    assert.equal(parseSsdp(new TextEncoder().encode('HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:MediaServer:1\r\nLOCATION: http://x/\r\n\r\n')), undefined);
    const svcs = parseRootDescription('<root><URLBase>http://192.168.1.1:5000/</URLBase><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>/ctl/IPConn</controlURL></service><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:2</serviceType><controlURL>/ctl/IPConn2</controlURL></service></root>', 'http://ignored/');
    assert.deepEqual(svcs.map((x) => x.controlUrl), ['http://192.168.1.1:5000/ctl/IPConn2', 'http://192.168.1.1:5000/ctl/IPConn']);
    const f = parseSoapResponse('<s:Envelope><s:Body><s:Fault><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>718</errorCode><errorDescription>ConflictInMappingEntry</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>');
    assert.deepEqual(f, { ok: false, code: 718, description: 'ConflictInMappingEntry' });
    assert.match(soapBody('urn:x', 'GetExternalIPAddress', []), /<u:GetExternalIPAddress xmlns:u="urn:x"><\/u:GetExternalIPAddress>/);
  });

  it('finds the RFC 1918 gateway in /proc/net/route and skips public ones', () => {
    const text = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n' +
      'wan\t00000000\t011200C6\t0003\t0\t0\t0\t00000000\n' +
      'veth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\n';
    assert.deepEqual(gatewayFromRoutes(text, (i) => (i === 'veth0' ? ['192.168.1.2'] : ['198.18.0.5'])), { gw: '192.168.1.1', self: '192.168.1.2', iface: 'veth0' });
    assert.equal(gatewayFromRoutes(text.split('\n').slice(0, 2).join('\n'), () => ['198.18.0.5']), undefined);
  });
});
