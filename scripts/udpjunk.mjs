#!/usr/bin/env node
// Sends hostile datagrams at a WireGuard port, for tests: random bytes, truncated messages of
// every type, wrong sizes, and (with a file of captured datagrams) exact replays.
//   udpjunk.mjs HOST PORT COUNT [REPLAY_FILE]
// REPLAY_FILE holds length-prefixed (u16 BE) datagrams. Bounded by COUNT and 30 s.
import { createSocket } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isIPv6 } from 'node:net';

const [host, portText, countText, replayFile] = process.argv.slice(2);
const port = Number(portText);
const count = Math.min(Number(countText ?? 100), 100000);
setTimeout(() => process.exit(0), 30000).unref();
const sock = createSocket(isIPv6(host) ? 'udp6' : 'udp4');
const replays = [];
if (replayFile) {
  const b = readFileSync(replayFile);
  for (let o = 0; o + 2 <= b.length; ) { const n = b.readUInt16BE(o); replays.push(b.subarray(o + 2, o + 2 + n)); o += 2 + n; }
}
function junk(i) {
  switch (i % 6) {
    case 0: return randomBytes(1 + (i % 1400));
    case 1: { const b = randomBytes(148); b.writeUInt32LE(1, 0); return b; } // initiation, bad mac1
    case 2: { const b = randomBytes(92); b.writeUInt32LE(2, 0); return b; } // response to nobody
    case 3: { const b = randomBytes(64); b.writeUInt32LE(3, 0); return b; } // cookie reply to nobody
    case 4: { const b = randomBytes(32 + (i % 200)); b.writeUInt32LE(4, 0); return b; } // data, unknown index
    default: { const b = randomBytes(10 + (i % 20)); b.writeUInt32LE(1 + (i % 4), 0); return b; } // truncated
  }
}
let sent = 0;
function next() {
  if (sent >= count) { sock.close(); console.log(JSON.stringify({ sent })); return; }
  const msg = replays.length > 0 && sent % 2 === 0 ? replays[(sent / 2) % replays.length] : junk(sent);
  sent++;
  sock.send(msg, port, host, () => setImmediate(next));
}
next();
