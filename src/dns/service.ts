// MagicDNS for the agent: the resolver core, the forwarder, quad-100 on the data plane, DNS over
// streams, and the host's resolver configuration, driven by the network map.
//
//   agent up    -> start(deliver): quad-100 answers from then on
//   each map    -> apply(map): the config is recompiled and swapped at once; the host is told
//                  (direct or systemd-resolved) when --accept-dns is on and what it needs changed
//   down/logout -> stop(): the host's configuration is put back, forwards in flight end
//   agent start -> cleanupStale(): a resolv.conf left by a crashed agent is put back
import { existsSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import type { NetworkMap } from '../control/netmap.ts';
import type { LocalPacketHandler } from '../tun/device.ts';
import type { Logf } from '../util/log.ts';
import { compileDnsConfig, EMPTY_CONFIG, SERVICE_IP4, SERVICE_IP6, type BaseConfig, type DnsConfig, type OSConfig, routeFor } from './config.ts';
import type { Duplex } from 'node:stream';
import { DirectManager } from './direct.ts';
import { Forwarder } from './forwarder.ts';
import { detectMode, type DnsMode, type ModeDecision, type ModeEnv } from './mode.ts';
import { classify, emitFragments, parseDnsPacket, Verdict, writeUdpReply, type Flow } from './quad100.ts';
import { ResolvedManager, type ResolvectlExec } from './resolved.ts';
import { parseQuery, Resolver } from './resolver.ts';
import { DnsStreamServer } from './stream.ts';
import { asciiLower, toFQDN } from './names.ts';
import { packet } from './codec.ts';

/** Options of {@link DnsService}. */
export interface DnsServiceOptions {
  log: Logf;
  /** The TUN device (systemd-resolved configures this link). */
  tunName: string;
  /** Where resolv.conf lives (tests use a temp dir). */
  etcDir?: string;
  /** How the mode is detected (tests inject a fake host). */
  modeEnv?: ModeEnv;
  /** resolvectl runner (tests inject a recorder). */
  resolvectl?: ResolvectlExec;
  /** Forwarder timers (tests shorten them). */
  forwardTimeoutMs?: number;
  /** Why the host's resolver files are not this agent's to change in a mode, or undefined (tests inject it). */
  hostFilesShared?: (mode: DnsMode) => string | undefined;
}

/**
 * In a network namespace other than the host's whose /etc (or /run) is still the host's, e.g. under
 * `ip netns exec`, the resolver files belong to the host around it: rewriting them (or driving its
 * systemd-resolved, whose links live in another namespace) would change the host's DNS. Returns why,
 * or undefined when the files are ours (the usual case: the host's own namespace, or a private /etc).
 * Compared with PID 1 when /proc/1 is readable; otherwise a namespace named under /run/netns whose
 * /etc is not a mount point of its own counts as sharing the host's.
 */
export function hostFilesShared(mode: DnsMode): string | undefined {
  const paths = mode === 'systemd-resolved' ? ['/etc', '/run'] : ['/etc'];
  const why = (shared: string[]) => shared.length === 0 ? undefined
    : `this network namespace shares ${shared.join(' and ')} with the host around it: the host's DNS is left alone (give the namespace its own /etc${mode === 'systemd-resolved' ? ' and /run' : ''} to let meshd configure it)`;
  try {
    if (readlinkSync('/proc/self/ns/net') === readlinkSync('/proc/1/ns/net')) return undefined;
    const same = (p: string) => { try { const a = statSync(p), b = statSync(`/proc/1/root${p}`); return a.dev === b.dev && a.ino === b.ino; } catch { return false; } };
    return why(paths.filter(same));
  } catch {
    // /proc/1 is not readable (some sandboxes): fall back to named namespaces.
  }
  try {
    const self = statSync('/proc/self/ns/net').ino;
    const named = readdirSync('/run/netns').some((n) => { try { return statSync(join('/run/netns', n)).ino === self; } catch { return false; } });
    if (!named) return undefined;
    const mounts = new Set(readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4]));
    // /run always holds the /run/netns mounts; only a tmpfs of its own at /run counts as private there.
    return why(paths.filter((p) => !mounts.has(p) || (p === '/run' && !ownTmpfsAt('/run'))));
  } catch {
    return undefined; // cannot tell: an ordinary host
  }
}

/** A tmpfs mounted at `p` in this mount namespace after the ones inherited (the last mount wins). */
function ownTmpfsAt(p: string): boolean {
  const lines = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.split(' ')[4] === p);
  const last = lines.at(-1);
  return last !== undefined && / - tmpfs /.test(last);
}

