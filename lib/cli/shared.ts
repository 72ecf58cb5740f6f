// What every subcommand of `ngate` shares: the option parsers (each throws
// commander's InvalidArgumentError, reported with the option's name, exit 2),
// the model and output options, and the Context through which a command logs,
// draws progress, prints its result and sees the abort signal.
import { Command, InvalidArgumentError, Option } from 'commander';
import * as cliProgress from 'cli-progress';
import * as fs from 'fs';
import * as path from 'path';
import type { ModelDtype } from '../model/config';
import { loadModel, Model, Progress } from '../model/model';
import { packageRoot } from '../model/native';
import { fillBenignAnswers, PrivacyPair } from '../data/prepare';
import { DEFAULT_DIST_TIMEOUT_MS, initProcessGroup, launchedDistributed, parseDuration, ProcessGroup } from '../dist/process-group';
import { readPairsFile } from '../data/pairs-file';
import type { FfnParam } from '../method/gated-edit';
import { makeRefusalMatcher, RefusalMatcher } from '../method/refusal';
import { NgateError } from '../util/errors';
import { readTextBounded } from '../util/files';
import type { NgateWarning } from '../util/warnings';
import { parseJson } from '../util/json';

export interface CliIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown; isTTY?: boolean; columns?: number };
  /** Aborting it stops the running command as Ctrl-C does. */
  signal?: AbortSignal;
  /** Turn SIGINT into an abort (the binary does; in-process callers usually do not). */
  handleSignals?: boolean;
}

/** The embedded demo model, the default wherever a model is loaded. */
export function defaultModelDir(): string {
  return path.join(packageRoot(), 'models', 'demo');
}

/** "2,3", "2-4" or a mix ("1,3-5"): distinct non-negative layer indices, in the order given. */
export function parseLayers(s: string): number[] {
  const out: number[] = [];
  for (const part of s.split(',').map((x) => x.trim())) {
    const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(part);
    if (!m) throw new InvalidArgumentError(`"${s}" is not a list of layer indices such as 2,3 or 2-4.`);
    const a = Number(m[1]), b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new InvalidArgumentError(`the range ${part} runs backwards.`);
    for (let l = a; l <= b; l++) out.push(l);
  }
  if (new Set(out).size !== out.length) throw new InvalidArgumentError(`"${s}" names a layer twice.`);
  return out;
}

export function parsePositiveInt(s: string): number {
  const v = Number(s);
  if (!/^\d+$/.test(s.trim()) || !Number.isSafeInteger(v) || v < 1) throw new InvalidArgumentError(`"${s}" is not a positive integer.`);
  return v;
}

export function parseNonNegativeInt(s: string): number {
  const v = Number(s);
  if (!/^\d+$/.test(s.trim()) || !Number.isSafeInteger(v)) throw new InvalidArgumentError(`"${s}" is not a non-negative integer.`);
  return v;
}

export function parseNonNegative(s: string): number {
  const v = Number(s);
  if (s.trim() === '' || !Number.isFinite(v) || v < 0) throw new InvalidArgumentError(`"${s}" is not a non-negative number.`);
  return v;
}

export function parseShare(s: string): number {
  const v = parseNonNegative(s);
  if (v > 1) throw new InvalidArgumentError(`"${s}" is not in [0, 1].`);
  return v;
}

export function parseSeed(s: string): number {
  const v = Number(s);
  if (!/^-?\d+$/.test(s.trim()) || !Number.isSafeInteger(v)) throw new InvalidArgumentError(`"${s}" is not an integer.`);
  return v;
}

/** "3,19": the first and last layer searched. */
export function parseSearch(s: string): [number, number] {
  const m = /^\s*(\d+)\s*[,:-]\s*(\d+)\s*$/.exec(s);
  if (!m || Number(m[2]) < Number(m[1])) throw new InvalidArgumentError(`"${s}" is not a layer range such as 3,19.`);
  return [Number(m[1]), Number(m[2])];
}

