// The agent: logs in to control, streams the network map and keeps the data plane equal to it.
// It serves the local API (localapi.ts) for the CLI. States, as tailscale names them:
//   NoState -> (up) Starting -> Running -> (down) Stopped | (logout) NeedsLogin
// A failed `up` tears down whatever it built, so nothing is left configured.
import { networkInterfaces } from 'node:os';
import { ControlClient, fetchKeyAhead, type MapStream } from '../control/client.ts';
import { ControlError } from '../control/errors.ts';
import type { NetworkMap, NodeInfo } from '../control/netmap.ts';
import type { Hostinfo } from '../control/wire.ts';
import { formatNodePublic, parseMachinePublic, type MachinePublic, type PrivateKey } from '../control/keys.ts';
import { identityOf, StateStore, type Identity, type StateFile } from '../state/store.ts';
import { MemoryStore, type Store } from '../state/memstore.ts';
import type { DataPlane } from './dataplane.ts';
import { NetConf, TAILNET_V4, TAILNET_V6 } from './netconf.ts';
import { Routing } from './routing.ts';
import { BYPASS_MARK } from '../router/linux.ts';
import type { LocalBackend, NetcheckReport, PeerStatus, PingReply, PingRequest, Status, UpRequest, WhoisReply } from './localapi.ts';
import type { Logf } from '../util/log.ts';
import { generateKeyPair } from '../crypto/box.ts';
import type { DiscoPublic } from '../control/keys.ts';
import type { MagicSock } from '../magicsock/magicsock.ts';
import { DnsService, type DnsStatus } from '../dns/service.ts';
import { SERVICE_IP4, SERVICE_IP6 } from '../dns/config.ts';
// The netstack (quad-100's TCP, userspace networking) loads when `up` needs it, after register:
// its ~110 kB of code is not compiled before the first control request.
import type { LocalServices } from '../netstack/local.ts';
import type { PortMapper } from '../portmapper/portmapper.ts';
import type { Userspace, UserspaceOptions } from './userspace.ts';
import type { UserspaceThread } from './netstack-thread.ts';
import { markedDialer } from '../net/tcp.ts';
import { syncPeers, syncPeersInTurns, type AppliedPeer, type Touched } from './peersync.ts';
import { AgentMetrics, healthWarnings, KEY_EXPIRY_WARN_MS, type AgentFacts } from './metrics.ts';
import { processKeeper, watchMajorGc } from './memory.ts';
import { whoisIn } from './whois.ts';
import { agentLogIn, AgentError, AUTH_URL_PROGRESS, checkLoginServer, USERSPACE_TUN } from './upcheck.ts';
import { timeline } from '../util/timeline.ts';
import { login, upHostinfo, withDeadline } from './login.ts';

/** The classes `up` needs once registered, from the modules dataPlaneModules loads. */
interface DataPlaneModules {
  DataPlane: typeof DataPlane;
  MagicSock: typeof MagicSock;
  PortMapper: typeof PortMapper;
}
let dataPlaneLoad: Promise<DataPlaneModules> | undefined;
/**
 * The data plane's modules (TUN, WireGuard, crypto, magicsock, DERP, netcheck, port mapping), loaded
 * on first use instead of with the agent: `up` starts loading them once its register request is
 * out, while control takes ~1 s to answer, so the agent answers `up` and sends that request
 * ~20-40 ms sooner (README, bench-nat: a request that misses one of headscale's 500 ms NodeStore
 * write batches gets its first map 500 ms later).
 */
export function dataPlaneModules(): Promise<DataPlaneModules> {
  dataPlaneLoad ??= Promise.all([import('./dataplane.ts'), import('../magicsock/magicsock.ts'), import('../portmapper/portmapper.ts')])
    .then(([dp, ms, pm]) => ({ DataPlane: dp.DataPlane, MagicSock: ms.MagicSock, PortMapper: pm.PortMapper }));
  return dataPlaneLoad;
}

export { AgentError, AUTH_URL_PROGRESS, checkLoginServer } from './upcheck.ts';

/** How often the host's addresses are checked for endpoint changes (ms). */
const ENDPOINT_CHECK_MS = 5_000;

/** How long `up` waits for the home DERP connection after the first map. */
const HOME_DERP_WAIT_MS = 6_000;
/** Peers applied per event-loop turn when a whole large map is applied (syncPeersInTurns). */
const PEERS_PER_TURN = 256;

/**
 * A handshake's first initiation to a peer is repeated this often until answered (src/wg
 * DeviceOptions.initiationResendMs): a peer whose control has not yet told it about us drops it,
 * and the repeat gets through as soon as it knows us, instead of the WireGuard retry 5 s later.
 */
const INITIATION_RESEND_MS = 1_000;

/** How long after `up` the agent watches for control to hand out our home DERP region (our own node in the map shows it). */
const SELF_DERP_WAIT_MS = 10_000;
/** At most this many online peers get a handshake once control hands out our home region after `up`. */
const HOME_OUT_HANDSHAKES = 32;
/** And once more this long after, for peers that had not applied the batch yet. */
const HOME_OUT_AGAIN_MS = 300;

/**
 * After a map update sent pending initiations again: once more this long after
 * (resendPendingInitiations), for a peer that applies the batch after us. Above the device's
 * INITIATION_COPY_GAP_MS (30), so that copy goes out at once.
 */
const RESEND_AGAIN_MS = 40;

/** Tailscale's MTU for the tailnet interface. */
export const TAILNET_MTU = 1280;

/** What prepareControl made ahead of `up`: the identity for this server and a client dialling it. */
interface PreparedControl {
  url: string;
  caFile: string | undefined;
  store: Store;
  identity: Identity;
  state: StateFile;
  disco: { publicKey: Uint8Array; privateKey: Uint8Array };
  client: ControlClient;
  /** Settles once the identity is on disk (new keys are written while control is dialled). */
  written: Promise<void>;
}

/** What the CLI that started this agent learned by registering for it (src/cli/earlylogin.ts). */
export interface CliRegistered {
  /** The user control registered the node to. */
  loginName?: string | undefined;
}

/** Options for {@link Agent}. */
export interface AgentOptions {
  stateDir: string;
  tunName: string;
  port: number;
  log: Logf;
  /** Called when the agent wants the process to exit (shutdown, or down of an agent `up` started). */
  onExit: () => void;
  /** Exit after `down`, `logout` or a failed first `up` (set when `up` started this agent). */
  exitWhenDown: boolean;
  /** Where resolv.conf lives (default /etc; tests point it elsewhere). */
  etcDir?: string;
  /** Userspace networking (--tun=userspace-networking): no TUN, routes or root; a netstack and proxies. */
  userspace?: Omit<UserspaceOptions, 'log'> | undefined;
  /** `--state mem:`: keys only in memory, nothing on disk; the node logs out when the agent ends. */
  memState?: boolean;
}

