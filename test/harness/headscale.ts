// A real headscale v0.29.2 on loopback for tests: generated config in a temp dir (sqlite, noise key,
// embedded DERP with STUN on a loopback port, no internet DERP map), CLI helpers, and cleanup that
// runs on stop() and on process exit. Nothing listens beyond 127.0.0.1.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { which } from './prereq.ts';

const live = new Set<Headscale>();
process.on('exit', () => {
  for (const h of live) h.stopSync();
});
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    for (const h of live) h.stopSync();
    process.exit(130);
  });
}

/** A free TCP port on 127.0.0.1 (closed again before returning). */
export function freeTcpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** A free UDP port on 127.0.0.1. */
export function freeUdpPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    s.once('error', reject);
    s.bind(0, '127.0.0.1', () => {
      const port = s.address().port;
      s.close(() => resolve(port));
    });
  });
}

/** A running headscale with its temp dir. */
export class Headscale {
  readonly dir: string;
  readonly config: string;
  readonly url: string;
  readonly bin: string;
  private proc: ChildProcess | undefined;
  private logText = '';

  /** The self-signed certificate (also its own CA) when started with tls. */
  readonly caFile: string;

  private constructor(bin: string, dir: string, port: number, tls: boolean) {
    this.bin = bin;
    this.dir = dir;
    this.config = join(dir, 'config.yaml');
    this.url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
    this.caFile = join(dir, 'tls.crt');
  }

  /** Writes a config and starts `headscale serve`; resolves when /health answers. */
  static async start(opts: { ephemeralTimeout?: string; tls?: boolean } = {}): Promise<Headscale> {
    const bin = which('headscale');
    if (!bin) throw new Error('headscale is not installed (scripts/install-peers.sh headscale)');
    const dir = mkdtempSync(join(tmpdir(), 'meshd-hs-'));
    const port = await freeTcpPort();
    const grpc = await freeTcpPort();
    const stun = await freeUdpPort();
    const hs = new Headscale(bin, dir, port, opts.tls ?? false);
    live.add(hs);
    const tlsLines: string[] = [];
    if (opts.tls) {
      // A self-signed certificate for 127.0.0.1; tests trust it through caFile.
      const r = spawnSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', join(dir, 'tls.key'), '-out', hs.caFile, '-days', '1', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1'], { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
      if (r.status !== 0) {
        await hs.stop();
        throw new Error(`openssl failed: ${r.stderr}`);
      }
      tlsLines.push(`tls_cert_path: ${hs.caFile}`, `tls_key_path: ${join(dir, 'tls.key')}`);
    }
    writeFileSync(hs.config, [
      `server_url: ${hs.url}`,
      ...tlsLines,
      `listen_addr: 127.0.0.1:${port}`,
      'metrics_listen_addr: ""',
      `grpc_listen_addr: 127.0.0.1:${grpc}`,
      'grpc_allow_insecure: false',
      `unix_socket: ${join(dir, 'headscale.sock')}`,
      'unix_socket_permission: "0770"',
      'disable_check_updates: true',
      'noise:',
      `  private_key_path: ${join(dir, 'noise_private.key')}`,
      'prefixes:',
      '  v4: 100.64.0.0/10',
      '  v6: fd7a:115c:a1e0::/48',
      '  allocation: sequential',
      'derp:',
      '  server:',
      '    enabled: true',
      '    region_id: 999',
      '    region_code: headscale',
      '    region_name: Headscale Embedded DERP',
      '    verify_clients: true',
      `    stun_listen_addr: 127.0.0.1:${stun}`,
      `    private_key_path: ${join(dir, 'derp_server_private.key')}`,
      '    automatically_add_embedded_derp_region: true',
      '  urls: []',
      '  paths: []',
      '  auto_update_enabled: false',
      'database:',
      '  type: sqlite',
      '  sqlite:',
      `    path: ${join(dir, 'db.sqlite')}`,
      '    write_ahead_log: true',
      'log:',
      '  level: info',
      'policy:',
      '  mode: file',
      '  path: ""',
      'dns:',
      '  magic_dns: true',
      '  base_domain: meshd.test',
      '  override_local_dns: false',
      '  nameservers:',
      '    global: []',
      'node:',
      '  expiry: 0',
      '  ephemeral:',
      `    inactivity_timeout: ${opts.ephemeralTimeout ?? '120s'}`,
      '',
    ].join('\n'));
    try {
      await hs.spawnServe();
    } catch (e) {
      await hs.stop();
      throw e;
    }
    return hs;
  }

