// The state directory: meshd's persistent identity toward control.
//
//   <dir>/            mode 0700
//   <dir>/state.json  mode 0600, written atomically (temp file + fsync + rename + fsync of the dir)
//
// state.json holds the machine key (Noise identity toward control), the node key (WireGuard), the
// control URL and, after a registration, what control said about the node. The auth key is never
// written here (nor logged): it is a credential for registering, not part of the identity.
import { promises as fs, constants } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  formatPrivate, parsePrivate, generateKeyPair, publicKeyOf,
  type MachinePublic, type NodePublic, type PrivateKey,
} from '../control/keys.ts';

/** File name of the state inside the directory. */
export const STATE_FILE = 'state.json';
/** Version of the state file layout. */
export const STATE_VERSION = 1;

/** What state.json holds (JSON form). */
export interface StateFile {
  version: number;
  /** `privkey:` machine private key. */
  machineKey: string;
  /** `privkey:` node private key. */
  nodeKey: string;
  /** Control server URL this identity registered with. */
  serverUrl?: string;
  /** Pinned server Noise key (`mkey:`), once learned. */
  serverKey?: string;
  /** The user wants the tailnet up: an agent that restarts reconnects on its own (cleared by down/logout). */
  wantRunning?: boolean;
  /** `userspace-networking` when the agent last ran without a TUN device. */
  tun?: string;
  /** Hostname the user chose with --hostname (kept for later `up`s without it). */
  hostname?: string;
  /** Routing flags of the last `up` (exit node, routes), kept for later `up`s without them. */
  routing?: {
    advertiseExitNode: boolean;
    advertiseRoutes: string[];
    exitNode: string;
    exitNodeAllowLanAccess: boolean;
    acceptRoutes: boolean;
  };
  /** --accept-dns of the last `up` (default true). */
  acceptDns?: boolean;
  /** Node ID, user and addresses from the last map, for display. */
  nodeId?: number;
  user?: string;
  addresses?: string[];
}

/** The keys of a loaded identity. */
export interface Identity {
  readonly machinePrivate: PrivateKey;
  readonly machinePublic: MachinePublic;
  readonly nodePrivate: PrivateKey;
  readonly nodePublic: NodePublic;
}

/** The keys of a state file (throws on a malformed key). */
export function identityOf(s: Pick<StateFile, 'machineKey' | 'nodeKey'>): Identity {
  const machinePrivate = parsePrivate(s.machineKey);
  const nodePrivate = parsePrivate(s.nodeKey);
  return {
    machinePrivate,
    machinePublic: publicKeyOf<MachinePublic>(machinePrivate),
    nodePrivate,
    nodePublic: publicKeyOf<NodePublic>(nodePrivate),
  };
}

/** Thrown when the state directory or file is unusable; the message says which and what to do. */
export class StateError extends Error {
  /** Stable code. */
  readonly code: 'state_unreadable' | 'state_corrupt' | 'state_unwritable';
  constructor(code: StateError['code'], message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'StateError';
    this.code = code;
  }
}

/** A state directory. Create with {@link StateStore.open}. */
export class StateStore {
  /** The directory. */
  readonly dir: string;

  private constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * Opens a state directory, creating it with mode 0700 if needed. An existing directory keeps its
   * mode (it may be shared, or chosen on purpose), but one that others can write to is refused:
   * another user could plant links where meshd writes its keys.
   */
  static async open(dir: string): Promise<StateStore> {
    let st;
    try {
      st = await fs.stat(dir).catch((e: NodeJS.ErrnoException) => { if (e.code === 'ENOENT') return undefined; throw e; });
      if (st === undefined) {
        await fs.mkdir(dir, { recursive: true, mode: 0o700 });
        await fs.chmod(dir, 0o700); // ours: exactly 0700 whatever the umask
        st = await fs.stat(dir);
      }
      if (!st.isDirectory()) throw new Error('not a directory');
    } catch (e) {
      throw new StateError('state_unwritable', `state directory ${dir} is unusable (${(e as Error).message}): choose another with --state-dir or fix its permissions`, e);
    }
    if ((st.mode & 0o022) !== 0) {
      throw new StateError('state_unwritable', `state directory ${dir} is writable by ${(st.mode & 0o002) !== 0 ? 'all users' : 'its group'} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}): choose another with --state-dir, or run chmod go-w on it`);
    }
    return new StateStore(dir);
  }

