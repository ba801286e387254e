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
