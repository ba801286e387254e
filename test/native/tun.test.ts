// TUN device tests. Every device is created inside a fresh meshd-* namespace by a child process
// (fixtures/tun-child.js run with ip netns exec), never in the root namespace.
import { describe, it, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Lab, waitFor } from '../harness/netns.ts';
import { needs } from '../harness/prereq.ts';

const child = fileURLToPath(new URL('./fixtures/tun-child.js', import.meta.url));
const skip = needs({ root: true, tun: true, commands: ['ip', 'ping', 'setpriv', 'unshare'] });

interface ErrInfo { code?: string; errno?: number; syscall?: string; message: string; name?: string; ok?: boolean }

function lines(text: string): unknown[] {
  return text.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as unknown);
}

describe('Tun in a network namespace', { skip }, () => {
  const lab = new Lab('tun');
  after(() => lab.dispose());

  it('reads the echo request ping sends and ping accepts the reply written back', async () => {
    const ns = lab.ns('a');
    const proc = lab.spawn(ns, [process.execPath, child, 'echo']);
    let out = '';
    let err = '';
    proc.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
    proc.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
    const deadline = Date.now() + 10_000;
    while (!out.includes('"ready"')) {
      if (proc.exitCode !== null || Date.now() > deadline) assert.fail(`tun child did not start: ${err}${out}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    const link = lab.exec(ns, ['ip', '-o', 'link', 'show', 'meshdt0']);
    assert.match(link, /mtu 1280/);
    assert.match(link, /[<,]UP[,>]/);
    const ping = lab.tryExec(ns, ['ping', '-c', '2', '-i', '0.2', '-W', '2', '100.64.0.2'], 15_000);
    assert.equal(ping.status, 0, `ping failed: ${ping.stdout}${ping.stderr}\nchild: ${err}${out}`);
    assert.match(ping.stdout, /2 received/);
    // tryExec blocked this process while ping ran: give the child's output time to arrive.
    await waitFor('the child to report the echo requests', () => (out.match(/"wrote"/g) ?? []).length >= 2, 5000, 20);
    const events = lines(out) as Array<Record<string, unknown>>;
    const req = events.find((e) => e.event === 'packet' && e.icmpType === 8);
    assert.ok(req, `no echo request seen: ${out}`);
    assert.equal(req.src, '100.64.0.1');
    assert.equal(req.dst, '100.64.0.2');
    assert.equal(req.len, 84); // 20 IPv4 + 8 ICMP + 56 bytes of ping payload
    const ready = events.find((e) => e.event === 'ready');
    assert.equal(ready?.name, 'meshdt0');
    assert.ok((ready?.capacity as number) >= 1280);
    await lab.dispose();
    assert.equal(spawnSync('ip', ['link', 'show', 'meshdt0']).status !== 0, true, 'meshdt0 must not exist in the root namespace');
  });

  it('reports bad names, busy devices and missing devices with an errno code and advice', () => {
    const lab2 = new Lab('tune');
    try {
      const ns = lab2.ns('a');
      const r = lines(lab2.exec(ns, [process.execPath, child, 'errors']))[0] as Record<string, ErrInfo | string>;
      const tooLong = r.tooLong as ErrInfo;
      assert.equal(tooLong.code, 'ERR_OUT_OF_RANGE');
      assert.match(tooLong.message, /name is too long .*at most 15/);
      const bad = r.badChars as ErrInfo;
      assert.equal(bad.code, 'EINVAL');
      assert.equal(bad.errno, -constants.errno.EINVAL);
      assert.equal(bad.syscall, 'ioctl TUNSETIFF');
      assert.match(bad.message, /^tunOpen bad\/name: .*pick another name/);
      const busy = r.busy as ErrInfo;
      assert.equal(busy.code, 'EBUSY');
      assert.match(busy.message, /device meshdt2 is in use/);
      const taken = r.taken as ErrInfo;
      assert.equal(taken.code, 'EINVAL');
      assert.equal((r.badMtu as ErrInfo).code, 'ERR_OUT_OF_RANGE');
      const noDev = r.noDevice as ErrInfo;
      assert.equal(noDev.code, 'ENODEV');
      assert.match(noDev.message, /no interface meshdnone in this network namespace/);
      assert.equal(r.kernelName, 'mtun0');
      assert.equal((r.closedTwice as ErrInfo).code, 'EBADF');
    } finally {
      lab2.disposeSync();
    }
  });

  it('reports a fatal read error once when the device is deleted under a running reader', () => {
    const lab4 = new Lab('tung');
    try {
      const ns = lab4.ns('a');
      const events = lines(lab4.exec(ns, [process.execPath, child, 'gone'], { timeoutMs: 10_000 })) as Array<Record<string, unknown>>;
      assert.equal(events.find((e) => e.event === 'deleted')?.status, 0);
      const errs = events.filter((e) => e.event === 'error');
      assert.equal(errs.length, 1, JSON.stringify(events));
      assert.match(String(errs[0]!.code), /^EBADFD?$/);
      assert.match(String(errs[0]!.message), /^tun meshdt3: reading stopped after EBADFD?/);
    } finally {
      lab4.disposeSync();
    }
  });

  it('says to load the tun module when /dev/net/tun is missing', () => {
    const lab5 = new Lab('tunm');
    try {
      const ns = lab5.ns('a');
      // A private mount namespace (unshare -m: propagation private) hides /dev/net under a tmpfs
      // for this one child only.
      const r = lab5.tryExec(ns, ['unshare', '-m', 'sh', '-c', 'mount -t tmpfs tmpfs /dev/net && exec "$0" "$1" open',
        process.execPath, child]);
      const info = lines(r.stdout)[0] as ErrInfo | undefined;
      assert.ok(info, `no output: ${r.stderr}`);
      assert.equal(info.code, 'ENOENT');
      assert.equal(info.syscall, 'open');
      assert.match(info.message, /\/dev\/net\/tun missing: load the tun module/);
    } finally {
      lab5.disposeSync();
    }
    assert.ok(spawnSync('test', ['-c', '/dev/net/tun']).status === 0, '/dev/net/tun must still exist here');
  });

  it('refuses to open a device without CAP_NET_ADMIN, saying it needs root', () => {
    const lab3 = new Lab('tunp');
    try {
      const ns = lab3.ns('a');
      const r = lab3.tryExec(ns, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all',
        process.execPath, child, 'open']);
      const info = lines(r.stdout)[0] as ErrInfo | undefined;
      assert.ok(info, `no output: ${r.stderr}`);
      assert.equal(info.code, 'EPERM');
      assert.equal(info.errno, -constants.errno.EPERM);
      assert.match(info.message, /opening a TUN device needs root or CAP_NET_ADMIN/);
    } finally {
      lab3.disposeSync();
    }
  });
});
