// Golden bytes: tailscale v1.102.3 net/stun (Request/Response with txid 01..0c, produced by
// test/vectors/golden/main.go) and the captured server responses of net/stun/stun_test.go.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { Endpoints } from '../../src/net/endpoint.ts';
import {
  bindingRequest, bindingResponse, isStunPacket, parseBindingRequest, parseBindingResponse,
} from '../../src/stun/stun.ts';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const tx = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
const eps = new Endpoints();

// tailscale net/stun/stun_test.go responseTests: [name, hex, txid, ip:port]
const captured: [string, string, string, string][] = [
  ['google-1', '0101000c2112a4422360b11e3ec68ffa93e0800700200008 0001c7866957856f', '2360b11e3ec68ffa93e08007', '72.69.33.45:59028'],
  ['google-2', '0101000c2112a442f9f121cbde7d7c75923ce27100200008 0001c7876957856f', 'f9f121cbde7d7c75923ce271', '72.69.33.45:59029'],
  ['stun-sipgate-net-10000', `010100442112a442482eb64715e8b28eaead644400010008 0001e4ab4845212d 00040008 00012710d90a4498
    00050008 00012711d9747a8a 80200008 0001c5b96957856f 80220010 566f766964612e6f726720302e393600`,
  '482eb64715e8b28eaead6444', '72.69.33.45:58539'],
  ['stun-powervoip-com-3478', `010100242112a4427e57966829f444609d1deaa600010008 0001e9d34845212d 00040008 00010d964d48a9d4
    00050008 00010d974d48a9d5`, '7e57966829f444609d1deaa6', '72.69.33.45:59859'],
  ['in-process-pion-server', `010100242112a442ebc2d36ef471217c4f3e308e8022000a 656e64706f696e7465720000 00200008 0001ce665e12a443
    80280004 b699bb02 010100242112a442`, 'ebc2d36ef471217c4f3e308e', '127.0.0.1:61300'],
  ['stuntman-server-ipv6', `010100482112a44206f56685d28af3e69ce341e200010014 000290ce260200d1b4cfc10038b231fffeef96f6
    802b0014 00020d962604a880000200d10000000000c57001 00200014 0002b1dc0710a493b23aa785ea38c219620cd714`,
  '06f56685d28af3e69ce341e2', '[2602:d1:b4cf:c100:38b2:31ff:feef:96f6]:37070'],
  ['software-a', '010100142112a442ebc2d36ef471217c4f3e308e80220001 61000000 00200008 0001ce665e12a443',
    'ebc2d36ef471217c4f3e308e', '127.0.0.1:61300'],
  ['software-abc', '010100142112a442ebc2d36ef471217c4f3e308e80220003 61626300 00200008 0001ce665e12a443',
    'ebc2d36ef471217c4f3e308e', '127.0.0.1:61300'],
  ['no-4in6', '010100182112a4424fd5d202dcb37d31fc773306002000140002cd3d2112a4424fd5d202dcb382ce2dc3fcc7',
    '4fd5d202dcb37d31fc773306', '209.180.207.193:60463'],
];

describe('stun', () => {
  it('builds the exact 40-byte request tailscale sends (SOFTWARE=tailnode, FINGERPRINT)', () => {
    assert.equal(toHex(bindingRequest(tx)),
      '000100142112a4420102030405060708090a0b0c802200087461696c6e6f646580280004b32c370f');
  });

  it('accepts its own request the way derper does and rejects altered ones', () => {
    const req = bindingRequest();
    const r = parseBindingRequest(req);
    assert.ok(r.ok);
    assert.equal(toHex(r.txId), toHex(req.subarray(8, 20)));
    const badFp = req.slice(); badFp[39]! ^= 1;
    assert.deepEqual(parseBindingRequest(badFp), { ok: false, error: 'wrong-fingerprint' });
    const badSw = req.slice(); badSw[24] = 0x54;
    assert.deepEqual(parseBindingRequest(badSw), { ok: false, error: 'wrong-software' });
    assert.deepEqual(parseBindingRequest(req.subarray(0, 32)).ok, false);
  });

  for (const [name, data, txid, addr] of captured) {
    it(`parses the captured response ${name}`, () => {
      const r = parseBindingResponse(hex(data), eps);
      assert.ok(r.ok, JSON.stringify(r));
      assert.equal(toHex(r.txId), txid);
      assert.equal(r.endpoint.key, addr);
      assert.equal(r.endpoint, eps.parse(addr), 'interned endpoint');
    });
  }

  it('builds the same responses as tailscale net/stun.Response', () => {
    assert.equal(toHex(bindingResponse(tx, eps.parse('127.0.0.1:41641'))),
      '0101000c2112a4420102030405060708090a0b0c00200008000183bb5e12a443');
    assert.equal(toHex(bindingResponse(tx, eps.parse('[2001:db8::1]:3478'))),
      '010100182112a4420102030405060708090a0b0c0020001400022c840113a9fa0102030405060708090a0b0d');
  });

  it('falls back to MAPPED-ADDRESS when there is no XOR-MAPPED-ADDRESS', () => {
    const b = hex('010100 0c 2112a442 0102030405060708090a0b0c 0001 0008 0001 1f90 0a000001');
    const r = parseBindingResponse(b, eps);
    assert.ok(r.ok);
    assert.equal(r.endpoint.key, '10.0.0.1:8080');
  });

  it('recognises STUN by header bits and magic (stun.Is)', () => {
    const magic = '2112a442';
    assert.equal(isStunPacket(new Uint8Array(0)), false);
    assert.equal(isStunPacket(new Uint8Array(20)), false);
    assert.equal(isStunPacket(hex(`00000000${magic}${'00'.repeat(11)}`)), false);
    assert.equal(isStunPacket(hex(`00000000${magic}${'00'.repeat(12)}`)), true);
    assert.equal(isStunPacket(hex(`f0000000${magic}${'00'.repeat(12)}`)), false);
    assert.equal(isStunPacket(hex(`40000000${magic}${'00'.repeat(12)}`)), false);
    assert.equal(isStunPacket(hex(`20000000${magic}${'00'.repeat(12)}`)), true);
  });

  it('returns an error, never throws, on truncated or hostile responses', () => {
    const good = hex(captured[0]![1]);
    for (let n = 0; n < good.length; n++) {
      const r = parseBindingResponse(good.subarray(0, n), eps);
      assert.equal(r.ok, false, `truncated to ${n}`);
    }
    // declared attribute length larger than the packet
    const long = good.slice(); long[3] = 0xff;
    assert.deepEqual(parseBindingResponse(long, eps), { ok: false, error: 'malformed-attrs' });
    // attribute claiming to run past the declared length
    const over = good.slice(); over[23] = 0x40;
    assert.deepEqual(parseBindingResponse(over, eps), { ok: false, error: 'malformed-attrs' });
    // unknown family
    const fam = good.slice(); fam[25] = 9;
    assert.deepEqual(parseBindingResponse(fam, eps), { ok: false, error: 'malformed-attrs' });
    // a request is not a response
    assert.deepEqual(parseBindingResponse(bindingRequest(tx), eps), { ok: false, error: 'not-success-response' });
    // random junk
    for (let i = 0; i < 2000; i++) {
      const junk = Uint8Array.from({ length: (i % 80) }, () => (Math.random() * 256) | 0);
      if (junk.length >= 8) junk.set([0x01, 0x01], 0), junk.set([0x21, 0x12, 0xa4, 0x42], 4);
      parseBindingResponse(junk, eps);
      parseBindingRequest(junk);
    }
  });
});
