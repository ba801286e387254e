// Default Hostinfo for meshd (control-plane.md 7.1). Headscale replaces its stored copy with every
// request's Hostinfo, so the client always sends the whole object.
import os from 'node:os';
import { MESHD_VERSION } from '../version.ts';
import type { Hostinfo } from './wire.ts';

const GOARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', riscv64: 'riscv64', ppc64: 'ppc64le', s390x: 's390x', mips: 'mips', mipsel: 'mipsle', loong64: 'loong64' };

/** Hostinfo describing this machine: hostname, OS linux, kernel version, IPNVersion meshd-<version>, arch. */
export function defaultHostinfo(): Hostinfo {
  return {
    IPNVersion: `meshd-${MESHD_VERSION}`,
    OS: 'linux',
    OSVersion: os.release(),
    Hostname: os.hostname(),
    GoArch: GOARCH[process.arch] ?? process.arch,
    Machine: os.machine(),
    // A kernel TUN device, not a userspace network stack (Userspace means netstack in tailscale).
    Userspace: false,
    UserspaceRouter: false,
  };
}

/** Default Hostinfo overlaid with the caller's fields (undefined values are dropped). */
export function buildHostinfo(overrides: Hostinfo = {}): Hostinfo {
  const out: Hostinfo = defaultHostinfo();
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) out[k] = v;
  return out;
}