/** The running agent. */
export class Agent implements LocalBackend {
  private readonly opts: AgentOptions;
  private readonly log: Logf;
  private state: Status['self']['state'] = 'NoState';
  private controlUrl: string | null = null;
  private hostname = '';
  private store: Store | undefined;
  private memStore: MemoryStore | undefined;
  /** The last successful up request, auth key included (memory only): for re-auth on key expiry. */
  private lastUp: UpRequest | undefined;
  private reauthRunning = false;
  private expiryWarned = '';
  /** Tags asked for with --advertise-tags in the current session. */
  private wantTags: string[] = [];
  private identity: Identity | undefined;
  private client: ControlClient | undefined;
  private stream: MapStream | undefined;
  private dp: DataPlane | undefined;
  private magic: MagicSock | undefined;
  /** Port mapping on the home router (UPnP IGD, NAT-PMP, PCP); off with MESHD_DISABLE_PORTMAPPER=1. */
  private portmap: PortMapper | undefined;
  private netconf: NetConf;
  /** Exit node, subnet routes and packet filter (src/daemon/routing.ts). */
  private readonly routing: Routing;
  private map: NetworkMap | undefined;
  private busy: Promise<unknown> = Promise.resolve();
  /** Map applications run one at a time (applyMap). */
  private mapQueue: Promise<void> = Promise.resolve();
  private mapPending: Promise<void> | undefined;
  private mapTouched: Set<number> | 'all' = 'all';
  /** What the data plane holds, for applying only what changed (src/daemon/peersync.ts). */
  private appliedPeers = new Map<number, AppliedPeer>();
  private appliedDerpMap: NetworkMap['derpMap'] | null = null;
  private appliedExitId: number | undefined;
  private endpointTimer: NodeJS.Timeout | undefined;
  /** MagicDNS: quad-100 on the data plane and the host's resolver configuration (src/dns). */
  private readonly dns: DnsService;
  /** --accept-dns (kept like the routing flags). */
  private acceptDns = true;
  /** quad-100's TCP side in TUN mode: a netstack for the service IPs (src/netstack/local.ts). */
  private quad100Tcp: LocalServices | undefined;
  /** The netstack and proxies in userspace mode (src/daemon/userspace.ts). */
  private us: Userspace | UserspaceThread | undefined;
  /** Metrics (src/daemon/metrics.ts): sampled every second while up. */
  private readonly metricsBook = new AgentMetrics();
  private metricsTimer: NodeJS.Timeout | undefined;
  /** Hands unused memory back to the kernel now and then, from the metrics timer (src/daemon/memory.ts). */
  private readonly keeper = processKeeper();
  private mapUpdates = 0;
  private reconnectsBefore = 0;
  private controlDownSince: number | undefined;
  /** Called after each map update (waitMap). */
  private mapWaiters = new Set<() => void>();
  /** The agent's start-up cleanupStale, while no `up` has configured the host since (awaited before the tunnel starts). */
  private startCleanup: Promise<void> | undefined;
  /** Identity and control connection made ahead of the first `up` (prepareControl), until it takes them. */
  private prepared: Promise<PreparedControl | undefined> | undefined;

  constructor(opts: AgentOptions) {
    this.opts = opts;
    this.log = opts.log;
    watchMajorGc();
    this.netconf = new NetConf(opts.tunName, opts.log);
    this.routing = new Routing(opts.tunName, opts.log);
    // Userspace networking never touches the host's resolver (tailscale's noop configurator).
    this.dns = new DnsService({ log: opts.log, tunName: opts.tunName, ...(opts.etcDir ? { etcDir: opts.etcDir } : {}),
      ...(opts.userspace ? { hostFilesShared: () => 'userspace networking: the host is not configured' } : {}) });
    if (opts.userspace) this.routing.hostRouting = false;
  }

  /** True in userspace-networking mode. */
  get userspaceMode(): boolean {
    return this.opts.userspace !== undefined;
  }

  /** The state store: the directory, or one in-memory store for the life of the process. */
  private async openStore(): Promise<Store> {
    if (!this.opts.memState) return StateStore.open(this.opts.stateDir);
    this.memStore ??= new MemoryStore();
    return this.memStore;
  }

  /** Runs operations one at a time. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.busy.then(fn, fn);
    this.busy = p.catch(() => {});
    return p;
  }

  /** See LocalBackend.exitsWhenDown. */
  get exitsWhenDown(): boolean {
    return this.opts.exitWhenDown;
  }

  /** See LocalBackend.status. */
  status(): Status {
    const self = this.map?.self;
    const peers: PeerStatus[] = [];
    const dev = this.dp?.device;
    const stats = new Map<string, ReturnType<NonNullable<typeof dev>['peers']>[number]>();
    if (dev) for (const p of dev.peers()) stats.set(Buffer.from(p.publicKey).toString('hex'), p);
    for (const p of this.map?.peers.values() ?? []) {
      const s = stats.get(Buffer.from(p.nodeKey).toString('hex'));
      peers.push({
        hostname: p.hostname || p.name.split('.')[0] || '',
        publicKey: p.nodeKeyText,
        addresses: p.addresses.map((a) => a.split('/')[0]!),
        online: p.online ?? false,
        path: this.magic?.pathOf(p.nodeKey) ?? { direct: s?.endpoint ? s.endpoint.key : null, derp: null },
        lastHandshake: s?.lastHandshakeWallMs ?? 0,
        rxBytes: s?.rxBytes ?? 0,
        txBytes: s?.txBytes ?? 0,
        routing: this.routing.peerStatus(this.map!, p.id),
      });
    }
    return {
      self: {
        hostname: self?.hostname || this.hostname,
        addresses: (self?.addresses ?? []).map((a) => a.split('/')[0]!),
        state: this.state,
        controlURL: this.controlUrl,
        publicKey: this.identity ? formatNodePublic(this.identity.nodePublic) : null,
        tags: [...(self?.tags ?? [])],
        health: this.map ? healthWarnings(this.magic, { ...this.facts(), otherHealth: [] }) : [],
        routing: this.routing.selfStatus(this.map),
        dns: { acceptDns: this.acceptDns, mode: this.dns.status().host.mode },
        tun: this.userspaceMode ? USERSPACE_TUN : this.opts.tunName,
        ...(this.us ? { proxies: { ...this.us.listening } } : {}),
        // Data plane counters (drops, offload flags and work) next to magicsock's, and the netstack's.
        ...(this.magic ? { counters: { ...this.dp?.counters(), ...this.magic.allCounters(), ...this.us?.counters() } } : {}),
      },
      peers,
    };
  }

