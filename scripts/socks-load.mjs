#!/usr/bin/env node
// Many concurrent connections through a SOCKS5 proxy (RFC 1928, no auth), each fetching
// /blob/SIZE from scripts/httpblob.mjs and checking the hash it announces.
//   socks-load.mjs PROXY_HOST PROXY_PORT TARGET_HOST TARGET_PORT CONNS SIZE [TOTAL]
// CONNS at once until TOTAL (default CONNS) fetches are done. Prints
// {"ok":N,"failed":N,"ms":T,"errors":[...first few],"phasesMs":{mean ms per phase}}. Bounded by SOCKS_LOAD_TIMEOUT_MS (120000).
import { connect } from 'node:net';
import { createHash } from 'node:crypto';

const [ph, pp, th, tp, connsText, sizeText, totalText] = process.argv.slice(2);
const conns = Number(connsText), size = Number(sizeText), total = Number(totalText ?? connsText);
setTimeout(() => { console.log(JSON.stringify({ ok, failed: total - ok, ms: Date.now() - t0, errors: ['timed out', ...errors] })); process.exit(2); }, Number(process.env.SOCKS_LOAD_TIMEOUT_MS ?? 120000)).unref();
let ok = 0, started = 0, finished = 0;
// Mean milliseconds per phase over the fetches that completed (where a slow proxy spends its time).
const PHASES = ['connect', 'methodReply', 'connectReply', 'responseHead', 'end'];
const phaseSum = PHASES.map(() => 0);
const phasesMs = () => Object.fromEntries(PHASES.map((p, i) => [p, Number((phaseSum[i] / Math.max(1, ok)).toFixed(2))]));
const errors = [];
const t0 = Date.now();

function one() {
  return new Promise((resolve) => {
    const s = connect({ host: ph, port: Number(pp) });
    const marks = [performance.now()];
    const mark = () => marks.push(performance.now());
    let phase = 0, buf = Buffer.alloc(0), head = null, h = createHash('sha256'), got = 0;
    const fail = (why) => { if (errors.length < 5) errors.push(why); s.destroy(); resolve(false); };
    s.on('error', (e) => fail(e.message));
    s.on('connect', () => {
      mark();
      const host = Buffer.from(th);
      s.write(Buffer.concat([Buffer.from([5, 1, 0, 5, 1, 0, 3, host.length]), host, Buffer.from([Number(tp) >> 8, Number(tp) & 255])]));
    });
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (phase === 0) {
        if (buf.length < 2) return;
        if (buf[0] !== 5 || buf[1] !== 0) return fail(`method reply ${buf.subarray(0, 2).toString('hex')}`);
        buf = buf.subarray(2); phase = 1; mark();
      }
      if (phase === 1) {
        if (buf.length < 10) return;
        if (buf[1] !== 0) return fail(`CONNECT reply ${buf[1]}`);
        const len = buf[3] === 4 ? 22 : 10;
        if (buf.length < len) return;
        buf = buf.subarray(len); phase = 2; mark();
        s.write(`GET /blob/${size} HTTP/1.0\r\nHost: ${th}\r\n\r\n`);
      }
      if (phase === 2) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        head = buf.subarray(0, end).toString();
        buf = buf.subarray(end + 4); phase = 3; mark();
      }
      if (phase === 3 && buf.length > 0) { h.update(buf); got += buf.length; buf = Buffer.alloc(0); }
    });
    s.on('end', () => {
      mark();
      if (marks.length === PHASES.length + 1) for (let i = 0; i < PHASES.length; i++) phaseSum[i] += marks[i + 1] - marks[i];
      if (phase !== 3) return fail(`ended in phase ${phase}`);
      const want = /x-sha256: *([0-9a-f]+)/i.exec(head ?? '')?.[1];
      const sum = h.digest('hex');
      if (got !== size || sum !== want) return fail(`got ${got} bytes, hash ${sum === want ? 'ok' : 'mismatch'}`);
      resolve(true);
    });
  });
}

async function worker() {
  while (started < total) {
    started++;
    if (await one()) ok++;
    finished++;
  }
}
await Promise.all(Array.from({ length: Math.min(conns, total) }, worker));
console.log(JSON.stringify({ ok, failed: total - ok, ms: Date.now() - t0, errors, phasesMs: phasesMs() }));
process.exit(ok === total ? 0 : 1);