export const FFN_PARAMS: FfnParam[] = ['gate_proj', 'up_proj', 'down_proj'];

export function parseParams(s: string): FfnParam[] {
  const out = s.split(',').map((x) => x.trim()).filter(Boolean);
  const bad = out.find((p) => !FFN_PARAMS.includes(p as FfnParam));
  if (out.length === 0 || bad !== undefined) throw new InvalidArgumentError(`expected a list of ${FFN_PARAMS.join(', ')}${bad ? `, got "${bad}"` : ''}.`);
  if (new Set(out).size !== out.length) throw new InvalidArgumentError(`"${s}" names a parameter twice.`);
  return out as FfnParam[];
}

export class UsageError extends NgateError {
  constructor(message: string, file?: string) {
    super('ERR_USAGE', message, file === undefined ? {} : { file });
  }
}

export interface CommonOpts { json?: boolean; quiet?: boolean }

export interface ModelOpts { model?: string; device?: string; dtype?: ModelDtype }

/** How often a long step prints a progress line when stderr is not a terminal. */
export const PROGRESS_LINE_MS = Number(process.env.NGATE_PROGRESS_MS ?? 5000);

export class Context {
  private bar: cliProgress.SingleBar | null = null;
  private barStage = '';
  bars: boolean;
  /** This process's rank when it is one of several (only rank 0 speaks and writes). */
  rank = 0;

  constructor(readonly io: CliIo, readonly signal: AbortSignal, readonly opts: CommonOpts) {
    // Bars only for a person watching: a terminal, and not when a script wants JSON.
    this.bars = !!io.stderr.isTTY && !opts.json;
  }

  /** Joined a group as `rank`: every rank but 0 works silently, and writes nothing. */
  setRank(rank: number): void {
    this.rank = rank;
    if (rank !== 0) this.bars = false;
  }

  /** A library warning, on stderr unless --quiet (also with --json: it is not the result); rank 0 only. */
  readonly warn = (w: NgateWarning): void => {
    if (this.opts.quiet || this.rank !== 0) return;
    this.stopBar();
    this.io.stderr.write(`warning: ${w.message}\n`);
  };

  /** A line on stderr for a person; silent with --json or --quiet, and on every rank but 0. */
  log(line: string): void {
    if (this.opts.json || this.opts.quiet || this.rank !== 0) return;
    this.stopBar();
    this.io.stderr.write(line + '\n');
  }

  /** The exit code of a command that printed its result but did not succeed (doctor with something missing). */
  exitCode: number = 0;
  private lineStage = '';
  private lineAt = 0;
  private lineStart = 0;

  /**
   * The library's progress callback: a bar per stage on a terminal; otherwise
   * (a log file, CI, a pipe) one line per stage start and every few seconds,
   * so that a long step is never silent.
   */
  readonly progress = (p: Progress): void => {
    if (this.opts.quiet || this.rank !== 0) return;
    if (!this.bars) {
      const now = Date.now();
      const fresh = p.stage !== this.lineStage;
      if (fresh) { this.lineStage = p.stage; this.lineStart = now; }
      if (!fresh && now - this.lineAt < PROGRESS_LINE_MS && p.done < p.total) return;
      if (!fresh && p.done >= p.total && now - this.lineStart < PROGRESS_LINE_MS) return;  // short stages: no line at the end
      this.lineAt = now;
      const secs = (now - this.lineStart) / 1000;
      const eta = p.done > 0 && p.done < p.total ? `, about ${Math.ceil((secs / p.done) * (p.total - p.done))} s left` : '';
      this.io.stderr.write(`${p.stage}: ${p.done}/${p.total}${p.total > 0 ? ` (${Math.floor((100 * p.done) / p.total)}%)` : ''}${fresh ? '' : ` after ${Math.round(secs)} s${eta}`}\n`);
      return;
    }
    if (!this.bar || this.barStage !== p.stage) {
      this.stopBar();
      this.barStage = p.stage;
      this.bar = new cliProgress.SingleBar({
        stream: this.io.stderr as unknown as NodeJS.WritableStream,
        format: `${p.stage.padEnd(12)} [{bar}] {value}/{total} {eta_formatted}`,
        hideCursor: true, clearOnComplete: true, etaBuffer: 20,
      }, cliProgress.Presets.shades_classic);
      this.bar.start(Math.max(1, p.total), 0);
    }
    this.bar.setTotal(Math.max(1, p.total));
    this.bar.update(p.done);
  };

