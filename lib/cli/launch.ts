// ngate launch: N ranks of an ngate subcommand on this machine (and, with
// --nnodes, as one machine of several), with torchrun's environment. It passes
// signals on, and when one rank fails it says which, ends the others by their
// process ids and exits with that rank's code.
import { ChildProcess, spawn } from 'child_process';
import { Command, InvalidArgumentError } from 'commander';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { packageRoot } from '../model/native';
import { Context, Define, parseDurationOption, parseNonNegativeInt, parsePositiveInt, UsageError } from './shared';

/** The subcommands that spread their work over ranks. */
export const DISTRIBUTED_COMMANDS = ['learn-mask', 'build-gate', 'edit', 'eval', 'locate'];

/** How long the other ranks get to stop after SIGTERM before SIGKILL. */
const GRACE_MS = 3000;

function parsePort(s: string): number {
  const v = Number(s);
  if (!/^\d+$/.test(s.trim()) || v < 1 || v > 65535) throw new InvalidArgumentError(`"${s}" is not a port in [1, 65535].`);
  return v;
}

/** A port nobody listens on now, on the loopback. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

interface Rank { rank: number; child: ChildProcess; exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> }

function alive(c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null;
}

async function launchCommand(ctx: Context, o: Record<string, unknown>, args: string[]): Promise<void> {
  const nproc = o.nprocPerNode as number;
  const nnodes = (o.nnodes as number | undefined) ?? 1;
  const nodeRank = (o.nodeRank as number | undefined) ?? 0;
  if (nodeRank >= nnodes) throw new UsageError(`--node-rank ${nodeRank} is not in [0, ${nnodes})`);
  if (args.length === 0) throw new UsageError('nothing to launch: put the ngate subcommand after --, e.g. ngate launch --nproc-per-node 2 -- learn-mask …');
  if (!o.exec && !DISTRIBUTED_COMMANDS.includes(args[0])) {
    throw new UsageError(`"${args[0]}" does not run across ranks; launch one of ${DISTRIBUTED_COMMANDS.join(', ')} (or a program of your own with --exec)`);
  }
  // The rendezvous store has no authentication: it listens on the loopback unless told otherwise.
  const masterAddr = (o.masterAddr as string | undefined) ?? '127.0.0.1';
  if (nnodes > 1 && o.masterPort === undefined) throw new UsageError('--nnodes > 1 needs --master-port (and --master-addr: rank 0\'s machine), the same on every machine');
  const masterPort = (o.masterPort as number | undefined) ?? await freePort();
  const command = o.exec ? args : [process.execPath, path.join(packageRoot(), 'bin', 'ngate.js'), ...args];
  const world = nproc * nnodes;
  const baseEnv: NodeJS.ProcessEnv = {
    ...process.env, WORLD_SIZE: String(world), LOCAL_WORLD_SIZE: String(nproc), GROUP_RANK: String(nodeRank),
    MASTER_ADDR: masterAddr, MASTER_PORT: String(masterPort), NGATE_LAUNCHER_PID: String(process.pid),
  };
  if (o.distTimeout !== undefined) baseEnv.NGATE_DIST_TIMEOUT_MS = String(o.distTimeout);
  // Ranks that each spin up all the cores' worth of OpenMP threads fight over
  // them (on a 2-core machine one rank of 2 threads beside another ran 10× slower):
  // share the cores out, as torchrun does (it sets 1), unless told otherwise.
  if (process.env.OMP_NUM_THREADS === undefined && nproc > 1) baseEnv.OMP_NUM_THREADS = String(Math.max(1, Math.floor(os.cpus().length / nproc)));
  const ranks: Rank[] = [];
  for (let local = 0; local < nproc; local++) {
    const rank = nodeRank * nproc + local;
    // Each rank in a process group of its own: Ctrl-C reaches the launcher once, and it passes the signal on once.
    const child = spawn(command[0], command.slice(1), {
      env: { ...baseEnv, RANK: String(rank), LOCAL_RANK: String(local) }, stdio: 'inherit', detached: true,
    });
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
      child.once('error', (e) => { ctx.io.stderr.write(`ngate launch: rank ${rank} did not start: ${e.message}\n`); resolve({ code: 127, signal: null }); });
    });
    ranks.push({ rank, child, exit });
  }
  ctx.io.stderr.write(`ngate launch: ${world} rank${world > 1 ? 's' : ''} (${nproc} here${nnodes > 1 ? `, machine ${nodeRank} of ${nnodes}` : ''}), ` +
    `rendezvous ${masterAddr}:${masterPort}; pids ${ranks.map((r) => `${r.rank}:${r.child.pid}`).join(' ')}\n`);

  // A signal the launcher passes on is not a rank's failure: every rank stops
  // on its own (the data-parallel edit stops all ranks at the same step).
  let interrupted = false;
  const forward = (sig: NodeJS.Signals) => () => {
    interrupted = true;
    for (const r of ranks) if (alive(r.child) && r.child.pid) { try { process.kill(r.child.pid, sig); } catch { /* gone already */ } }
  };
  const handlers = (['SIGINT', 'SIGTERM', 'SIGHUP'] as const).map((sig) => [sig, forward(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);
  let firstFailure: { rank: number; code: number } | null = null;
  let killTimer: NodeJS.Timeout | null = null;
  const endOthers = () => {
    for (const r of ranks) {
      if (!alive(r.child) || !r.child.pid) continue;
      // SIGCONT first: a stopped rank would hold SIGTERM until it runs again.
      try { process.kill(r.child.pid, 'SIGCONT'); process.kill(r.child.pid, 'SIGTERM'); } catch { /* gone already */ }
    }
    killTimer = setTimeout(() => {
      for (const r of ranks) if (alive(r.child) && r.child.pid) { try { process.kill(r.child.pid, 'SIGKILL'); } catch { /* gone */ } }
    }, GRACE_MS);
  };
  try {
    await Promise.all(ranks.map(async (r) => {
      const { code, signal } = await r.exit;
      if (code === 0 || firstFailure || interrupted) return;
      const exitCode = code ?? 128 + (signal ? os.constants.signals[signal] : 0);
      firstFailure = { rank: r.rank, code: exitCode };
      ctx.io.stderr.write(`ngate launch: rank ${r.rank} (pid ${r.child.pid}) ${code !== null ? `exited with code ${code}` : `was killed by ${signal}`}; ` +
        `ending the other ranks\n`);
      endOthers();
    }));
  } finally {
    if (killTimer) clearTimeout(killTimer);
    for (const [sig, h] of handlers) process.removeListener(sig, h);
  }
  if (interrupted && !firstFailure) {
    throw Object.assign(new Error('interrupted; the ranks were stopped'), { code: 'ERR_RANK_FAILED', exitCode: 130 });
  }
  const failed = firstFailure as { rank: number; code: number } | null;
  if (failed) throw Object.assign(new Error(`rank ${failed.rank} failed (exit code ${failed.code})`), { code: 'ERR_RANK_FAILED', exitCode: failed.code });
}

export function addLaunchCommand(define: Define): Command {
  return define('launch', 'run an ngate subcommand as several ranks (torchrun\'s environment), one per GPU or CPU process', launchCommand)
    .requiredOption('--nproc-per-node <n>', 'ranks on this machine', parsePositiveInt)
    .option('--nnodes <n>', 'machines in the job (default 1)', parsePositiveInt)
    .option('--node-rank <n>', 'this machine\'s index (default 0)', parseNonNegativeInt)
    .option('--master-addr <host>', 'address of rank 0\'s machine, where the rendezvous store listens (default 127.0.0.1)')
    .option('--master-port <port>', 'its port (default: a free port, one machine only)', parsePort)
    .option('--dist-timeout <duration>', 'how long a rank waits for the others before it fails, for every rank (e.g. 90s, 10m; default 30m)', parseDurationOption)
    .option('--exec', 'the command after -- is a program of your own (that calls initProcessGroup), not an ngate subcommand')
    .argument('<command...>', 'after --: the ngate subcommand and its options');
}
