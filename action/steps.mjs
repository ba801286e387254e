// What the action's steps do, after bootstrap.mjs made sure meshd is built. The main step runs
// `meshd up` with in-memory state (nothing written to disk; the node logs out when the agent ends)
// and waits for the `ping` hosts; the post step logs out (an ephemeral node disappears at once),
// which ends the agent and takes down its TUN, routes, rules and nft table, then removes the files
// the main step made. State passes between the steps through core.saveState (GITHUB_STATE).
import * as core from '@actions/core';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { ROOT } from './bootstrap.mjs';

const MESHD = join(ROOT, 'bin', 'meshd.js');

/** Splits an `args` input like a shell would (quotes, no expansion). */
export function splitArgs(text) {
  const out = [];
  const re = /"((?:[^"\\]|\\.)*)"|'([^']*)'|(\S+)/g;
  let m;
  while ((m = re.exec(text)) !== null) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2] ?? m[3]);
  return out;
}

/** The default hostname: REPO-JOB-RUN_NUMBER from the runner's variables (meshd sanitizes it). */
export function defaultHostname(env = process.env) {
  const repo = (env.GITHUB_REPOSITORY ?? 'ci').split('/').pop();
  return [repo, env.GITHUB_JOB, env.GITHUB_RUN_NUMBER].filter(Boolean).join('-') || 'ci';
}

/** Root is needed for a TUN device; userspace networking runs as the job's user. */
const needsSudo = (userspace) => process.getuid?.() !== 0 && !userspace;

/** Runs meshd (through sudo -n when it needs root); resolves with its status and output lines. */
function meshd(args, { timeoutMs, echo, userspace = false }) {
  const argv = [process.execPath, MESHD, ...args];
  const [cmd, ...rest] = needsSudo(userspace) ? ['sudo', '-n', '--preserve-env=MESHD_DERP_HTTP', ...argv] : argv;
  return new Promise((resolve) => {
    const p = spawn(cmd, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = { out: [], err: [] };
    const take = (which) => {
      let buf = '';
      return (d) => {
        buf += d.toString();
        for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          lines[which].push(line);
          if (echo && !line.startsWith('meshd: ')) core.info(line);
        }
      };
    };
    p.stdout.on('data', take('out'));
    p.stderr.on('data', take('err'));
    const timer = setTimeout(() => p.kill('SIGTERM'), timeoutMs);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ status: code ?? (signal ? 128 : 1), ...lines });
    });
    p.on('error', (e) => { clearTimeout(timer); resolve({ status: 127, out: [], err: [`meshd: cannot run ${cmd}: ${e.message}`] }); });
  });
}

function durationMs(text) {
  const m = /^(\d+)(ms|s|m|h)?$/.exec(text.trim());
  if (!m) return 120_000;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] ?? 's'];
}

