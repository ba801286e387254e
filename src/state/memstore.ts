// `--state mem:`: the agent's identity lives only in memory, as tailscaled's --state=mem:. Nothing
// is written to disk; the node is logged out when the agent ends (the keys die with the process).
import { formatPrivate, generateKeyPair, type PrivateKey } from '../control/keys.ts';
import { identityOf, STATE_VERSION, type Identity, type StateFile, type StateStore } from './store.ts';

/** The spelling of the in-memory state, as tailscaled's `--state=mem:`. */
export const MEM_STATE = 'mem:';

/** What the agent needs from a state store (StateStore on disk, MemoryStore in memory). */
export type Store = Pick<StateStore, 'dir' | 'read' | 'update' | 'loadOrCreateIdentity' | 'rotateNodeKey'>;

/** A state store that never touches the disk. */
export class MemoryStore implements Store {
  /** Shown where a directory would be. */
  readonly dir = MEM_STATE;
  private state: StateFile | undefined;

  /** A store holding `state` (the identity the CLI that started this agent made: Agent.acceptLogin). */
  static from(state: StateFile): MemoryStore {
    const m = new MemoryStore();
    m.state = { ...state };
    return m;
  }

  /** The state, undefined before the first identity. */
  async read(): Promise<StateFile | undefined> {
    return this.state ? { ...this.state } : undefined;
  }

  /** Creates machine and node keys on first use. */
  async loadOrCreateIdentity(serverUrl?: string, onIdentity?: (identity: Identity, state: StateFile) => void): Promise<{ identity: Identity; state: StateFile; created: boolean }> {
    let created = false;
    if (!this.state) {
      this.state = {
        version: STATE_VERSION,
        machineKey: formatPrivate(generateKeyPair().privateKey as PrivateKey),
        nodeKey: formatPrivate(generateKeyPair().privateKey as PrivateKey),
        ...(serverUrl === undefined ? {} : { serverUrl }),
      };
      created = true;
    }
    const identity = identityOf(this.state);
    onIdentity?.(identity, { ...this.state });
    return { identity, state: { ...this.state }, created };
  }

  /** A fresh node key. */
  async rotateNodeKey(): Promise<Identity> {
    const s = (await this.loadOrCreateIdentity()).state;
    this.state = { ...s, nodeKey: formatPrivate(generateKeyPair().privateKey as PrivateKey) };
    return identityOf(this.state);
  }

  /** Merges fields into the state. */
  async update(patch: Partial<Omit<StateFile, 'version'>>): Promise<StateFile> {
    const s = (await this.loadOrCreateIdentity()).state;
    this.state = { ...s, ...patch, version: STATE_VERSION };
    return { ...this.state };
  }
}