  private facts(): AgentFacts {
    const r = this.routing.selfStatus(this.map);
    return {
      map: this.map, controlReconnects: this.reconnectsBefore + (this.stream?.reconnects ?? 0), mapUpdates: this.mapUpdates,
      controlDownSince: this.controlDownSince, advertisedRoutes: r.advertisedRoutes.length, approvedRoutes: r.approvedRoutes.length,
      otherHealth: r.health, now: Date.now(), keeper: this.keeper?.stats,
    };
  }

  /** WireGuard data packets the device moved so far (for the memory keeper's quiet check). */
  private dataPackets(): number {
    const c = this.dp?.device.counters;
    return c ? (c.rxData ?? 0) + (c.txData ?? 0) : 0;
  }

  /** See LocalBackend.metrics: the Prometheus text. */
  metrics(): string {
    return this.metricsBook.render(this.dp, this.magic, this.facts());
  }

  /** True once some `up` was asked of this agent. */
  upRequested = false;

  /** An `up` begun from the request the starting CLI sent over IPC (upAhead), until the same request comes over the local API. */
  private ahead: { key: string; result: Promise<Status>; said: string[]; listeners: Set<(msg: string) => void> } | undefined;

  /** See LocalBackend.up. An `up` equal to the one begun ahead joins it (its progress so far first). */
  up(req: UpRequest, progress: (msg: string) => void, registered?: CliRegistered): Promise<Status> {
    this.upRequested = true;
    const a = this.ahead;
    if (a && a.key === JSON.stringify(req)) {
      this.ahead = undefined;
      for (const m of a.said) progress(m);
      a.listeners.add(progress);
      return a.result;
    }
    return this.serial(() => this.doUp(req, progress, registered));
  }

  /**
   * Begins `up` from the request the CLI that started this agent sent over the IPC channel
   * (src/cli/tailnet.ts), before the CLI has connected to the local API: the register request then
   * leaves as soon as the agent can send it (README, bench-nat). The CLI sends the same request
   * over the local API next, which joins this one for its progress and result.
   */
  upAhead(req: UpRequest, registered?: CliRegistered): void {
    const said: string[] = [];
    const listeners = new Set<(msg: string) => void>();
    const result = this.up(req, (m) => { said.push(m); for (const l of listeners) l(m); }, registered);
    result.catch(() => {}); // the joining request reports it
    this.ahead = { key: JSON.stringify(req), result, said, listeners };
  }

  /**
   * For the agent `up` starts, which knows the login server from `up`'s command line before the
   * request arrives (src/cli/agentspawn.ts): loads (or creates) the identity and dials control
   * (GET /key, the Noise handshake) while the CLI connects and sends `up`, so the register
   * request goes out as soon as the request is in (README, bench-nat: each ms before it can cost
   * one of headscale's 500 ms write batches). `up` takes what was made when its server and CA file
   * are these; otherwise it closes the client and starts over. A failure here is only logged: `up`
   * meets it again and reports it.
   */
  prepareControl(loginServer: string, caFile: string | undefined): void {
    let url: string;
    try {
      url = checkLoginServer(loginServer);
    } catch {
      return;
    }
    let client: ControlClient | undefined;
    this.prepared = new Promise<PreparedControl | undefined>((resolve) => {
      let saved!: () => void, failed!: (e: Error) => void;
      // New keys are written (temp file, two fsyncs) while control is dialled and `up` registers,
      // as tailscaled registers a new node key before persisting it; `up` waits for it before its
      // own writes and before it returns.
      const written = new Promise<void>((ok, fail) => { saved = ok; failed = fail; });
      written.catch(() => {}); // `up` awaits it
      // GET /key needs no key of ours: it goes out first.
      const dial = this.opts.userspace ? undefined : markedDialer(BYPASS_MARK);
      const keyAhead = fetchKeyAhead({ serverUrl: url, caFile, dial, timeoutMs: 15_000 });
      void (async () => {
        const store = await this.openStore();
        const disco = generateKeyPair();
        await store.loadOrCreateIdentity(url, (identity, state) => {
          // Another server: `up` makes a new node key first.
          if (state.serverUrl && state.serverUrl !== url) return;
          client = this.controlClient(url, identity, state, caFile, disco.publicKey as DiscoPublic, 15_000, {}, keyAhead);
          void client.connect();
          resolve({ url, caFile, store, identity, state, disco, client, written });
        });
        saved();
        resolve(undefined); // (no effect once resolved above)
      })().catch((e: Error) => {
        this.log(`preparing control: ${e.message}`);
        failed(e);
        resolve(undefined);
      });
    });
  }

  /**
   * For the agent whose starting CLI registers for it (src/cli/earlylogin.ts): the identity that
   * CLI loaded or created (it is the only writer of new keys; this agent never makes its own, so
   * the two processes cannot race), sent over the IPC channel as soon as the CLI knows it. The
   * agent dials control with it (its own Noise connection: headscale finds a node by machine and
   * node key, not by connection) while the CLI registers, and takes it for the `up` that follows.
   */
  acceptLogin(url: string, caFile: string | undefined, state: StateFile, serverKey?: string): void {
    if (this.prepared || this.upRequested) return;
    this.prepared = (async (): Promise<PreparedControl> => {
      const identity = identityOf(state);
      if (this.opts.memState) this.memStore ??= MemoryStore.from(state);
      const store = await this.openStore();
      const disco = generateKeyPair();
      // The server key the CLI fetched (and checked against a pinned one): no GET /key of our own.
      const keyAhead = serverKey ? Promise.resolve(parseMachinePublic(serverKey)) : undefined;
      const client = this.controlClient(url, identity, state, caFile, disco.publicKey as DiscoPublic, 15_000, {}, keyAhead);
      void client.connect();
      return { url, caFile, store, identity, state, disco, client, written: Promise.resolve() };
    })().catch((e: Error) => { this.log(`taking the CLI's login: ${e.message}`); return undefined; });
  }

  /**
   * The CLI that registers for this agent sent its register request: the start-up cleanup and the
   * data plane's modules begin now, while control answers (as onSent in doUp).
   */
  cliRegisterSent(): void {
    if (this.upRequested || this.state !== 'NoState') return;
    if (!this.cleanedAtStart && !this.userspaceMode) void this.cleanupStale();
    dataPlaneModules().catch(() => {});
  }

  /** What prepareControl made, if it was for this server and CA file (else closed); undefined without one. */
  private async takePrepared(url: string, caFile: string | undefined): Promise<PreparedControl | undefined> {
    const p = await this.prepared;
    this.prepared = undefined;
    if (!p || (p.url === url && p.caFile === caFile)) return p;
    await p.client.close().catch(() => {});
    await p.written.catch(() => {}); // one writer at a time: `up` reads the state next
    return undefined;
  }