  stopBar(): void {
    if (this.bar) { this.bar.stop(); this.bar = null; }
  }

  /** Prints the result: one JSON document with --json, the text otherwise (rank 0 only). */
  emit(doc: unknown, text: string): void {
    this.stopBar();
    if (this.rank !== 0) return;
    if (this.opts.json) this.io.stdout.write(JSON.stringify(doc, null, 2) + '\n');
    else this.io.stdout.write(text.endsWith('\n') ? text : text + '\n');
  }

  checkAborted(): void {
    if (this.signal.aborted) {
      const err = new NgateError('ERR_ABORTED', 'the operation was aborted');
      err.name = 'AbortError';
      throw err;
    }
  }
}

export function requireFile(file: string, what: string): string {
  const abs = path.resolve(file);
  if (!fs.existsSync(abs)) throw new UsageError(`${what} not found: ${abs}`, undefined);
  const st = fs.statSync(abs);
  if (!st.isFile()) throw new UsageError(`${what} is not a regular file (${st.isDirectory() ? 'a folder' : st.isFIFO() ? 'a FIFO' : 'a device or socket'}): ${abs}`);
  return abs;
}

/**
 * An output file's path, checked before any work: not a folder, and under a
 * folder (or a path that can become one). Nothing is created here: a command
 * that then rejects its input leaves no trace; `ensureParent` makes the folder
 * just before the file is written (atomically, by the library).
 */
export function outputFile(file: string): string {
  const abs = path.resolve(file);
  if (fs.existsSync(abs) && fs.statSync(abs).isDirectory()) throw new UsageError(`the output is a folder, expected a file path: ${abs}`);
  let head = path.dirname(abs);
  while (!fs.existsSync(head) && path.dirname(head) !== head) head = path.dirname(head);
  if (!fs.statSync(head).isDirectory()) throw new UsageError(`the output cannot go under ${head}, which is a file: ${abs}`);
  return abs;
}

/** Makes the folder of an output file, right before it is written. */
export function ensureParent(file: string): string {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  return file;
}

/** Whether the command runs on the embedded demo model (no --model, or --model naming it). */
export function usesDemoModel(o: ModelOpts): boolean {
  return o.model === undefined || path.resolve(o.model) === path.resolve(defaultModelDir());
}

/**
 * Options the user did not set, filled with the settings the demo measured
 * for the embedded model (DEMO_DEFAULTS) when the command runs on it: the
 * library's defaults are the paper's, for 7B models, and on the 2M-parameter
 * demo model they learn masks that never cross zero and an edit that changes
 * nothing. Says so on stderr.
 */
export function withDemoSettings<T extends Record<string, unknown>>(ctx: Context, o: ModelOpts, given: T, demo: Partial<T>, what: string): T {
  if (!usesDemoModel(o)) return given;
  const filled: Record<string, unknown> = { ...given };
  const used: string[] = [];
  for (const [k, v] of Object.entries(demo)) {
    if (filled[k] === undefined) { filled[k] = v; used.push(`${k} ${String(v)}`); }
  }
  if (used.length > 0) ctx.log(`on the embedded demo model: ${what} ${used.join(', ')} (the settings the demo measured; pass them to change)`);
  return filled as T;
}

