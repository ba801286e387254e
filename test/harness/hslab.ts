// A tailnet lab: an unmodified headscale v0.29.2 in a namespace on the simulated internet
// (198.18.0.1:8080, embedded DERP and STUN on, no internet DERP map), a user, pre-auth keys, and
// node namespaces (198.18.0.N) that run meshd or tailscaled. Used by e2e tests, scripts/lab and
// scripts/bench. Everything lives under a temp dir and meshd-* namespaces and goes on dispose().
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { Lab, waitFor } from './netns.ts';
import { which } from './prereq.ts';
import { packageRoot } from '../../src/util/root.ts';

/** Headscale's address on the simulated internet. */
export const HS_IP = '198.18.0.1';
/** Headscale's HTTP port. */
export const HS_PORT = 8080;
/** The standalone derper's address (TailnetLab with `derper`). */
export const DERPER_IP = '198.18.0.2';
/** The delaying proxy in front of the derper (TailnetLab `derperDelayMs`). */
export const DERPER_PROXY_IP = '198.18.0.4';
/** The plain STUN responder's address (for miniupnpd). */
export const STUN_IP = '198.18.0.3';
/** The login server URL nodes use. */
export const HS_URL = `http://${HS_IP}:${HS_PORT}`;

/** One node of the lab. */
export interface LabNode {
  name: string;
  ns: string;
  ip4: string;
  dir: string;
  socket: string;
}

/** Headscale plus node namespaces. */
export class TailnetLab {
  readonly lab: Lab;
  readonly sw: string;
  readonly hsNs: string;
  readonly dir: string;
  readonly hsBin: string;
  /** The meshd CLI the nodes run: this checkout's, or MESHD_TEST_BIN (an installed copy, see e2e/package). */
  readonly meshdBin = process.env.MESHD_TEST_BIN || join(packageRoot(), 'bin', 'meshd.js');
  readonly config: string;
  private hsProc: ChildProcess | undefined;
  private hsLog = '';
  private userId = '';
  readonly nodes: LabNode[] = [];

  /** The login server URL (https with `tls`: the test puts tls.crt and tls.key in hsDir before starting). */
  readonly url: string;
  /** Where headscale keeps its files (config, tls.crt, tls.key, ...). */
  readonly hsDir: string;