  /** Path of state.json. */
  get file(): string {
    return join(this.dir, STATE_FILE);
  }

  /** Reads state.json; undefined when it does not exist. */
  async read(): Promise<StateFile | undefined> {
    let text: string;
    try {
      text = await fs.readFile(this.file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new StateError('state_unreadable', `cannot read ${this.file} (${(e as Error).message}): check its permissions`, e);
    }
    let s: StateFile;
    try {
      s = JSON.parse(text) as StateFile;
      if (s.version !== STATE_VERSION || typeof s.machineKey !== 'string' || typeof s.nodeKey !== 'string') throw new Error('missing fields');
      parsePrivate(s.machineKey);
      parsePrivate(s.nodeKey);
    } catch (e) {
      throw new StateError('state_corrupt', `${this.file} is corrupt (${(e as Error).message}): move it away to start with a new identity (the node must then register again)`, e);
    }
    const st = await fs.stat(this.file);
    if ((st.mode & 0o077) !== 0) await fs.chmod(this.file, 0o600);
    return s;
  }

  /** Writes state.json atomically with mode 0600: temp file, fsync, rename, fsync of the directory. */
  async write(s: StateFile): Promise<void> {
    const tmp = join(this.dir, `.${STATE_FILE}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
    try {
      const fh = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(s, null, 2)}\n`, 'utf8');
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, this.file);
      const dh = await fs.open(this.dir, constants.O_RDONLY);
      try {
        await dh.sync();
      } finally {
        await dh.close();
      }
    } catch (e) {
      await fs.rm(tmp, { force: true });
      throw new StateError('state_unwritable', `cannot write ${this.file} (${(e as Error).message}): check free space and permissions`, e);
    }
  }

  /**
   * Loads the identity, creating and persisting new machine and node keys on first use.
   * `onIdentity` sees the keys as soon as they are known, before new ones are written (the agent
   * dials control meanwhile; nothing is registered with them until this resolves).
   */
  async loadOrCreateIdentity(serverUrl?: string, onIdentity?: (identity: Identity, state: StateFile) => void): Promise<{ identity: Identity; state: StateFile; created: boolean }> {
    let s = await this.read();
    let created = false;
    if (!s) {
      s = {
        version: STATE_VERSION,
        machineKey: formatPrivate(generateKeyPair().privateKey),
        nodeKey: formatPrivate(generateKeyPair().privateKey),
        ...(serverUrl === undefined ? {} : { serverUrl }),
      };
      created = true;
    }
    const identity = identityOf(s);
    onIdentity?.(identity, s);
    if (created) await this.write(s);
    return { identity, state: s, created };
  }

  /** Replaces the node key with a fresh one (after control says it expired); returns the new identity. */
  async rotateNodeKey(): Promise<Identity> {
    const s = await this.read();
    if (!s) throw new StateError('state_unreadable', `no state in ${this.dir} to rotate: start the node first`);
    s.nodeKey = formatPrivate(generateKeyPair().privateKey);
    await this.write(s);
    return (await this.loadOrCreateIdentity()).identity;
  }

  /** Merges fields into state.json (keys untouched unless given). */
  async update(patch: Partial<Omit<StateFile, 'version'>>): Promise<StateFile> {
    const s = await this.read();
    if (!s) throw new StateError('state_unreadable', `no state in ${this.dir}: load or create the identity first`);
    const next: StateFile = { ...s, ...patch, version: STATE_VERSION };
    await this.write(next);
    return next;
  }
}