export function modelDirOf(o: ModelOpts): string {
  const dir = path.resolve(o.model ?? defaultModelDir());
  // A MiniGPT-4 descriptor: a folder with minigpt4.json, that file, or the original's eval YAML.
  const descriptor = fs.existsSync(path.join(dir, 'minigpt4.json')) || (/\.(json|ya?ml)$/i.test(dir) && fs.existsSync(dir) && fs.statSync(dir).isFile());
  if (!descriptor && !fs.existsSync(path.join(dir, 'config.json'))) {
    const hint = o.model === undefined ? ' (the embedded demo model is missing from this installation; pass --model DIR)' : '';
    throw new UsageError(`model folder not found or without config.json (nor a MiniGPT-4 descriptor): ${dir}${hint}`);
  }
  return dir;
}

/** The model, on this rank's device when it is one of several (`--device cuda` is then GPU LOCAL_RANK). */
export async function openModel(ctx: Context, o: ModelOpts, group: ProcessGroup | null = null): Promise<Model> {
  const dir = modelDirOf(o);
  ctx.log(`loading ${dir}${group ? ` on ${group.size} ranks (${group.backend})` : ''}`);
  return loadModel(dir, { device: group ? group.device : o.device, dtype: o.dtype, signal: ctx.signal, onProgress: ctx.progress });
}

export interface DistOpts { distTimeout?: number; partsDir?: string; device?: string }

/** The options of the commands that spread their work over ranks when launched as several. */
export function addDistOptions(cmd: Command): Command {
  return cmd
    .option('--dist-timeout <duration>', `with several ranks: how long a rank waits for the others before it fails, e.g. 90s or 10m (default ${DEFAULT_DIST_TIMEOUT_MS / 60000}m)`, parseDurationOption)
    .option('--parts-dir <dir>', 'with several ranks: where finished parts of the work are kept, so that a restarted job skips them');
}

