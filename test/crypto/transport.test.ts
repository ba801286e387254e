import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv } from 'node:crypto';
import { NobleChaChaPoly, NodeChaChaPoly, writeNonce } from '../../src/crypto/aead.ts';
import { cryptoWith, nodeCrypto } from '../../src/crypto/backend.ts';
import { AeadBatch, loadNativeTransport, NativeTransport, PerPacketTransport } from '../../src/crypto/transport.ts';
import type { TransportAead, TransportKey } from '../../src/crypto/types.ts';
import { NATIVE_ABI_VERSION, native } from '../../src/native/index.ts';
import { hex, rand, toHex } from '../harness/bytes.ts';
import { WgPipe, ipv4 } from '../harness/wgpipe.ts';

const load = loadNativeTransport();
if (load.transport === null) throw new Error(`native AEAD did not load: ${load.error}`);
const nat: NativeTransport = load.transport;
/** The native backend held on its EVP path (the direct path is the default where Node's OpenSSL exports ChaCha20_ctr32 and Poly1305). */
function onEvp<T>(f: () => T): T {
  const old = nat.setDirect(false);
  try { return f(); } finally { nat.setDirect(old); }
}
const natEvp: TransportAead = {
  name: 'native-evp',
  prepare: (k, e) => nat.prepare(k, e),
  release: (k) => nat.release(k),
  seal: (buf, b, s, e) => onEvp(() => nat.seal(buf, b, s, e)),
  open: (buf, b, s, e) => onEvp(() => nat.open(buf, b, s, e)),
};
// The reference last: the others are compared with it.
const backends: TransportAead[] = [nat, natEvp, new PerPacketTransport('node', new NodeChaChaPoly()), new PerPacketTransport('reference', new NobleChaChaPoly())];

