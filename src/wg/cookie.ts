// mac1, mac2 and cookies: WireGuard's DoS mitigation (whitepaper 5.3 and 5.4.7, wireguard-go
// device/cookie.go).
//
//   mac1 = MAC(HASH("mac1----" || receiver's static public), msg[0 .. mac1))   always checked
//   mac2 = MAC(cookie, msg[0 .. mac2))                                          checked under load
//   cookie = MAC(secret, source address bytes), secret = 32 random bytes renewed every 120 s
//   cookie reply = XAEAD(HASH("cookie--" || responder's static public), random 24-byte nonce,
//                        cookie, AAD = mac1 of the message being answered)
//
// The responder side is CookieChecker (one per device), the initiator side CookieGenerator (one per peer).
import type { CryptoBackend } from '../crypto/types.ts';
import { COOKIE_REPLY_SIZE, parseCookieReply, writeCookieReply } from './messages.ts';

/** Label for the mac1 key (whitepaper 5.4). */
export const LABEL_MAC1 = new TextEncoder().encode('mac1----');
/** Label for the cookie encryption key (whitepaper 5.4). */
export const LABEL_COOKIE = new TextEncoder().encode('cookie--');
/** Cookie secret lifetime and how long a received cookie may be used (whitepaper 6.1). */
export const COOKIE_REFRESH_TIME_MS = 120_000;

const MAC_SIZE = 16;

/** Constant-time equality of two byte arrays of the same length. */
export function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i]! ^ b[i]!;
  return d === 0;
}

/** Responder side: verifies mac1/mac2 of messages sent to us and makes cookie replies. */
export class CookieChecker {
  private readonly crypto: CryptoBackend;
  private readonly random: (n: number) => Uint8Array;
  private mac1Key: Uint8Array | null = null;
  private encKey: Uint8Array | null = null;
  private secret: Uint8Array = new Uint8Array(32);
  private secretSetAt = -Infinity;

  constructor(crypto: CryptoBackend, random: (n: number) => Uint8Array) {
    this.crypto = crypto;
    this.random = random;
  }

  /** Keys the checker to our static public key (null: no key, every mac1 fails). */
  init(ourPublic: Uint8Array | null): void {
    if (ourPublic === null) {
      this.mac1Key = this.encKey = null;
      return;
    }
    this.mac1Key = this.crypto.blake2s.hash(LABEL_MAC1, ourPublic);
    this.encKey = this.crypto.blake2s.hash(LABEL_COOKIE, ourPublic);
  }

  /** True when the message's mac1 is right for our key. */
  checkMac1(msg: Uint8Array): boolean {
    if (this.mac1Key === null) return false;
    const at = msg.length - 2 * MAC_SIZE;
    const want = this.crypto.blake2s.mac(this.mac1Key, msg.subarray(0, at));
    return equalBytes(want, msg.subarray(at, at + MAC_SIZE));
  }

  /** True when the message's mac2 is right for the cookie of `src` (endpoint address bytes). */
  checkMac2(msg: Uint8Array, src: Uint8Array, now: number): boolean {
    if (now - this.secretSetAt > COOKIE_REFRESH_TIME_MS) return false;
    const cookie = this.crypto.blake2s.mac(this.secret, src);
    const at = msg.length - MAC_SIZE;
    const want = this.crypto.blake2s.mac(cookie, msg.subarray(0, at));
    return equalBytes(want, msg.subarray(at));
  }

  /** A cookie reply (type 3) answering `msg` (whose sender index is `receiver`) from `src`. */
  createReply(msg: Uint8Array, receiver: number, src: Uint8Array, now: number): Uint8Array {
    if (this.encKey === null) throw new Error('cookie: no static key');
    if (now - this.secretSetAt > COOKIE_REFRESH_TIME_MS) {
      this.secret = this.random(32);
      this.secretSetAt = now;
    }
    const cookie = this.crypto.blake2s.mac(this.secret, src);
    const mac1 = msg.subarray(msg.length - 2 * MAC_SIZE, msg.length - MAC_SIZE);
    const nonce = this.random(24);
    const encCookie = this.crypto.xaead.seal(this.encKey, nonce, cookie, mac1);
    return writeCookieReply({ receiver, nonce, encCookie });
  }
}

/** Initiator side, per peer: adds mac1/mac2 to our handshake messages and takes cookie replies. */
export class CookieGenerator {
  private readonly crypto: CryptoBackend;
  private readonly peerPublic: Uint8Array;
  /** HASH(LABEL_MAC1 || peer public) and HASH(LABEL_COOKIE || peer public), computed at first use. */
  private mac1KeyMemo: Uint8Array | undefined;
  private encKeyMemo: Uint8Array | undefined;
  private cookie: Uint8Array = new Uint8Array(MAC_SIZE);
  private cookieSetAt = -Infinity;
  private lastMac1: Uint8Array = new Uint8Array(MAC_SIZE);
  private hasLastMac1 = false;

  constructor(crypto: CryptoBackend, peerPublic: Uint8Array) {
    this.crypto = crypto;
    this.peerPublic = peerPublic;
  }

  private get mac1Key(): Uint8Array {
    return (this.mac1KeyMemo ??= this.crypto.blake2s.hash(LABEL_MAC1, this.peerPublic));
  }

  private get encKey(): Uint8Array {
    return (this.encKeyMemo ??= this.crypto.blake2s.hash(LABEL_COOKIE, this.peerPublic));
  }

  /** Writes mac1 (and mac2 if we hold a fresh cookie) into the last 32 bytes of `msg`. */
  addMacs(msg: Uint8Array, now: number): void {
    const at1 = msg.length - 2 * MAC_SIZE;
    const at2 = msg.length - MAC_SIZE;
    const mac1 = this.crypto.blake2s.mac(this.mac1Key, msg.subarray(0, at1));
    msg.set(mac1, at1);
    this.lastMac1 = mac1;
    this.hasLastMac1 = true;
    if (now - this.cookieSetAt > COOKIE_REFRESH_TIME_MS) {
      msg.fill(0, at2);
      return;
    }
    msg.set(this.crypto.blake2s.mac(this.cookie, msg.subarray(0, at2)), at2);
  }

  /** Takes a cookie reply for the last message we sent; false when it does not decrypt. */
  consumeReply(msg: Uint8Array, now: number): boolean {
    if (!this.hasLastMac1 || msg.length !== COOKIE_REPLY_SIZE) return false;
    const r = parseCookieReply(msg);
    const cookie = this.crypto.xaead.open(this.encKey, r.nonce, r.encCookie, this.lastMac1);
    if (cookie === null) return false;
    this.cookie = cookie;
    this.cookieSetAt = now;
    this.hasLastMac1 = false;
    return true;
  }

  /** True while a received cookie is fresh enough to be used for mac2. */
  hasCookie(now: number): boolean {
    return now - this.cookieSetAt <= COOKIE_REFRESH_TIME_MS;
  }

  /** Forgets the cookie and the last mac1. */
  clear(): void {
    this.cookie.fill(0);
    this.cookieSetAt = -Infinity;
    this.hasLastMac1 = false;
  }
}
