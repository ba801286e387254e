// `meshd wg IFNAME`: a plain WireGuard interface configured by the standard `wg` tool, like
// wireguard-go. Without -f it starts itself in the background and returns once the interface is
// ready (or prints the child's one-line error and exits 1).
import { spawn } from 'node:child_process';
import { openSync, closeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { WgInterface } from '../daemon/wg-interface.ts';
import { stderrLogger } from '../util/log.ts';
import { CliError } from './errors.ts';
import { UAPI_DIR, uapiRequest } from '../uapi/server.ts';

/** Reads counters from a running `meshd wg` interface over its configuration socket. */
export async function interfaceCounters(ifname: string): Promise<Record<string, number>> {
  if (!IFNAME_RE.test(ifname)) throw new CliError(`bad interface name ${JSON.stringify(ifname)}`);
  let reply: Map<string, string[]>;
  try {
    reply = await uapiRequest(`${UAPI_DIR}/${ifname}.sock`, 'meshd-counters=1\n\n');
  } catch (e) {
    throw new CliError((e as Error).message);
  }
  const out: Record<string, number> = {};
  for (const [k, v] of reply) if (k !== 'errno') out[k] = Number(v[0]);
  return out;
}

/** Options of `meshd wg`. */
export interface WgCommandOptions {
  foreground?: boolean;
  mtu?: string;
  log?: string;
}

const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

/** Runs `meshd wg`. Resolves when the foreground interface stops, or when the background one is ready. */
export async function wgCommand(ifname: string, opts: WgCommandOptions): Promise<void> {
  if (!IFNAME_RE.test(ifname)) throw new CliError(`bad interface name ${JSON.stringify(ifname)}: use 1-15 letters, digits, '_', '-' or '.'`);
  const mtu = opts.mtu === undefined ? 1420 : Number(opts.mtu);
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > 9000) throw new CliError(`bad --mtu ${opts.mtu}: want a whole number from 576 to 9000`);
  if (process.getuid?.() !== 0) throw new CliError('meshd wg needs root (it creates a TUN device): run it with sudo');
  if (!opts.foreground) return background(ifname, opts);

  const log = stderrLogger(`meshd(${ifname})`);
  const wg = await WgInterface.create({ name: ifname, mtu, log });
  log(`interface ${ifname} up (mtu ${mtu}); configure it with: wg setconf ${ifname} FILE`);
  if (process.send) process.send('ready');
  await new Promise<void>((resolve) => {
    const stop = (sig: string) => { log(`${sig}: shutting down`); resolve(); };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGHUP', () => stop('SIGHUP'));
  });
  await wg.close();
}

async function background(ifname: string, opts: WgCommandOptions): Promise<void> {
  const bin = fileURLToPath(new URL('../../../bin/meshd.js', import.meta.url));
  const args = [bin, 'wg', ifname, '-f', ...(opts.mtu ? ['--mtu', opts.mtu] : [])];
  const logFd = opts.log ? openSync(opts.log, 'a', 0o600) : 'ignore';
  const child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', logFd, 'pipe', 'ipc'] });
  let err = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => { err += d; });
  const outcome = await new Promise<'ready' | number>((resolve) => {
    child.once('message', (m) => { if (m === 'ready') resolve('ready'); });
    child.once('exit', (code) => resolve(code ?? 1));
  });
  if (typeof logFd === 'number') closeSync(logFd);
  if (outcome !== 'ready') {
    const line = err.trim().split('\n').pop() ?? '';
    throw new CliError(line.replace(/^.*?meshd: /, '') || `meshd wg ${ifname} exited with status ${outcome}`);
  }
  child.stderr?.destroy();
  child.disconnect();
  child.unref();
}