  /** A control client for this node (prepareControl and doUp make the same). */
  private controlClient(url: string, identity: Identity, state: StateFile, caFile: string | undefined, discoKey: DiscoPublic, timeoutMs: number,
    hostinfo: Hostinfo = {}, keyAhead?: Promise<MachinePublic>): ControlClient {
    return new ControlClient({
      ...(keyAhead ? { keyAhead } : {}),
      serverUrl: url,
      machineKey: identity.machinePrivate,
      nodeKey: identity.nodePrivate,
      ...(state.serverKey && state.serverUrl === url ? { serverKey: state.serverKey } : {}),
      ...(caFile ? { caFile } : {}),
      hostinfo,
      discoKey,
      timeoutMs,
      // Marked so control bypasses an exit node; userspace mode has no routes to bypass (and no CAP_NET_ADMIN).
      ...(this.opts.userspace ? {} : { dial: markedDialer(BYPASS_MARK) }),
      log: (l) => this.log(`control: ${l}`),
    });
  }

  private async doUp(req: UpRequest, progress: (msg: string) => void, registered?: CliRegistered): Promise<Status> {
    timeline('agent: up request');
    const url = checkLoginServer(req.loginServer);
    let routesChanged: boolean;
    try {
      routesChanged = this.routing.setPrefs(req);
    } catch (e) {
      throw new AgentError('bad_route', (e as Error).message);
    }
    if (this.state === 'Running' && this.controlUrl === url) {
      // Routing flags change without a restart: new RoutableIPs go to control, routes apply now.
      if (routesChanged && this.client) await this.client.updateHostinfo(this.routing.hostinfo());
      if (req.acceptDns !== undefined) { this.acceptDns = req.acceptDns; this.dns.setAcceptDns(req.acceptDns); }
      await this.store?.update({ routing: this.routing.prefs, acceptDns: this.acceptDns });
      if (this.map) await this.applyMap(this.map);
      return this.status();
    }
    await this.teardown();
    // The agent's start-up cleanup (cleanupStale) may still run: it is awaited once logged in,
    // before the tunnel starts, so it overlaps registration. An agent `up` started (which skips
    // the start-up cleanup) and later `up`s clean once the register request is on its way: its
    // ip/nft processes would otherwise hold the event loop while that request goes out.
    let cleaning = this.startCleanup;
    this.startCleanup = undefined;
    let registerSent = (): void => {};
    if (!this.userspaceMode && !cleaning) {
      // (A register that fails starts nothing: this up configured nothing, the next one cleans.)
      const full = !this.cleanedAtStart;
      cleaning = new Promise<void>((r) => { registerSent = r; })
        .then(() => (full ? this.cleanupStale() : this.routing.cleanupStale()));
    }
    const deadline = Date.now() + req.timeoutMs;
    const remaining = () => Math.max(1, deadline - Date.now());
    /**
     * The write by which this up set wantRunning over a false or absent one; a failure writes it
     * back once that write is done (update() reads, merges and writes).
     */
    let wantSaved: Promise<unknown> | undefined;
    try {
      this.state = 'Starting';
      const prep = await this.takePrepared(url, req.caFile);
      this.store = prep?.store ?? await this.openStore();
      let { identity, state } = prep ?? await this.store.loadOrCreateIdentity(url);
      // New keys prepareControl made may still be on their way to disk: the writes below follow them.
      const written = prep?.written ?? Promise.resolve();
      if (state.serverUrl && state.serverUrl !== url) {
        // A different control server: a new node key, the old registration is not ours there.
        identity = await this.store.rotateNodeKey();
        await this.store.update({ serverUrl: url });
        delete state.serverKey;
      }
      this.identity = identity;
      this.controlUrl = url;
      timeline('agent: identity loaded');
      // Like tailscale, a hostname given once is kept until another is given.
      const hostname = req.hostname ?? state.hostname;
      this.hostname = hostname ?? '';
      // Routing flags, like the hostname, persist: the stored ones overlaid with those given now.
      if (state.routing) { this.routing.setPrefs(state.routing); this.routing.setPrefs(req); }
      this.acceptDns = req.acceptDns ?? state.acceptDns ?? true;
      // One atomic write for the three, while registering (each write is two fsyncs); the writes
      // after it queue behind it (update() reads, merges and writes), and `up` awaits them all.
      const store = this.store;
      const prefsSaved = written.then(() => store.update({
        ...(req.hostname && req.hostname !== state.hostname ? { hostname: req.hostname } : {}),
        routing: this.routing.prefs, acceptDns: this.acceptDns,
      }));
      prefsSaved.catch(() => {}); // awaited (through serverSaved) before `up` returns
      this.dns.setAcceptDns(this.acceptDns);
      this.wantTags = req.advertiseTags ?? [];
      const hostinfo = upHostinfo(hostname, this.routing.prefs, this.wantTags, !!req.authKey);
      // A fresh disco key per start, as tailscaled makes one per process.
      const disco = prep?.disco ?? generateKeyPair();
      // The prepared client (connected, or dialling) takes the hostinfo with the register request.
      const client = prep?.client ?? this.controlClient(url, identity, state, req.caFile, disco.publicKey as DiscoPublic, Math.min(15_000, remaining()), hostinfo);
      this.client = client;
      // The data plane's modules load while control answers (see dataPlaneModules).
      const onSent = (): void => { registerSent(); dataPlaneModules().catch(() => {}); }; // a failure is reported where awaited
      let user: string | undefined;
      if (registered && prep) {
        // The CLI that started this agent registered these keys already (src/cli/earlylogin.ts).
        client.setHostinfo(hostinfo);
        onSent();
        user = registered.loginName;
      } else {
        progress(`contacting ${url}`);
        user = (await login(client, { authKey: req.authKey, hostinfo, deadline, progress, log: this.log, onSent })).user?.loginName;
      }
      timeline('agent: registered');
      // Written while the tunnel starts; awaited before `up` returns.
      const serverKey = formatServerKey(await client.serverKey());
      // wantRunning goes in with them, as tailscaled persists WantRunning when `up` starts: written
      // while control prepares the first map instead of after it (two fsyncs: 6-14 ms of `up` on a
      // busy host). A failed `up` writes back what it found (below).
      const serverSaved = prefsSaved.then(() => store.update({ serverUrl: url, serverKey, wantRunning: true }));
      if (state.wantRunning !== true) wantSaved = serverSaved;
      serverSaved.catch(() => {}); // awaited below; a failure there fails up
      progress(`logged in${user ? ` as ${user}` : ''}; starting the tunnel`);

      if (this.opts.userspace) {
        // On a worker thread by default (src/daemon/netstack-thread.ts); MESHD_NETSTACK_THREAD=0 keeps it here.
        const nt = await import('./netstack-thread.ts');
        this.us = nt.netstackThreadEnabled()
          ? new nt.UserspaceThread({ ...this.opts.userspace, log: this.log, onFatal: (e) => this.fatal(e) })
          : new (await import('./userspace.ts')).Userspace({ ...this.opts.userspace, log: this.log });
        await this.us.start().catch((e: Error) => { throw new AgentError('proxy_listen', e.message); });
        await serverSaved; // one write at a time: update() reads, merges and writes
        await this.store.update({ tun: USERSPACE_TUN });
      }
      // magicsock owns the UDP socket and is the data plane's Bind (src/net/bind.ts).
      await cleaning;
      const { DataPlane, MagicSock, PortMapper } = await dataPlaneModules();
      this.magic = this.startMagic({ MagicSock, PortMapper }, identity.nodePrivate, disco.privateKey, client);
      // The map stream starts before the data plane opens (TUN, routing, DNS: 15-120 ms): control
      // takes about a second to send the first map whatever we do meanwhile, so each ms of our own
      // work before the request is a ms later for the first packet. Maps wait for the data plane.
      let dataPlaneOpen!: () => void;
      const dpOpen = new Promise<void>((r) => { dataPlaneOpen = r; });
      const firstMap = new Promise<void>((resolve, reject) => {
        this.stream = client.streamMap({
          endpoints: this.magic!.ourEndpoints(),
          hostinfo,
          onMap: (m) => { this.mapUpdates++; this.controlDownSince = undefined; void dpOpen.then(() => this.applyMap(m)).then(resolve, reject); },
          onDelta: (d, m) => {
            this.mapUpdates++;
            this.controlDownSince = undefined;
            const touched: Touched = d.fullPeers || d.selfChanged ? 'all' : new Set([...d.peersAdded, ...d.peersChanged, ...d.peersRemoved]);
            void dpOpen.then(() => this.applyMap(m, touched)).then(() => this.resendPendingInitiations())
              .catch((e: Error) => this.log(`applying map: ${e.message}`));
            this.routing.onDelta(d, m, () => this.stream?.refresh());
          },
          onError: (err, retryIn) => {
            this.controlDownSince ??= Date.now();
            // The client logs each retry; giving up is ours to report.
            if (retryIn === undefined) {
              this.log(`map stream gave up: ${err.message}`);
              reject(err);
            }
          },
        });
      });
      firstMap.catch(() => {}); // awaited below; a failure before then is the one reported
      // Beside the stream, a lite map request with the same disco key and endpoints, as tailscaled's
      // update routine sends once logged in. headscale 0.29.2 applies both in its next NodeStore
      // batch (every 500 ms), but queues the peers' change for the lite one at once and for the
      // stream only after our first map, one batch later; peers get changes on an 800 ms tick. A
      // tick between those two batches then already gives peers our disco key, before our first
      // packet, instead of a tick after the first map (up to 800 ms later).
      client.updateEndpoints(this.magic!.ourEndpoints()).catch((e: Error) => this.log(`first endpoint report: ${e.message}`));
      const localServices = this.us ? undefined : import('../netstack/local.ts');
      this.dp = DataPlane.open({
        name: this.opts.tunName, mtu: TAILNET_MTU, log: this.log, roaming: false, bind: this.magic, initiationResendMs: INITIATION_RESEND_MS,
        ...(this.us ? { device: this.us.device } : {}),
      });
      await this.routing.start(this.dp, url);
      this.dp.device.setPrivateKey(identity.nodePrivate as PrivateKey);
      const dp = this.dp;
      const deliver = (b: Uint8Array, o: number, l: number): void => dp.deliverToHost(b, o, l);
      this.dns.start(deliver, dp.mtu);
      if (!this.us) {
        // quad-100's TCP (DNS over TCP on port 53) runs on a small netstack behind its UDP path.
        const { LocalServices } = await localServices!;
        this.quad100Tcp = new LocalServices({ addresses: [SERVICE_IP4, SERVICE_IP6], deliver, mtu: dp.mtu });
        this.dns.next = this.quad100Tcp;
        this.dns.listenTcp(this.quad100Tcp);
      }
      dp.local = this.dns;
      this.portmap?.ensure();
      this.netconf.reset();
      timeline('agent: data plane open');
      dataPlaneOpen();

      progress('waiting for the network map');
      await withDeadline(firstMap, remaining(), 'waiting for the network map');
      timeline('agent: first map applied');
      // As tailscaled (Running needs a live DERP): our home region is connected and reported
      // before `up` returns, so peers can reach us at once. Bounded: UDP-less netchecks take longer.
      // The state writes and the tag check need no DERP: they are awaited while it connects.
      const homeDerp = this.magic!.waitHomeDerp(Math.min(remaining(), HOME_DERP_WAIT_MS));
      await serverSaved;
      await this.checkTags(client);
      if (!await homeDerp) this.log('no home DERP connection yet; up anyway');
      // Control hands our home region to peers in its next batch (headscale: up to 800 ms after our
      // report). A tailscaled that sends to us before then fails its handshake with "no UDP or DERP
      // addr" and retries only 5 s later; `up` does not wait for that batch (as tailscaled), but
      // once it arrives (our own node shows the region: headscale sends it to us and our peers
      // together) we handshake with the online peers we have no session with: a peer that tried
      // meanwhile sends what it holds as soon as our handshake completes, instead of 5 s later.
      else this.handshakeWhenHomeOut(this.magic!, this.dp!);
      this.state = 'Running';
      this.endpointTimer = setInterval(() => { this.portmap?.ensure(); this.magic?.maybeReport(); }, ENDPOINT_CHECK_MS);
      this.metricsTimer = setInterval(() => { this.metricsBook.sample(this.dp, this.magic); this.keeper?.tick(Date.now(), this.dataPackets()); }, 1000);
      this.metricsTimer.unref();
      const st = this.status();
      timeline('agent: up done');
      progress(`up: ${st.self.addresses.join(' ')}`);
      this.log(`up as ${st.self.hostname} ${st.self.addresses.join(' ')} with ${st.peers.length} peers`);
      // Kept in memory only (never in the state dir), to log in again when control expires the key.
      this.lastUp = req;
      return st;
    } catch (e) {
      await this.teardown();
      this.state = 'NeedsLogin';
      if (wantSaved) {
        await wantSaved.catch(() => {});
        await this.store?.update({ wantRunning: false }).catch(() => {});
      }
      throw asAgentError(e);
    }
  }