/** The main step. */
export async function main() {
  const loginServer = core.getInput('login-server', { required: true });
  const authKey = core.getInput('authkey', { required: true });
  core.setSecret(authKey);
  const userspace = core.getBooleanInput('userspace');
  // Without root (userspace networking) the socket lives under the runner's temp dir.
  const socket = core.getInput('socket') ||
    (needsSudo(false) && userspace ? join(process.env.RUNNER_TEMP || tmpdir(), 'meshd', 'meshd.sock') : '/run/meshd/meshd.sock');
  core.saveState('userspace', userspace ? '1' : '0');
  const timeout = core.getInput('timeout') || '2m';
  const retry = core.getInput('retry') || '0';
  // Before anything runs: the post step cleans up from here on, whatever happens below.
  core.saveState('socket', socket);
  core.saveState('socketDirExisted', existsSync(dirname(socket)) ? '1' : '0');
  // The key goes to meshd in a 0600 file, never on a command line.
  const keyDir = mkdtempSync(join(process.env.RUNNER_TEMP || tmpdir(), 'meshd-key-'));
  core.saveState('keyDir', keyDir);
  const keyFile = join(keyDir, 'authkey');
  writeFileSync(keyFile, authKey, { mode: 0o600 });

  const args = ['--socket', socket, 'up', '--login-server', loginServer, '--authkey', `file:${keyFile}`,
    '--hostname', core.getInput('hostname') || defaultHostname(), '--state', 'mem:', '--timeout', timeout, '--retry', retry];
  const tags = core.getInput('tags');
  if (tags) args.push('--advertise-tags', tags);
  const ping = core.getInput('ping');
  if (ping) args.push('--wait-for', ping);
  if (userspace) args.push('--tun', 'userspace-networking');
  const exitNode = core.getInput('exit-node');
  if (exitNode) args.push('--exit-node', exitNode);
  args.push(...splitArgs(core.getInput('args')));

  const limit = durationMs(timeout) * (Number(retry) + 1) * 2 + 60_000;
  const r = await meshd(args, { timeoutMs: limit, echo: true, userspace });
  rmSync(keyDir, { recursive: true, force: true });
  const notes = r.err.filter((l) => l.startsWith('meshd: ')).map((l) => l.slice('meshd: '.length));
  if (r.status !== 0) {
    core.saveState('failed', '1');
    for (const n of notes.slice(0, -1)) core.error(n);
    core.setFailed(notes.at(-1) ?? `meshd up exited with status ${r.status}`);
    return;
  }
  for (const n of notes) core.info(n);
  const st = await meshd(['--socket', socket, 'status', '--json'], { timeoutMs: 30_000, echo: false, userspace });
  try {
    const s = JSON.parse(st.out.join('\n'));
    core.setOutput('ip4', s.self.addresses.find((a) => !a.includes(':')) ?? '');
    core.setOutput('ip6', s.self.addresses.find((a) => a.includes(':')) ?? '');
    core.setOutput('hostname', s.self.hostname);
    core.info(`meshd: up as ${s.self.hostname} ${s.self.addresses.join(' ')}`);
  } catch {
    core.warning('meshd is up, but its status could not be read');
  }
}

/** The post step: log out, end the agent, remove what the main step made. */
export async function post() {
  const socket = core.getState('socket');
  if (!socket) {
    core.info('meshd: nothing to clean up');
    return;
  }
  const keyDir = core.getState('keyDir');
  if (keyDir) rmSync(keyDir, { recursive: true, force: true });
  // With --state mem: a logout deletes an ephemeral node at once; the agent then exits and takes
  // down its TUN, routes, rules and nft table. (The socket dir is root-only: ask meshd, not the fs.)
  const userspace = core.getState('userspace') === '1';
  const r = await meshd(['--socket', socket, 'logout'], { timeoutMs: 30_000, echo: true, userspace });
  if (r.status === 0) core.info('meshd: logged out; the agent has stopped');
  else if (r.err.some((l) => /no meshd agent answers/.test(l))) core.info('meshd: no agent running');
  else core.warning(`meshd logout: ${r.err.join(' ').replace(/^meshd: /, '')}`);
  const log = join(dirname(socket), 'meshd.log');
  if (core.getState('failed') === '1') {
    const text = asRoot(['tail', '-n', '200', log], userspace);
    if (text) {
      core.startGroup('meshd agent log');
      core.info(text);
      core.endGroup();
    }
  }
  asRoot(['rm', '-f', log], userspace);
  // The socket dir, when the main step's agent made it and nothing else is in it.
  if (core.getState('socketDirExisted') === '0') asRoot(['rmdir', '--ignore-fail-on-non-empty', dirname(socket)], userspace);
}

/** Runs a small command as root when meshd ran as root (directly, or sudo -n); returns stdout. */
function asRoot(argv, userspace) {
  const [cmd, ...rest] = needsSudo(userspace) ? ['sudo', '-n', ...argv] : argv;
  const r = spawnSync(cmd, rest, { encoding: 'utf8', timeout: 30_000 });
  return r.status === 0 ? r.stdout : '';
}
