// Outgoing TCP for the tailnet's own connections (control, DERP) carrying SO_MARK, so an exit
// node's policy routing (src/router/linux.ts) never sends them into the tunnel, whatever address
// the name resolves to now. Node cannot set SO_MARK, so the fd comes from the addon (tcpSocket)
// and Node connects it: net.Socket({ fd }) keeps the handle, and connect() uses its socket.
// The fd is dual-stack AF_INET6, so IPv4 destinations are dialed as ::ffff:a.b.c.d.
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { Socket, isIP, type LookupFunction } from 'node:net';
import { native } from '../native/index.ts';

/** Makes a TCP connection; returns the socket while it connects (errors come as 'error' events). */
export type TcpDialer = (host: string, port: number) => Socket;

/** Resolves like dns.lookup, but gives IPv4 answers as IPv4-mapped IPv6 (for a dual-stack fd). */
const mappedLookup: LookupFunction = (host, opts, cb) => {
  dnsLookup(host, { ...opts, all: true }, (err, addrs: LookupAddress[]) => {
    if (err) { (cb as (e: Error) => void)(err); return; }
    const list = addrs.map((a) => (a.family === 4 ? { address: `::ffff:${a.address}`, family: 6 } : a));
    if (opts.all) (cb as (e: null, a: LookupAddress[]) => void)(null, list);
    else {
      const first = list[0];
      if (!first) { (cb as (e: Error) => void)(Object.assign(new Error(`no address for ${host}`), { code: 'ENOTFOUND' })); return; }
      cb(null, first.address, first.family);
    }
  });
};

/**
 * A dialer whose sockets carry SO_MARK `mark` (needs CAP_NET_ADMIN; throws the addon's EPERM error
 * naming that otherwise). TLS goes on top as usual: tls.connect({ socket }).
 */
export function markedDialer(mark: number): TcpDialer {
  return (host, port) => {
    const { fd, family } = native().tcpSocket(mark);
    let s: Socket;
    try {
      // manualStart: no read before connect() (a read on an unconnected socket would see EOF).
      s = new Socket({ fd, manualStart: true } as ConstructorParameters<typeof Socket>[0]);
    } catch (e) {
      native().close(fd);
      throw e;
    }
    const h = host.replace(/^\[(.*)\]$/, '$1');
    const target = family === 6 && isIP(h) === 4 ? `::ffff:${h}` : h;
    s.connect({ host: target, port, autoSelectFamily: false, ...(family === 6 ? { lookup: mappedLookup } : { family: 4 }) });
    return s;
  };
}
