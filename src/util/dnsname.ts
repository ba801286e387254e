// Hostnames as DNS labels, the way tailscale sanitizes them (TS:util/dnsname SanitizeHostname):
// common local suffixes dropped, letters lowercased, ' ', '.', '@', '_' inside the name turned
// into '-', anything else outside [a-z0-9-] dropped, no leading or trailing '-', at most 63 bytes.

/** Maximum length of a DNS label (RFC 1035 2.3.4). */
export const MAX_LABEL_LENGTH = 63;

const SEPARATORS = new Set([' ', '.', '@', '_']);
const isAlnum = (c: string): boolean => (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');

/** Turns any text into a valid DNS label ("" when nothing usable is left). */
export function sanitizeLabel(label: string): string {
  let start = 0;
  let end = Math.min(label.length, MAX_LABEL_LENGTH);
  while (start < end && !isAlnum(label[start]!)) start++;
  while (start < end && !isAlnum(label[end - 1]!)) end--;
  let out = '';
  for (let i = start; i < end; i++) {
    const c = label[i]!;
    const boundary = i === start || i === end - 1;
    if (!boundary && SEPARATORS.has(c)) out += '-';
    else if (isAlnum(c) || c === '-') out += c.toLowerCase();
  }
  return out;
}

/** A hostname as a DNS label: `.local`, `.localdomain`, `.lan` trimmed, then {@link sanitizeLabel}. */
export function sanitizeHostname(hostname: string): string {
  let h = hostname;
  for (const s of ['.local', '.localdomain', '.lan']) if (h.endsWith(s)) h = h.slice(0, -s.length);
  return sanitizeLabel(h);
}
