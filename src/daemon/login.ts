// The login step of `up`, shared by the agent (Agent.doUp) and by the CLI that registers for the
// fresh agent it starts (src/cli/earlylogin.ts): the Hostinfo of the register request, the register
// itself, the interactive-login loop and the checks of control's answer. One copy, so a node
// registered by either process sends the same request and fails with the same one-line errors.
import type { ControlClient, RegisterResult } from '../control/client.ts';
import type { Hostinfo } from '../control/wire.ts';
import { DEFAULT_PREFS, mergePrefs, routableIPs, type RoutePrefs } from '../router/plan.ts';
import { AgentError, AUTH_URL_PROGRESS } from './upcheck.ts';
import { timeline } from '../util/timeline.ts';

/** The stored fields of state.json an `up` builds its register request from. */
export interface StoredPrefs {
  hostname?: string | undefined;
  routing?: RoutePrefs | undefined;
}

/**
 * The routing prefs a fresh agent's `up` ends with: the flags given now laid over the stored
 * ones (Agent.doUp with a new Routing does the same with Routing.setPrefs). Throws AgentError
 * bad_route for a conflict or a bad route.
 */
export function upPrefs(req: Partial<RoutePrefs>, stored: RoutePrefs | undefined): RoutePrefs {
  try {
    const given = mergePrefs(DEFAULT_PREFS, req);
    return stored ? mergePrefs(mergePrefs(given, stored), req) : given;
  } catch (e) {
    throw new AgentError('bad_route', (e as Error).message);
  }
}

/**
 * The Hostinfo fields `up` registers (and streams the map) with. Tags: a pre-auth key carries its
 * own (headscale refuses RequestTags with one, and takes the key's tags; the agent checks them in
 * the map); without a key, control decides on RequestTags by the policy's tagOwners.
 */
export function upHostinfo(hostname: string | undefined, prefs: RoutePrefs, tags: readonly string[], withAuthKey: boolean): Hostinfo {
  return {
    ...(hostname ? { Hostname: hostname } : {}), RoutableIPs: routableIPs(prefs),
    ...(tags.length && !withAuthKey ? { RequestTags: [...tags] } : {}),
  };
}

/** Options for {@link login}. */
export interface LoginOptions {
  /** Pre-auth key of the `up`, if any (never logged). */
  authKey?: string | undefined;
  hostinfo: Hostinfo;
  /** Date.now() by which it must be done (the `up`'s --timeout). */
  deadline: number;
  /** `up`'s progress lines (the auth URL line starts with AUTH_URL_PROGRESS). */
  progress: (msg: string) => void;
  log: (line: string) => void;
  /** Called once the first register request is on its way. */
  onSent?: () => void;
}

/**
 * Registers the client's node key and waits for control to authorize it: with an auth key in one
 * request; without one, a node control does not know gets an auth URL, shown through `progress`,
 * and the follow-up request waits until someone approves it (headscale hands out a fresh URL
 * when the old one lapsed). Throws ControlError (from the client) or AgentError: needs_login,
 * not_authorized, timeout.
 */
export async function login(client: ControlClient, o: LoginOptions): Promise<RegisterResult> {
  const remaining = (): number => Math.max(1, o.deadline - Date.now());
  const onSent = (): void => { timeline('register request sent'); o.onSent?.(); };
  let reg = await withDeadline(client.register({ ...(o.authKey ? { authKey: o.authKey } : {}), hostinfo: o.hostinfo, onSent }),
    remaining(), 'logging in');
  for (let i = 0; !o.authKey && !reg.machineAuthorized && reg.authUrl && i < 10; i++) {
    o.progress(`${AUTH_URL_PROGRESS}${reg.authUrl}`);
    o.log(`waiting for an interactive login at ${reg.authUrl}`);
    reg = await withDeadline(client.register({ hostinfo: o.hostinfo, followup: reg.authUrl }), remaining(),
      `waiting for the login at ${reg.authUrl} (approve it on the server: headscale auth register --auth-id ID --user USER)`);
  }
  if (reg.nodeKeyExpired && !o.authKey) {
    throw new AgentError('needs_login', 'this node is logged out or its key expired: run meshd up again with --authkey');
  }
  if (!reg.machineAuthorized) {
    throw new AgentError('not_authorized', reg.authUrl
      ? `control wants an interactive login at ${reg.authUrl}: meshd needs a pre-auth key, pass --authkey`
      : 'control did not authorize this node: check the auth key, or approve the node on the server');
  }
  timeline('registered');
  return reg;
}

/** p, or AgentError timeout (retryable) naming `what` once `ms` have passed. */
export async function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AgentError('timeout', `timed out ${what} after the --timeout ran out: check that the login server is reachable, or raise --timeout`, true)), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}