  /**
   * With `derper`, headscale's embedded DERP is off and the DERP map has one region (900, code
   * "derper") served by an unmodified standalone derper at {@link DERPER_IP}:3340 (plain HTTP, STUN 3478).
   * With `derper: 'extra'` that region comes in addition to the embedded one (two STUN servers).
   * `derperHostName` gives that region's node by name only (no IPv4 field; nodes must resolve it).
   * `dns` replaces the `dns:` section of headscale's config (YAML text).
   */
  constructor(tag: string, opts: { policy?: unknown; derper?: boolean | 'extra'; derperHostName?: string; tls?: boolean; derperDelayMs?: number; dns?: string } = {}) {
    const hs = which('headscale');
    if (!hs) throw new Error('headscale is not built: run scripts/install-peers.sh');
    this.hsBin = hs;
    this.lab = new Lab(tag);
    this.sw = this.lab.ns('sw');
    this.lab.switch(this.sw);
    this.hsNs = this.lab.ns('hs');
    this.lab.attach(this.hsNs, this.sw, [`${HS_IP}/24`, '2001:db8::1/64']);
    this.dir = mkdtempSync(join(tmpdir(), 'meshd-tailnet-'));
    const hsDir = join(this.dir, 'hs');
    mkdirSync(hsDir, { recursive: true });
    this.hsDir = hsDir;
    this.url = opts.tls ? `https://${HS_IP}:${HS_PORT}` : HS_URL;
    const policyPath = join(hsDir, 'policy.hujson');
    if (opts.policy !== undefined) writeFileSync(policyPath, JSON.stringify(opts.policy, null, 2));
    // With derperDelayMs the derper region's node is a TCP proxy at DERPER_PROXY_IP that delays
    // everything by that much each way (a far region; no STUN there).
    const derperAt = opts.derperDelayMs ? DERPER_PROXY_IP : DERPER_IP;
    if (opts.derper) {
      writeFileSync(join(hsDir, 'derper.yaml'), `regions:
  900:
    regionid: 900
    regioncode: derper
    regionname: Standalone derper
    nodes:
      - name: 900a
        regionid: 900
        hostname: ${opts.derperHostName ?? derperAt}
${opts.derperHostName ? '' : `        ipv4: ${derperAt}\n`}        stunport: 3478
        derpport: 3340
`);
      this.startDerper();
      if (opts.derperDelayMs) {
        const ns = this.lab.ns('dly');
        this.lab.attach(ns, this.sw, [`${DERPER_PROXY_IP}/24`]);
        this.lab.spawn(ns, [process.execPath, join(packageRoot(), 'scripts', 'tcp-delay-proxy.mjs'), DERPER_PROXY_IP, '3340', DERPER_IP, '3340', String(opts.derperDelayMs)]);
      }
    }
    this.config = join(hsDir, 'config.yaml');
    writeFileSync(this.config, `server_url: ${this.url}
${opts.tls ? `tls_cert_path: ${hsDir}/tls.crt
tls_key_path: ${hsDir}/tls.key
` : ''}listen_addr: 0.0.0.0:${HS_PORT}
metrics_listen_addr: ""
grpc_listen_addr: 127.0.0.1:50443
grpc_allow_insecure: false
unix_socket: ${hsDir}/headscale.sock
unix_socket_permission: "0770"
disable_check_updates: true
noise:
  private_key_path: ${hsDir}/noise_private.key
prefixes:
  v4: 100.64.0.0/10
  v6: fd7a:115c:a1e0::/48
  allocation: sequential
derp:
  server:
    enabled: ${opts.derper === true ? 'false' : 'true'}
    region_id: 999
    region_code: headscale
    region_name: Headscale Embedded DERP
    verify_clients: true
    stun_listen_addr: 0.0.0.0:3478
    private_key_path: ${hsDir}/derp_server_private.key
    automatically_add_embedded_derp_region: true
  urls: []
  paths: [${opts.derper ? join(hsDir, 'derper.yaml') : ''}]
  auto_update_enabled: false
database:
  type: sqlite
  sqlite:
    path: ${hsDir}/db.sqlite
    write_ahead_log: true
log:
  level: info
policy:
  mode: file
  path: "${opts.policy !== undefined ? policyPath : ''}"
${opts.dns ?? `dns:
  magic_dns: true
  base_domain: meshd.test
  override_local_dns: false
  nameservers:
    global: []`}
node:
  expiry: 0
  ephemeral:
    inactivity_timeout: 70s
`);
  }

  private derperProc: ChildProcess | undefined;

  /** Runs tailscale's derper in namespace `dp` at DERPER_IP (plain HTTP on 3340, STUN on 3478). */
  private startDerper(): void {
    const ns = this.lab.ns('dp');
    this.lab.attach(ns, this.sw, [`${DERPER_IP}/24`]);
    this.derperNs = ns;
    this.spawnDerper();
  }

  private derperNs = '';

  private spawnDerper(): void {
    const bin = which('derper');
    if (!bin) throw new Error('derper is not built: run scripts/install-peers.sh');
    this.derperProc = this.lab.spawn(this.derperNs, [bin, '-a', `${DERPER_IP}:3340`, '-http-port', '-1', '-stun-port', '3478',
      '-c', join(this.dir, 'derper.key'), '-home', 'blank']);
    this.derperProc.stdout?.resume();
    this.derperProc.stderr?.resume();
  }