  /**
   * Key expiry, from each map: a day ahead it is logged once; once control marks the key expired,
   * the node registers again with a fresh node key and the auth key of the last `up`, if this
   * agent still holds one (headscale accepts a reusable key, or any key for a tagged node, which
   * never expires anyway); else the log and `status` say to run `meshd up --authkey`.
   */
  private checkKeyExpiry(m: NetworkMap): void {
    const exp = m.self?.keyExpiry;
    if (!m.self || (!exp && !m.self.expired)) return;
    const left = exp ? Date.parse(exp) - Date.now() : 0;
    if (!m.self.expired && left > 0) {
      if (left < KEY_EXPIRY_WARN_MS && this.expiryWarned !== exp) {
        this.expiryWarned = exp ?? '';
        this.log(`the node key expires at ${exp}: it will be renewed with the auth key of the last up, if it is reusable`);
      }
      return;
    }
    if (this.reauthRunning || this.state !== 'Running') return;
    const last = this.lastUp;
    if (!last?.authKey) {
      if (this.expiryWarned !== `expired ${exp}`) {
        this.expiryWarned = `expired ${exp}`;
        this.log(`the node key expired at ${exp}: run meshd up with --authkey to log in again`);
      }
      return;
    }
    this.reauthRunning = true;
    this.log(`the node key expired at ${exp}: registering again with a new node key and the auth key of the last up`);
    void this.serial(async () => {
      await this.store?.rotateNodeKey();
      this.state = 'NeedsLogin';
      return this.doUp({ ...last, timeoutMs: Math.max(last.timeoutMs, 30_000) }, () => {});
    }).then(
      () => this.log('re-authenticated after the key expiry'),
      (e: Error) => this.log(`re-authentication failed: ${e.message}`),
    ).finally(() => { this.reauthRunning = false; });
  }

