// meshd's command line. Each command parses its arguments and calls the code that does the work;
// errors print one line `meshd: ...` and exit non-zero.
import { createRequire } from 'node:module';
// commander through require (its ESM entry wraps the CommonJS one): see src/dns/codec.ts, each
// CommonJS package imported as ESM costs the daemon resident memory it never gives back.
import type { Command as CommandT } from 'commander';
const { Command, CommanderError, Option } = createRequire(import.meta.url)('commander') as typeof import('commander');
type Command = CommandT;
import { MESHD_VERSION as VERSION } from '../version.ts';
import { CliError } from './errors.ts';
import type { DaemonFlags, UpFlags } from './tailnet.ts';
import { defaultSocket, defaultStateDir } from './paths.ts';
import { timeline } from '../util/timeline.ts';
import { releaseEarly } from './agentspawn.ts';

timeline(`main loaded: ${process.argv[2] === '--socket' ? process.argv[4] : process.argv[2]}`);

/** Defaults of the tailnet commands (kept here so `meshd wg` does not load the control plane); per-user paths for non-root. */
const DEFAULTS = { stateDir: defaultStateDir(), socket: defaultSocket(), tun: 'meshd0', port: '41641' } as const;
// Commands load their modules when they run: `up` must not pay for the WireGuard device and addon
// that `meshd wg` needs (~80 ms of a CLI start).
const tailnet = () => import('./tailnet.ts');
const wg = () => import('./wg.ts');

const program = new Command();
program
  .name('meshd')
  .description('A userspace WireGuard mesh agent, compatible with Tailscale and Headscale')
  .version(VERSION, '--version')
  .showHelpAfterError('(run meshd --help for usage)')
  .option('--socket <path>', 'local API socket of the agent', DEFAULTS.socket)
  .exitOverride();

// Scrub secrets from the process list: an --authkey given literally must not show in ps.
if (process.argv.some((a) => a === '--authkey' || a.startsWith('--authkey='))) process.title = 'meshd';

const sock = (): string => (program.opts() as { socket: string }).socket;
const daemonOptions = (c: Command): Command => c
  .option('--state-dir <dir>', 'where machine and node keys live', DEFAULTS.stateDir)
  .option('--state <mem:>', 'mem: keeps the keys in memory only: nothing on disk, logged out when the agent ends')
  .option('--tun <name>', 'TUN device name, or userspace-networking (no TUN, no root: a userspace TCP/IP stack)', DEFAULTS.tun)
  .option('--socks5-server <addr:port>', 'userspace mode: SOCKS5 proxy for outgoing connections (e.g. localhost:1080)')
  .option('--outbound-http-proxy-listen <addr:port>', 'userspace mode: HTTP proxy for outgoing connections (e.g. localhost:8080)')
  .option('--port <n>', 'UDP port for WireGuard (0 = random)', DEFAULTS.port)
  .option('--verbose', 'log more')
  .option('--debug <addr:port>', 'serve /debug/metrics over HTTP here (address defaults to 127.0.0.1)');

daemonOptions(program.command('daemon').description('run the agent in the foreground (for service managers)'))
  .addOption(new Option('--exit-when-down').hideHelp())
  .action(async (opts: DaemonFlags) => { await (await tailnet()).daemonCommand(sock(), opts); });

daemonOptions(program.command('up').description('log in and connect to the tailnet; starts the agent if needed'))
  .requiredOption('--login-server <url>', 'control server URL, e.g. https://headscale.example.com')
  .option('--authkey <key>', 'pre-auth key, or file:PATH to read it from a file')
  .option('--hostname <name>', 'hostname to use in the tailnet')
  .option('--timeout <duration>', 'give up after this long (e.g. 30s, 2m)', '2m')
  .option('--ca-file <file>', 'extra CA certificates (PEM) for an https login server')
  .option('--json', 'print the status as JSON')
  .option('--advertise-exit-node', 'offer this node as an exit node (control must approve it)')
  .option('--no-advertise-exit-node', 'stop offering this node as an exit node')
  .option('--advertise-routes <cidrs>', 'subnet routes to offer, comma-separated ("" = none)')
  .option('--exit-node <ip|name>', 'send internet traffic through this peer ("" = stop)')
  .option('--exit-node-allow-lan-access', 'keep the local network reachable while using an exit node')
  .option('--no-exit-node-allow-lan-access', 'send LAN traffic through the exit node too')
  .option('--accept-routes', "use the subnet routes other nodes offer")
  .option('--no-accept-routes', "ignore other nodes' subnet routes")
  .option('--advertise-tags <tags>', 'ACL tags this node must carry, e.g. tag:ci (a pre-auth key must carry them)')
  .option('--wait-for <hosts>', 'return only once these peers answer (IPs or names, comma-separated), within --timeout')
  .option('--retry <n>', 'try again up to N times on errors where retrying helps', '0')
  .option('--accept-dns [bool]', 'use the tailnet DNS settings: MagicDNS names, resolvers (default true; --accept-dns=false leaves the host alone)', (v) => v !== 'false')
  .action(async (opts: UpFlags) => { await (await tailnet()).upCommand(sock(), opts); });

