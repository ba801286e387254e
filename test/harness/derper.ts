// Runs a real, unmodified tailscale `derper` on loopback only: plain HTTP on 127.0.0.1 (no TLS, no
// certificate fetching, no port 80 listener), STUN on 127.0.0.1, no mesh, no client verification.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
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

/** One derper on loopback; start() and stop() may be repeated (same ports, same key file). */
export class Derper {
  readonly dir = mkdtempSync(join(tmpdir(), 'meshd-derper-'));
  readonly bin: string;
  httpPort = 0;
  stunPort = 0;
  log = '';
  private proc: ChildProcess | undefined;

  constructor() {
    const bin = which('derper');
    if (!bin) throw new Error('derper not found (scripts/install-peers.sh derper)');
    this.bin = bin;
  }

  /** The DERP URL (plain HTTP on loopback). */
  get url(): string {
    return `http://127.0.0.1:${this.httpPort}/derp`;
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
    } catch (e) {
      await this.stop();
      throw e;
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