  /** Restarts the standalone derper (lab made with `derper`): SIGTERM, wait for exit, `downMs`, start (same key). */
  async restartDerper(downMs = 0): Promise<void> {
    const p = this.derperProc;
    if (!p || !this.derperNs) throw new Error('restartDerper: this lab has no standalone derper');
    if (p.exitCode === null && p.signalCode === null) {
      p.kill('SIGTERM');
      await waitFor('derper to exit', () => p.exitCode !== null || p.signalCode !== null, 10_000);
    }
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    this.spawnDerper();
    await waitFor('derper to listen', () => this.lab.tryExec(this.derperNs, ['ss', '-tlnH', 'sport', '=', ':3340']).stdout.trim() !== '', 10_000, 100);
  }

  /** Starts headscale and waits until it answers; creates user "lab" once. */
  async startHeadscale(): Promise<void> {
    this.hsProc = this.lab.spawn(this.hsNs, [this.hsBin, '-c', this.config, 'serve']);
    this.hsLog = '';
    const onData = (d: Buffer) => { this.hsLog = (this.hsLog + d.toString()).slice(-20000); };
    this.hsProc.stdout?.on('data', onData);
    this.hsProc.stderr?.on('data', onData);
    await waitFor('headscale to listen', () => {
      const r = this.lab.tryExec(this.hsNs, ['bash', '-c', `exec 3<>/dev/tcp/${HS_IP}/${HS_PORT}`], 2000);
      if (this.hsProc?.exitCode !== null) throw new Error(`headscale exited: ${this.hsLog.slice(-2000)}`);
      return r.status === 0;
    }, 20_000, 200);
    if (!this.userId) {
      this.hs(['users', 'create', 'lab']);
      const users = JSON.parse(this.hs(['users', 'list', '-o', 'json'])) as { id: number | string; name: string }[];
      this.userId = String(users.find((u) => u.name === 'lab')?.id ?? '');
    }
  }

  /** Stops headscale (SIGTERM) and waits for it to exit. */
  async stopHeadscale(): Promise<void> {
    const p = this.hsProc;
    if (!p || p.exitCode !== null) return;
    p.kill('SIGTERM');
    await waitFor('headscale to exit', () => p.exitCode !== null || p.signalCode !== null, 10_000);
  }

  /** Rewrites the policy file and makes the running headscale reload it (SIGHUP, control-plane.md 8.7). */
  reloadPolicy(policy: unknown): void {
    writeFileSync(join(this.dir, 'hs', 'policy.hujson'), JSON.stringify(policy, null, 2));
    this.hsProc?.kill('SIGHUP');
  }

  /** Headscale's node ID of a lab node (by the hostname it registered with). */
  nodeId(name: string): string {
    const n = this.nodeList().find((x) => x.given_name === name || x.name === name);
    if (!n) throw new Error(`headscale does not list ${name}`);
    return String(n.id);
  }

  /** Runs the headscale CLI (it talks to the server over its unix socket). */
  hs(args: string[]): string {
    return this.lab.exec(this.hsNs, [this.hsBin, '-c', this.config, ...args]);
  }

  /** Creates a pre-auth key. */
  authKey(opts: { reusable?: boolean; ephemeral?: boolean; expiration?: string } = {}): string {
    const args = ['preauthkeys', 'create', '--user', this.userId, '--expiration', opts.expiration ?? '1h'];
    if (opts.reusable !== false) args.push('--reusable');
    if (opts.ephemeral) args.push('--ephemeral');
    return this.hs(args).trim().split('\n').pop()!.trim();
  }

  /** Headscale's node list. */
  nodeList(): { id: number | string; name: string; given_name: string; online: boolean; ip_addresses: string[]; node_key: string }[] {
    return JSON.parse(this.hs(['nodes', 'list', '-o', 'json']) || '[]') ?? [];
  }

