// The `ngate` command line: the program, its exit codes and its entry points.
// Each subcommand lives in a file of its own in this folder and only parses its
// options and calls the library; shared.ts holds what they share. `main` runs
// in-process and returns the exit code, so tests need not spawn; `run` is what
// bin/ngate.js calls.
import { Command, CommanderError } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import { packageRoot } from '../model/native';
import { NgateError } from '../util/errors';
import { addBenchCommand } from './bench';
import { addBuildCommand } from './build';
import { addBuildGateCommand } from './build-gate';
import { addCompareCommand } from './compare';
import { addDataCommand } from './data';
import { addDemoCommand } from './demo';
import { addDoctorCommand } from './doctor';
import { addEditCommand } from './edit';
import { addEvalCommand } from './eval';
import { addInspectCommand } from './inspect';
import { addLaunchCommand, DISTRIBUTED_COMMANDS } from './launch';
import { addLearnMaskCommand } from './learn-mask';
import { addLocateCommand } from './locate';
import { CliIo, CommonOpts, Context, Define, joinedGroup, UsageError } from './shared';
import { launchedDistributed } from '../dist/process-group';

export { parseLayers, defaultModelDir } from './shared';
export type { CliIo } from './shared';

/** 0 ok, 1 the work failed, 2 bad usage or input, 130 interrupted (128 + SIGINT), 143 terminated (128 + SIGTERM). */
export const EXIT = { ok: 0, failure: 1, usage: 2, interrupted: 130, terminated: 143 } as const;

// Codes that mean the user's files or arguments are wrong, not that the work failed.
const BAD_INPUT_CODES = new Set(['ERR_USAGE', 'ERR_INPUT', 'ERR_MISSING_FILE', 'ERR_CONFIG', 'ERR_SAFETENSORS', 'ERR_CHECKPOINT',
  'ERR_MISSING_TENSOR', 'ERR_DEVICE', 'ERR_GATE_FILE', 'ERR_MASK_FILE', 'ERR_PAIRS_FILE', 'ERR_TOKENIZER', 'ERR_SAVE']);

function exitCodeOf(e: unknown, aborted: boolean): number {
  const code = (e as { code?: unknown })?.code;
  // ngate launch: the code of the rank that failed.
  const exitCode = (e as { exitCode?: unknown })?.exitCode;
  if (code === 'ERR_RANK_FAILED' && typeof exitCode === 'number') return exitCode;
  if (aborted || code === 'ERR_ABORTED' || (e as Error)?.name === 'AbortError') return EXIT.interrupted;
  if (typeof code === 'string' && (BAD_INPUT_CODES.has(code) || /^ERR_.*(_FILE|INPUT|CONFIG)$/.test(code))) return EXIT.usage;
  if (code === 'ENOENT' || code === 'EISDIR' || code === 'ENOTDIR') return EXIT.usage;
  return EXIT.failure;
}

/** The subcommands, in the order `ngate --help` lists them. */
const SUBCOMMANDS = [addDemoCommand, addDataCommand, addLearnMaskCommand, addBuildGateCommand, addEditCommand, addEvalCommand, addLocateCommand,
  addInspectCommand, addLaunchCommand, addBenchCommand, addCompareCommand, addBuildCommand, addDoctorCommand];

function buildProgram(io: CliIo, signal: AbortSignal, result: { code: number }): Command {
  const program = new Command('ngate')
    .description('Neural Gate: neuron-level privacy editing of LLaMA-family models.\nRun `ngate demo` to see it work end to end on the embedded demo model.')
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });

  const define: Define = (name, description, action) => {
    const cmd = program.command(name).description(description).exitOverride()
      .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
      .showHelpAfterError('(run with --help for usage)');
    // parseAsync awaits the action, so its errors reach main's catch.
    cmd.action(async (...a: unknown[]) => {
      const c = a[a.length - 1] as Command;
      const ctx = new Context(io, signal, c.opts() as CommonOpts);
      // As one of several ranks, a command that does not spread its work would do it W times, each writing the same files.
      if (launchedDistributed() && !DISTRIBUTED_COMMANDS.includes(name)) {
        throw new UsageError(`${name} does not run across ranks (WORLD_SIZE is ${process.env.WORLD_SIZE}); run it alone`);
      }
      try {
        await action(ctx, c.opts(), c.args);
        result.code = ctx.exitCode;
      } finally {
        ctx.stopBar();
      }
    });
    return cmd;
  };

  for (const add of SUBCOMMANDS) add(define);

  program.addHelpText('after', [
    '',
    'Exit codes: 0 done, 1 the work failed, 2 bad usage or input, 130 interrupted (Ctrl-C).',
    'Ctrl-C stops the running step and writes nothing half-way: every output appears whole or not at all.',
  ].join('\n'));
  return program;
}

