// Direct mode: meshd owns /etc/resolv.conf while up (TS:net/dns/direct.go; dns-netstack-portmap.md 1.8).
//
//   set       the first time: the host's file (or symlink) is renamed to
//             /etc/resolv.pre-meshd-backup.conf; then meshd's file is written atomically
//             (resolv.conf.<hex>.tmp, mode 0644, rename). Where rename cannot replace the file (a
//             bind mount), the bytes are copied instead (backup by copy, write in place).
//   restore   on an empty config, down, logout, and at the next start after a crash: when the live
//             file is meshd's or missing, the backup goes back (rename, or copy over a bind mount)
//             and is removed; when something else replaced the file meanwhile, that file stays and
//             the backup is deleted. The original bytes come back unchanged. With no backup (there
//             was no file), meshd's own file is removed.
//   base      the host's resolvers before meshd: the backup while the live file is meshd's.
import { promises as fs, constants } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logf } from '../util/log.ts';
import type { BaseConfig, OSConfig } from './config.ts';
import { formatResolvConf, isMeshdResolvConf, parseResolvConf } from './resolvconf.ts';

/** Name of the backup next to resolv.conf. */
export const BACKUP_NAME = 'resolv.pre-meshd-backup.conf';

/** Errors of rename that mean "this path is a mount point": fall back to copying. */
const RENAME_BLOCKED = new Set(['EBUSY', 'EXDEV', 'EPERM', 'EACCES']);

/** Owns resolv.conf in an /etc directory (a different dir in tests). */
export class DirectManager {
  readonly etc: string;
  private readonly log: Logf;

  constructor(etc: string, log: Logf) {
    this.etc = etc;
    this.log = log;
  }

  get path(): string { return join(this.etc, 'resolv.conf'); }
  get backupPath(): string { return join(this.etc, BACKUP_NAME); }

  /** The live file's text, undefined when missing (a dangling symlink counts as missing). */
  private async readLive(): Promise<string | undefined> {
    try { return await fs.readFile(this.path, 'utf8'); } catch { return undefined; }
  }

  private async exists(p: string): Promise<boolean> {
    try { await fs.lstat(p); return true; } catch { return false; }
  }

  /** The host's resolvers as they were before meshd (TS GetBaseConfig). */
  async baseConfig(): Promise<BaseConfig> {
    const live = await this.readLive();
    let text = live;
    if (live === undefined || isMeshdResolvConf(live)) text = await fs.readFile(this.backupPath, 'utf8').catch(() => undefined);
    return parseResolvConf(text ?? '');
  }

  /** Writes meshd's resolv.conf for `cfg`; an empty config restores the host's file. */
  async set(cfg: OSConfig): Promise<void> {
    if (cfg.nameservers.length === 0 && cfg.searchDomains.length === 0) { await this.restore(); return; }
    const live = await this.readLive();
    const liveExists = await this.exists(this.path);
    if (liveExists && (live === undefined || !isMeshdResolvConf(live))) await this.backup();
    await this.writeLive(formatResolvConf(cfg.nameservers, cfg.searchDomains));
  }

  /** Moves the host's file aside (rename; copy when the file is a mount point). */
  private async backup(): Promise<void> {
    try {
      await fs.rename(this.path, this.backupPath);
      this.log(`dns: moved ${this.path} to ${this.backupPath}`);
    } catch (e) {
      if (!RENAME_BLOCKED.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
      await fs.copyFile(this.path, this.backupPath);
      await fs.chmod(this.backupPath, 0o644);
      this.log(`dns: copied ${this.path} to ${this.backupPath} (it cannot be renamed)`);
    }
  }

  /** Atomic write of the live file (temp + rename), in place when rename is blocked. */
  private async writeLive(text: string): Promise<void> {
    const tmp = join(this.etc, `resolv.conf.${randomBytes(12).toString('hex')}.tmp`);
    try {
      await fs.writeFile(tmp, text, { mode: 0o644 });
      await fs.chmod(tmp, 0o644);
      await fs.rename(tmp, this.path);
    } catch (e) {
      await fs.rm(tmp, { force: true });
      if (!RENAME_BLOCKED.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
      await fs.writeFile(this.path, text);
    }
  }

  /**
   * Puts the host's file back (TS directManager.restoreBackup / CleanUp). Returns true when a backup
   * was found. Never throws: a failure is logged and the backup stays for the next try.
   */
  async restore(): Promise<boolean> {
    if (!(await this.exists(this.backupPath))) {
      // No backup but our file: there was no resolv.conf before meshd; pointing at a quad-100 that
      // is gone would break every lookup, so ours goes.
      const live = await this.readLive();
      if (live === undefined || !isMeshdResolvConf(live)) return false;
      await fs.rm(this.path, { force: true }).catch(() => {});
      this.log(`dns: removed ${this.path} (there was none before meshd)`);
      return true;
    }
    try {
      const live = await this.readLive();
      const liveExists = await this.exists(this.path);
      if (liveExists && live !== undefined && !isMeshdResolvConf(live)) {
        // Someone else wrote resolv.conf after meshd: theirs stays.
        await fs.rm(this.backupPath, { force: true });
        this.log(`dns: ${this.path} was replaced by someone else; dropped ${this.backupPath}`);
        return true;
      }
      try {
        await fs.rename(this.backupPath, this.path);
      } catch (e) {
        if (!RENAME_BLOCKED.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
        await fs.copyFile(this.backupPath, this.path, 0);
        await fs.rm(this.backupPath, { force: true });
      }
      this.log(`dns: restored ${this.path}`);
      return true;
    } catch (e) {
      this.log(`dns: restoring ${this.path} failed: ${(e as Error).message}`);
      return false;
    }
  }
}

/** True when an /etc directory is writable (direct mode needs it). */
export async function etcWritable(etc: string): Promise<boolean> {
  try { await fs.access(etc, constants.W_OK); return true; } catch { return false; }
}
