// Userspace networking against real peers: meshd runs `up --tun=userspace-networking` as an
// ordinary user in a namespace where /dev/net/tun does not exist (like a container), next to an
// unmodified tailscaled v1.102.3 on headscale v0.29.2. Outgoing connections go through meshd's
// SOCKS5 and HTTP proxies into its TCP/IP stack; inbound ones from tailscaled reach services on
// meshd's loopback; ICMP echo and disco pings are answered; transfers survive underlay loss.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { needs } from '../harness/prereq.ts';
import { packageRoot } from '../../src/util/root.ts';
import { waitFor } from '../harness/netns.ts';
import { TailnetLab, type LabNode } from '../harness/hslab.ts';
import type { Status } from '../../src/daemon/localapi.ts';
import { INTERNET, addInternet, routeToInternet } from '../harness/probe.ts';

const skip = needs({ root: true, commands: ['headscale', 'tailscaled', 'tailscale', 'ip', 'ping', 'nft', 'curl', 'setpriv', 'unshare', 'useradd'] });

const USER = 'meshdtest';
const MB = 1024 * 1024;
const blob = join(packageRoot(), 'scripts', 'httpblob.mjs');
const load = join(packageRoot(), 'scripts', 'socks-load.mjs');

describe('meshd --tun=userspace-networking as an ordinary user, with a tailscaled peer', { skip }, () => {
  let lab: TailnetLab;
  let m: LabNode, t: LabNode;
  let home = '';
  let uid = 0;
  let mIp = '', mIp6 = '', tIp = '';
  let key = '';

  /** Runs argv in m's namespace as USER, in a mount namespace where /dev/net is an empty tmpfs. */
  function asUser(argv: string[], timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
    const script = 'mount -t tmpfs -o size=4k,mode=755 tmpfs /dev/net && exec setpriv --reuid=' + USER + ' --regid=' + USER + ' --clear-groups -- "$@"';
    return lab.lab.tryExec(m.ns, ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'sh',
      'env', '-i', `HOME=${home}`, `XDG_STATE_HOME=${home}/state`, `XDG_RUNTIME_DIR=${home}/run`, 'PATH=/usr/bin:/bin', 'MESHD_DERP_HTTP=1',
      ...argv], timeoutMs);
  }
  function meshd(args: string[], timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
    return asUser([process.execPath, lab.meshdBin, ...args], timeoutMs);
  }
  function status(): Status {
    const r = meshd(['status', '--json']);
    assert.equal(r.status, 0, `meshd status: ${r.stderr}`);
    return JSON.parse(r.stdout) as Status;
  }
  /** Runs a shell command in m's namespace (as root: curl to the proxies on m's loopback). */
  function inM(cmd: string, timeoutMs = 120_000): { status: number | null; stdout: string; stderr: string } {
    return lab.lab.tryExec(m.ns, ['bash', '-c', cmd], timeoutMs);
  }
  /** GET through a proxy into a file; returns the announced and the actual hash and curl's result. */
  function fetchBlob(proxyArgs: string, url: string, maxTime = 120): { status: number | null; want: string; got: string; bytes: number; stderr: string; ms: number } {
    const file = join(home, `dl-${Math.random().toString(36).slice(2)}`);
    const t0 = Date.now();
    const r = inM(`curl -sS --max-time ${maxTime} ${proxyArgs} -D - -o ${file} '${url}'`, (maxTime + 10) * 1000);
    const ms = Date.now() - t0;
    let got = '', bytes = 0;
    try { const b = readFileSync(file); bytes = b.length; got = createHash('sha256').update(b).digest('hex'); rmSync(file); } catch { /* no file */ }
    const want = /x-sha256: *([0-9a-f]+)/i.exec(r.stdout)?.[1] ?? '';
    return { status: r.status, want, got, bytes, stderr: r.stderr, ms };
  }
  function upload(proxyArgs: string, url: string, size: number): { sent: string; reply: { bytes: number; sha256: string } | undefined; stderr: string } {
    const file = join(home, 'up.bin');
    inM(`head -c ${size} /dev/urandom > ${file}`);
    const sent = createHash('sha256').update(readFileSync(file)).digest('hex');
    const r = inM(`curl -sS --max-time 120 ${proxyArgs} -T ${file} '${url}'`, 130_000);
    rmSync(file, { force: true });
    let reply: { bytes: number; sha256: string } | undefined;
    try { reply = JSON.parse(r.stdout) as { bytes: number; sha256: string }; } catch { /* none */ }
    return { sent, reply, stderr: r.stderr };
  }

  before(async () => {
    if (spawnSync('id', ['-u', USER]).status !== 0) {
      const r = spawnSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', USER], { encoding: 'utf8' });
      assert.equal(r.status, 0, `useradd: ${r.stderr}`);
    }
    uid = Number(spawnSync('id', ['-u', USER], { encoding: 'utf8' }).stdout.trim());
    home = mkdtempSync('/tmp/meshd-ns-user-');
    spawnSync('chown', [`${USER}:${USER}`, home]);
    chmodSync(home, 0o755);
    lab = new TailnetLab('nst');
    await lab.startHeadscale();
    key = lab.authKey({ reusable: true });
    m = lab.addNode('m1');
    t = lab.addNode('t1');
    // A server beyond a router on the simulated internet (not on the exit node's own LAN, which
    // exit nodes do not serve); both nodes route there.
    const inet = addInternet(lab.lab, lab.sw);
    routeToInternet(lab.lab, m.ns);
    routeToInternet(lab.lab, t.ns);
    lab.lab.spawn(inet.server, [process.execPath, blob, '0.0.0.0', '8002']);
    m.socket = join(home, 'run', 'meshd', 'meshd.sock');
    const keyFile = join(home, 'authkey');
    spawnSync('sh', ['-c', `umask 077 && printf %s '${key}' > ${keyFile} && chown ${USER} ${keyFile}`]);
    const r = meshd(['up', '--tun=userspace-networking', '--login-server', 'http://198.18.0.1:8080', '--authkey', `file:${keyFile}`,
      '--hostname', 'm1', '--socks5-server', 'localhost:1080', '--outbound-http-proxy-listen', '127.0.0.1:8080', '--timeout', '45s']);
    assert.equal(r.status, 0, `meshd up as ${USER}: ${r.stderr}\n${(() => { try { return readFileSync(join(home, 'state', 'meshd', 'meshd.log'), 'utf8').slice(-3000); } catch { return ''; } })()}`);
    await lab.startTailscaled(t, key);
    const st = status();
    mIp = st.self.addresses.find((a) => !a.includes(':'))!;
    mIp6 = st.self.addresses.find((a) => a.includes(':'))!;
    tIp = lab.tailscale(t, ['ip', '-4']).stdout.trim();
    lab.lab.spawn(t.ns, [process.execPath, blob, '0.0.0.0', '8000']);
    lab.lab.spawn(m.ns, [process.execPath, blob, '127.0.0.1', '8001']);
    await waitFor('meshd to see t1', () => status().peers.some((p) => p.hostname === 't1'), 20_000, 250);
    await waitFor('tailscaled to see m1', () => lab.tailscale(t, ['status']).stdout.includes(mIp), 20_000, 250);
    await waitFor('the blob server on t1 through SOCKS5', () => inM(`curl -sS --max-time 3 --socks5-hostname 127.0.0.1:1080 http://${tIp}:8000/`, 5000).stdout.startsWith('ok'), 30_000, 500);
  });
  after(async () => {
    await lab?.dispose();
    if (home) rmSync(home, { recursive: true, force: true });
  });

  it('runs without /dev/net/tun and without root: per-user state and socket, mode shown in status', () => {
    assert.notEqual(asUser(['sh', '-c', 'test -e /dev/net/tun']).status, 0, '/dev/net/tun is absent for the agent');
    assert.match(asUser(['id', '-u']).stdout.trim(), new RegExp(`^${uid}$`));
    const st = status();
    assert.equal(st.self.state, 'Running');
    assert.equal(st.self.tun, 'userspace-networking');
    assert.deepEqual(st.self.proxies, { socks5: '127.0.0.1:1080', http: '127.0.0.1:8080' });
    const text = meshd(['status']);
    assert.match(text.stdout, /userspace networking: SOCKS5 127\.0\.0\.1:1080, HTTP proxy 127\.0\.0\.1:8080/, text.stdout + text.stderr);
    const sf = statSync(join(home, 'state', 'meshd', 'state.json'));
    assert.equal(sf.uid, uid, 'state.json belongs to the user');
    assert.equal(sf.mode & 0o777, 0o600);
    assert.equal(JSON.parse(readFileSync(join(home, 'state', 'meshd', 'state.json'), 'utf8')).tun, 'userspace-networking');
    assert.equal(statSync(m.socket).uid, uid, 'the socket is under XDG_RUNTIME_DIR');
    const links = lab.lab.exec(m.ns, ['ip', '-o', 'link']);
    assert.doesNotMatch(links, /meshd0|tun/, 'no TUN device');
  });

  it('curl reaches the tailscaled peer through SOCKS5 and the HTTP proxy, by IP and by MagicDNS name', () => {
    for (const [how, args, url] of [
      ['socks5 by IP', '--socks5-hostname 127.0.0.1:1080', `http://${tIp}:8000/`],
      ['socks5 by short name', '--socks5-hostname 127.0.0.1:1080', 'http://t1:8000/'],
      ['socks5 by FQDN', '--socks5-hostname 127.0.0.1:1080', 'http://t1.meshd.test:8000/'],
      ['http proxy, absolute URI', '--proxy http://127.0.0.1:8080', `http://${tIp}:8000/`],
      ['http proxy, CONNECT', '--proxy http://127.0.0.1:8080 --proxytunnel', 'http://t1:8000/'],
    ] as const) {
      const r = inM(`curl -sS --max-time 10 ${args} ${url}`, 15_000);
      assert.equal(r.status, 0, `${how}: ${r.stderr}`);
      assert.match(r.stdout, /^ok /, how);
    }
    const bad = inM('curl -sS --max-time 10 --socks5-hostname 127.0.0.1:1080 http://no-such-host.invalid:8000/', 15_000);
    assert.notEqual(bad.status, 0, 'an unknown name fails');
    assert.match(bad.stderr, /SOCKS|resolve|connect/i, bad.stderr);
  });

  it('moves 50 MB down and 50 MB up through SOCKS5, hash-identical', () => {
    const d = fetchBlob('--socks5-hostname 127.0.0.1:1080', `http://${tIp}:8000/blob/${50 * MB}`);
    assert.equal(d.status, 0, d.stderr);
    assert.equal(d.bytes, 50 * MB);
    assert.equal(d.got, d.want);
    const u = upload('--socks5-hostname 127.0.0.1:1080', `http://${tIp}:8000/upload`, 50 * MB);
    assert.deepEqual(u.reply, { bytes: 50 * MB, sha256: u.sent }, u.stderr);
    const h = fetchBlob('--proxy http://127.0.0.1:8080', `http://t1:8000/blob/${10 * MB}`);
    assert.equal(h.got, h.want, `10 MB through the HTTP proxy: ${h.stderr}`);
    process.stderr.write(`# 50 MB down through SOCKS5 in ${d.ms} ms (${(50 * 8 * 1.048576 / d.ms * 1000).toFixed(0)} Mbit/s)\n`);
  });

  it('tailscaled reaches a service on the meshd host\'s loopback and moves 50 MB each way intact', () => {
    const file = join(home, 'in.bin');
    const r = lab.lab.tryExec(t.ns, ['bash', '-c', `curl -sS --max-time 120 -D - -o ${file} http://${mIp}:8001/blob/${50 * MB}`], 130_000);
    assert.equal(r.status, 0, r.stderr);
    const want = /x-sha256: *([0-9a-f]+)/i.exec(r.stdout)?.[1];
    const b = readFileSync(file);
    assert.equal(b.length, 50 * MB);
    assert.equal(createHash('sha256').update(b).digest('hex'), want);
    rmSync(file);
    lab.lab.exec(t.ns, ['bash', '-c', `head -c ${50 * MB} /dev/urandom > ${file}`]);
    const sent = createHash('sha256').update(readFileSync(file)).digest('hex');
    const u = lab.lab.tryExec(t.ns, ['bash', '-c', `curl -sS --max-time 120 -T ${file} http://${mIp}:8001/upload`], 130_000);
    rmSync(file);
    assert.deepEqual(JSON.parse(u.stdout || '{}'), { bytes: 50 * MB, sha256: sent }, u.stderr);
    // Over IPv6 too (the service listens on 127.0.0.1: forwarded there, as tailscaled does).
    const v6 = lab.lab.tryExec(t.ns, ['curl', '-sS', '--max-time', '10', `http://[${mIp6}]:8001/`], 15_000);
    assert.match(v6.stdout, /^ok /, v6.stderr);
    // A port nothing listens on: the SYN gets a RST (connection refused, not a timeout).
    const refused = lab.lab.tryExec(t.ns, ['curl', '-sS', '--max-time', '10', `http://${mIp}:8009/`], 15_000);
    assert.match(refused.stderr, /refused|Couldn't connect/i, refused.stderr);
  });

  it('forwards UDP from tailscaled to a socket on the meshd host\'s loopback, and the replies back', () => {
    const echo = 'const s=require("dgram").createSocket("udp4");s.on("message",(m,r)=>s.send(Buffer.concat([Buffer.from("echo:"),m]),r.port,r.address));s.bind(7000,"127.0.0.1")';
    lab.lab.spawn(m.ns, [process.execPath, '-e', echo]);
    const client = `const s=require("dgram").createSocket("udp4");let n=0;const got=[];s.on("message",(m)=>{got.push(m.toString());if(got.length===3){console.log(JSON.stringify(got));process.exit(0)}});
      const t=setInterval(()=>{if(n<20)s.send("hi"+(n++%3),7000,process.argv[1])},200);setTimeout(()=>{console.log(JSON.stringify(got));process.exit(1)},8000)`;
    const r = lab.lab.tryExec(t.ns, [process.execPath, '-e', client, mIp], 15_000);
    const got = JSON.parse(r.stdout.trim() || '[]') as string[];
    assert.ok(got.length === 3 && got.every((g) => /^echo:hi\d$/.test(g)), `echoes: ${r.stdout} ${r.stderr}`);
    assert.ok((status().self.counters?.['netstack.udpFlows'] ?? 0) >= 1, 'a UDP flow was opened');
  });

  it('relays UDP through SOCKS5 UDP ASSOCIATE to a UDP service on the tailscaled peer, by IP and by name', () => {
    const echo = 'const s=require("dgram").createSocket("udp4");s.on("message",(m,r)=>s.send(Buffer.concat([Buffer.from("echo:"),m]),r.port,r.address));s.bind(7001,"0.0.0.0")';
    lab.lab.spawn(t.ns, [process.execPath, '-e', echo]);
    // RFC 1928 client: greeting, UDP ASSOCIATE 0.0.0.0:0, then datagrams with the SOCKS header to BND
    // (by IP and by name, resent until answered); prints the replies as "sender:port:payload".
    const client = `const net=require("net"),dgram=require("dgram");const [tip]=process.argv.slice(1);
      const c=net.connect(1080,"127.0.0.1");let buf=Buffer.alloc(0);const got=new Set();
      const hdr=(h,p)=>{const ip=h.split(".").map(Number);return h.includes(".")&&ip.length===4&&ip.every((x)=>x>=0)?Buffer.from([0,0,0,1,...ip,p>>8,p&255]):Buffer.concat([Buffer.from([0,0,0,3,h.length]),Buffer.from(h),Buffer.from([p>>8,p&255])])};
      c.on("connect",()=>{c.write(Buffer.from([5,1,0]));c.write(Buffer.from([5,3,0,1,0,0,0,0,0,0]))});
      c.on("data",(d)=>{buf=Buffer.concat([buf,d]);if(buf.length<12||c.started)return;c.started=1;
        if(buf[2]!==5||buf[3]!==0){console.log(JSON.stringify({err:"reply "+buf[3]}));process.exit(1)}
        const port=buf.readUInt16BE(10),u=dgram.createSocket("udp4");
        u.on("message",(m)=>{const h=m[3]===1?m.subarray(4,8).join("."):"?";got.add(h+":"+m.readUInt16BE(8)+":"+m.subarray(10).toString());if(got.size===2){console.log(JSON.stringify([...got].sort()));process.exit(0)}});
        const send=()=>{u.send(Buffer.concat([hdr(tip,7001),Buffer.from("by-ip")]),port,"127.0.0.1");u.send(Buffer.concat([hdr("t1",7001),Buffer.from("by-name")]),port,"127.0.0.1")};
        send();setInterval(send,300)});
      setTimeout(()=>{console.log(JSON.stringify([...got]));process.exit(1)},10000)`;
    const r = inM(`${process.execPath} -e '${client}' ${tIp}`, 20_000);
    const got = JSON.parse(r.stdout.trim().split('\n').pop() || '[]') as string[];
    assert.deepEqual(got, [`${tIp}:7001:echo:by-ip`, `${tIp}:7001:echo:by-name`], `${r.stdout} ${r.stderr}`);
    const c = status().self.counters ?? {};
    assert.ok((c['socks5.udpAssociations'] ?? 0) >= 1 && (c['socks5.udpIn'] ?? 0) >= 2, JSON.stringify(c));
  });

  it('answers ICMP echo on its tailnet addresses, and `tailscale ping` gets pongs', () => {
    assert.ok(lab.ping(t, mIp, 3), `ping ${mIp}`);
    const p6 = lab.lab.tryExec(t.ns, ['ping', '-6', '-c', '3', '-W', '2', '-i', '0.2', mIp6], 15_000);
    assert.equal(p6.status, 0, `ping ${mIp6}: ${p6.stdout}`);
    const tp = lab.tailscale(t, ['ping', '--c', '5', '--timeout', '3s', mIp], 30_000);
    assert.match(tp.stdout, /pong from m1 \(100\.64\.0\.\d+\)/, tp.stdout + tp.stderr);
  });

  it('carries 200 concurrent SOCKS5 connections, each intact', () => {
    const r = inM(`node ${load} 127.0.0.1 1080 t1 8000 200 262144`, 130_000);
    const out = JSON.parse(r.stdout.trim().split('\n').pop() || '{}') as { ok: number; failed: number; ms: number; errors: string[] };
    assert.equal(out.ok, 200, `${r.stdout} ${r.stderr}`);
    const c = status().self.counters ?? {};
    assert.ok((c['socks5.connected'] ?? 0) >= 200);
    assert.ok((c['netstack.threadInPackets'] ?? 0) > 0, 'the stack runs in its worker thread (src/daemon/netstack-thread.ts)');
  });

  it('completes transfers intact under 5% random underlay loss, and under 30% completes or fails clearly within the bound', () => {
    const lossy = (pct: number) => lab.lab.exec(m.ns, ['nft', '-f', '-'], { input: `table inet meshd_loss {
  chain in { type filter hook input priority 0; meta l4proto udp numgen random mod 100 < ${pct} drop; }
  chain out { type filter hook output priority 0; meta l4proto udp numgen random mod 100 < ${pct} drop; }
}
` });
    const clear = () => lab.lab.tryExec(m.ns, ['nft', 'delete', 'table', 'inet', 'meshd_loss']);
    const counters = () => status().self.counters ?? {};
    const before = counters();
    try {
      lossy(5);
      const d = fetchBlob('--socks5-hostname 127.0.0.1:1080', `http://${tIp}:8000/blob/${10 * MB}`);
      assert.equal(d.status, 0, d.stderr);
      assert.equal(d.got, d.want, '10 MB down under 5% loss');
      const u = upload('--socks5-hostname 127.0.0.1:1080', `http://${tIp}:8000/upload`, 5 * MB);
      assert.deepEqual(u.reply, { bytes: 5 * MB, sha256: u.sent }, `5 MB up under 5% loss: ${u.stderr}`);
      const after = counters();
      const delta = (k: string) => (after[k] ?? 0) - (before[k] ?? 0);
      const path = status().peers.find((p) => p.hostname === 't1')?.path;
      process.stderr.write(`# 10 MB down under 5% loss in ${d.ms} ms; path ${path?.direct ? 'direct' : 'DERP'}; netstack retransmits +${delta('netstack.retransmits')}, out-of-order segments +${delta('netstack.oooSegments')}\n`);
      clear();
      lossy(30);
      const h = fetchBlob('--socks5-hostname 127.0.0.1:1080', `http://${tIp}:8000/blob/${MB / 2}`, 40);
      assert.ok(h.ms < 55_000, `bounded: ${h.ms} ms`);
      if (h.status === 0) assert.equal(h.got, h.want, 'completed intact under 30% loss');
      else assert.match(h.stderr, /curl: \(\d+\) .+/, 'a clear error');
      process.stderr.write(`# 512 KiB under 30% loss: ${h.status === 0 ? `completed in ${h.ms} ms` : h.stderr.trim()}\n`);
    } finally {
      clear();
    }
  });

  it('serves as an exit node in userspace mode: a tailscaled client reaches the internet through host sockets', async () => {
    const keyFile = join(home, 'authkey');
    const r = meshd(['up', '--tun=userspace-networking', '--login-server', 'http://198.18.0.1:8080', '--authkey', `file:${keyFile}`,
      '--socks5-server', 'localhost:1080', '--outbound-http-proxy-listen', '127.0.0.1:8080', '--advertise-exit-node']);
    assert.equal(r.status, 0, r.stderr);
    lab.hs(['nodes', 'approve-routes', '-i', lab.nodeId('m1'), '-r', '0.0.0.0/0,::/0']);
    await waitFor('exit routes approved', () => (status().self.routing?.approvedRoutes.length ?? 0) === 2, 20_000, 500);
    assert.deepEqual(status().self.routing?.health, [], 'no forwarding warning: nothing is forwarded by the kernel');
    const direct = lab.lab.tryExec(t.ns, ['curl', '-sS', '--max-time', '5', `http://${INTERNET.server4}:8002/ip`], 10_000);
    assert.equal(direct.stdout, t.ip4, 'before: straight from the client');
    const set = lab.tailscale(t, ['set', `--exit-node=${mIp}`]);
    assert.equal(set.status, 0, set.stderr);
    try {
      await waitFor('traffic through the exit node', () => lab.lab.tryExec(t.ns, ['curl', '-sS', '--max-time', '3', `http://${INTERNET.server4}:8002/ip`], 5000).stdout === m.ip4, 30_000, 500);
      const file = join(home, 'exit.bin');
      const d = lab.lab.tryExec(t.ns, ['bash', '-c', `curl -sS --max-time 60 -D - -o ${file} http://${INTERNET.server4}:8002/blob/${10 * MB}`], 70_000);
      assert.equal(d.status, 0, d.stderr);
      assert.equal(createHash('sha256').update(readFileSync(file)).digest('hex'), /x-sha256: *([0-9a-f]+)/i.exec(d.stdout)?.[1], '10 MB through the exit node intact');
      rmSync(file);
    } finally {
      lab.tailscale(t, ['set', '--exit-node=']);
    }
  });
});
