// Byte-level mutation of a seed corpus, as libFuzzer's MutationDispatcher does without coverage
// feedback (libFuzzer FuzzerMutate.cpp: EraseBytes, InsertByte, InsertRepeatedBytes, ChangeByte,
// ChangeBit, ShuffleBytes, ChangeASCIIInteger, ChangeBinaryInteger, CopyPart, CrossOver,
// dictionary insert/overwrite). scripts/fuzz.mjs feeds each target mostly mutated valid seeds
// (cheap, and they reach past the first length check) and some fresh fast-check inputs.
// Deterministic: the same seed gives the same inputs, so a crash reproduces from (seed, index).

/** A small fast PRNG (xorshift128); enough for mutation choices. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number) {
    // splitmix32 to spread a small seed over the state.
    let s = seed >>> 0;
    const next = (): number => {
      s = (s + 0x9e3779b9) >>> 0;
      let z = s;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.a = next() | 1; this.b = next(); this.c = next(); this.d = next();
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    let t = this.d;
    const s = this.a;
    this.d = this.c; this.c = this.b; this.b = s;
    t ^= t << 11; t ^= t >>> 8;
    this.a = (t ^ s ^ (s >>> 19)) >>> 0;
    return this.a;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return n <= 1 ? 0 : this.u32() % n;
  }

  /** True with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x100000000 < p;
  }
}

const INTERESTING8 = [0, 1, 0x7f, 0x80, 0xff, 0x10, 0x20, 0x40, 0x64, 0xfe];
const INTERESTING16 = [0, 1, 0x7fff, 0x8000, 0xffff, 0x100, 0x200, 0x3ff, 0x400, 0x1000, 0xfff, 0x7ff, 0x500, 0x5dc];
const INTERESTING32 = [0, 1, 0x7fffffff, 0x80000000, 0xffffffff, 0x10000, 0xffff, 0x100000, 0x7fff, 0x8000];

/** Mutates byte strings from a corpus; each call returns a new array. */
export class Mutator {
  readonly rng: Rng;
  private readonly dict: readonly Uint8Array[];
  private readonly maxLen: number;

  constructor(seed: number, opts: { dict?: readonly (string | Uint8Array)[]; maxLen?: number } = {}) {
    this.rng = new Rng(seed);
    this.dict = (opts.dict ?? []).map((d) => (typeof d === 'string' ? Uint8Array.from(d, (ch) => ch.charCodeAt(0) & 255) : d));
    this.maxLen = opts.maxLen ?? 4096;
  }

  /** 1 to 5 stacked mutations of `input`; `other` is a second corpus entry for crossover. */
  mutate(input: Uint8Array, other: Uint8Array): Uint8Array {
    let b = input;
    const n = 1 + this.rng.below(5);
    for (let i = 0; i < n; i++) b = this.one(b, other);
    return b.length > this.maxLen ? b.subarray(0, this.maxLen) : b;
  }