program.command('down').description('disconnect from the tailnet, keeping the identity')
  .action(async () => { await (await tailnet()).downCommand(sock()); });
program.command('logout').description('log out and forget the identity')
  .action(async () => { await (await tailnet()).logoutCommand(sock()); });
program.command('status').description('show this node and its peers').option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => { await (await tailnet()).statusCommand(sock(), opts); });
program.command('whois').description('show the node and user behind a tailnet IP')
  .argument('<ip>', 'a tailnet address (IPv4 or IPv6)')
  .option('--json', 'print JSON')
  .action(async (ip: string, opts: { json?: boolean }) => { await (await tailnet()).whoisCommand(sock(), ip, opts); });
program.command('metrics').description("print the agent's metrics (Prometheus text)")
  .action(async () => { await (await tailnet()).metricsCommand(sock()); });
program.command('ip').description("print this node's tailnet addresses")
  .option('-4', 'only IPv4').option('-6', 'only IPv6')
  .action(async (opts: { '4'?: boolean; '6'?: boolean }) => { await (await tailnet()).ipCommand(sock(), opts); });

const magic = () => import('./magic.ts');
program.command('ping').description('disco-ping a peer: says whether the path is direct or via DERP, like tailscale ping')
  .argument('<peer>', 'tailnet IP, hostname or nodekey')
  .option('-c <count>', 'how many pings at most', '10')
  .option('--timeout <duration>', 'wait this long for each pong', '5s')
  .option('--until-direct <bool>', 'stop at the first direct pong; fail without one (default true)', (v) => v !== 'false', true)
  .option('--json', 'print the pongs as JSON')
  .action(async (peer: string, opts: import('./magic.ts').PingFlags) => { await (await magic()).pingCommand(sock(), peer, opts); });
program.command('wait').description('wait until each host answers a disco ping (direct or via DERP)')
  .argument('<hosts...>', 'tailnet IPs, hostnames or node names')
  .option('--timeout <duration>', 'give up after this long', '30s')
  .option('--json', 'print the results as JSON')
  .action(async (hosts: string[], opts: { timeout?: string; json?: boolean }) => { await (await import('./wait.ts')).waitCommand(sock(), hosts, opts); });
program.command('netcheck').description('measure UDP, our global address and the latency to each DERP region')
  .option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => { await (await magic()).netcheckCommand(sock(), opts); });

const dnsCli = () => import('./dns.ts');
const dns = program.command('dns').description('MagicDNS: the tailnet resolver at 100.100.100.100');
dns.command('status').description("show the map's DNS settings and how the host is configured").option('--json', 'print JSON')
  .action(async (opts: { json?: boolean }) => { await (await dnsCli()).dnsStatusCommand(sock(), opts); });
dns.command('query').description('ask the tailnet resolver, as a program on this host would')
  .argument('<name>', 'name to look up').argument('[type]', 'record type (A, AAAA, PTR, TXT, ...)', 'A').option('--json', 'print JSON')
  .action(async (name: string, type: string, opts: { json?: boolean }) => { await (await dnsCli()).dnsQueryCommand(sock(), name, type, opts); });

program
  .command('version')
  .description('print the version')
  .action(() => { console.log(VERSION); });

program
  .command('wg')
  .description('run a plain WireGuard interface configured with the wg tool (like wireguard-go)')
  .argument('<ifname>', 'TUN device to create; its config socket is /var/run/wireguard/IFNAME.sock')
  .option('-f, --foreground', 'stay in the foreground')
  .option('--mtu <n>', 'device MTU', '1420')
  .option('--log <file>', 'in the background, append logs to this file')
  .action(async (ifname: string, opts: { foreground?: boolean; mtu?: string; log?: string }) => {
    await (await wg()).wgCommand(ifname, opts);
  });

program
  .command('counters')
  .description("print a meshd wg interface's counters (dropped packets by reason, handshakes)")
  .argument('<ifname>', 'interface started with meshd wg')
  .option('--json', 'print JSON')
  .action(async (ifname: string, opts: { json?: boolean }) => {
    const c = await (await wg()).interfaceCounters(ifname);
    if (opts.json) console.log(JSON.stringify(c));
    else for (const [k, v] of Object.entries(c)) console.log(`${k.padEnd(28)} ${v}`);
  });

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    process.exitCode = e.exitCode;
  } else if (e instanceof CliError) {
    console.error(`meshd: ${e.message}`);
    process.exitCode = e.exitCode;
  } else {
    const err = e as NodeJS.ErrnoException;
    console.error(`meshd: ${err.message ?? String(e)}`);
    process.exitCode = 1;
  }
} finally {
  // An agent bin/meshd.js started early for an `up` that failed before adopting it exits now.
  await releaseEarly();
}
