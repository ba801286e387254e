// The allowed-IPs table after any sequence of inserts, moves and removals answers like a plain
// longest-prefix match over what is left (it now updates in place instead of rebuilding per change).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { AllowedIPs, parsePrefix } from '../../src/wg/allowedips.ts';

const v4prefix = fc.tuple(fc.constantFrom(10, 100), fc.nat(3), fc.nat(3), fc.constantFrom(0, 8, 16, 24, 30, 32)).map(([a, b, c, l]) => `${a}.${b}.${c}.1/${l}`);
const op = fc.oneof(
  fc.tuple(fc.constant('insert' as const), v4prefix, fc.nat(4)),
  fc.tuple(fc.constant('removeValue' as const), fc.constant(''), fc.nat(4)),
  fc.tuple(fc.constant('remove' as const), v4prefix, fc.constant(0)),
);

function naive(table: Map<string, number>, ip: number[]): number | undefined {
  let best: number | undefined, bestBits = -1;
  for (const [text, v] of table) {
    const p = parsePrefix(text);
    let match = true;
    for (let i = 0; i < p.bits && match; i++) if (((ip[i >> 3]! >> (7 - (i & 7))) & 1) !== ((p.bytes[i >> 3]! >> (7 - (i & 7))) & 1)) match = false;
    if (match && p.bits > bestBits) { best = v; bestBits = p.bits; }
  }
  return best;
}

describe('AllowedIPs under churn', () => {
  it('matches a naive longest-prefix match after random inserts, moves and removals', () => {
    fc.assert(fc.property(fc.array(op, { maxLength: 40 }), fc.array(fc.tuple(fc.constantFrom(10, 100), fc.nat(3), fc.nat(3), fc.nat(3)), { minLength: 1, maxLength: 20 }), (ops, ips) => {
      const t = new AllowedIPs<number>();
      const model = new Map<string, number>();
      for (const [kind, cidr, v] of ops) {
        if (kind === 'insert') { t.insert(cidr, v); model.set(`${parsePrefix(cidr).bytes.join('.')}/${parsePrefix(cidr).bits}`, v); }
        else if (kind === 'remove') { t.remove(cidr); model.delete(`${parsePrefix(cidr).bytes.join('.')}/${parsePrefix(cidr).bits}`); }
        else { t.removeValue(v); for (const [k, x] of [...model]) if (x === v) model.delete(k); }
      }
      for (const ip of ips) assert.equal(t.lookupV4(Uint8Array.from(ip), 0), naive(model, ip), `lookup ${ip.join('.')}`);
      for (let v = 0; v <= 4; v++) assert.deepEqual(t.prefixesOf(v).sort(), [...model].filter(([, x]) => x === v).map(([k]) => k).sort());
    }), { seed: 7, numRuns: 400 });
  });
});