function packageVersion(): string {
  try {
    return (JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/**
 * Runs `ngate` with `argv` (the arguments after the program name) and returns
 * the exit code. Output goes to io.stdout / io.stderr (process streams by default).
 */
export async function main(argv: string[], ioIn: Partial<CliIo> = {}): Promise<number> {
  const io: CliIo = { stdout: ioIn.stdout ?? process.stdout, stderr: ioIn.stderr ?? process.stderr, signal: ioIn.signal, handleSignals: ioIn.handleSignals };
  const controller = new AbortController();
  const forward = () => controller.abort();
  if (io.signal?.aborted) controller.abort();
  io.signal?.addEventListener('abort', forward, { once: true });
  // SIGINT (Ctrl-C) and SIGTERM (kill, a job scheduler, the launcher) stop the
  // running step alike, writing nothing half-way; a second one quits at once.
  let stoppedBy: 'SIGINT' | 'SIGTERM' | null = null;
  const onSignal = (signal: 'SIGINT' | 'SIGTERM') => () => {
    if (stoppedBy === null) {
      stoppedBy = signal;
      io.stderr.write(`\nngate: ${signal === 'SIGINT' ? 'interrupted' : 'terminated'}; stopping after the current step (${signal === 'SIGINT' ? 'Ctrl-C' : 'the signal'} again to quit at once)\n`);
      controller.abort();
    } else {
      process.exit(signal === 'SIGINT' ? EXIT.interrupted : EXIT.terminated);
    }
  };
  const onSigint = onSignal('SIGINT'), onSigterm = onSignal('SIGTERM');
  if (io.handleSignals) { process.on('SIGINT', onSigint); process.on('SIGTERM', onSigterm); }
  const stopCode = () => (stoppedBy === 'SIGTERM' ? EXIT.terminated : EXIT.interrupted);
  const json = argv.includes('--json');
  try {
    const result = { code: EXIT.ok as number };
    await buildProgram(io, controller.signal, result).parseAsync(argv, { from: 'user' });
    return controller.signal.aborted ? stopCode() : result.code;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return EXIT.ok;
      // commander has printed its message on stderr already.
      if (json) io.stdout.write(JSON.stringify({ error: { code: 'ERR_USAGE', message: e.message.replace(/^error:\s*/, ''), exitCode: EXIT.usage } }, null, 2) + '\n');
      return EXIT.usage;
    }
    let code: number = exitCodeOf(e, controller.signal.aborted);
    if (code === EXIT.interrupted) code = stopCode();
    const message = code === EXIT.interrupted || code === EXIT.terminated
      ? `${code === EXIT.interrupted ? 'interrupted' : 'terminated'}; no output was written for the step that was stopped` : (e as Error)?.message ?? String(e);
    const group = joinedGroup();
    io.stderr.write(`ngate${group ? ` [rank ${group.rank} of ${group.size}]` : ''}: ${message}\n`);
    if (code === EXIT.failure && process.env.NGATE_DEBUG && (e as Error)?.stack) io.stderr.write(`${(e as Error).stack}\n`);
    if (json) {
      const err = e as NgateError;
      io.stdout.write(JSON.stringify({ error: { code: err?.code ?? 'ERR_UNKNOWN', message, ...(err?.file ? { file: err.file } : {}), exitCode: code } }, null, 2) + '\n');
    }
    return code;
  } finally {
    io.signal?.removeEventListener('abort', forward);
    if (io.handleSignals) { process.removeListener('SIGINT', onSigint); process.removeListener('SIGTERM', onSigterm); }
  }
}

/**
 * The binary's entry: process arguments and streams, SIGINT handled, exit code
 * set. A rank that fails while in a process group exits at once: its group
 * cannot be used again, and its threads may still wait on a dead peer.
 */
export async function run(argv: string[] = process.argv.slice(2)): Promise<void> {
  process.exitCode = await main(argv, { handleSignals: true });
  if (process.exitCode !== EXIT.ok && joinedGroup()) process.exit(process.exitCode);
}
