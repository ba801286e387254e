// An in-process fake DERP server for client tests: speaks the real handshake through our codec and
// lets a test script each connection, including the hostile parts (bogus frames, bad boxes, junk).
import { createServer, type Server, type Socket } from 'node:net';
import { boxBefore, generateKeyPair } from '../../src/crypto/box.ts';
import {
  encodeServerInfo, encodeServerKey, FrameReader, FrameType, parseClientInfo, type ClientInfo, type Frame, type ServerInfo,
} from '../../src/derp/frames.ts';

/** One accepted connection, seen from the server side. */
export class FakeConn {
  readonly socket: Socket;
  readonly reader = new FrameReader(16 << 20);
  head = '';
  clientKey: Uint8Array | undefined;
  info: ClientInfo | undefined;
  private waiters: (() => void)[] = [];
  private closed = false;

  constructor(socket: Socket) {
    this.socket = socket;
    socket.on('data', (c: Buffer) => { this.reader.push(c); this.wake(); });
    socket.on('close', () => { this.closed = true; this.wake(); });
    socket.on('error', () => {});
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private async until<T>(get: () => T | undefined): Promise<T> {
    for (;;) {
      const v = get();
      if (v !== undefined) return v;
      if (this.closed) throw new Error('fake derp: connection closed');
      await new Promise<void>((r) => this.waiters.push(r));
    }
  }

  /** The HTTP request head. */
  async readHead(): Promise<string> {
    const end = await this.until(() => { const e = this.reader.findHeadEnd(1 << 16); return e >= 0 ? e : undefined; });
    this.head = new TextDecoder().decode(this.reader.take(end));
    return this.head;
  }

  /** The next frame from the client. */
  async nextFrame(): Promise<Frame> {
    return this.until(() => { const f = this.reader.next(); if (f && 'error' in f) throw new Error(f.error); return f; });
  }

  /** Whether the request asked for fast start. */
  get fastStart(): boolean {
    return /\r\nDerp-Fast-Start: 1\r\n/i.test(this.head);
  }

  write(b: Uint8Array | string): void {
    this.socket.write(b);
  }

  /** Waits until the client closes the connection. */
  async waitClosed(): Promise<void> {
    await this.until(() => (this.closed ? true : undefined));
  }
}

/** A fake DERP server on 127.0.0.1 with a fresh key; `script` runs once per accepted connection. */
export class FakeDerp {
  readonly key = generateKeyPair();
  readonly conns: FakeConn[] = [];
  private server: Server;
  port = 0;
  script: (c: FakeConn, index: number) => Promise<void> = async (c) => { await this.handshake(c); };
  /** Errors thrown by scripts (a script failing is a test failure). */
  errors: Error[] = [];

  constructor() {
    this.server = createServer((s) => {
      const c = new FakeConn(s);
      const i = this.conns.push(c) - 1;
      this.script(c, i).catch((e: Error) => { if (!/connection closed/.test(e.message)) this.errors.push(e); });
    });
  }

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    const a = this.server.address();
    if (a === null || typeof a === 'string') throw new Error('no address');
    this.port = a.port;
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}/derp`;
  }

  /** The real server's side of the handshake: 101 (unless fast start), ServerKey, read ClientInfo, ServerInfo. */
  async handshake(c: FakeConn, info: Partial<ServerInfo> = {}): Promise<void> {
    await c.readHead();
    if (!c.fastStart) c.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\n\r\n');
    c.write(encodeServerKey(this.key.publicKey));
    const f = await c.nextFrame();
    if (f.type !== FrameType.clientInfo) throw new Error(`fake derp: want ClientInfo, got ${f.type}`);
    const ci = parseClientInfo(f.payload, (pub) => boxBefore(pub, this.key.privateKey));
    if (typeof ci === 'string') {
      // What derper does with a ClientInfo it cannot open: drop the connection.
      c.socket.destroy();
      throw new Error(`fake derp: connection closed: ${ci}`);
    }
    c.clientKey = ci.clientKey;
    c.info = ci.info;
    c.write(encodeServerInfo(boxBefore(ci.clientKey, this.key.privateKey), info));
  }

  async close(): Promise<void> {
    for (const c of this.conns) c.socket.destroy();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}
