// meshd's command line. Each command parses its arguments and calls the code that does the work;
// errors print one line `meshd: ...` and exit non-zero.
import { Command, CommanderError } from 'commander';
import { VERSION } from '../util/version.ts';
import { CliError } from './errors.ts';
import { interfaceCounters, wgCommand } from './wg.ts';

const program = new Command();
program
  .name('meshd')
  .description('A userspace WireGuard mesh agent, compatible with Tailscale and Headscale')
  .version(VERSION, '--version')
  .showHelpAfterError('(run meshd --help for usage)')
  .exitOverride();

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
    await wgCommand(ifname, opts);
  });

program
  .command('counters')
  .description("print a meshd wg interface's counters (dropped packets by reason, handshakes)")
  .argument('<ifname>', 'interface started with meshd wg')
  .option('--json', 'print JSON')
  .action(async (ifname: string, opts: { json?: boolean }) => {
    const c = await interfaceCounters(ifname);
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
}