// RFC 8439 section 2.4.2: ChaCha20 with key 00..1f, nonce 000000000000004a00000000, block counter 1.
// The AEAD encrypts from block counter 1 with the same nonce, and this nonce is WireGuard's form
// (4 zero bytes, then counter 0x4a000000 little-endian), so the sealed ciphertext must be exactly this.
const RFC_KEY = Uint8Array.from({ length: 32 }, (_, i) => i);
const RFC_COUNTER = 0x4a000000;
const SUNSCREEN = new TextEncoder().encode(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
const RFC_CT = hex(`6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0bf91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d807ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab77937365af90bbf74a35be6b40b8eedf2785e42874d`);

/** A random integer counter below 2^53, biased to the edges (0, around 2^32, near 2^53). */
function randomCounter(): number {
  const r = Math.random();
  if (r < 0.1) return 0;
  if (r < 0.2) return 2 ** 32 - 1 + Math.floor(Math.random() * 3);
  if (r < 0.3) return 2 ** 53 - 1 - Math.floor(Math.random() * 1000);
  return Math.floor(Math.random() * 2 ** 53);
}

interface Layout {
  buf: Uint8Array;
  offs: number[];
  lens: number[];
}

/** count packets of random length 0..maxLen, each followed by room for its tag, in one buffer. */
function layout(count: number, maxLen: number, fixed?: number[]): Layout {
  const lens = fixed ?? Array.from({ length: count }, () => Math.floor(Math.random() * (maxLen + 1)));
  const offs: number[] = [];
  let at = 7; // not aligned on purpose
  for (const l of lens) { offs.push(at); at += l + 16 + 3; }
  const buf = rand(at + 5);
  return { buf, offs, lens };
}

function sealAll(t: TransportAead, lay: Layout, keys: TransportKey[], ctrs: number[]): Uint8Array {
  const buf = lay.buf.slice();
  const b = new AeadBatch(lay.lens.length);
  lay.lens.forEach((l, i) => b.set(i, keys[i]!, ctrs[i]!, lay.offs[i]!, l));
  t.seal(buf, b, 0, lay.lens.length);
  return buf;
}

function openAll(t: TransportAead, buf: Uint8Array, lay: Layout, keys: TransportKey[], ctrs: number[]): { buf: Uint8Array; ok: number[]; n: number } {
  const out = buf.slice();
  const b = new AeadBatch(lay.lens.length);
  lay.lens.forEach((l, i) => b.set(i, keys[i]!, ctrs[i]!, lay.offs[i]!, l + 16));
  const n = t.open(out, b, 0, lay.lens.length);
  return { buf: out, ok: [...b.ok], n };
}

describe('batched transport AEAD (native, node:crypto, @noble)', () => {
  it('loads the native backend from Node\'s own OpenSSL', () => {
    assert.equal(nat.name, 'native');
    assert.equal(native().abiVersion, NATIVE_ABI_VERSION);
    assert.match((native() as unknown as { aeadOpenssl: string }).aeadOpenssl, new RegExp(`^OpenSSL ${process.versions.openssl.replace(/\./g, '\\.')}`));
  });

  it('seals and opens without EVP on this Node (its OpenSSL exports ChaCha20_ctr32 and Poly1305), and can be switched to EVP', () => {
    assert.equal(nat.direct, true, 'the direct path was not found: the tests below would only cover EVP');
    assert.equal(nat.setDirect(false), true);
    assert.equal(nat.direct, false);
    assert.equal(nat.setDirect(true), false);
    assert.equal(nat.direct, true);
  });

  for (const t of backends) {
    it(`${t.name}: seals RFC 8439 2.4.2's plaintext to its ciphertext in place, with a tag node:crypto agrees on`, () => {
      const k = t.prepare(RFC_KEY, true);
      const lay = layout(1, 0, [SUNSCREEN.length]);
      lay.buf.set(SUNSCREEN, lay.offs[0]);
      const before = lay.buf.slice();
      const out = sealAll(t, lay, [k], [RFC_COUNTER]);
      const o = lay.offs[0]!;
      assert.equal(toHex(out.subarray(o, o + SUNSCREEN.length)), toHex(RFC_CT));
      const nonce = new Uint8Array(12);
      writeNonce(nonce, RFC_COUNTER);
      assert.equal(toHex(nonce), '000000000000004a00000000');
      const c = createCipheriv('chacha20-poly1305', RFC_KEY, nonce, { authTagLength: 16 });
      c.update(SUNSCREEN);
      c.final();
      assert.equal(toHex(out.subarray(o + SUNSCREEN.length, o + SUNSCREEN.length + 16)), toHex(c.getAuthTag()));
      // Nothing outside the packet and its tag changed.
      assert.deepEqual(out.subarray(0, o), before.subarray(0, o));
      assert.deepEqual(out.subarray(o + SUNSCREEN.length + 16), before.subarray(o + SUNSCREEN.length + 16));
      t.release(k);
    });
  }

  it('all backends seal random batches (lengths 0..65535, several keys, counters up to 2^53-1) to the same bytes, and open them back', () => {
    for (let round = 0; round < 3; round++) {
      const count = 24;
      const lay = layout(count, 65535, round === 0 ? [0, 1, 15, 16, 17, 63, 64, 65, 1280, 1420, 65535, ...Array<number>(13).fill(100)] : undefined);
      const raws = [rand(32), rand(32), rand(32)];
      const pick = lay.lens.map(() => Math.floor(Math.random() * raws.length));
      const ctrs = lay.lens.map(() => randomCounter());
      const results = backends.map((t) => {
        const sk = raws.map((r) => t.prepare(r, true));
        const ok = raws.map((r) => t.prepare(r, false));
        const sealed = sealAll(t, lay, pick.map((p) => sk[p]!), ctrs);
        const opened = openAll(t, sealed, lay, pick.map((p) => ok[p]!), ctrs);
        [...sk, ...ok].forEach((k) => t.release(k));
        return { sealed, opened };
      });
      const ref = results[results.length - 1]!;
      for (let i = 0; i < results.length - 1; i++) {
        assert.ok(Buffer.from(results[i]!.sealed).equals(Buffer.from(ref.sealed)), `${backends[i]!.name} sealed differently from the reference`);
        assert.equal(results[i]!.opened.n, count);
        // Every plaintext came back.
        lay.lens.forEach((l, j) => {
          const o = lay.offs[j]!;
          assert.ok(Buffer.from(results[i]!.opened.buf.subarray(o, o + l)).equals(Buffer.from(lay.buf.subarray(o, o + l))), `${backends[i]!.name} packet ${j}`);
        });
      }
      // And the sealed bytes are not the plaintext (for packets with data).
      const big = lay.lens.findIndex((l) => l >= 16);
      const o = lay.offs[big]!;
      assert.ok(!Buffer.from(ref.sealed.subarray(o, o + 16)).equals(Buffer.from(lay.buf.subarray(o, o + 16))));
    }
  });

  it('reports per-packet results exactly for a batch mixing good, tampered-tag, tampered-ciphertext, wrong-counter, wrong-key and short packets', () => {
    const count = 60;
    const lay = layout(count, 3000);
    const raws = [rand(32), rand(32)];
    const ctrs = lay.lens.map(() => randomCounter());
    const pick = lay.lens.map((_, i) => i % 2);
    // What each packet suffers: 0 none, 1 tag bit, 2 ciphertext bit, 3 counter, 4 key, 5 truncated below 16 bytes.
    const harm = lay.lens.map((l, i) => (i < 12 ? 0 : Math.floor(Math.random() * (l > 0 ? 6 : 5))));
    harm[12] = 1; harm[13] = 3; harm[14] = 4; harm[15] = 5;
    const want = harm.map((h) => (h === 0 ? 1 : 0));
    const outs = backends.map((t) => {
      const sk = raws.map((r) => t.prepare(r, true));
      const ok = raws.map((r) => t.prepare(r, false));
      const sealed = sealAll(t, lay, pick.map((p) => sk[p]!), ctrs);
      const b = new AeadBatch(count);
      lay.lens.forEach((l, i) => {
        const o = lay.offs[i]!;
        let len = l + 16, ctr = ctrs[i]!, key = ok[pick[i]!]!;
        switch (harm[i]) {
          case 1: sealed[o + l + Math.floor(Math.random() * 16)]! ^= 1 << Math.floor(Math.random() * 8); break;
          case 2: sealed[o + Math.floor(Math.random() * l)]! ^= 0x80; break;
          case 3: ctr = ctr === 0 ? 1 : ctr - 1; break;
          case 4: key = ok[1 - pick[i]!]!; break;
          case 5: len = Math.floor(Math.random() * 16); break;
        }
        b.set(i, key, ctr, o, len);
      });
      const n = t.open(sealed, b, 0, count);
      [...sk, ...ok].forEach((k) => t.release(k));
      return { n, ok: [...b.ok], buf: sealed };
    });
    for (const [i, r] of outs.entries()) {
      assert.deepEqual(r.ok, want, backends[i]!.name);
      assert.equal(r.n, want.filter((x) => x === 1).length);
    }
    // The good packets are intact; the native backend (both paths) zeroes the plaintext area of the rejected ones.
    for (const out of [outs[0]!, outs[1]!]) {
      lay.lens.forEach((l, j) => {
        const o = lay.offs[j]!;
        if (want[j] === 1) assert.ok(Buffer.from(out.buf.subarray(o, o + l)).equals(Buffer.from(lay.buf.subarray(o, o + l))));
        else if (harm[j] !== 5) assert.ok(out.buf.subarray(o, o + l).every((v) => v === 0), `rejected packet ${j} not zeroed`);
      });
    }
  });

  it('opens and seals a sub-range [start, end) only', () => {
    const lay = layout(6, 200, [10, 20, 30, 40, 50, 60]);
    const k = nat.prepare(rand(32), true);
    const b = new AeadBatch(6);
    lay.lens.forEach((l, i) => b.set(i, k, i, lay.offs[i]!, l));
    const buf = lay.buf.slice();
    nat.seal(buf, b, 2, 4);
    for (const i of [0, 1, 4, 5]) assert.deepEqual(buf.subarray(lay.offs[i]!, lay.offs[i]! + lay.lens[i]! + 16), lay.buf.subarray(lay.offs[i]!, lay.offs[i]! + lay.lens[i]! + 16));
    for (const i of [2, 3]) assert.notDeepEqual(buf.subarray(lay.offs[i]!, lay.offs[i]! + lay.lens[i]!), lay.buf.subarray(lay.offs[i]!, lay.offs[i]! + lay.lens[i]!));
    nat.release(k);
  });

  it('splits large batches with its worker thread and gets the same bytes and results as one thread', () => {
    const count = 300;
    const lay = layout(count, 1500);
    const raws = [rand(32), rand(32), rand(32)];
    const pick = lay.lens.map(() => Math.floor(Math.random() * 3));
    const ctrs = lay.lens.map(() => randomCounter());
    const run = (): { sealed: Uint8Array; opened: { buf: Uint8Array; ok: number[]; n: number } } => {
      const sk = raws.map((r) => nat.prepare(r, true));
      const ok = raws.map((r) => nat.prepare(r, false));
      const sealed = sealAll(nat, lay, pick.map((p) => sk[p]!), ctrs);
      sealed[lay.offs[count - 1]! + lay.lens[count - 1]!]! ^= 1; // the last packet (on the worker's half) is tampered
      const opened = openAll(nat, sealed, lay, pick.map((p) => ok[p]!), ctrs);
      [...sk, ...ok].forEach((k) => nat.release(k));
      return { sealed, opened };
    };
    const old = nat.setParallelMin(0);
    try {
      const serial = run();
      const before = nat.stats();
      nat.setParallelMin(16);
      // The worker joins only when it is scheduled in time (the machine may be busy): bounded retries
      // until it has done some jobs; every run must give exactly the one-thread result.
      for (let attempt = 0; attempt < 200 && nat.stats().workerJobs === before.workerJobs; attempt++) {
        const par = run();
        assert.ok(Buffer.from(par.sealed).equals(Buffer.from(serial.sealed)));
        assert.deepEqual(par.opened.ok, serial.opened.ok);
        assert.equal(par.opened.n, count - 1);
        assert.equal(par.opened.ok[count - 1], 0);
        assert.ok(Buffer.from(par.opened.buf).equals(Buffer.from(serial.opened.buf)));
      }
      assert.ok(nat.stats().parallelBatches >= before.parallelBatches + 2, 'calls took the split path');
      assert.ok(nat.stats().workerJobs > before.workerJobs, 'the worker did some of the jobs');
    } finally {
      nat.setParallelMin(old);
    }
  });

  it('frees keys on release (idempotent) and refuses a freed key, a wrong-direction key and slices outside the buffer', () => {
    const live = nat.stats().liveKeys;
    const s = nat.prepare(rand(32), true), o = nat.prepare(rand(32), false);
    assert.equal(nat.stats().liveKeys, live + 2);
    const buf = new Uint8Array(100);
    const b = new AeadBatch(1);
    b.set(0, o, 0, 0, 10);
    assert.throws(() => nat.seal(buf, b, 0, 1), { name: 'RangeError', message: /not a live sealing key/ });
    b.set(0, s, 0, 90, 10);
    assert.throws(() => nat.seal(buf, b, 0, 1), { name: 'RangeError', message: /outside buf/ });
    b.set(0, s, 0, 0, 10);
    assert.throws(() => nat.seal(buf, b, 0, 2), { name: 'RangeError' });
    nat.release(s);
    nat.release(s);
    nat.release(o);
    assert.equal(nat.stats().liveKeys, live);
    assert.equal(s.raw.length, 0, 'no copy of the key on the JS heap');
    const pp = new PerPacketTransport('node', new NodeChaChaPoly());
    const pk = pp.prepare(rand(32), true);
    assert.ok(pk.raw.some((v) => v !== 0));
    pp.release(pk);
    assert.ok(pk.raw.length === 32 && pk.raw.every((v) => v === 0), 'the per-packet backend zeroes its copy');
    assert.throws(() => nat.seal(buf, b, 0, 1), { name: 'RangeError', message: /not a live sealing key/ });
  });
});

describe('falling back to node:crypto when the native AEAD cannot load', () => {
  it('reports why: no addon, an addon without AEAD, an OpenSSL mismatch, or MESHD_NATIVE_AEAD=0', () => {
    const missing = loadNativeTransport(() => { throw new Error('native addon missing: run npm run build:native'); });
    assert.deepEqual(missing, { transport: null, error: 'native addon missing: run npm run build:native' });
    assert.match(loadNativeTransport(() => ({ abiVersion: 1 })).error!, /no AEAD/);
    // What native/build.sh makes when Node's OpenSSL headers are missing: only the reason.
    assert.match(loadNativeTransport(() => ({ abiVersion: 1, aeadError: 'the addon was built without Node\'s OpenSSL headers (include/node/openssl)' })).error!, /without Node's OpenSSL headers/);
    const mismatch = { ...(native() as object), aeadError: 'Node\'s OpenSSL is 3.5 but the addon was built against 3.0 headers: run npm run build:native' };
    assert.match(loadNativeTransport(() => mismatch).error!, /3\.5 but/);
    assert.match(loadNativeTransport(native, { MESHD_NATIVE_AEAD: '0' }).error!, /MESHD_NATIVE_AEAD=0/);
    assert.equal(loadNativeTransport(native, {}).error, null);
  });

  it('uses node:crypto then, and the device still carries data', () => {
    const backend = cryptoWith(loadNativeTransport(native, { MESHD_NATIVE_AEAD: '0' }));
    assert.equal(backend, nodeCrypto);
    assert.equal(cryptoWith(load).name, 'native');
    const p = new WgPipe({ crypto: backend });
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 100));
    p.deliver();
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 100));
    p.deliver();
    assert.equal(p.tunB.length, 1);
    assert.equal(p.tunA.length, 1);
  });

  it('interoperates: a native device and a node:crypto device carry data both ways', () => {
    const p = new WgPipe({ crypto: cryptoWith(load), cryptoB: nodeCrypto });
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 10));
    p.deliver();
    p.tunB.length = 0;
    for (let i = 0; i < 5; i++) {
      p.send('a', ipv4('10.0.0.1', '10.0.0.2', 100 + i * 300));
      p.send('b', ipv4('10.0.0.2', '10.0.0.1', 1300 - i));
      p.deliver();
    }
    assert.equal(p.tunB.length, 5);
    assert.equal(p.tunA.length, 5);
    assert.deepEqual(p.tunB[4], ipv4('10.0.0.1', '10.0.0.2', 1300));
  });
});
