// DERP latency over HTTPS, for when UDP gets no STUN answer (tailscale net/netcheck
// measureHTTPSLatency; reference data-plane.md 6.3): connect to the region's first DERP node (TCP,
// then TLS unless the lab's plain-HTTP switch is on), then time one `GET /derp/latency-check` on
// that connection, from the request to the status line. Connection setup is not counted, as
// tailscale does not count it. A status other than 2xx is a failure (a proxy in the way).
import { connect as tcpConnect, isIP, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { DERPNode, DERPRegion } from '../control/wire.ts';

/** One region's measurement. */
export type HttpsLatency = { region: number; ok: true; ms: number } | { region: number; ok: false; error: string };

/** Options for {@link measureHttpsLatency}. */
export interface HttpsLatencyOptions {
  /** Plain HTTP (the lab's MESHD_DERP_HTTP; tailscale's TS_DEBUG_USE_DERP_HTTP). */
  http: boolean;
  timeoutMs: number;
  now?: () => number;
}

function nodeOf(r: DERPRegion): DERPNode | undefined {
  return r.Nodes.find((n) => !n.STUNOnly);
}

/** Measures one region; never throws. */
export function measureHttpsLatency(r: DERPRegion, o: HttpsLatencyOptions): Promise<HttpsLatency> {
  const now = o.now ?? (() => performance.now());
  const node = nodeOf(r);
  if (!node) return Promise.resolve({ region: r.RegionID, ok: false, error: 'no DERP node' });
  const host = node.IPv4 && isIP(node.IPv4) ? node.IPv4 : node.HostName;
  const port = node.DERPPort || (o.http ? 3340 : 443);
  const hostHeader = node.HostName.includes(':') ? `[${node.HostName}]` : node.HostName;
  return new Promise((resolve) => {
    let sock: Socket | undefined;
    let done = false;
    const finish = (res: HttpsLatency) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      sock?.destroy();
      resolve(res);
    };
    const timer = setTimeout(() => finish({ region: r.RegionID, ok: false, error: `no answer in ${o.timeoutMs} ms` }), o.timeoutMs);
    const onConnected = () => {
      let head = '';
      const start = now();
      sock!.on('data', (d: Buffer) => {
        head += d.toString('latin1');
        const eol = head.indexOf('\r\n');
        if (eol < 0) { if (head.length > 1024) finish({ region: r.RegionID, ok: false, error: 'no HTTP status line' }); return; }
        const ms = now() - start;
        const m = /^HTTP\/1\.[01] (\d{3})/.exec(head.slice(0, eol));
        if (!m) finish({ region: r.RegionID, ok: false, error: 'no HTTP status line' });
        else if (m[1]![0] !== '2') finish({ region: r.RegionID, ok: false, error: `HTTP status ${m[1]}` });
        else finish({ region: r.RegionID, ok: true, ms });
      });
      sock!.write(`GET /derp/latency-check HTTP/1.1\r\nHost: ${hostHeader}${port === (o.http ? 80 : 443) ? '' : `:${port}`}\r\nUser-Agent: meshd\r\nConnection: close\r\n\r\n`);
    };
    try {
      sock = o.http
        ? tcpConnect({ host, port }, onConnected)
        : tlsConnect({
          host, port, ...(isIP(node.CertName || node.HostName) ? {} : { servername: node.CertName || node.HostName }),
          ALPNProtocols: ['http/1.1'], rejectUnauthorized: !node.InsecureForTests,
        }, onConnected);
    } catch (e) {
      finish({ region: r.RegionID, ok: false, error: (e as Error).message });
      return;
    }
    sock.on('error', (e) => finish({ region: r.RegionID, ok: false, error: e.message }));
    sock.on('close', () => finish({ region: r.RegionID, ok: false, error: 'connection closed' }));
  });
}

/** Measures every region that may be measured (not NoMeasureNoHome), in parallel. */
export async function measureAllHttps(regions: readonly DERPRegion[], o: HttpsLatencyOptions): Promise<HttpsLatency[]> {
  return Promise.all(regions.filter((r) => !r.NoMeasureNoHome && r.Nodes?.length).map((r) => measureHttpsLatency(r, o)));
}