export function parseDurationOption(s: string): number {
  try {
    return parseDuration(s);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

/**
 * Joins the process group when this process is one of several ranks
 * (WORLD_SIZE > 1: `ngate launch` or torchrun); null when it runs alone.
 */
export async function joinGroup(ctx: Context, o: DistOpts): Promise<ProcessGroup | null> {
  if (!launchedDistributed()) return null;
  const device = o.device === undefined ? 'cpu' : o.device;
  const group = await initProcessGroup({ device, ...(o.distTimeout !== undefined ? { timeoutMs: o.distTimeout } : {}) });
  ctx.setRank(group.rank);
  activeGroup = group;
  watchLauncher();
  return group;
}

let activeGroup: ProcessGroup | null = null;

/** The group this process joined and has not left, for the exit path (index.ts). */
export function joinedGroup(): ProcessGroup | null {
  return activeGroup;
}

/** Under `ngate launch`: end this rank if the launcher itself is gone (killed without passing the signal on). */
function watchLauncher(): void {
  const launcher = Number(process.env.NGATE_LAUNCHER_PID);
  if (!Number.isInteger(launcher) || launcher <= 0) return;
  setInterval(() => {
    if (process.ppid !== launcher) process.exit(1);
  }, 1000).unref();
}

/**
 * The parts folder of a command: --parts-dir, else (with several ranks) the
 * output's name + ".parts"; undefined when it runs alone and none was asked for.
 */
export function partsDirOf(o: DistOpts, group: ProcessGroup | null, out: string | undefined): string | undefined {
  if (o.partsDir !== undefined) return path.resolve(o.partsDir);
  return group && out !== undefined ? `${out}.parts` : undefined;
}

/**
 * After rank 0 has written the outputs: every rank waits for it, then one
 * rank per machine removes the default parts folder, and the group is left.
 */
export async function finishGroup(group: ProcessGroup | null, o: DistOpts, partsDir: string | undefined): Promise<void> {
  if (!group) return;
  await group.barrier();
  if (partsDir !== undefined && o.partsDir === undefined && group.localRank === 0) {
    try { fs.rmSync(partsDir, { recursive: true, force: true }); } catch { /* a leftover folder is harmless */ }
  }
  await group.destroy();
  activeGroup = null;
}

export async function readPairs(ctx: Context, file: string, what = 'pairs file'): Promise<PrivacyPair[]> {
  const abs = requireFile(file, what);
  const pairs = await readPairsFile(abs);
  ctx.checkAborted();
  return pairs;
}

/** r_org for every pair without one, from the unedited model (spread over the ranks of `group`). */
export async function withBenignAnswers(ctx: Context, model: Model, pairs: PrivacyPair[], group: ProcessGroup | null = null,
  partsDir?: string): Promise<{ pairs: PrivacyPair[]; filled: number }> {
  const missing = pairs.filter((p) => p.benignAnswer === undefined).length;
  if (missing === 0) return { pairs, filled: 0 };
  ctx.log(`generating r_org (the unedited model's benign answers) for ${missing} pairs`);
  const out = await fillBenignAnswers(model, pairs, {
    signal: ctx.signal, onProgress: (done, total) => ctx.progress({ stage: 'r_org', done, total }),
    ...(group ? { group } : {}), ...(partsDir !== undefined ? { partsDir } : {}),
  });
  return { pairs: out, filled: missing };
}

/** Layers the model has, checked before any work is done. */
export function checkLayers(model: Model, layers: number[] | undefined): void {
  for (const l of layers ?? []) {
    if (l >= model.config.numLayers) {
      throw new NgateError('ERR_INPUT', `layer ${l} is not in [0, ${model.config.numLayers})`, { field: 'layers' });
    }
  }
}

export function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--model <dir>', 'Hugging Face checkpoint folder or MiniGPT-4 descriptor (default: the embedded demo model)')
    .option('--device <device>', 'cpu, cuda or cuda:N (default cpu)')
    .addOption(new Option('--dtype <dtype>', 'compute dtype (default float32 on cpu, bfloat16 on cuda)').choices(['float32', 'float16', 'bfloat16']));
}

export function addOutputOptions(cmd: Command): Command {
  return cmd
    .option('--json', 'print one JSON document on stdout instead of text')
    .option('-q, --quiet', 'no progress or status lines on stderr');
}

/** A refusal list: a JSON array of strings, or one phrase per line (blank lines and # comments skipped). */
export function readRefusalList(file: string): string[] {
  const abs = requireFile(file, 'refusal list');
  const text = readTextBounded(abs, 'ERR_INPUT');
  if (/^\s*\[/.test(text)) {
    let v: unknown;
    try { v = parseJson(text); } catch (e) { throw new NgateError('ERR_INPUT', `not valid JSON: ${(e as Error).message}`, { file: abs }); }
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw new NgateError('ERR_INPUT', 'must be a JSON array of strings', { file: abs });
    return v as string[];
  }
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (lines.length === 0) throw new NgateError('ERR_INPUT', 'holds no phrases', { file: abs });
  return lines;
}

export function matcherOf(o: Record<string, unknown>): Partial<RefusalMatcher> {
  const m: Partial<RefusalMatcher> = {};
  if (o.refusalMode !== undefined) m.mode = o.refusalMode as 'prefix' | 'substring';
  if (o.refusalList !== undefined) { m.prefixes = readRefusalList(o.refusalList as string); m.name = path.basename(o.refusalList as string); }
  if (o.caseFold === false) m.caseFold = false;
  makeRefusalMatcher(m); // fail on a bad list before the model loads
  return m;
}

export function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

export function seconds(t0: number): number {
  return Math.round((Date.now() - t0) / 100) / 10;
}

export type Action = (ctx: Context, opts: Record<string, unknown>, args: string[]) => Promise<void>;

/** Declares a subcommand: its name, its one-line description and what it runs. */
export type Define = (name: string, description: string, action: Action) => Command;

/** The options of the commands that score refusals (eval, locate). */
export function addRefusalOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--refusal-mode <mode>', 'a refusal starts with (prefix) or contains (substring) a phrase').choices(['prefix', 'substring']))
    .option('--refusal-list <file>', 'refusal phrases: one per line, or a JSON array (default: the paper\'s appendix 8.2 list)')
    .option('--no-case-fold', 'match refusal phrases with letter case');
}
