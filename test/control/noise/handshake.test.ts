import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  clientHandshake, serverAccept, parseResponse, prologue, responseLength, HandshakeRefusedError,
  INITIATION_LEN, RESPONSE_LEN,
} from '../../../src/control/noise/handshake.ts';
import { publicKeyOf, type MachinePublic, type PrivateKey } from '../../../src/control/keys.ts';
import { referenceInitiation } from './reference.ts';

const fixed = (b: number): PrivateKey => new Uint8Array(32).fill(b) as PrivateKey;
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

// Fixed keys: machine = 0x11…, server = 0x22…, client ephemeral = 0x33…, server ephemeral = 0x44….
const machine = fixed(0x11);
const server = fixed(0x22);
const serverPub = publicKeyOf<MachinePublic>(server);
const eph = fixed(0x33);
const serverEph = fixed(0x44);

// Golden initiation for version 138 with the keys above. Produced by handshake.ts and, independently,
// by reference.ts (noble); the test below re-derives it with both.
const GOLDEN_INIT_138 =
  '008a010060' +
  '7b0d47d93427f8311160781c7c733fd89f88970aef490d8aa0ee19a4cb8a1b14' +
  '61d2949213e755bc180b5d5dbbd8c50a2a1beb69f8940d24cab4606a34cd5d415f345b3da5575e54142f9c3a63c44b93' +
  'a21c3e3655b7c7f705994534890e34d7';

describe('control Noise IK handshake', () => {
  it('writes the prologue as "Tailscale Control Protocol v" and the decimal version', () => {
    assert.equal(Buffer.from(prologue(138)).toString(), 'Tailscale Control Protocol v138');
    assert.equal(Buffer.from(prologue(1)).toString(), 'Tailscale Control Protocol v1');
  });

  it('lays out the 101-byte initiation: version, type 1, length 96, e, encrypted s, tag', () => {
    const hs = clientHandshake({ machinePrivate: machine, serverPublic: serverPub, version: 138, ephemeralPrivate: eph });
    assert.equal(hs.initiation.length, INITIATION_LEN);
    assert.equal(hex(hs.initiation), GOLDEN_INIT_138);
    assert.equal(hex(referenceInitiation(138, machine, serverPub, eph).initiation), GOLDEN_INIT_138);
    assert.deepEqual(hs.initiation.subarray(5, 37), publicKeyOf(eph));
    assert.equal(Buffer.from(hs.initiation).toString('base64').length, 136);
  });

  it('produces the same initiation and transport keys as an independent noble implementation', () => {
    for (const version of [113, 138, 142, 65535]) {
      const ours = clientHandshake({ machinePrivate: machine, serverPublic: serverPub, version, ephemeralPrivate: eph });
      const ref = referenceInitiation(version, machine, serverPub, eph);
      assert.equal(hex(ours.initiation), hex(ref.initiation), `initiation for v${version}`);
      const acc = serverAccept(server, ours.initiation, serverEph);
      const keys = ours.finish(acc.response);
      const refKeys = ref.finish(acc.response);
      assert.equal(hex(keys.tx), hex(refKeys.tx));
      assert.equal(hex(keys.rx), hex(refKeys.rx));
    }
  });

  it('agrees with the in-process responder on keys, machine key and version', () => {
    const hs = clientHandshake({ machinePrivate: machine, serverPublic: serverPub, version: 138 });
    const acc = serverAccept(server, hs.initiation);
    assert.equal(acc.version, 138);
    assert.deepEqual(acc.clientPublic, publicKeyOf(machine));
    assert.equal(acc.response.length, RESPONSE_LEN);
    assert.equal(hex(acc.response.subarray(0, 3)), '020030');
    const keys = hs.finish(acc.response);
    assert.deepEqual(keys.tx, acc.keys.rx);
    assert.deepEqual(keys.rx, acc.keys.tx);
    assert.deepEqual(keys.handshakeHash, acc.keys.handshakeHash);
    assert.notDeepEqual(keys.tx, keys.rx);
  });

  it('fails when the client used a different server key (the server cannot decrypt s)', () => {
    const hs = clientHandshake({ machinePrivate: machine, serverPublic: publicKeyOf<MachinePublic>(fixed(0x55)), version: 138 });
    assert.throws(() => serverAccept(server, hs.initiation), /authentication failed/);
  });

  it('fails on any flipped bit of the response', () => {
    for (const i of [3, 20, 40, 50]) {
      const hs = clientHandshake({ machinePrivate: machine, serverPublic: serverPub, version: 138 });
      const resp = Uint8Array.from(serverAccept(server, hs.initiation).response);
      resp[i]! ^= 1;
      assert.throws(() => hs.finish(resp), /authentication failed|low-order/);
    }
  });

  it('surfaces a type-3 error frame with the server text', () => {
    const hs = clientHandshake({ machinePrivate: machine, serverPublic: serverPub, version: 138 });
    const text = Buffer.from('wrong handshake initiation size');
    const frame = new Uint8Array([3, 0, text.length, ...text]);
    assert.equal(responseLength(frame.subarray(0, 3)), frame.length);
    assert.throws(() => hs.finish(frame), (e: unknown) => e instanceof HandshakeRefusedError && e.serverMessage === 'wrong handshake initiation size');
  });

  it('rejects a response of the wrong type or length', () => {
    assert.throws(() => parseResponse(Uint8Array.of(4, 0, 0)), /unexpected response message type 4/);
    assert.throws(() => parseResponse(new Uint8Array([2, 0, 47, ...new Uint8Array(47)])), /wrong length 47/);
    assert.throws(() => parseResponse(new Uint8Array([2, 0, 48, ...new Uint8Array(10)])), /does not match header/);
  });

  it('lets a continuation finish only once', () => {
    const hs = clientHandshake({ machinePrivate: machine, serverPublic: serverPub, version: 138 });
    const resp = serverAccept(server, hs.initiation).response;
    hs.finish(resp);
    assert.throws(() => hs.finish(resp), /used twice/);
  });
});