  /** After the first map: the node must carry every tag asked for (else it is logged out again). */
  private async checkTags(client: ControlClient): Promise<void> {
    const have = this.map?.self?.tags ?? [];
    const missing = this.wantTags.filter((t) => !have.includes(t));
    if (missing.length === 0) return;
    await client.logout().catch((e: Error) => this.log(`logout after a tag mismatch: ${e.message}`));
    throw new AgentError('tags_mismatch', `the node does not carry ${missing.join(',')} (it has ${have.join(',') || 'no tags'}): headscale takes a pre-auth key's tags from the key, create it with --tags ${this.wantTags.join(',')}`);
  }


  /** Starts magicsock with its UDP socket: disco, DERP, netcheck; it reports endpoints and NetInfo to control. */
  private startMagic(mods: Pick<DataPlaneModules, 'MagicSock' | 'PortMapper'>, nodePrivate: Uint8Array, discoPrivate: Uint8Array, client: ControlClient): MagicSock {
    const { MagicSock, PortMapper } = mods;
    const portmap = process.env.MESHD_DISABLE_PORTMAPPER === '1' ? undefined : new PortMapper({
      log: (l) => this.log(l),
      localPort: () => this.magic?.port ?? this.opts.port,
      onChange: () => this.magic?.maybeReport(),
      disableUpnp: process.env.MESHD_DISABLE_UPNP === '1',
    });
    this.portmap = portmap;
    const magic: MagicSock = new MagicSock({
      portMapped: () => portmap?.external,
      socket: { port: this.opts.port, fwmark: this.opts.userspace ? 0 : BYPASS_MARK, mtu: TAILNET_MTU }, nodePrivate, discoPrivate,
      log: (l) => this.log(`magicsock: ${l}`),
      derpHttp: process.env.MESHD_DERP_HTTP === '1',
      ...(this.opts.userspace ? {} : { derpDial: markedDialer(BYPASS_MARK) }),
      localEndpoints: () => this.localEndpoints(),
      onReport: (eps, netInfo) => {
        if (this.client !== client) return;
        this.log(`endpoints: ${eps.map((e) => e.addr).join(' ') || 'none'}; home DERP ${String(netInfo.PreferredDERP)}`);
        client.updateEndpoints(eps, { hostinfo: { NetInfo: netInfo } }).catch((e: Error) => {
          magic.reportFailed();
          this.log(`reporting endpoints: ${e.message}`);
        });
      },
    });
    return magic;
  }

  /** Our UDP endpoints to report: every non-loopback, non-link-local address with the listen port. */
  private localEndpoints(): string[] {
    const port = this.magic?.port ?? this.opts.port;
    const out: string[] = [];
    for (const [name, addrs] of Object.entries(networkInterfaces())) {
      if (name === this.opts.tunName) continue;
      for (const a of addrs ?? []) {
        if (a.internal) continue;
        if (a.family === 'IPv6' && (a.address.startsWith('fe80') || a.address.startsWith('fd7a:115c:a1e0'))) continue;
        if (a.family === 'IPv4' && a.address.startsWith('100.')) continue;
        out.push(a.family === 'IPv6' ? `[${a.address}]:${port}` : `${a.address}:${port}`);
      }
    }
    return out;
  }

  /**
   * Once control shows our home region on our own node (bounded by SELF_DERP_WAIT_MS), starts a
   * handshake with each online peer (at most HOME_OUT_HANDSHAKES) that has no WireGuard session.
   */
  private handshakeWhenHomeOut(magic: MagicSock, dp: DataPlane): void {
    const region = magic.homeRegion;
    if (this.map?.self?.homeDERP === region) return;
    const pass = (): number => {
      if (this.dp !== dp || this.magic !== magic) return 0;
      return this.forOnlinePeers((k) => dp.handshakeIfIdle(k));
    };
    void this.waitMap((m) => m.self?.homeDERP === region, SELF_DERP_WAIT_MS).then((out) => {
      if (!out) return;
      const started = pass();
      timeline(`control handed out our home region: ${started} handshakes`);
      this.log(`control handed out home DERP region ${region}: handshakes sent to ${started} peers`);
      // Peers apply the same batch a little after us: an initiation that came too early goes again.
      if (started > 0) setTimeout(pass, HOME_OUT_AGAIN_MS).unref();
    });
  }

  /**
   * After each map update: repeats now the unanswered first initiation of each online peer (at
   * most HOME_OUT_HANDSHAKES) instead of at its next 1 s repeat. The batch that brought this
   * update is the one that tells our peers about us (headscale sends a batch to every node at
   * once): a peer that dropped our initiation because it did not know us yet knows us now.
   */
  private resendPendingInitiations(again = true): void {
    const dp = this.dp;
    if (!dp) return;
    const sent = this.forOnlinePeers((k) => dp.resendPendingInitiation(k));
    if (sent === 0) return;
    timeline(`map update: ${sent} pending initiations sent again`);
    // Once more a little later, for a peer that applies the batch after us.
    if (again) setTimeout(() => { if (this.dp === dp) this.resendPendingInitiations(false); }, RESEND_AGAIN_MS).unref();
  }

  /**
   * Calls `fn` with the node key of each online peer the data plane has (at most
   * HOME_OUT_HANDSHAKES of them); returns how many calls returned true.
   */
  private forOnlinePeers(fn: (nodeKey: Uint8Array) => boolean): number {
    let seen = 0, n = 0;
    for (const p of this.map?.peers.values() ?? []) {
      if (seen >= HOME_OUT_HANDSHAKES) break;
      if (p.online === false || !this.appliedPeers.has(p.id)) continue;
      seen++;
      if (fn(p.nodeKey)) n++;
    }
    return n;
  }