/** `meshd dns status --json`. */
export interface DnsStatus {
  /** --accept-dns. */
  acceptDns: boolean;
  /** MagicDNS (the map's Proxied). */
  magicDNS: boolean;
  /** The MagicDNS suffix (base domain). */
  suffix: string;
  selfName: string;
  /** Global resolvers, as the map gives them. */
  resolvers: string[];
  /** Split routes: suffix -> resolvers ([] = answered by quad-100). */
  splitRoutes: Record<string, string[]>;
  searchDomains: string[];
  extraRecords: { name: string; type: string; value: string }[];
  /** Resolver entries meshd cannot use (DoH). */
  unusable: string[];
  /** How the host is configured. */
  host: {
    mode: DnsMode | 'none';
    /** Tailscale's choice when meshd uses another (resolvconf, NetworkManager). */
    detected: DnsMode | null;
    why: string;
    applied: OSConfig | null;
    error: string | null;
  };
  counters: Record<string, number>;
}

/** Detection against the real host. */
export function hostModeEnv(etc = '/etc'): ModeEnv {
  const read = (p: string) => { try { return readFileSync(p.replace(/^\/etc\//, `${etc}/`), 'utf8'); } catch { return undefined; } };
  return {
    readFile: read,
    resolvedRunning: () => existsSync('/run/systemd/resolve/io.systemd.Resolve') || existsSync('/run/systemd/resolve/stub-resolv.conf'),
    nmUsesResolved: () => existsSync('/run/NetworkManager/no-stub-resolv.conf') && existsSync('/run/systemd/resolve/stub-resolv.conf'),
    resolvconfStyle: () => {
      const r = spawnSync('resolvconf', ['--version'], { encoding: 'utf8', timeout: 2_000 });
      if (r.error) return '';
      if (r.status === 99 || /Debian resolvconf/.test(r.stdout + r.stderr)) return 'debian';
      return 'openresolv';
    },
  };
}

/** MagicDNS as one object the agent drives. */
export class DnsService implements LocalPacketHandler {
  readonly resolver = new Resolver();
  private forwarder: Forwarder | undefined;
  readonly tcp: DnsStreamServer;
  private deliver: ((buf: Uint8Array, off: number, len: number) => void) | undefined;
  private readonly out = new Uint8Array(65535 + 64);
  private readonly frag = new Uint8Array(65535);
  private mtu = 1280;
  private fragId = 1;
  private readonly log: Logf;
  private readonly opts: DnsServiceOptions;
  private readonly direct: DirectManager;
  private acceptDns = true;
  private map: NetworkMap | undefined;
  private decision: ModeDecision | undefined;
  private resolved: ResolvedManager | undefined;
  private applied: OSConfig | null = null;
  private hostError: string | null = null;
  private base: BaseConfig | undefined;
  /** Why the host's files are not ours to change (null: they are; undefined: not checked yet). */
  private sharedWhy: string | null | undefined;
  private applying: Promise<unknown> = Promise.resolve();
  private readonly counters = { udpQueries: 0, udpMalformed: 0, otherServicePackets: 0, udpAnswers: 0, udpNoAnswer: 0, udpFragmented: 0 };

  constructor(opts: DnsServiceOptions) {
    this.opts = opts;
    this.log = opts.log;
    this.direct = new DirectManager(opts.etcDir ?? '/etc', opts.log);
    this.tcp = new DnsStreamServer((q) => this.answer(q, true));
  }

  /**
   * Starts answering: replies go to the host through `deliver`, fragmented to `mtu` (the TUN's).
   * Also looks at the host's resolver (its mode and the resolv.conf we would replace) now, while
   * control prepares the first map, so the first apply only writes: on a busy first map those
   * reads took ~10 ms of `up` (timeline).
   */
  start(deliver: (buf: Uint8Array, off: number, len: number) => void, mtu = 1280): void {
    this.deliver = deliver;
    this.mtu = mtu;
    this.forwarder ??= new Forwarder({
      log: this.log,
      ...(this.opts.forwardTimeoutMs !== undefined ? { queryTimeoutMs: this.opts.forwardTimeoutMs } : {}),
    });
    const p = this.applying.then(() => this.inspectHost());
    this.applying = p.catch((e: Error) => this.log(`dns: reading the host's resolver: ${e.message}`));
  }

  /** Sets --accept-dns; the host is changed (or restored) on the next apply. */
  setAcceptDns(on: boolean): void {
    this.acceptDns = on;
  }

  /** Recompiles from the map and applies it to quad-100 at once and to the host (serialized). */
  apply(map: NetworkMap): Promise<void> {
    this.map = map;
    const p = this.applying.then(() => this.applyNow());
    this.applying = p.catch(() => {});
    return p;
  }

  /** The host's resolver mode, whether its files are ours to change, and its base config (once each). */
  private async inspectHost(): Promise<void> {
    if (!this.acceptDns) return;
    if (!this.decision) {
      this.decision = detectMode(this.opts.modeEnv ?? hostModeEnv(this.opts.etcDir));
      const shared = this.opts.hostFilesShared ?? (this.opts.etcDir === undefined || this.opts.etcDir === '/etc' ? hostFilesShared : () => undefined);
      this.sharedWhy = shared(this.hostMode()) ?? null;
      this.log(`dns: ${this.sharedWhy ?? `host resolver mode ${this.hostMode()} (${this.decision.why})`}`);
    }
    const split = !this.sharedWhy && this.hostMode() === 'systemd-resolved';
    if (!split && this.base === undefined) this.base = await this.direct.baseConfig();
  }

  private async applyNow(): Promise<void> {
    const map = this.map;
    if (!map) return;
    await this.inspectHost();
    const split = this.acceptDns && !this.sharedWhy && this.hostMode() === 'systemd-resolved';
    const cfg = compileDnsConfig(map, { acceptDns: this.acceptDns, osSupportsSplit: split, base: this.base });
    this.resolver.setConfig(cfg);
    await this.applyHost(cfg);
  }

  private hostMode(): DnsMode {
    const m = this.decision?.mode ?? 'direct';
    return m === 'systemd-resolved' ? m : 'direct';
  }

  private async applyHost(cfg: DnsConfig): Promise<void> {
    const want = this.acceptDns && !this.sharedWhy ? cfg.os : null;
    if (sameOs(want, this.applied)) return;
    try {
      if (want === null || (want.nameservers.length === 0 && want.searchDomains.length === 0)) {
        await this.restoreHost();
        return;
      }
      if (this.hostMode() === 'systemd-resolved') {
        this.resolved ??= new ResolvedManager(this.opts.tunName, this.log, this.opts.resolvectl);
        await this.resolved.set(want);
      } else {
        await this.direct.set(want);
        this.log(`dns: wrote ${this.direct.path}: nameservers ${want.nameservers.join(' ')}; search ${want.searchDomains.join(' ') || '-'}`);
      }
      this.applied = want;
      this.hostError = null;
    } catch (e) {
      this.hostError = (e as Error).message;
      this.log(`dns: configuring the host failed: ${this.hostError}`);
    }
  }

  private async restoreHost(): Promise<void> {
    if (this.applied === null) return;
    this.applied = null;
    if (this.resolved) await this.resolved.revert();
    else await this.direct.restore();
  }

  /** Stops answering and puts the host's configuration back. */
  async stop(): Promise<void> {
    await this.applying;
    this.map = undefined;
    this.resolver.setConfig(EMPTY_CONFIG);
    this.forwarder?.close();
    this.forwarder = undefined;
    this.tcp.close();
    this.deliver = undefined;
    await this.restoreHost();
    this.base = undefined;
    this.decision = undefined;
    this.sharedWhy = undefined;
  }

  /** At agent start: puts back a resolv.conf a crashed agent left (TS dns.CleanUp). */
  static async cleanupStale(log: Logf, etcDir = '/etc'): Promise<boolean> {
    return new DirectManager(etcDir, log).restore();
  }

  /**
   * The handler tried for packets quad-100's UDP path does not take (TCP to the service IPs goes
   * to a userspace TCP stack here, e.g. the netstack's LocalServices, which then calls listenTcp's
   * listener).
   */
  next: LocalPacketHandler | undefined;

  /** Serves DNS over TCP at both service IPs, port 53, on a stack that hands out duplex streams. */
  listenTcp(stack: { listen(addr: string, port: number, onConnection: (sock: Duplex) => void): unknown }): void {
    for (const ip of [SERVICE_IP4, SERVICE_IP6]) stack.listen(ip, 53, (sock) => this.tcp.serve(sock));
  }

  /** LocalPacketHandler: takes UDP/53 packets to quad-100; everything else goes to `next`, or passes. Never throws. */
  handleOutbound(buf: Uint8Array, off: number, len: number): boolean {
    const v = classify(buf, off, len);
    if (v === Verdict.NOT_OURS || v === Verdict.OTHER_SERVICE) return this.next?.handleOutbound(buf, off, len) ?? false;
    if (v === Verdict.MALFORMED) { this.counters.udpMalformed++; return true; }
    this.counters.udpQueries++;
    const p = parseDnsPacket(buf, off);
    // Local answers are written back at once, from the packet buffer; only forwards copy the query.
    let o;
    try {
      o = this.resolver.respond(buf.subarray(p.payloadOff, p.payloadOff + p.payloadLen));
    } catch (e) {
      this.log(`dns: resolver error: ${(e as Error).message}`);
      this.counters.udpNoAnswer++;
      return true;
    }
    if (o.kind === 'reply') { this.replyUdp(p.flow, o.bytes); return true; }
    if (o.kind === 'drop') { this.counters.udpNoAnswer++; return true; }
    const fwd = this.forwarder;
    if (!fwd) { this.counters.udpNoAnswer++; return true; }
    const query = buf.slice(p.payloadOff, p.payloadOff + p.payloadLen);
    const q = parseQuery(query);
    if ('fail' in q) return true;
    const flow = p.flow;
    fwd.forward(query, q, o.route, false).then((a) => this.replyUdp(flow, a), () => this.counters.udpNoAnswer++);
    return true;
  }

  private replyUdp(flow: Flow, a: Uint8Array | null): void {
    const deliver = this.deliver;
    if (!a || !deliver) { this.counters.udpNoAnswer++; return; }
    const n = writeUdpReply(this.out, flow, a);
    this.counters.udpAnswers++;
    // Answers larger than the TUN's MTU (forwarded TXT, DNSSEC) go out as IP fragments.
    if (emitFragments(this.out, n, this.mtu, this.fragId, this.frag, deliver) > 1) {
      this.fragId = (this.fragId + 1) & 0xffff || 1;
      this.counters.udpFragmented++;
    }
  }

  /** One query through quad-100 (local answer or forward); null = no answer. Never rejects. */
  async answer(query: Uint8Array, tcp: boolean): Promise<Uint8Array | null> {
    let o;
    try {
      o = this.resolver.respond(query);
    } catch (e) {
      this.log(`dns: resolver error: ${(e as Error).message}`);
      return null;
    }
    if (o.kind === 'reply') return o.bytes;
    if (o.kind === 'drop') return null;
    const fwd = this.forwarder;
    if (!fwd) return null;
    return fwd.forward(query, o.query, o.route, tcp);
  }

  /** `meshd dns query`: asks quad-100 as a TCP client would (TS QueryDNS); the answer and the resolvers it would use. */
  async query(name: string, type: string): Promise<{ bytes: Uint8Array; resolvers: string[] }> {
    const fqdn = toFQDN(name);
    const q = packet.encode({ type: 'query', id: 1, flags: packet.RECURSION_DESIRED, questions: [{ name: fqdn === '.' ? '.' : fqdn.slice(0, -1), type: type as 'A', class: 'IN' }] });
    const bytes = await this.answer(new Uint8Array(q), true);
    if (!bytes) throw new Error(`no answer for ${name} (the forwarder is busy or stopped)`);
    const route = routeFor(this.resolver.config.resolver.routes, asciiLower(fqdn));
    return { bytes, resolvers: route?.resolvers.map((r) => r.text) ?? [] };
  }

  /** `meshd dns status`. */
  status(): DnsStatus {
    const dns = this.map?.dns ?? {};
    const cfg = this.resolver.config;
    const detected = this.decision?.mode ?? null;
    const mode = !this.acceptDns || this.sharedWhy ? 'none' : this.applied || this.decision ? this.hostMode() : 'none';
    const fw = this.forwarder?.counters ?? {};
    return {
      acceptDns: this.acceptDns,
      magicDNS: dns.Proxied === true,
      suffix: cfg.nodes.suffix,
      selfName: this.map?.self?.name ?? '',
      resolvers: (dns.Resolvers ?? []).map((r) => r.Addr),
      splitRoutes: Object.fromEntries(Object.entries(dns.Routes ?? {}).map(([k, v]) => [k, (v ?? []).map((r) => r.Addr)])),
      searchDomains: dns.Domains ?? [],
      extraRecords: (dns.ExtraRecords ?? []).map((r) => ({ name: r.Name, type: r.Type ?? '', value: r.Value })),
      unusable: [...cfg.unusable],
      host: {
        mode,
        detected: detected !== null && detected !== mode ? detected : null,
        why: !this.acceptDns ? '--accept-dns=false: the host is left alone' : this.sharedWhy || this.decision?.why || '',
        applied: this.applied,
        error: this.hostError,
      },
      counters: {
        ...this.counters, ...this.resolver.counters,
        ...Object.fromEntries(Object.entries(fw).map(([k, v]) => [`forward.${k}`, v as number])),
        ...Object.fromEntries(Object.entries(this.tcp.counters).map(([k, v]) => [`tcp.${k}`, v])),
      },
    };
  }
}

function sameOs(a: OSConfig | null, b: OSConfig | null): boolean {
  if (a === null || b === null) return a === b;
  const eq = (x: readonly string[], y: readonly string[]) => x.length === y.length && x.every((v, i) => v === y[i]);
  return eq(a.nameservers, b.nameservers) && eq(a.searchDomains, b.searchDomains) && eq(a.matchDomains, b.matchDomains);
}
