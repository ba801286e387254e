// Handshakes per second one responder completes, meshd against wireguard-go in the same lab:
// both responders get the same 128 initiating peers; scripts/hs-flood.mjs drives each in turn.
import { generateKeyPairSync, createPublicKey } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';

function x25519Pair() {
  const { privateKey } = generateKeyPairSync('x25519');
  const priv = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
  const pub = createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(-32);
  return { priv: priv.toString('base64'), pub: pub.toString('base64') };
}

/** Runs the flood against the first meshd and the first wireguard-go host of `lab`. */
export async function handshakeBench(lab, seconds = 5, peers = 128) {
  const keys = Array.from({ length: peers }, x25519Pair);
  const keyFile = join(lab.dir, 'flood-keys.json');
  writeFileSync(keyFile, JSON.stringify(keys.map((k) => k.priv)), { mode: 0o600 });
  const conf = join(lab.dir, 'flood.conf');
  writeFileSync(conf, keys.map((k, i) => `[Peer]\nPublicKey = ${k.pub}\nAllowedIPs = 100.96.${i >> 8}.${i & 255}/32\n`).join('\n'));
  const driver = lab.hosts.find((h) => h.n === undefined && h.ip4.endsWith('.9')) ?? lab.addHost(9, 'wireguard-go');
  const out = {};
  for (const impl of ['meshd', 'wireguard-go']) {
    const h = lab.hosts.find((x) => x.impl === impl);
    lab.lab.exec(h.ns, ['wg', 'addconf', h.ifname, conf]);
    const r = lab.lab.exec(driver.ns, [process.execPath, new URL('./hs-flood.mjs', import.meta.url).pathname, keyFile, h.pub, h.ip4, String(h.port), String(seconds)], { timeoutMs: (seconds + 60) * 1000 });
    out[impl] = JSON.parse(r).perSecond;
  }
  return out;
}
