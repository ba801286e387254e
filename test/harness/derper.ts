// Runs a real, unmodified tailscale `derper` on loopback only: plain HTTP on 127.0.0.1 (no TLS, no
// certificate fetching, no port 80 listener), STUN on 127.0.0.1, no mesh, no client verification.
import { spawn, type ChildProcess } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { which } from './prereq.ts';

/** A free TCP port on 127.0.0.1 (racy by nature; fine for tests). */
export async function freeTcpPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const a = srv.address();
  await new Promise<void>((r) => srv.close(() => r()));
  if (a === null || typeof a === 'string') throw new Error('no address');
  return a.port;
}

/** A free UDP port on 127.0.0.1. */
export async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', r));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * One derper on loopback; start() and stop() may be repeated (same ports, same key file). With
 * tls: true it serves HTTPS with the self-signed certificate for 127.0.0.1 that derper makes itself
 * in -certmode manual (no ACME, nothing leaves the host).
 */
export class Derper {
  readonly dir = mkdtempSync(join(tmpdir(), 'meshd-derper-'));
  readonly bin: string;
  httpPort = 0;
  stunPort = 0;
  log = '';
  readonly tls: boolean;
  private proc: ChildProcess | undefined;

  constructor(opts: { tls?: boolean } = {}) {
    this.tls = opts.tls ?? false;
    const bin = which('derper');
    if (!bin) throw new Error('derper not found (scripts/install-peers.sh derper)');
    this.bin = bin;
  }

  /** The DERP URL (plain HTTP on loopback). */
  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.httpPort}/derp`;
  }

  /** The PEM certificate derper serves in TLS mode (written by derper on first start). */
  get certFile(): string {
    return join(this.dir, '127.0.0.1.crt');
  }

  /** Its key file; delete it to make the next start() use a new server key. */
  get keyFile(): string {
    return join(this.dir, 'derper.key');
  }

  /** Starts derper and waits until it serves. */
  async start(): Promise<void> {
    if (this.proc) throw new Error('derper already running');
    if (this.httpPort === 0) { this.httpPort = await freeTcpPort(); this.stunPort = await freeUdpPort(); }
    const args = ['-a', `127.0.0.1:${this.httpPort}`, '-http-port', '-1', '-stun-port', String(this.stunPort), '-c', this.keyFile, '-home', 'blank'];
    if (this.tls) args.push('-certmode', 'manual', '-hostname', '127.0.0.1', '-certdir', this.dir);
    const p = spawn(this.bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = p;
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`derper did not start within 15 s:\n${this.log}`)), 15_000);
      const onOut = (b: Buffer) => {
        this.log += b.toString();
        if (this.log.includes(`serving on 127.0.0.1:${this.httpPort}`)) { clearTimeout(timer); resolve(); }
      };
      p.stdout!.on('data', onOut);
      p.stderr!.on('data', onOut);
      p.once('exit', (code) => { clearTimeout(timer); reject(new Error(`derper exited with ${code}:\n${this.log}`)); });
    });
    try {
      await ready;
      await this.waitListening();
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  /** Polls until the DERP port accepts TCP (derper logs "serving on" just before it listens). */
  private async waitListening(): Promise<void> {
    const end = Date.now() + 10_000;
    for (;;) {
      const ok = await new Promise<boolean>((resolve) => {
        const s = connect(this.httpPort, '127.0.0.1');
        s.once('connect', () => { s.destroy(); resolve(true); });
        s.once('error', () => resolve(false));
      });
      if (ok) return;
      if (Date.now() > end) throw new Error(`derper not accepting on 127.0.0.1:${this.httpPort}:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Stops derper (SIGTERM, then SIGKILL after 5 s) and waits for it to exit. */
  async stop(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const exited = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }

  /** Stops derper and removes its directory. */
  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