  /** Resolves true once the map satisfies `pred` (checked now and at each update), false after ms. */
  private waitMap(pred: (m: NetworkMap) => boolean, ms: number): Promise<boolean> {
    if (this.map && pred(this.map)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean): void => { clearTimeout(timer); this.mapWaiters.delete(check); resolve(ok); };
      const check = (): void => { if (this.map && pred(this.map)) done(true); };
      const timer = setTimeout(() => done(false), ms);
      this.mapWaiters.add(check);
    });
  }

  /**
   * Makes the data plane match the map, one application at a time: a burst of updates while one
   * runs coalesces into one more run with the newest map, and teardown waits for the queue.
   */
  private applyMap(m: NetworkMap, touched: Touched = 'all'): Promise<void> {
    this.map = m;
    for (const w of this.mapWaiters) w();
    this.checkKeyExpiry(m);
    // Coalesced runs look at the union of what each update touched.
    if (touched === 'all' || this.mapTouched === 'all') this.mapTouched = 'all';
    else for (const id of touched) this.mapTouched.add(id);
    if (this.mapPending) return this.mapPending;
    const p = this.mapQueue.then(() => {
      this.mapPending = undefined;
      const t = this.mapTouched;
      this.mapTouched = new Set();
      return this.applyMapNow(t);
    });
    this.mapPending = p;
    this.mapQueue = p.catch(() => {});
    return p;
  }

  /**
   * Applies this.map: addresses, routes, peers. Only the peers `touched` (or whose allowed IPs a
   * new exit node changes) are visited: a one-peer delta is O(1) peer work. Stops early when a
   * teardown began meanwhile.
   */
  private async applyMapNow(touched: Touched): Promise<void> {
    const m = this.map, dp = this.dp;
    if (!m || !dp || !m.self) return;
    // The DERP map first: netcheck and the home DERP connection then run while the ip commands below
    // configure the host, instead of after them (the first `up` waits for both).
    if (m.derpMap !== this.appliedDerpMap) { this.magic?.setDerpMap(m.derpMap); this.appliedDerpMap = m.derpMap; }
    // Addresses on the TUN and policy routing are independent: their ip commands run side by side.
    const [, allowed] = await Promise.all([
      this.us ? undefined : this.netconf.apply(m.self.addresses, [TAILNET_V4, TAILNET_V6]),
      this.routing.apply(m, touched),
    ]);
    if (this.dp !== dp) return;
    timeline('map: addresses, routes and rules set');
    const prefs = this.routing.prefs;
    this.us?.setMap(m, allowed, prefs.advertiseExitNode || prefs.advertiseRoutes.length > 0);
    const dev = dp.device;
    const magic = this.magic;
    const exitId = this.routing.exitNodeId;
    if (exitId !== this.appliedExitId) { touched = 'all'; this.appliedExitId = exitId; }
    let removed = 0;
    const sink = {
      upsert: (p: NodeInfo, allowedIPs: readonly string[], replace = true) => {
        const ep = magic?.upsertPeer(p);
        dev.setPeer(p.nodeKey, { ...(ep ? { endpoint: ep } : {}), allowedIPs: [...allowedIPs], replaceAllowedIPs: replace });
      },
      remove: (p: NodeInfo) => { dev.removePeer(p.nodeKey); removed++; },
    };
    const allowedOf = (p: NodeInfo) => allowed.get(p.id) ?? p.addresses;
    if (touched === 'all' && m.peers.size > PEERS_PER_TURN) {
      // A whole large map: spread over event-loop turns so forwarding goes on meanwhile.
      const ops = await syncPeersInTurns(this.appliedPeers, m.peers, allowedOf, sink, { chunk: PEERS_PER_TURN, cancelled: () => this.dp !== dp });
      if (ops < 0) return;
    } else {
      syncPeers(this.appliedPeers, m.peers, allowedOf, sink, touched);
    }
    if (removed > 0) magic?.retainPeers(new Set([...this.appliedPeers.values()].map((a) => Buffer.from(a.info.nodeKey).toString('hex'))));
    dp.runTimers();
    timeline('map: peers set');
    await this.dns.apply(m).catch((e: Error) => this.log(`dns: ${e.message}`));
    timeline('map: dns applied');
  }

  /**
   * At agent start: reconnects when the state says the tailnet was up (a restart by the service
   * manager, or after a crash), as tailscaled does. A failure is logged; `meshd up` can retry.
   */
  async resume(): Promise<void> {
    if (this.opts.memState) return;
    const store = await StateStore.open(this.opts.stateDir);
    const s = await store.read().catch(() => undefined);
    if (!s?.wantRunning || !s.serverUrl) return;
    this.log(`reconnecting to ${s.serverUrl} (the tailnet was up when the agent last ran)`);
    try {
      await this.up({ loginServer: s.serverUrl, timeoutMs: 60_000 }, () => {});
    } catch (e) {
      this.log(`reconnect failed: ${(e as Error).message}`);
    }
  }

  /** See LocalBackend.ping: resolves the peer by tailnet IP, hostname or nodekey, then one disco ping. */
  async ping(req: PingRequest): Promise<PingReply> {
    const magic = this.magic, map = this.map;
    if (!magic || !map) throw new AgentError('not_running', 'not connected: run meshd up first');
    const want = req.peer;
    const peer = [...map.peers.values()].find((p) => p.nodeKeyText === want || p.hostname === want ||
      p.name === want || p.name.split('.')[0] === want || p.addresses.some((a) => a.split('/')[0] === want));
    if (!peer) throw new AgentError('no_such_peer', `no peer ${JSON.stringify(want)} in the tailnet: see meshd status`);
    const ip = peer.addresses[0]?.split('/')[0] ?? '';
    const name = peer.hostname || peer.name.split('.')[0] || ip;
    if (!peer.discoKey) throw new AgentError('no_disco', `${name} has no disco key yet: it cannot be pinged`);
    const r = await magic.ping(peer.nodeKey, Math.max(100, Math.min(req.timeoutMs, 60_000)));
    if (!r) throw new AgentError('timeout', `ping to ${name} (${ip}) timed out`, true);
    return { name, ip, via: r.via, endpoint: r.endpoint, region: r.region, regionCode: r.regionCode, latencyMs: r.latencyMs };
  }

  /** See LocalBackend.whois (src/daemon/whois.ts). */
  whois(req: { addr: string }): WhoisReply {
    if (!this.map) throw new AgentError('not_running', 'not connected: run meshd up first');
    return whoisIn(this.map, req.addr);
  }

  /** See LocalBackend.netcheck. */
  async netcheck(): Promise<NetcheckReport> {
    const magic = this.magic;
    if (!magic) throw new AgentError('not_running', 'not connected: run meshd up first');
    const [report, pm] = await Promise.all([magic.netcheck(), this.portmap?.probe(true).catch(() => undefined)]);
    const r = report ?? magic.lastReport;
    return {
      portMapping: this.portmap ? (pm ? [...(pm.upnp ? ['UPnP'] : []), ...(pm.pmp ? ['NAT-PMP'] : []), ...(pm.pcp ? ['PCP'] : [])] : []) : null,
      portMapped: this.portmap?.external ?? null,
      udp: r?.udp ?? false,
      globalV4: r?.globalV4?.key ?? null,
      globalV6: r?.globalV6?.key ?? null,
      mappingVariesByDestIP: r?.mappingVariesByDestIP ?? null,
      preferredDERP: magic.homeRegion,
      regions: magic.derpRegions.map((g) => ({
        id: g.RegionID, code: g.RegionCode, name: g.RegionName, latencyMs: r?.regionLatency.get(g.RegionID) ?? null,
        ...(r?.regionLatency.has(g.RegionID) ? { via: r.httpsLatency?.has(g.RegionID) ? 'https' as const : 'stun' as const } : {}),
      })),
    };
  }

  /** See LocalBackend.down. With in-memory state the identity cannot outlive the agent: a logout. */
  down(): Promise<void> {
    if (this.opts.memState) return this.logout();
    return this.serial(async () => {
      await this.teardown();
      this.state = 'Stopped';
      await this.store?.update({ wantRunning: false }).catch(() => {});
      if (this.opts.exitWhenDown) this.exitSoon();
    });
  }

  /** See LocalBackend.logout. */
  logout(): Promise<void> {
    return this.serial(async () => {
      const client = this.client;
      if (client) {
        try {
          await client.logout();
        } catch (e) {
          this.log(`logout: ${(e as Error).message}`);
        }
      }
      await this.teardown();
      if (this.store) {
        await this.store.rotateNodeKey().catch(() => {});
        await this.store.update({ wantRunning: false }).catch(() => {});
      }
      this.state = 'NeedsLogin';
      if (this.opts.exitWhenDown) this.exitSoon();
    });
  }

  /** Exits after the current local API reply has gone out. */
  private exitSoon(): void {
    setTimeout(() => this.opts.onExit(), 20);
  }

  /**
   * The agent is ending (SIGTERM, SIGINT, shutdown): with in-memory state the node logs out first,
   * so an ephemeral node disappears from control at once; then the data plane goes.
   */
  async end(): Promise<void> {
    // A connection made ahead of an `up` that never came.
    void this.takePrepared('', undefined);
    await this.serial(async () => {
      const client = this.client;
      if (this.opts.memState && client) {
        try {
          await withDeadline(client.logout(), 5_000, 'logging out');
          this.log('logged out (in-memory state)');
        } catch (e) {
          this.log(`logout: ${(e as Error).message}`);
        }
      }
      await this.teardown();
    });
  }

  /** See LocalBackend.shutdown. */
  async shutdown(): Promise<void> {
    await this.end();
    this.exitSoon();
  }

  /** Stops the map stream and removes the data plane (TUN, its addresses and routes). */
  async teardown(): Promise<void> {
    if (this.endpointTimer) clearInterval(this.endpointTimer);
    this.endpointTimer = undefined;
    if (this.metricsTimer) clearInterval(this.metricsTimer);
    this.metricsTimer = undefined;
    this.metricsBook.sample(this.dp, this.magic);
    this.reconnectsBefore += this.stream?.reconnects ?? 0;
    this.controlDownSince = undefined;
    const stream = this.stream, client = this.client, dp = this.dp;
    this.stream = undefined;
    this.dp = undefined;
    this.map = undefined;
    // Released while our socket still exists: the router forwards the port to nobody after this.
    await this.portmap?.close();
    this.portmap = undefined;
    this.magic?.close();
    this.magic = undefined;
    if (stream) await stream.close().catch(() => {});
    if (client) await client.close().catch(() => {});
    this.client = undefined;
    await this.mapQueue; // a map being applied finishes (and sees the teardown) before routes go
    this.appliedPeers = new Map();
    this.appliedDerpMap = null;
    this.appliedExitId = undefined;
    this.mapTouched = 'all';
    await this.dns.stop();
    this.dns.next = undefined;
    this.quad100Tcp?.close();
    this.quad100Tcp = undefined;
    await this.routing.stop(dp);
    this.us?.close();
    this.us = undefined;
    dp?.close();
    this.netconf.reset();
  }

  /** A part the agent cannot run without failed (the netstack thread): say why and stop, exit status 1. */
  private fatal(e: Error): void {
    this.log(`fatal: ${e.message}; stopping`);
    process.exitCode = 1;
    this.opts.onExit();
  }

  /** Set once the full cleanupStale ran (at daemon start, or in the first `up` of an agent `up` started). */
  private cleanedAtStart = false;

  /**
   * Removes routing, firewall and DNS state a crashed agent left: called when the daemon starts,
   * or (an agent `meshd up` started) by the first `up` while it registers.
   */
  cleanupStale(): Promise<void> {
    this.cleanedAtStart = true;
    if (this.userspaceMode) return Promise.resolve(); // nothing of ours is in the host's routing; a TUN-mode agent's rules are not ours
    const p = (async () => {
      await this.routing.cleanupStale();
      await DnsService.cleanupStale(this.log, this.opts.etcDir);
    })().catch((e: Error) => this.log(`cleaning up after an earlier meshd: ${e.message}`));
    if (this.state === 'NoState') this.startCleanup = p;
    return p;
  }

  /** See LocalBackend.dnsStatus. */
  dnsStatus(): DnsStatus {
    return this.dns.status();
  }

  /** See LocalBackend.dnsQuery. */
  async dnsQuery(name: string, type: string): Promise<{ bytes: string; resolvers: string[] }> {
    if (this.state !== 'Running') throw new AgentError('not_running', 'not connected: run meshd up first');
    try {
      const r = await this.dns.query(name, type);
      return { bytes: Buffer.from(r.bytes).toString('base64'), resolvers: r.resolvers };
    } catch (e) {
      throw new AgentError('bad_query', (e as Error).message);
    }
  }

  /** Path of the agent's log inside the state dir (used when `up` starts the agent). */
  static logPath(stateDir: string): string {
    return agentLogIn(stateDir);
  }
}

function formatServerKey(k: Uint8Array): string {
  return `mkey:${Buffer.from(k).toString('hex')}`;
}


function asAgentError(e: unknown): Error {
  if (e instanceof AgentError || e instanceof ControlError) return e;
  const err = e as { code?: unknown; message?: string };
  if (typeof err.code === 'string' && err.message) return e as Error;
  return new AgentError('internal', err.message ?? String(e));
}
