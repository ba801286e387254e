// Go-style durations for flags: "90s", "2m", "1m30s", "500ms", "1h".

/** Parses a duration into milliseconds; throws with what is wrong. */
export function parseDuration(text: string): number {
  const re = /(\d+(?:\.\d+)?)(ms|s|m|h)/gy;
  let total = 0;
  let pos = 0;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    const n = Number(m[1]);
    total += n * ({ ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const)[m[2] as 'ms' | 's' | 'm' | 'h'];
    pos = re.lastIndex;
  }
  if (pos !== text.length || text.length === 0) throw new Error(`bad duration ${JSON.stringify(text)}: use forms like 30s, 2m or 1m30s`);
  return Math.round(total);
}
