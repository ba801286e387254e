import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ipv4, WgPipe, typeOf } from '../harness/wgpipe.ts';

describe('Device handshake and data', () => {
  it('completes a handshake on first packet and delivers data both ways', () => {
    const p = new WgPipe();
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 100));
    p.deliver();
    assert.equal(p.tunB.length, 1);
    assert.deepEqual(p.tunB[0], ipv4('10.0.0.1', '10.0.0.2', 100));
    p.send('b', ipv4('10.0.0.2', '10.0.0.1', 50));
    p.deliver();
    assert.deepEqual(p.tunA, [ipv4('10.0.0.2', '10.0.0.1', 50)]);
    assert.deepEqual(p.log.map(typeOf), [1, 2, 4, 4]);
  });

  it('completes a handshake when datagrams arrive in Node Buffers (as DERP delivers them)', () => {
    const p = new WgPipe();
    p.buffers = true;
    p.send('a', ipv4('10.0.0.1', '10.0.0.2', 100));
    p.deliver();
    assert.deepEqual(p.tunB.map((x) => Uint8Array.from(x)), [ipv4('10.0.0.1', '10.0.0.2', 100)]);
  });
});
