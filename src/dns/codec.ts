// The DNS message codec: dns-packet (npm), a well-kept encoder/decoder of whole messages and single
// names, with a typed view of the parts its @types package leaves out (the name codec). Chosen over
// a hand-written codec per the house rule; scripts/bench-dns.mjs measures whether it is the
// bottleneck of quad-100 (README, MagicDNS).
import type * as Packet from 'dns-packet';
import type { Buffer } from 'node:buffer';
import { createRequire } from 'node:module';

// Loaded through require: the same CommonJS module imported as ESM costs the process ~8 MiB more
// resident memory (measured on Node 20.20: 49 against 41 MiB for a process that loads only it).
const packetDefault: unknown = createRequire(import.meta.url)('dns-packet');

/** dns-packet's name codec (labels as UTF-8 text, pointers only backwards, at most 254 characters). */
interface NameCodec {
  decode: ((buf: Buffer, offset: number) => string) & { bytes: number };
  encodingLength(name: string): number;
}

/** dns-packet with its name codec typed. */
export const packet = packetDefault as typeof Packet & { name: NameCodec };
export type { Packet };