  private async spawnServe(): Promise<void> {
    const p = spawn(this.bin, ['-c', this.config, 'serve'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = p;
    const keep = (c: Buffer): void => { this.logText = (this.logText + c.toString('utf8')).slice(-64 * 1024); };
    p.stdout?.on('data', keep);
    p.stderr?.on('data', keep);
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (p.exitCode !== null) throw new Error(`headscale exited with ${p.exitCode} at startup:\n${this.logText}`);
      try {
        if (await this.healthy()) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error(`headscale did not answer /health within 30 s:\n${this.logText}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private healthy(): Promise<boolean> {
    return new Promise((resolve) => {
      const u = new URL('/health', this.url);
      const opts = { timeout: 1000, ...(u.protocol === 'https:' ? { ca: readFileSync(this.caFile) } : {}) };
      const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, opts, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
      req.end();
    });
  }

  private async kill(): Promise<void> {
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      const exited = new Promise<void>((r) => p.once('exit', () => r()));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    this.proc = undefined;
  }

  /** Stops and starts headscale again with the same config, database and port. */
  async restart(downMs = 0): Promise<void> {
    await this.kill();
    if (downMs > 0) await new Promise((r) => setTimeout(r, downMs));
    await this.spawnServe();
  }

  /** The last 64 KiB of headscale's output. */
  get log(): string {
    return this.logText;
  }

  /** Runs a headscale CLI command against this server and returns stdout. */
  cli(args: string[]): string {
    // SIGKILL on timeout: spawnSync blocks the whole event loop (test timeouts, signal handlers)
    // until the child is gone, so a CLI that ignored SIGTERM would hang the test process for good.
    const r = spawnSync(this.bin, ['-c', this.config, ...args], { encoding: 'utf8', timeout: 20_000, killSignal: 'SIGKILL' });
    if (r.error) throw r.error;
    if (r.status !== 0) throw new Error(`headscale ${args.join(' ')} exited ${r.status}: ${r.stderr.trim()} ${r.stdout.trim()}`);
    return r.stdout;
  }

  /** Runs a CLI command with `-o json` and parses the result. */
  cliJson<T>(args: string[]): T {
    return JSON.parse(this.cli([...args, '-o', 'json'])) as T;
  }

  /** Creates a user; returns its numeric ID. */
  createUser(name: string): number {
    this.cli(['users', 'create', name]);
    const users = this.cliJson<Array<{ id: number | string; name: string }>>(['users', 'list']);
    const u = users.find((x) => x.name === name);
    if (!u) throw new Error(`user ${name} not found after creating it`);
    return Number(u.id);
  }

  /** Creates a pre-auth key for a user ID; returns the key text. */
  createPreAuthKey(userId: number, opts: { reusable?: boolean; ephemeral?: boolean; expiration?: string } = {}): string {
    const args = ['preauthkeys', 'create', '--user', String(userId), '--expiration', opts.expiration ?? '1h'];
    if (opts.reusable) args.push('--reusable');
    if (opts.ephemeral) args.push('--ephemeral');
    const out = this.cliJson<{ key: string }>(args);
    return out.key;
  }

  /** `nodes list -o json`. */
  nodes(): Array<Record<string, unknown>> {
    return this.cliJson<Array<Record<string, unknown>> | null>(['nodes', 'list']) ?? [];
  }

  /** Stops headscale (SIGTERM, then SIGKILL after 5 s) and removes the temp dir. */
  async stop(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
    live.delete(this);
  }

  /** Synchronous last-resort cleanup for process exit. */
  stopSync(): void {
    const p = this.proc;
    if (p && p.exitCode === null) p.kill('SIGKILL');
    rmSync(this.dir, { recursive: true, force: true });
  }
}