  private one(b: Uint8Array, other: Uint8Array): Uint8Array {
    const r = this.rng;
    const len = b.length;
    switch (r.below(this.dict.length > 0 ? 13 : 11)) {
      case 0: { // erase a range
        if (len < 2) return this.insert(b, r.below(len + 1), Uint8Array.of(r.below(256)));
        const n = 1 + r.below(Math.min(len - 1, 1 + (r.chance(0.8) ? 4 : len)));
        const at = r.below(len - n + 1);
        const out = new Uint8Array(len - n);
        out.set(b.subarray(0, at)); out.set(b.subarray(at + n), at);
        return out;
      }
      case 1: return this.insert(b, r.below(len + 1), Uint8Array.of(r.below(256)));
      case 2: { // insert a run of one byte
        const run = new Uint8Array(1 + r.below(r.chance(0.9) ? 16 : 512)).fill(r.chance(0.5) ? r.below(256) : INTERESTING8[r.below(INTERESTING8.length)]!);
        return this.insert(b, r.below(len + 1), run);
      }
      case 3: { // change a byte
        if (len === 0) return Uint8Array.of(r.below(256));
        const out = Uint8Array.from(b);
        out[r.below(len)] = r.chance(0.5) ? r.below(256) : INTERESTING8[r.below(INTERESTING8.length)]!;
        return out;
      }
      case 4: { // flip a bit
        if (len === 0) return Uint8Array.of(1 << r.below(8));
        const out = Uint8Array.from(b);
        const i = r.below(len);
        out[i] = out[i]! ^ (1 << r.below(8));
        return out;
      }
      case 5: { // shuffle a few bytes
        if (len < 2) return b;
        const out = Uint8Array.from(b);
        const n = Math.min(len, 2 + r.below(7));
        const at = r.below(len - n + 1);
        for (let i = n - 1; i > 0; i--) { const j = r.below(i + 1); const t = out[at + i]!; out[at + i] = out[at + j]!; out[at + j] = t; }
        return out;
      }
      case 6: { // an ASCII integer in the input: change it
        for (let tries = 0; tries < 4 && len > 0; tries++) {
          let s = r.below(len);
          while (s < len && (b[s]! < 0x30 || b[s]! > 0x39)) s++;
          if (s >= len) continue;
          let e = s;
          while (e < len && b[e]! >= 0x30 && b[e]! <= 0x39) e++;
          const v = Number(new TextDecoder().decode(b.subarray(s, e)));
          const choices = [v + 1, v - 1, v * 2, Math.floor(v / 2), 0, 65535, 65536, 2 ** 31, 2 ** 32, 2 ** 53 + 1, -1, 1e21];
          const t = new TextEncoder().encode(String(choices[r.below(choices.length)]));
          const out = new Uint8Array(len - (e - s) + t.length);
          out.set(b.subarray(0, s)); out.set(t, s); out.set(b.subarray(e), s + t.length);
          return out;
        }
        return this.one(b, other);
      }
      case 7: { // a binary integer: interesting value or +-small, either endianness
        const w = [1, 2, 4][r.below(3)]!;
        if (len < w) return this.insert(b, 0, new Uint8Array(w).fill(0xff));
        const out = Uint8Array.from(b);
        const at = r.below(len - w + 1);
        let v: number;
        if (r.chance(0.5)) {
          v = w === 1 ? INTERESTING8[r.below(INTERESTING8.length)]! : w === 2 ? INTERESTING16[r.below(INTERESTING16.length)]! : INTERESTING32[r.below(INTERESTING32.length)]!;
        } else {
          let cur = 0;
          for (let i = 0; i < w; i++) cur = cur * 256 + out[at + i]!;
          v = cur + (r.below(71) - 35);
        }
        const big = r.chance(0.7);
        for (let i = 0; i < w; i++) {
          const byte = Math.floor(((v % 2 ** (8 * w)) + 2 ** (8 * w)) % 2 ** (8 * w) / 2 ** (8 * i)) & 255;
          out[at + (big ? w - 1 - i : i)] = byte;
        }
        return out;
      }
      case 8: { // copy a part of the input over or into another place
        if (len < 2) return b;
        const n = 1 + r.below(Math.min(len, 64));
        const from = r.below(len - n + 1);
        const part = b.slice(from, from + n);
        if (r.chance(0.5)) return this.insert(b, r.below(len + 1), part);
        const out = Uint8Array.from(b);
        out.set(part, r.below(len - n + 1));
        return out;
      }
      case 9: { // crossover: a head of this one and a tail of the other
        const at = r.below(len + 1), ot = r.below(other.length + 1);
        const out = new Uint8Array(at + other.length - ot);
        out.set(b.subarray(0, at)); out.set(other.subarray(ot), at);
        return out;
      }
      case 10: { // truncate or extend with random bytes
        if (len > 0 && r.chance(0.5)) return b.subarray(0, r.below(len));
        const extra = new Uint8Array(1 + r.below(32));
        for (let i = 0; i < extra.length; i++) extra[i] = r.below(256);
        return this.insert(b, len, extra);
      }
      default: { // dictionary word: insert or overwrite
        const w = this.dict[r.below(this.dict.length)]!;
        const at = r.below(len + 1);
        if (r.chance(0.5) || at + w.length > len) return this.insert(b, at, w);
        const out = Uint8Array.from(b);
        out.set(w, at);
        return out;
      }
    }
  }

  private insert(b: Uint8Array, at: number, part: Uint8Array): Uint8Array {
    const out = new Uint8Array(b.length + part.length);
    out.set(b.subarray(0, at)); out.set(part, at); out.set(b.subarray(at), at + part.length);
    return out;
  }
}
