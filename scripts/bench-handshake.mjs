// Handshake load for scripts/bench.mjs: a driver host in the lab (scripts/hs-flood.mjs) sends
// initiations from many peers that the responder knows, at a fixed offered rate (open loop).
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

function x25519Pair() {
  const { privateKey } = generateKeyPairSync('x25519');
  const priv = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
  const pub = createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(-32);
  return { priv: priv.toString('base64'), pub: pub.toString('base64') };
}

/**
 * Makes `peers` initiating identities, tells each responder host about them (wg addconf), and
 * returns a function that floods one responder: flood(host, seconds, rate) -> a child process whose
 * stdout is one JSON line (see hs-flood.mjs). The driver is host number 9 of the lab.
 */
export function handshakeLoad(lab, responders, rate) {
  // Each peer may send an initiation every 20 ms (the responder's per-peer flood check): enough peers for the rate.
  const peers = Math.max(128, Math.ceil(rate / 40));
  const keys = Array.from({ length: peers }, x25519Pair);
  const keyFile = join(lab.dir, 'flood-keys.json');
  writeFileSync(keyFile, JSON.stringify(keys.map((k) => k.priv)), { mode: 0o600 });
  const conf = join(lab.dir, 'flood.conf');
  writeFileSync(conf, keys.map((k, i) => `[Peer]\nPublicKey = ${k.pub}\nAllowedIPs = 100.96.${i >> 8}.${i & 255}/32\n`).join('\n'));
  for (const h of responders) lab.lab.exec(h.ns, ['wg', 'addconf', h.ifname, conf]);
  const driver = lab.hosts.find((h) => h.ip4.endsWith('.9')) ?? lab.addHost(9, 'wireguard-go');
  const script = new URL('./hs-flood.mjs', import.meta.url).pathname;
  return {
    /** Floods `h` for `seconds` at `r` initiations/s: `ready` once sending started, `done` with the parsed result. */
    run(h, seconds, r = rate) {
      const p = lab.lab.spawn(driver.ns, [process.execPath, script, keyFile, h.pub, h.ip4, String(h.port), String(seconds), String(r)]);
      let out = '';
      let onReady;
      const ready = new Promise((r2) => { onReady = r2; });
      p.stdout.setEncoding('utf8');
      p.stdout.on('data', (d) => { out += d; if (out.includes('"ready"')) onReady(); });
      p.stderr?.resume();
      const done = new Promise((resolve) => p.on('exit', () => {
        onReady();
        try { resolve(JSON.parse(out.trim().split('\n').at(-1))); } catch { resolve(null); }
      }));
      return { ready, done };
    },
  };
}
