// The DNS message codec: dns-packet (npm), a well-kept encoder/decoder of whole messages and single
// names, with a typed view of the parts its @types package leaves out (the name codec). Chosen over
// a hand-written codec per the house rule; scripts/bench-dns.mjs measures whether it is the
// bottleneck of quad-100 (README, MagicDNS).
import packetDefault from 'dns-packet';
import type * as Packet from 'dns-packet';
import type { Buffer } from 'node:buffer';

/** dns-packet's name codec (labels as UTF-8 text, pointers only backwards, at most 254 characters). */
interface NameCodec {
  decode: ((buf: Buffer, offset: number) => string) & { bytes: number };
  encodingLength(name: string): number;
}

/** dns-packet with its name codec typed. */
export const packet = packetDefault as typeof Packet & { name: NameCodec };
export type { Packet };
