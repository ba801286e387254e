// The register request of `meshd up`, sent from the CLI process itself when `up` starts a fresh
// agent (README, bench-nat: headscale applies node writes in 500 ms batches, and a register request
// sent ~250 ms after `up` catches the early one; the agent's own Node start put meshd's at
// ~300-400 ms). bin/meshd.js starts it before the CLI's own modules load (agentspawn.ts startEarly):
//
//   CLI:   GET /key -> load or create the identity (the only writer of new keys) -> IPC `login` to
//          the agent -> Noise handshake -> (upCommand, after commander) register -> wait for the
//          identity on disk -> IPC `up` with `registered`
//   agent: takes the identity, dials its own Noise connection, and after `up` streams the map
//          (headscale keys a node by machine and node key, not by connection)
//
// If the register fails, the agent is never told to go on: the CLI closes the IPC channel and the
// agent exits (src/cli/tailnet.ts startAgent). The register request, its interactive-login loop and
// its checks are the agent's own code (src/daemon/login.ts). The connection is plain TCP, without
// the agent's bypass mark: no route of ours exists yet when `up` starts an agent, and it is closed
// once the agent has taken over. Off with MESHD_CLI_REGISTER=0 (then the agent registers).
import type { ChildProcess, Serializable } from 'node:child_process';
import { ControlClient, fetchKeyAhead } from '../control/client.ts';
import { formatMachinePublic, type DiscoPublic } from '../control/keys.ts';
import { generateKeyPair } from '../crypto/box.ts';
import { StateStore, type Identity, type StateFile } from '../state/store.ts';
import { MemoryStore, type Store } from '../state/memstore.ts';
import { login, upHostinfo, upPrefs } from '../daemon/login.ts';
import type { UpRequest } from '../daemon/localapi.ts';
import type { CliRegistered } from '../daemon/agent.ts';
import { timeline } from '../util/timeline.ts';

/** Where the early login registers, from the early parse of `up`'s command line. */
export interface LoginTarget {
  url: string;
  caFile?: string | undefined;
  /** The state directory, or undefined for `--state mem:`. */
  stateDir: string | undefined;
}

/** What the preparation made: the identity, a client dialling control, and the identity's write. */
interface Prepared {
  store: Store;
  identity: Identity;
  state: StateFile;
  client: ControlClient;
  written: Promise<void>;
}

/** The IPC messages the CLI sends the agent it registers for (handled in tailnet.ts daemonCommand). */
export interface LoginMessage {
  login: { url: string; caFile?: string | undefined; state: StateFile; serverKey?: string };
}

/** A login begun by the CLI for the agent it started. */
export class EarlyLogin {
  readonly target: LoginTarget;
  private readonly child: ChildProcess;
  private readonly prepared: Promise<Prepared | Error>;
  private closed = false;

  private constructor(target: LoginTarget, child: ChildProcess) {
    this.target = target;
    this.child = child;
    this.prepared = this.prepare().catch((e: Error) => e);
  }

  /** Starts GET /key, the identity and the Noise handshake now; never throws (register reports). */
  static begin(target: LoginTarget, child: ChildProcess): EarlyLogin {
    return new EarlyLogin(target, child);
  }

  private async prepare(): Promise<Prepared> {
    const { url, caFile } = this.target;
    timeline('cli: login starts');
    const keyAhead = fetchKeyAhead({ serverUrl: url, caFile, timeoutMs: 15_000 });
    const store: Store = this.target.stateDir === undefined ? new MemoryStore() : await StateStore.open(this.target.stateDir);
    let loaded!: Promise<unknown>;
    const known = new Promise<{ identity: Identity; state: StateFile }>((resolve, reject) => {
      loaded = store.loadOrCreateIdentity(url, (identity, state) => resolve({ identity, state }));
      loaded.catch(reject);
    });
    let { identity, state } = await known;
    let written: Promise<void> = loaded.then(() => {});
    written.catch(() => {}); // awaited by register() and close()
    if (state.serverUrl && state.serverUrl !== url) {
      // A different control server: a new node key (as Agent.doUp), written before anything else.
      await written;
      identity = await store.rotateNodeKey();
      state = await store.update({ serverUrl: url });
      delete state.serverKey;
      written = Promise.resolve();
    }
    const client = new ControlClient({
      serverUrl: url, machineKey: identity.machinePrivate, nodeKey: identity.nodePrivate, keyAhead,
      ...(state.serverKey && state.serverUrl === url ? { serverKey: state.serverKey } : {}),
      ...(caFile ? { caFile } : {}),
      discoKey: generateKeyPair().publicKey as DiscoPublic, timeoutMs: 15_000,
    });
    void client.connect();
    // The agent dials with the same keys (it never makes keys of its own), and with the server key
    // this connection fetched and checked against the pinned one: its own dial then skips GET /key.
    const serverKey = await client.serverKey().then(formatMachinePublic, () => undefined);
    this.send({ login: { url, ...(caFile ? { caFile } : {}), state: { ...state }, ...(serverKey ? { serverKey } : {}) } } satisfies LoginMessage as unknown as Serializable);
    timeline('cli: identity sent to the agent');
    return { store, identity, state, client, written };
  }

  private send(m: Serializable): void {
    if (this.child.connected) this.child.send(m, () => {});
  }

  /** True when `up`'s checked flags name the same server, CA file and state as the early parse. */
  matches(t: LoginTarget): boolean {
    return t.url === this.target.url && (t.caFile ?? '') === (this.target.caFile ?? '') && t.stateDir === this.target.stateDir;
  }

  /**
   * Registers as the agent would for `req` (same Hostinfo, auth key, interactive-login loop and
   * checks), then waits for the identity to be on disk. Throws what the agent's `up` would:
   * AgentError, ControlError or StateError, with the same one-line messages.
   */
  async register(req: UpRequest, progress: (msg: string) => void): Promise<CliRegistered> {
    const deadline = Date.now() + req.timeoutMs;
    const p = await this.prepared;
    if (p instanceof Error) throw p;
    const prefs = upPrefs(req, p.state.routing);
    const hostinfo = upHostinfo(req.hostname ?? p.state.hostname, prefs, req.advertiseTags ?? [], !!req.authKey);
    progress(`contacting ${this.target.url}`);
    const reg = await login(p.client, {
      authKey: req.authKey, hostinfo, deadline, progress, log: () => {},
      onSent: () => this.send({ registerSent: true }),
    });
    timeline('cli: registered');
    await p.written;
    return { loginName: reg.user?.loginName };
  }

  /** Closes the CLI's control connection; waits for a write of new keys still under way. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const p = await this.prepared;
    if (p instanceof Error) return;
    await p.client.close().catch(() => {});
    await p.written.catch(() => {});
  }
}
