// A two-host WireGuard lab: meshd (`meshd wg`) and/or wireguard-go in network namespaces plugged
// into one switch on the simulated internet (198.18.0.0/24, 2001:db8::/64), configured with the
// standard `wg` tool. Used by the e2e tests and scripts/bench.
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Lab, waitFor } from './netns.ts';
import { sh, which } from './prereq.ts';
import { packageRoot } from '../../src/util/root.ts';

/**
 * Which WireGuard implementation runs on a host: meshd, the Debian wireguard-go (2022, no offloads),
 * or the current wireguard-go built by scripts/install-peers.sh (TUN TSO/GRO, UDP GSO/GRO).
 */
export type Impl = 'meshd' | 'wireguard-go' | 'wireguard-go-current';

/** One host of the lab. */
export interface WgHost {
  ns: string;
  impl: Impl;
  ifname: string;
  privFile: string;
  pub: string;
  /** Underlay IPv4, IPv6 addresses. */
  ip4: string;
  ip6: string;
  /** Tunnel IPv4, IPv6 addresses. */
  tun4: string;
  tun6: string;
  port: number;
}

/** Generates a WireGuard key pair with the wg tool. */
export function genKey(dir: string, name: string): { privFile: string; pub: string } {
  const priv = sh('wg', ['genkey']).trim();
  const privFile = join(dir, `${name}.key`);
  writeFileSync(privFile, `${priv}\n`, { mode: 0o600 });
  return { privFile, pub: sh('wg', ['pubkey'], { input: `${priv}\n` }).trim() };
}

/** A lab of hosts numbered from 1; host i has 198.18.0.i and tunnel address 100.64.0.i. */
export class WgLab {
  readonly lab: Lab;
  readonly sw: string;
  readonly dir: string;
  readonly hosts: WgHost[] = [];
  readonly meshdBin = join(packageRoot(), 'bin', 'meshd.js');
  readonly mtu: number;

  constructor(tag: string, mtu = 1280) {
    this.lab = new Lab(tag);
    this.sw = this.lab.ns('sw');
    this.lab.switch(this.sw);
    this.dir = mkdtempSync(join(tmpdir(), 'meshd-wglab-'));
    this.mtu = mtu;
  }

  /** Adds host number n running `impl`. */
  addHost(n: number, impl: Impl): WgHost {
    const ns = this.lab.ns(`h${n}`);
    const ip4 = `198.18.0.${n}`;
    const ip6 = `2001:db8::${n}`;
    this.lab.attach(ns, this.sw, [`${ip4}/24`, `${ip6}/64`]);
    const { privFile, pub } = genKey(this.dir, `h${n}`);
    const ifname = `${impl === 'meshd' ? 'mwg' : impl === 'wireguard-go' ? 'gwg' : 'cwg'}${process.pid % 10000}x${n}`;
    const h: WgHost = { ns, impl, ifname, privFile, pub, ip4, ip6, tun4: `100.64.0.${n}`, tun6: `fd7a:115c:a1e0::${n}`, port: 51820 };
    this.hosts.push(h);
    return h;
  }

  /** Starts the host's WireGuard process and gives the interface its addresses, MTU and link up. */
  async start(h: WgHost): Promise<void> {
    const sock = `/var/run/wireguard/${h.ifname}.sock`;
    if (h.impl === 'meshd') {
      const p = this.lab.spawn(h.ns, [process.execPath, this.meshdBin, 'wg', h.ifname, '-f', '--mtu', String(this.mtu)]);
      p.stderr?.setEncoding('utf8');
      p.stderr?.on('data', (d: string) => { if (process.env.MESHD_LAB_VERBOSE) process.stderr.write(`[${h.ifname}] ${d}`); });
    } else {
      const bin = h.impl === 'wireguard-go' ? 'wireguard-go' : which('wireguard-go-current');
      if (!bin) throw new Error('wireguard-go-current is missing: run scripts/install-peers.sh wireguard-go-current');
      const p = this.lab.spawn(h.ns, [bin, '-f', h.ifname], { env: { ...process.env, LOG_LEVEL: 'error' } });
      p.stderr?.resume();
      p.stdout?.resume();
    }
    await waitFor(`${h.impl} socket ${sock}`, () => existsSync(sock), 10_000);
    this.lab.exec(h.ns, ['wg', 'set', h.ifname, 'listen-port', String(h.port), 'private-key', h.privFile]);
    this.lab.exec(h.ns, ['ip', 'link', 'set', h.ifname, 'mtu', String(this.mtu), 'up']);
    this.lab.tryExec(h.ns, ['ip', 'addr', 'add', `${h.tun4}/24`, 'dev', h.ifname]);
    this.lab.tryExec(h.ns, ['ip', 'addr', 'add', `${h.tun6}/64`, 'dev', h.ifname, 'nodad']);
  }

  /** Stops the host's WireGuard process (SIGTERM) and waits for its socket to go. */
  async stop(h: WgHost): Promise<void> {
    const pids = this.lab.tryExec(h.ns, ['ip', 'netns', 'pids', h.ns]).stdout;
    for (const pid of sh('ip', ['netns', 'pids', h.ns]).split(/\s+/).filter(Boolean)) {
      try { process.kill(Number(pid), 'SIGTERM'); } catch { /* gone */ }
    }
    void pids;
    const sock = `/var/run/wireguard/${h.ifname}.sock`;
    await waitFor(`${sock} to go away`, () => !existsSync(sock), 10_000);
  }

  /** Configures `a` to know `b` as a peer at b's underlay address (IPv4 unless v6 is set). */
  peer(a: WgHost, b: WgHost, opts: { v6?: boolean; endpoint?: boolean } = {}): void {
    const args = ['wg', 'set', a.ifname, 'peer', b.pub, 'allowed-ips', `${b.tun4}/32,${b.tun6}/128`];
    if (opts.endpoint !== false) args.push('endpoint', opts.v6 ? `[${b.ip6}]:${b.port}` : `${b.ip4}:${b.port}`);
    this.lab.exec(a.ns, args);
  }

  /** Pings `to` from host `from`; returns true when at least one reply came back. */
  ping(from: WgHost, to: string, count = 3, waitS = 2): boolean {
    const r = this.lab.tryExec(from.ns, ['ping', '-c', String(count), '-W', String(waitS), '-i', '0.2', to], (count * waitS + 5) * 1000);
    return r.status === 0;
  }

  /** `wg show IF dump` parsed: peer lines as objects. */
  dump(h: WgHost): { pub: string; endpoint: string; latestHandshake: number; rx: number; tx: number }[] {
    const lines = this.lab.exec(h.ns, ['wg', 'show', h.ifname, 'dump']).trim().split('\n').slice(1);
    return lines.filter(Boolean).map((l) => {
      const f = l.split('\t');
      return { pub: f[0]!, endpoint: f[2]!, latestHandshake: Number(f[4]), rx: Number(f[5]), tx: Number(f[6]) };
    });
  }

  /** meshd's counters for a meshd host. */
  counters(h: WgHost): Record<string, number> {
    return JSON.parse(this.lab.exec(h.ns, [process.execPath, this.meshdBin, 'counters', h.ifname, '--json'])) as Record<string, number>;
  }

  /** Removes everything. */
  async dispose(): Promise<void> {
    await this.lab.dispose();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