  /** Adds a node namespace at 198.18.0.(10+i) with its own state dir. */
  addNode(name: string): LabNode {
    const i = this.nodes.length;
    const ns = this.lab.ns(name);
    const ip4 = `198.18.0.${10 + i}`;
    this.lab.attach(ns, this.sw, [`${ip4}/24`, `2001:db8::${(10 + i).toString(16)}/64`]);
    const dir = join(this.dir, name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const node: LabNode = { name, ns, ip4, dir, socket: join(dir, 'meshd.sock') };
    this.nodes.push(node);
    return node;
  }

  private lans = 0;
  private readonly v6Routers: { n: number; router: string; wan6: string }[] = [];

  /**
   * Adds a node behind its own NAT router: LAN 198.19.N.0/24 (router .1, node .2), router WAN
   * 198.18.0.(100+N) on the simulated internet. 'easy' masquerades keeping the source port when it
   * can (one mapping for every destination); 'hard' picks a random port per connection (a mapping
   * per destination); 'udp-blocked' is easy but lets only TCP out. None forwards anything unsolicited inward. Unsolicited packets to the
   * router are dropped before conntrack confirms them: otherwise their entry would clash with the
   * node's own mapping to the same peer and force a new port (Linux's hole-punching quirk). IPv4 only.
   */
  addNatNode(name: string, nat: 'easy' | 'hard' | 'udp-blocked', opts: { ipv6?: boolean } = {}): LabNode {
    const n = ++this.lans;
    const router = this.lab.ns(`r${n}`);
    const wan6 = `2001:db8::${(100 + n).toString(16)}`;
    this.lab.attach(router, this.sw, [`198.18.0.${100 + n}/24`, ...(opts.ipv6 ? [`${wan6}/64`] : [])], 'wan');
    const ns = this.lab.ns(name);
    this.lab.link(router, ns, { a4: `198.19.${n}.1`, b4: `198.19.${n}.2`, ...(opts.ipv6 ? { a6: `2001:db8:${n}::1`, b6: `2001:db8:${n}::2` } : {}) }, { a: 'lan', b: 'veth0' });
    this.lab.exec(ns, ['ip', 'route', 'add', 'default', 'via', `198.19.${n}.1`]);
    this.lab.exec(router, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    if (opts.ipv6) {
      // IPv6 behind the router without NAT66: the LAN's /64 is routed (each v6 router knows the
      // others' LANs), and a stateful firewall lets in only what answers the LAN's own traffic.
      this.lab.exec(ns, ['ip', '-6', 'route', 'add', 'default', 'via', `2001:db8:${n}::1`]);
      this.lab.exec(router, ['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1']);
      for (const o of this.v6Routers) {
        this.lab.exec(router, ['ip', '-6', 'route', 'add', `2001:db8:${o.n}::/64`, 'via', o.wan6]);
        this.lab.exec(o.router, ['ip', '-6', 'route', 'add', `2001:db8:${n}::/64`, 'via', wan6]);
      }
      this.v6Routers.push({ n, router, wan6 });
      this.lab.exec(router, ['nft', '-f', '-'], { input: `table ip6 meshd_fw6 {
  chain inward { type filter hook forward priority 0; policy drop;${nat === 'udp-blocked' ? ' meta l4proto udp drop;' : ''} iifname "lan" accept; ct state established,related accept; }
}
` });
    }
    this.lab.exec(router, ['nft', '-f', '-'], { input: `table ip meshd_nat {
  chain outward { type nat hook postrouting priority 100; oifname "wan" masquerade${nat === 'hard' ? ' random' : ''}; }
  chain inward { type filter hook forward priority 0; policy drop;${nat === 'udp-blocked' ? ' meta l4proto udp drop;' : ''} iifname "lan" accept; ct state established,related accept; }
  chain local { type filter hook input priority 0; iifname "wan" ct state new drop; }
}
` });
    const dir = join(this.dir, name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const node: LabNode = { name, ns, ip4: `198.19.${n}.2`, dir, socket: join(dir, 'meshd.sock') };
    this.nodes.push(node);
    return node;
  }

  private stunNs: string | undefined;

  /**
   * A plain RFC 5389 STUN responder at {@link STUN_IP}:3478 (scripts/stun-responder.mjs), started
   * once: miniupnpd learns its public address from it (headscale's STUN answers only tailscale).
   */
  startStunResponder(): void {
    if (this.stunNs) return;
    this.stunNs = this.lab.ns('stun');
    this.lab.attach(this.stunNs, this.sw, [`${STUN_IP}/24`]);
    this.lab.spawn(this.stunNs, [process.execPath, join(packageRoot(), 'scripts', 'stun-responder.mjs'), STUN_IP, '3478']);
  }

  /**
   * Adds a node behind a NAT router whose LAN is 192.168.N.0/24 (RFC 1918, as port mappers want it;
   * only inside the lab), with miniupnpd offering UPnP IGD and/or NAT-PMP+PCP when `service` says
   * so. NAT as {@link addNatNode} ('hard': a fresh port per destination), only for LAN sources, so
   * the router's own STUN keeps its ports and miniupnpd sees an unrestricted public address. The
   * nftables chains miniupnpd fills (inet filter: miniupnpd, prerouting_miniupnpd,
   * postrouting_miniupnpd) are made here, as Debian's nft_init.sh fails.
   */
  async addPortmapNode(name: string, nat: 'easy' | 'hard', service: { upnp: boolean; natpmp: boolean } | null): Promise<LabNode & { router: string; miniupnpd: ChildProcess | undefined; lan: string }> {
    const n = ++this.lans;
    const router = this.lab.ns(`r${n}`);
    this.lab.attach(router, this.sw, [`198.18.0.${100 + n}/24`], 'wan');
    const ns = this.lab.ns(name);
    const lan = `192.168.${n}`;
    this.lab.link(router, ns, { a4: `${lan}.1`, b4: `${lan}.2` }, { a: 'lan', b: 'veth0' });
    this.lab.exec(ns, ['ip', 'route', 'add', 'default', 'via', `${lan}.1`]);
    this.lab.exec(router, ['sysctl', '-qw', 'net.ipv4.ip_forward=1']);
    this.lab.exec(router, ['nft', '-f', '-'], { input: `table inet filter {
  chain prerouting { type nat hook prerouting priority -100; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; jump postrouting_miniupnpd; ip saddr ${lan}.0/24 oifname "wan" masquerade${nat === 'hard' ? ' random' : ''}; }
  chain forward { type filter hook forward priority 0; policy drop; iifname "lan" accept; ct state established,related accept; jump miniupnpd; }
  chain input { type filter hook input priority 0; iifname "wan" ct state new drop; }
  chain miniupnpd { }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
` });
    const dir = join(this.dir, name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    let proc: ChildProcess | undefined;
    if (service) {
      this.startStunResponder();
      const conf = join(dir, 'miniupnpd.conf');
      writeFileSync(conf, `ext_ifname=wan
listening_ip=lan
http_port=0
enable_upnp=${service.upnp ? 'yes' : 'no'}
enable_natpmp=${service.natpmp ? 'yes' : 'no'}
ext_perform_stun=yes
ext_stun_host=${STUN_IP}
ext_stun_port=3478
secure_mode=yes
system_uptime=yes
min_lifetime=120
max_lifetime=86400
uuid=3d3cec3a-8cf0-11e0-98ee-00000000${String(n).padStart(4, '0')}
lease_file=${join(dir, 'upnp.leases')}
allow 1024-65535 ${lan}.0/24 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
`);
      proc = this.lab.spawn(router, ['miniupnpd', '-d', '-f', conf, '-P', join(dir, 'miniupnpd.pid')]);
      let log = '';
      proc.stderr?.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-20_000); });
      proc.stdout?.on('data', (d: Buffer) => { log = (log + d.toString()).slice(-20_000); });
      this.miniupnpdLogs.set(name, () => log);
    }
    const node = { name, ns, ip4: `${lan}.2`, dir, socket: join(dir, 'meshd.sock'), router, miniupnpd: proc, lan };
    if (service) {
      // Ready once it has its public address (STUN) and listens for what it offers.
      const want = [/HTTP listening on port/, ...(service.natpmp ? [/Listening for NAT-PMP\/PCP traffic/] : [])];
      await waitFor(`miniupnpd on ${name}'s router to be ready`, () => {
        const log = this.miniupnpdLog(node);
        if (proc!.exitCode !== null) throw new Error(`miniupnpd exited: ${log.slice(-2000)}`);
        return want.every((w) => w.test(log));
      }, 15_000, 50);
    }
    this.nodes.push(node);
    return node;
  }

  private readonly miniupnpdLogs = new Map<string, () => string>();

  /** miniupnpd's recent output on a node's router. */
  miniupnpdLog(node: LabNode): string {
    return this.miniupnpdLogs.get(node.name)?.() ?? '';
  }

  /** The port forwards miniupnpd installed on a router (DNAT rules in prerouting_miniupnpd), as text lines. */
  portForwards(router: string): string[] {
    const r = this.lab.tryExec(router, ['nft', 'list', 'chain', 'inet', 'filter', 'prerouting_miniupnpd']);
    return r.stdout.split('\n').map((l) => l.trim()).filter((l) => l.includes('dnat'));
  }

  /**
   * Times a path from a, which pings b's tailnet IP `ip`: once the two know each other, ms to the
   * first ping reply, then ms (pinging on, as real traffic keeps a session active) until both
   * sides report a direct path ({@link directPath}), or null when not within `withinMs`.
   */
  async timeToDirect(a: { node: LabNode; kind: 'meshd' | 'tailscaled' }, b: { node: LabNode; kind: 'meshd' | 'tailscaled'; ip: string }, withinMs: number): Promise<{ firstReplyMs: number; directMs: number | null }> {
    const ping = (): boolean => this.lab.tryExec(a.node.ns, ['ping', '-c', '1', '-W', '1', b.ip], 5000).status === 0;
    await waitFor(`${a.node.name} and ${b.node.name} to know each other`, ping, 20_000, 100);
    const t0 = Date.now();
    let firstReplyMs = -1;
    for (let i = 0; i < 50 && firstReplyMs < 0; i++) if (ping()) firstReplyMs = Date.now() - t0;
    for (let i = 0; i < 400 && Date.now() < t0 + withinMs; i++) {
      ping();
      if (await this.directPath(a.node, a.kind, b.node.name) && await this.directPath(b.node, b.kind, a.node.name)) {
        return { firstReplyMs, directMs: Date.now() - t0 };
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return { firstReplyMs, directMs: null };
  }

  /**
   * The direct address a node's daemon uses for a peer (by hostname), or null when it is not direct.
   * Direct is tailscale's CurAddr for both kinds: a UDP address confirmed by a pong within 6.5 s
   * (meshd's path.direct means the same). Asked over the daemon's local API socket, so polling it
   * costs meshd and tailscaled alike (a CLI process per poll costs meshd, a Node program, far more).
   */
  async directPath(node: LabNode, kind: 'meshd' | 'tailscaled', peer: string): Promise<string | null> {
    const [path, host] = kind === 'meshd' ? ['/v0/status', 'meshd'] : ['/localapi/v0/status', 'local-tailscaled.sock'];
    const body = await new Promise<string>((resolve) => {
      const req = httpRequest({ socketPath: node.socket, path, headers: { Host: host }, timeout: 3000 }, (res) => {
        let b = '';
        res.on('data', (d: Buffer) => { b += d.toString(); });
        res.on('end', () => resolve(b));
      });
      req.on('error', () => resolve('{}'));
      req.on('timeout', () => { req.destroy(); resolve('{}'); });
      req.end();
    });
    let st: { peers?: { hostname: string; path: { direct: string | null } }[]; Peer?: Record<string, { HostName: string; CurAddr?: string }> };
    try { st = JSON.parse(body); } catch { return null; }
    if (kind === 'meshd') return st.peers?.find((p) => p.hostname === peer)?.path.direct ?? null;
    return Object.values(st.Peer ?? {}).find((p) => p.HostName === peer)?.CurAddr || null;
  }

  /** Runs the meshd CLI in a node's namespace with that node's socket; returns status and output. */
  meshd(node: LabNode, args: string[], timeoutMs = 60_000): { status: number | null; stdout: string; stderr: string } {
    // The lab's DERP (headscale's embedded one) speaks plain HTTP: meshd needs the explicit switch.
    return this.lab.tryExec(node.ns, ['env', 'MESHD_DERP_HTTP=1', process.execPath, this.meshdBin, '--socket', node.socket, ...args], timeoutMs);
  }

  /** `meshd up` for a node with a key passed through a file (never on the command line). */
  up(node: LabNode, key: string, extra: string[] = []): { status: number | null; stdout: string; stderr: string } {
    const keyFile = join(node.dir, 'authkey');
    writeFileSync(keyFile, key, { mode: 0o600 });
    return this.meshd(node, ['up', '--login-server', HS_URL, '--authkey', `file:${keyFile}`, '--hostname', node.name,
      '--state-dir', join(node.dir, 'state'), '--timeout', '45s', ...extra], 60_000);
  }

  /**
   * Joins a node to the tailnet as meshd (`up`) or as an unmodified tailscaled (`tsEnv` for its
   * daemon); returns its tailnet IPv4. Throws naming the node when `meshd up` fails.
   */
  async join(node: LabNode, kind: 'meshd' | 'tailscaled', key: string, tsEnv: Record<string, string> = {}): Promise<string> {
    if (kind === 'meshd') {
      const r = this.up(node, key);
      if (r.status !== 0) throw new Error(`meshd up on ${node.name}: ${r.stderr}`);
      return (JSON.parse(this.meshd(node, ['status', '--json']).stdout) as { self: { addresses: string[] } }).self.addresses[0]!;
    }
    await this.startTailscaled(node, key, tsEnv);
    return this.tailscale(node, ['ip', '-4']).stdout.trim();
  }

  /** Pings an address from a node; true when at least one reply came back. */
  ping(node: LabNode, addr: string, count = 3): boolean {
    return this.lab.tryExec(node.ns, ['ping', '-c', String(count), '-W', '2', '-i', '0.2', addr], (count * 2 + 5) * 1000).status === 0;
  }

  /**
   * Starts an unmodified tailscaled in the node's namespace (TUN tailscale0, UDP 41641, plain-HTTP
   * DERP as the lab needs) and runs `tailscale up` against the lab's headscale. Throws with the
   * daemon's log when it does not come up. `prefix` runs before it (e.g. a private /etc).
   */
  async startTailscaled(node: LabNode, key: string | undefined, extraEnv: Record<string, string> = {}, prefix: string[] = []): Promise<void> {
    const bin = which('tailscaled');
    if (!bin) throw new Error('tailscaled is not built: run scripts/install-peers.sh');
    node.socket = join(node.dir, 'tailscaled.sock');
    const env = {
      TS_DEBUG_USE_DERP_HTTP: '1', TS_DISABLE_PORTMAPPER: '1', TS_ASSUME_NETWORK_UP_FOR_TEST: '1',
      TS_NO_LOGS_NO_SUPPORT: 'true', ...extraEnv,
    };
    const p = this.lab.spawn(node.ns, [...prefix, 'env', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), bin,
      `--statedir=${join(node.dir, 'ts-state')}`, `--socket=${node.socket}`, '--port=41641', '--tun=tailscale0', '--no-logs-no-support']);
    let log = '';
    const onData = (d: Buffer) => { log = (log + d.toString()).slice(-50_000); };
    p.stdout?.on('data', onData);
    p.stderr?.on('data', onData);
    this.tsLogs.set(node.name, () => log);
    await waitFor('tailscaled to serve its socket', () => {
      if (p.exitCode !== null) throw new Error(`tailscaled exited: ${log.slice(-2000)}`);
      return existsSync(node.socket);
    }, 15_000, 100);
    if (key === undefined) return; // the caller runs `tailscale up` itself (e.g. to time it)
    const r = this.tailscale(node, ['up', `--login-server=${HS_URL}`, `--auth-key=${key}`, `--hostname=${node.name}`,
      '--netfilter-mode=off', '--accept-dns=false', '--timeout=45s'], 60_000);
    if (r.status !== 0) throw new Error(`tailscale up on ${node.name} failed: ${r.stderr}\n${log.slice(-3000)}`);
  }

  /** Runs the tailscale CLI against a node's tailscaled. */
  tailscale(node: LabNode, args: string[], timeoutMs = 30_000): { status: number | null; stdout: string; stderr: string } {
    const bin = which('tailscale');
    if (!bin) throw new Error('tailscale is not built: run scripts/install-peers.sh');
    return this.lab.tryExec(node.ns, [bin, `--socket=${node.socket}`, ...args], timeoutMs);
  }

  /** The recent log of a node's tailscaled. */
  tailscaledLog(node: LabNode): string {
    return this.tsLogs.get(node.name)?.() ?? '';
  }

  private readonly tsLogs = new Map<string, () => string>();

  /** Drops every UDP datagram in and out of a node's namespace (nftables there only); TCP still works. */
  blockUdp(node: LabNode): void {
    this.lab.exec(node.ns, ['nft', '-f', '-'], { input: `table inet meshd_block {
  chain in { type filter hook input priority 0; meta l4proto udp drop; }
  chain out { type filter hook output priority 0; meta l4proto udp drop; }
}
` });
  }

  /** Removes what blockUdp added. */
  unblockUdp(node: LabNode): void {
    this.lab.tryExec(node.ns, ['nft', 'delete', 'table', 'inet', 'meshd_block']);
  }

  /** Starts `scripts/tcpxfer.mjs serve` in a node's namespace; resolves with its JSON result line. */
  xferServe(node: LabNode, host: string, port: number): Promise<{ bytes: number; sha256: string }> {
    const p = this.lab.spawn(node.ns, [process.execPath, join(packageRoot(), 'scripts', 'tcpxfer.mjs'), 'serve', host, String(port)]);
    let out = '';
    p.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
    return new Promise((resolve, reject) => {
      p.on('exit', (code) => {
        if (code === 0) resolve(JSON.parse(out.trim().split('\n').pop()!) as { bytes: number; sha256: string });
        else reject(new Error(`tcpxfer serve exited ${code}`));
      });
    });
  }

  /** Like xferSend, without blocking this process (for things to do during the transfer). */
  xferSendAsync(node: LabNode, host: string, port: number, bytes: number): Promise<{ bytes: number; sha256: string; ms: number }> {
    const p = this.lab.spawn(node.ns, [process.execPath, join(packageRoot(), 'scripts', 'tcpxfer.mjs'), 'send', host, String(port), String(bytes)]);
    let out = '', err = '';
    p.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
    p.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
    return new Promise((resolve, reject) => {
      p.on('exit', (code) => {
        if (code === 0) resolve(JSON.parse(out.trim().split('\n').pop()!) as { bytes: number; sha256: string; ms: number });
        else reject(new Error(`tcpxfer send exited ${code}: ${err}`));
      });
    });
  }

  /** Sends `bytes` random bytes with tcpxfer from a node; returns its JSON result. */
  xferSend(node: LabNode, host: string, port: number, bytes: number): { bytes: number; sha256: string; ms: number } {
    const r = this.lab.tryExec(node.ns, [process.execPath, join(packageRoot(), 'scripts', 'tcpxfer.mjs'), 'send', host, String(port), String(bytes)], 150_000);
    if (r.status !== 0) throw new Error(`tcpxfer send failed: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { bytes: number; sha256: string; ms: number };
  }

  /** True when the node's agent socket exists. */
  agentRunning(node: LabNode): boolean {
    return existsSync(node.socket);
  }

  /** Headscale's recent log output (for failure messages). */
  headscaleLog(): string {
    return this.hsLog;
  }

  /** Stops everything and removes namespaces and temp files. */
  async dispose(): Promise<void> {
    for (const n of this.nodes) this.meshd(n, ['down'], 10_000);
    await this.lab.dispose();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
