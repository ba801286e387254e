// Shared pieces of the benchmark scripts: arguments, medians, CPU time and RSS of the processes in a
// lab namespace (from /proc/PID/stat and /proc/PID/status), iperf3 runs, a markdown table and an SVG
// bar chart written next to the JSON results.
import { readFileSync, writeFileSync, mkdirSync, readlinkSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { spawnSync } from 'node:child_process';

/** `--name value` as a number (or the default); `--flag` as a boolean via has(). */
export function args(defaults) {
  const out = { ...defaults };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const k = a.slice(2);
    const v = argv[i + 1];
    if (v === undefined || v.startsWith('--')) { out[k] = true; continue; }
    out[k] = /^-?[\d.]+$/.test(v) ? Number(v) : v;
    i++;
  }
  return out;
}

export const median = (xs) => {
  const s = xs.filter((x) => x !== null && x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)] : null;
};
export const round = (x, d = 0) => (x === null || x === undefined || !Number.isFinite(x) ? null : +x.toFixed(d));
export const ratio = (a, b, d = 2) => (a === null || b === null || !b ? null : +(a / b).toFixed(d));

const CLK_TCK = 100;

/** PIDs of the processes in namespace `ns` whose executable or command line matches `re`. */
export function pidsIn(lab, ns, re) {
  void lab;
  const pids = (spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '').split(/\s+/).filter(Boolean).map(Number);
  return pids.filter((pid) => {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      let exe = '';
      try { exe = readlinkSync(`/proc/${pid}/exe`); } catch { /* gone */ }
      return re.test(cmd) || re.test(exe);
    } catch { return false; }
  });
}

/** User + system CPU seconds of a process so far (0 when it is gone). */
export function cpuSeconds(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / CLK_TCK;
  } catch { return 0; }
}

/** Resident set size in MiB. */
export function rssMiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? +(Number(m[1]) / 1024).toFixed(1) : null;
  } catch { return null; }
}

/** Summed CPU seconds of pids. */
export const cpuOf = (pids) => pids.reduce((a, p) => a + cpuSeconds(p), 0);

/**
 * iperf3 client run; returns { mbps, bytes, lossPct } (receiver side; lossPct for UDP), or null when
 * it failed. UDP runs without -O (omitted seconds confuse iperf3's loss count).
 */
export function iperf(lab, ns, to, { seconds, reverse = false, udpRate, len } = {}) {
  const a = ['iperf3', '-c', to, '-t', String(seconds), '-J'];
  if (!udpRate) a.push('-O', '1');
  if (reverse) a.push('-R');
  if (udpRate) a.push('-u', '-b', String(udpRate));
  if (len) a.push('-l', String(len));
  const r = lab.tryExec(ns, a, (seconds + 30) * 1000);
  if (r.status !== 0) return null;
  try {
    const j = JSON.parse(r.stdout);
    const recv = j.end.sum_received ?? j.end.sum, sent = j.end.sum_sent ?? j.end.sum;
    let lossPct = null;
    if (udpRate) {
      lossPct = j.end.sum_received && sent.bytes > 0 ? 100 * (1 - recv.bytes / sent.bytes) : (j.end.sum?.lost_percent ?? null);
      if (lossPct !== null) lossPct = +Math.max(0, lossPct).toFixed(2);
    }
    return { mbps: Math.round(recv.bits_per_second / 1e6), bytes: recv.bytes, lossPct };
  } catch { return null; }
}

/** Average ping RTT in ms (20 pings 50 ms apart), or null. */
export function pingRtt(lab, ns, to, count = 20) {
  const out = lab.tryExec(ns, ['ping', '-c', String(count), '-i', '0.05', '-q', to], count * 1000 + 5000).stdout;
  const m = /= [\d.]+\/([\d.]+)\//.exec(out);
  return m ? Number(m[1]) : null;
}

/** A markdown table. */
export function table(headers, rows) {
  const cell = (x) => (x === null || x === undefined ? '-' : String(x));
  return [`| ${headers.join(' | ')} |`, `|${headers.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(cell).join(' | ')} |`)].join('\n');
}

const COLORS = ['#2b6cb0', '#dd6b20', '#718096', '#38a169', '#805ad5'];

/**
 * A grouped horizontal bar chart as SVG: groups (e.g. "TCP MTU 1280") each with one bar per series
 * (implementation). Missing values are left out.
 */
export function barChart({ title, unit, groups, series, values }) {
  const barH = 16, gap = 10, left = 230, width = 520, right = 90;
  const max = Math.max(1e-9, ...values.flat().filter((v) => Number.isFinite(v)));
  let y = 40;
  const parts = [];
  for (let g = 0; g < groups.length; g++) {
    parts.push(`<text x="8" y="${y + 12}" font-weight="bold">${esc(groups[g])}</text>`);
    y += 18;
    for (let s = 0; s < series.length; s++) {
      const v = values[g]?.[s];
      if (v === null || v === undefined || !Number.isFinite(v)) continue;
      const w = Math.max(1, (v / max) * width);
      parts.push(`<text x="${left - 6}" y="${y + 12}" text-anchor="end">${esc(series[s])}</text>`);
      parts.push(`<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${COLORS[s % COLORS.length]}"/>`);
      parts.push(`<text x="${left + w + 4}" y="${y + 12}">${v} ${esc(unit)}</text>`);
      y += barH + 4;
    }
    y += gap;
  }
  const h = y + 10;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${left + width + right}" height="${h}" font-family="sans-serif" font-size="12">` +
    `<rect width="100%" height="100%" fill="white"/><text x="8" y="22" font-size="15" font-weight="bold">${esc(title)}</text>${parts.join('')}</svg>\n`;
}

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** Writes results JSON and the charts (name -> svg text) into dir; returns the JSON path. */
export function writeResults(dir, base, results, charts = {}) {
  mkdirSync(dir, { recursive: true });
  const jsonPath = join(dir, `${base}.json`);
  writeFileSync(jsonPath, JSON.stringify(results, null, 2) + '\n');
  for (const [name, svg] of Object.entries(charts)) writeFileSync(join(dirname(jsonPath), `${base}-${name}.svg`), svg);
  return jsonPath;
}
