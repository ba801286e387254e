#!/usr/bin/env node
// A plain RFC 5389 STUN binding responder for the labs: answers every binding request (CHANGE-REQUEST
// is ignored, the answer comes from the same address) with XOR-MAPPED-ADDRESS and MAPPED-ADDRESS.
// miniupnpd's ext_perform_stun needs one: headscale's and derper's STUN answer only Tailscale's
// requests (SOFTWARE=tailnode + FINGERPRINT).
//   node scripts/stun-responder.mjs HOST PORT
import { createSocket } from 'node:dgram';

const [host = '0.0.0.0', port = '3478'] = process.argv.slice(2);
const sock = createSocket('udp4');
let answered = 0, dropped = 0;
sock.on('message', (m, r) => {
  // Binding request, magic cookie 2112A442.
  if (m.length < 20 || m.readUInt16BE(0) !== 0x0001 || m.readUInt32BE(4) !== 0x2112a442) { dropped++; return; }
  const out = Buffer.alloc(20 + 12 + 12);
  out.writeUInt16BE(0x0101, 0);
  out.writeUInt16BE(24, 2);
  m.copy(out, 4, 4, 20);
  const ip = r.address.split('.').map(Number);
  // XOR-MAPPED-ADDRESS
  out.writeUInt16BE(0x0020, 20); out.writeUInt16BE(8, 22); out[25] = 1;
  out.writeUInt16BE(r.port ^ 0x2112, 26);
  for (let i = 0; i < 4; i++) out[28 + i] = ip[i] ^ out[4 + i];
  // MAPPED-ADDRESS
  out.writeUInt16BE(0x0001, 32); out.writeUInt16BE(8, 34); out[37] = 1;
  out.writeUInt16BE(r.port, 38);
  for (let i = 0; i < 4; i++) out[40 + i] = ip[i];
  sock.send(out, r.port, r.address);
  answered++;
});
sock.bind(Number(port), host, () => console.log(`stun responder on ${host}:${port}`));
process.on('SIGTERM', () => { console.log(`answered ${answered}, dropped ${dropped}`); process.exit(0); });
