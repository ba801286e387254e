// Tiny TCP/UDP servers and clients for e2e tests, run with this Node inside namespaces: the servers
// answer every connection or datagram with the peer's address as they see it, so a test can tell
// who the source was (e.g. an exit node's masquerade).
import type { ChildProcess } from 'node:child_process';
import type { Lab } from './netns.ts';

const TCP_SERVER = `require('net').createServer((s) => { s.on('error', () => {}); s.end(s.remoteAddress.replace(/^::ffff:/, '') + '\\n'); }).listen(+process.argv[1], '::')`;
const UDP_SERVER = `const u = require('dgram').createSocket({ type: 'udp6' }); u.on('message', (m, r) => u.send(r.address.replace(/^::ffff:/, '') + '\\n', r.port, r.address)); u.bind(+process.argv[1], '::')`;
const TCP_CLIENT = `const s = require('net').connect({ host: process.argv[1], port: +process.argv[2] }); let out = ''; s.setTimeout(4000, () => process.exit(2)); s.on('data', (d) => out += d); s.on('end', () => { process.stdout.write(out); process.exit(0); }); s.on('error', (e) => { process.stderr.write(e.message); process.exit(1); })`;
const UDP_CLIENT = `const h = process.argv[1]; const u = require('dgram').createSocket(h.includes(':') ? 'udp6' : 'udp4'); setTimeout(() => process.exit(2), 3000); u.on('message', (m) => { process.stdout.write(m.toString()); process.exit(0); }); u.on('error', (e) => { process.stderr.write(e.message); process.exit(1); }); u.send('hi', +process.argv[2], h)`;

/** Starts a TCP and a UDP "who am I talking to" server on `port` in a namespace. */
export function startEchoServers(lab: Lab, ns: string, port: number): ChildProcess[] {
  return [
    lab.spawn(ns, [process.execPath, '-e', TCP_SERVER, String(port)]),
    lab.spawn(ns, [process.execPath, '-e', UDP_SERVER, String(port)]),
  ];
}

/** Connects over TCP from a namespace; the source address the server saw, or null when it failed. */
export function tcpProbe(lab: Lab, ns: string, host: string, port: number): string | null {
  const r = lab.tryExec(ns, [process.execPath, '-e', TCP_CLIENT, host, String(port)], 8000);
  return r.status === 0 ? r.stdout.trim() : null;
}

/** Sends one UDP datagram from a namespace; the source address the server saw, or null without a reply. */
export function udpProbe(lab: Lab, ns: string, host: string, port: number): string | null {
  const r = lab.tryExec(ns, [process.execPath, '-e', UDP_CLIENT, host, String(port)], 8000);
  return r.status === 0 ? r.stdout.trim() : null;
}

/** The simulated internet beyond the lab switch: a router on the switch and a server behind it. */
export const INTERNET = {
  router4: '198.18.0.254', router6: '2001:db8::fe',
  server4: '198.19.200.2', server6: '2001:db8:200::2',
  net4: '198.19.200.0/24', net6: '2001:db8:200::/64',
} as const;

/**
 * Adds namespaces `inet` (a router at 198.18.0.254 on the switch) and `server` (198.19.200.2 and
 * 2001:db8:200::2 behind it). The server is not on any node's LAN, as an internet host would be.
 */
export function addInternet(lab: Lab, sw: string): { router: string; server: string } {
  const router = lab.ns('inet');
  lab.attach(router, sw, [`${INTERNET.router4}/24`, `${INTERNET.router6}/64`]);
  const server = lab.ns('server');
  lab.link(router, server, { a4: '198.19.200.1', b4: INTERNET.server4, a6: '2001:db8:200::1', b6: INTERNET.server6 }, { a: 'srv0', b: 'veth0' });
  lab.exec(router, ['sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
  lab.exec(server, ['ip', 'route', 'add', 'default', 'via', '198.19.200.1']);
  lab.exec(server, ['ip', '-6', 'route', 'add', 'default', 'via', '2001:db8:200::1']);
  return { router, server };
}

/** Gives a node namespace routes to the simulated internet through the `inet` router. */
export function routeToInternet(lab: Lab, ns: string): void {
  lab.exec(ns, ['ip', 'route', 'add', INTERNET.net4, 'via', INTERNET.router4]);
  lab.exec(ns, ['ip', '-6', 'route', 'add', INTERNET.net6, 'via', INTERNET.router6]);
}
