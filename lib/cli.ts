// The `ngate` command line: each subcommand reads and writes the library's
// files (pairs JSONL, masks and gates in safetensors, checkpoints). `main`
// runs in-process and returns the exit code, so tests need not spawn; `run`
// is what bin/ngate.js calls.
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import * as cliProgress from 'cli-progress';
import * as fs from 'fs';
import * as path from 'path';
import type { Gate, MaskSet } from '../types/results';
import type { ModelDtype } from './config';
import { LlamaConfig, readModelConfig } from './config';
import { fillBenignAnswers, PrivacyPair } from './data';
import { DEMO_DEFAULTS, defined, runDemo } from './demo';
import { NgateError } from './errors';
import { evaluate, EvaluationReport } from './evaluate';
import { buildGate, DEFAULT_GATE_THRESHOLD, loadGate, loadMasks, saveGate, saveMasks } from './gate';
import { EDIT_DEFAULTS, FfnParam, gatedEdit } from './gated-edit';
import { learnMask, MASK_DEFAULTS } from './learn-mask';
import { locateLayer } from './locate';
import { loadModel, Model, Progress } from './model';
import { packageRoot } from './native';
import { readPairsFile, writePairsFile } from './pairs-file';
import { buildPrivacyPairs } from './privacy-pair';
import { makeRefusalMatcher, RefusalMatcher } from './refusal';
import {
  evaluationText, fmt, gateCountsText, readReport, REPORT_FORMAT, scoresText, textTable, writeFileAtomic,
} from './report';
import { readSafetensorsHeader, SafetensorsHeader } from './safetensors';

/** 0 ok, 1 the work failed, 2 bad usage or input, 130 interrupted (128 + SIGINT). */
export const EXIT = { ok: 0, failure: 1, usage: 2, interrupted: 130 } as const;

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

// ---------------------------------------------------------------------------
// Argument parsing. Every parser throws InvalidArgumentError, which commander
// reports with the option's name; main turns it into exit code 2.

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

function parsePositiveInt(s: string): number {
  const v = Number(s);
  if (!/^\d+$/.test(s.trim()) || !Number.isSafeInteger(v) || v < 1) throw new InvalidArgumentError(`"${s}" is not a positive integer.`);
  return v;
}

function parseNonNegativeInt(s: string): number {
  const v = Number(s);
  if (!/^\d+$/.test(s.trim()) || !Number.isSafeInteger(v)) throw new InvalidArgumentError(`"${s}" is not a non-negative integer.`);
  return v;
}

function parseNonNegative(s: string): number {
  const v = Number(s);
  if (s.trim() === '' || !Number.isFinite(v) || v < 0) throw new InvalidArgumentError(`"${s}" is not a non-negative number.`);
  return v;
}

function parseShare(s: string): number {
  const v = parseNonNegative(s);
  if (v > 1) throw new InvalidArgumentError(`"${s}" is not in [0, 1].`);
  return v;
}

function parseSeed(s: string): number {
  const v = Number(s);
  if (!/^-?\d+$/.test(s.trim()) || !Number.isSafeInteger(v)) throw new InvalidArgumentError(`"${s}" is not an integer.`);
  return v;
}

/** "3,19": the first and last layer searched. */
function parseSearch(s: string): [number, number] {
  const m = /^\s*(\d+)\s*[,:-]\s*(\d+)\s*$/.exec(s);
  if (!m || Number(m[2]) < Number(m[1])) throw new InvalidArgumentError(`"${s}" is not a layer range such as 3,19.`);
  return [Number(m[1]), Number(m[2])];
}

const FFN_PARAMS: FfnParam[] = ['gate_proj', 'up_proj', 'down_proj'];

function parseParams(s: string): FfnParam[] {
  const out = s.split(',').map((x) => x.trim()).filter(Boolean);
  const bad = out.find((p) => !FFN_PARAMS.includes(p as FfnParam));
  if (out.length === 0 || bad !== undefined) throw new InvalidArgumentError(`expected a list of ${FFN_PARAMS.join(', ')}${bad ? `, got "${bad}"` : ''}.`);
  if (new Set(out).size !== out.length) throw new InvalidArgumentError(`"${s}" names a parameter twice.`);
  return out as FfnParam[];
}

// ---------------------------------------------------------------------------
// What every command shares: where output goes, progress, the abort signal.

class UsageError extends NgateError {
  constructor(message: string, file?: string) {
    super('ERR_USAGE', message, file === undefined ? {} : { file });
  }
}

// Codes that mean the user's files or arguments are wrong, not that the work failed.
const BAD_INPUT_CODES = new Set(['ERR_USAGE', 'ERR_INPUT', 'ERR_MISSING_FILE', 'ERR_CONFIG', 'ERR_SAFETENSORS', 'ERR_CHECKPOINT',
  'ERR_MISSING_TENSOR', 'ERR_DEVICE', 'ERR_GATE_FILE', 'ERR_MASK_FILE', 'ERR_PAIRS_FILE', 'ERR_TOKENIZER', 'ERR_SAVE']);

function exitCodeOf(e: unknown, aborted: boolean): number {
  const code = (e as { code?: unknown })?.code;
  if (aborted || code === 'ERR_ABORTED' || (e as Error)?.name === 'AbortError') return EXIT.interrupted;
  if (typeof code === 'string' && (BAD_INPUT_CODES.has(code) || /^ERR_.*(_FILE|INPUT|CONFIG)$/.test(code))) return EXIT.usage;
  if (code === 'ENOENT' || code === 'EISDIR' || code === 'ENOTDIR') return EXIT.usage;
  return EXIT.failure;
}

interface CommonOpts { json?: boolean; quiet?: boolean }
interface ModelOpts { model?: string; device?: string; dtype?: ModelDtype }

class Context {
  private bar: cliProgress.SingleBar | null = null;
  private barStage = '';
  readonly bars: boolean;

  constructor(readonly io: CliIo, readonly signal: AbortSignal, readonly opts: CommonOpts) {
    // Bars only for a person watching: a terminal, and not when a script wants JSON.
    this.bars = !!io.stderr.isTTY && !opts.json;
  }

  /** A line on stderr for a person; silent with --json or --quiet. */
  log(line: string): void {
    if (this.opts.json || this.opts.quiet) return;
    this.stopBar();
    this.io.stderr.write(line + '\n');
  }

  /** The library's progress callback, drawn as a bar per stage. */
  readonly progress = (p: Progress): void => {
    if (!this.bars || this.opts.quiet) return;
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

  /** Prints the result: one JSON document with --json, the text otherwise. */
  emit(doc: unknown, text: string): void {
    this.stopBar();
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

function requireFile(file: string, what: string): string {
  const abs = path.resolve(file);
  if (!fs.existsSync(abs)) throw new UsageError(`${what} not found: ${abs}`, undefined);
  if (!fs.statSync(abs).isFile()) throw new UsageError(`${what} is not a file: ${abs}`);
  return abs;
}

/** The folder an output file goes to is made if missing; the file itself is written atomically by the library. */
function outputFile(file: string): string {
  const abs = path.resolve(file);
  if (fs.existsSync(abs) && fs.statSync(abs).isDirectory()) throw new UsageError(`the output is a folder, expected a file path: ${abs}`);
  fs.mkdirSync(path.dirname(abs), { recursive: true });
  return abs;
}

function modelDirOf(o: ModelOpts): string {
  const dir = path.resolve(o.model ?? defaultModelDir());
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    const hint = o.model === undefined ? ' (the embedded demo model is missing from this installation; pass --model DIR)' : '';
    throw new UsageError(`model folder not found or without config.json: ${dir}${hint}`);
  }
  return dir;
}

async function openModel(ctx: Context, o: ModelOpts): Promise<Model> {
  const dir = modelDirOf(o);
  ctx.log(`loading ${dir}`);
  return loadModel(dir, { device: o.device, dtype: o.dtype, signal: ctx.signal, onProgress: ctx.progress });
}

async function readPairs(ctx: Context, file: string, what = 'pairs file'): Promise<PrivacyPair[]> {
  const abs = requireFile(file, what);
  const pairs = await readPairsFile(abs);
  ctx.checkAborted();
  return pairs;
}

/** r_org for every pair without one, from the unedited model. */
async function withBenignAnswers(ctx: Context, model: Model, pairs: PrivacyPair[]): Promise<{ pairs: PrivacyPair[]; filled: number }> {
  const missing = pairs.filter((p) => p.benignAnswer === undefined).length;
  if (missing === 0) return { pairs, filled: 0 };
  ctx.log(`generating r_org (the unedited model's benign answers) for ${missing} pairs`);
  const out = await fillBenignAnswers(model, pairs, { signal: ctx.signal, onProgress: (done, total) => ctx.progress({ stage: 'r_org', done, total }) });
  return { pairs: out, filled: missing };
}

function addModelOptions(cmd: Command): Command {
  return cmd
    .option('--model <dir>', 'Hugging Face checkpoint folder (default: the embedded demo model)')
    .option('--device <device>', 'cpu, cuda or cuda:N (default cpu)')
    .addOption(new Option('--dtype <dtype>', 'compute dtype (default float32 on cpu, bfloat16 on cuda)').choices(['float32', 'float16', 'bfloat16']));
}

function addOutputOptions(cmd: Command): Command {
  return cmd
    .option('--json', 'print one JSON document on stdout instead of text')
    .option('-q, --quiet', 'no progress or status lines on stderr');
}

function mean(xs: number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN;
}

function seconds(t0: number): number {
  return Math.round((Date.now() - t0) / 100) / 10;
}

// ---------------------------------------------------------------------------
// Commands. Each returns nothing and prints through ctx.emit; errors propagate.

type Action = (ctx: Context, opts: Record<string, unknown>, args: string[]) => Promise<void>;

async function demoCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const mo = o as ModelOpts;
  const modelDir = modelDirOf(mo);
  const outDir = path.resolve((o.out as string | undefined) ?? 'ngate-demo');
  if (outDir === modelDir) throw new UsageError(`--out must not be the model folder: ${outDir}`);
  const t0 = Date.now();
  const res = await runDemo({
    modelDir, outDir, seed: o.seed as number | undefined, device: mo.device, dtype: mo.dtype,
    signal: ctx.signal, onProgress: ctx.progress, log: (l) => ctx.log(l),
    layers: o.layers as number[] | undefined,
    trainPairs: o.trainPairs as number | undefined, heldOutPairs: o.heldOutPairs as number | undefined,
    mask: defined({ steps: o.steps as number | undefined, lr: o.maskLr as number | undefined }),
    edit: defined({ epochs: o.epochs as number | undefined, lr: o.lr as number | undefined }),
    maxNewTokens: o.maxNewTokens as number | undefined,
    scan: o.scan === false ? false : undefined,
  });
  const r = res.report;
  ctx.emit({
    outDir, files: res.files, seconds: seconds(t0),
    scores: Object.fromEntries(r.runs.map((x) => [x.name, { seen: x.seen.scores.overall, heldOut: x.heldOut.scores.overall }])),
    editLayers: r.settings.editLayers, layers: r.layers.map(({ negativeCounts: _n, ...rest }) => rest), timings: r.timings,
  }, [
    scoresText(r), '',
    `edited layer${r.settings.editLayers.length > 1 ? 's' : ''} ${r.settings.editLayers.join(', ')} (${r.settings.layerChoice})`,
    `report: ${res.files.summary}`, `        ${res.files.json}`, `        ${res.files.maskShare}`, `        ${res.files.strongShare}`,
  ].join('\n'));
}

const SPLIT_FILES = { train: 'train.jsonl', test: 'test.jsonl', heldOut: 'held-out.jsonl' } as const;

async function dataCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const outDir = path.resolve(o.out as string);
  if (fs.existsSync(outDir) && !fs.statSync(outDir).isDirectory()) throw new UsageError(`--out is a file, expected a folder: ${outDir}`);
  const targets = [...Object.values(SPLIT_FILES), 'summary.json'].map((f) => path.join(outDir, f));
  const existing = targets.filter((f) => fs.existsSync(f));
  if (existing.length > 0 && !o.overwrite) throw new UsageError(`would replace ${existing.join(', ')} (pass --overwrite to replace them)`);
  const opts: Record<string, unknown> = {};
  if (o.seed !== undefined) opts.seed = o.seed;
  if (o.contextShare !== undefined) opts.contextShare = o.contextShare;
  const data = buildPrivacyPairs(opts as Parameters<typeof buildPrivacyPairs>[0]);
  ctx.checkAborted();
  fs.mkdirSync(outDir, { recursive: true });
  const files: Record<string, string> = {};
  for (const [split, name] of Object.entries(SPLIT_FILES) as [keyof typeof SPLIT_FILES, string][]) {
    files[split] = path.join(outDir, name);
    await writePairsFile(files[split], data[split]);
  }
  const byCategory = (ps: PrivacyPair[]) => ps.reduce<Record<string, number>>((acc, p) => { acc[p.category] = (acc[p.category] ?? 0) + 1; return acc; }, {});
  const summary = {
    options: opts,
    counts: { train: data.train.length, test: data.test.length, heldOut: data.heldOut.length },
    byCategory: { train: byCategory(data.train), test: byCategory(data.test), heldOut: byCategory(data.heldOut) },
    heldOutTemplates: data.heldOutTemplates, heldOutAttributes: data.heldOutAttributes,
    files: Object.fromEntries(Object.entries(SPLIT_FILES).map(([k, v]) => [k, v])),
  };
  files.summary = path.join(outDir, 'summary.json');
  writeFileAtomic(files.summary, JSON.stringify(summary, null, 2) + '\n');
  const cats = [...new Set([...data.train, ...data.test, ...data.heldOut].map((p) => p.category))].sort();
  ctx.emit({ outDir, ...summary, files }, [
    textTable(['category', 'train', 'test', 'held-out'], cats.map((c) => [c, String(summary.byCategory.train[c] ?? 0), String(summary.byCategory.test[c] ?? 0), String(summary.byCategory.heldOut[c] ?? 0)])),
    '', `wrote ${files.train}, ${files.test}, ${files.heldOut} and ${files.summary}`,
  ].join('\n'));
}

/** Layers the model has, checked before any work is done. */
function checkLayers(model: Model, layers: number[] | undefined): void {
  for (const l of layers ?? []) {
    if (l >= model.config.numLayers) {
      throw new NgateError('ERR_INPUT', `layer ${l} is not in [0, ${model.config.numLayers})`, { field: 'layers' });
    }
  }
}

async function learnMaskCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const out = outputFile(o.out as string);
  let pairs = await readPairs(ctx, o.pairs as string);
  const model = await openModel(ctx, o as ModelOpts);
  try {
    const t0 = Date.now();
    checkLayers(model, o.layers as number[]);
    const filled = await withBenignAnswers(ctx, model, pairs);
    pairs = filled.pairs;
    if (o.pairsOut !== undefined && filled.filled > 0) {
      const f = outputFile(o.pairsOut as string);
      ctx.checkAborted();
      await writePairsFile(f, pairs);
      ctx.log(`wrote the pairs with r_org to ${f}`);
    }
    const layers = o.layers as number[];
    ctx.log(`learning masks for ${pairs.length} pairs on layer${layers.length > 1 ? 's' : ''} ${layers.join(', ')}`);
    const masks = await learnMask(model, pairs, {
      layers, ...defined({
        steps: o.steps as number | undefined, lr: o.lr as number | undefined, l1: o.l1 as number | undefined,
        alpha: o.alpha as number | undefined, batchSize: o.batchSize as number | undefined,
        hookPoint: o.hookPoint as 'ffn' | 'block' | undefined, seed: o.seed as number | undefined,
      }),
      signal: ctx.signal, onProgress: ctx.progress,
    });
    ctx.checkAborted();
    saveMasks(masks, out);
    const stats = maskStats(masks);
    ctx.emit({
      out, pairCount: masks.pairIds.length, layers: masks.layers, hiddenSize: masks.hiddenSize, hookPoint: masks.hookPoint,
      options: masks.options, benignAnswersGenerated: filled.filled, layerStats: stats,
      meanLoss: meanLoss(masks), seconds: seconds(t0),
    }, [
      maskStatsText(masks, stats), '',
      `mean loss at the last step: L_sen ${fmt(meanLoss(masks).sensitive)}, L_benign ${fmt(meanLoss(masks).benign)}, L1 ${fmt(meanLoss(masks).l1, 4)}`,
      `wrote ${out}`,
    ].join('\n'));
  } finally {
    model.dispose();
  }
}

interface MaskLayerStats { layer: number; negativeShare: number; dimsEverNegative: number; strongAtDefaultThreshold: number }

function maskStats(masks: MaskSet): MaskLayerStats[] {
  const { layers, hiddenSize: d, pairIds } = masks;
  const gate = buildGate(masks);
  return layers.map((layer, li) => {
    let neg = 0;
    for (let p = 0; p < pairIds.length; p++) {
      const base = (p * layers.length + li) * d;
      for (let j = 0; j < d; j++) if (masks.masks[base + j] < 0) neg++;
    }
    const c = gate.counts[li];
    return { layer, negativeShare: neg / (pairIds.length * d), dimsEverNegative: d - c.inactive, strongAtDefaultThreshold: c.strong };
  });
}

function maskStatsText(masks: MaskSet, stats: MaskLayerStats[]): string {
  return textTable(['layer', 'entries m < 0', 'dims ever < 0', `strong (τ ${DEFAULT_GATE_THRESHOLD})`],
    stats.map((s) => [String(s.layer), `${(100 * s.negativeShare).toFixed(1)}%`, `${s.dimsEverNegative}/${masks.hiddenSize}`, String(s.strongAtDefaultThreshold)]));
}

function meanLoss(masks: MaskSet): { sensitive: number; benign: number; l1: number } {
  return {
    sensitive: mean(masks.losses.map((l) => l.sensitive)), benign: mean(masks.losses.map((l) => l.benign)), l1: mean(masks.losses.map((l) => l.l1)),
  };
}

async function buildGateCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const files = (o.masks as string[]).map((f) => requireFile(f, 'masks file'));
  const out = outputFile(o.out as string);
  const sets = files.map((f) => loadMasks(f));
  const gate = buildGate(sets, { threshold: o.threshold as number | undefined });
  ctx.checkAborted();
  saveGate(gate, out);
  const summary = out.endsWith('.safetensors') ? out.slice(0, -'.safetensors'.length) + '.json' : out + '.json';
  ctx.emit({ out, summary, masks: files, layers: gate.layers, hiddenSize: gate.hiddenSize, threshold: gate.threshold, pairCount: gate.pairCount, counts: gate.counts },
    [gateCountsText(gate.counts, gate.hiddenSize), '', `τ = ${gate.threshold}, N = ${gate.pairCount} pairs`, `wrote ${out} and ${summary}`].join('\n'));
}

/** Whether `inner` is `outer` or lies inside it (after resolving links where they exist). */
function within(inner: string, outer: string): boolean {
  const real = (p: string) => {
    let head = p; const tail: string[] = [];
    while (!fs.existsSync(head) && path.dirname(head) !== head) { tail.unshift(path.basename(head)); head = path.dirname(head); }
    return path.join(fs.realpathSync(head), ...tail);
  };
  const a = real(path.resolve(inner)), b = real(path.resolve(outer));
  return a === b || a.startsWith(b + path.sep);
}

async function editCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const out = path.resolve(o.out as string);
  const modelDir = modelDirOf(o as ModelOpts);
  if (within(out, modelDir) || within(modelDir, out)) {
    throw new UsageError(`refusing to write the edited checkpoint over or inside the model folder: --out ${out}, model ${modelDir}`);
  }
  if (fs.existsSync(out) && (!fs.statSync(out).isDirectory() || fs.readdirSync(out).length > 0) && !o.overwrite) {
    throw new UsageError(`the output folder exists and is not empty: ${out} (pass --overwrite to replace it)`);
  }
  const gated = o.gate !== false;
  if (gated && typeof o.gate !== 'string') throw new UsageError('edit needs --gate FILE, or --no-gate for the edit without the gate (then --layers)');
  if (!gated && o.layers === undefined) throw new UsageError('--no-gate needs --layers: without a gate there is nothing to take the layers from');
  let gate: Gate | null = null;
  if (gated) gate = loadGate(requireFile(o.gate as string, 'gate file'));
  let pairs = await readPairs(ctx, o.pairs as string);
  const model = await openModel(ctx, o as ModelOpts);
  try {
    const t0 = Date.now();
    const layers = (o.layers as number[] | undefined) ?? gate!.layers;
    checkLayers(model, layers);
    pairs = (await withBenignAnswers(ctx, model, pairs)).pairs;
    ctx.log(`editing layer${layers.length > 1 ? 's' : ''} ${layers.join(', ')} ${gated ? 'through the gate' : 'without the gate'} on ${pairs.length} pairs`);
    const report = await gatedEdit(model, pairs, gate, {
      gated, layers, ...defined({
        epochs: o.epochs as number | undefined, lr: o.lr as number | undefined, alpha: o.alpha as number | undefined,
        batchSize: o.batchSize as number | undefined, params: o.params as FfnParam[] | undefined,
      }),
      signal: ctx.signal, onProgress: ctx.progress,
    });
    ctx.checkAborted();
    ctx.log(`saving ${out}`);
    await model.save(out, { overwrite: !!o.overwrite, signal: ctx.signal, onProgress: ctx.progress });
    ctx.emit({ out, model: model.dir, ...report, seconds: seconds(t0) }, [
      textTable(['epoch', 'loss'], report.epochLosses.map((l, i) => [String(i + 1), fmt(l, 4)])), '',
      `edited ${report.editedTensors.length} tensors of layer${report.layers.length > 1 ? 's' : ''} ${report.layers.join(', ')} (${report.params.join(', ')}), ${report.gated ? 'with' : 'without'} the gate`,
      `wrote ${out}`,
    ].join('\n'));
  } finally {
    model.dispose();
  }
}

/** A refusal list: a JSON array of strings, or one phrase per line (blank lines and # comments skipped). */
function readRefusalList(file: string): string[] {
  const abs = requireFile(file, 'refusal list');
  const text = fs.readFileSync(abs, 'utf8');
  if (/^\s*\[/.test(text)) {
    let v: unknown;
    try { v = JSON.parse(text); } catch (e) { throw new NgateError('ERR_INPUT', `not valid JSON: ${(e as Error).message}`, { file: abs }); }
    if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw new NgateError('ERR_INPUT', 'must be a JSON array of strings', { file: abs });
    return v as string[];
  }
  const lines = text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
  if (lines.length === 0) throw new NgateError('ERR_INPUT', 'holds no phrases', { file: abs });
  return lines;
}

function matcherOf(o: Record<string, unknown>): Partial<RefusalMatcher> {
  const m: Partial<RefusalMatcher> = {};
  if (o.refusalMode !== undefined) m.mode = o.refusalMode as 'prefix' | 'substring';
  if (o.refusalList !== undefined) { m.prefixes = readRefusalList(o.refusalList as string); m.name = path.basename(o.refusalList as string); }
  if (o.caseFold === false) m.caseFold = false;
  makeRefusalMatcher(m); // fail on a bad list before the model loads
  return m;
}

async function evalCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const refusal = matcherOf(o);
  const pairs = await readPairs(ctx, o.pairs as string);
  const out = o.out !== undefined ? outputFile(o.out as string) : undefined;
  const model = await openModel(ctx, o as ModelOpts);
  try {
    const t0 = Date.now();
    ctx.log(`answering ${pairs.length * 2} queries`);
    const report: EvaluationReport = await evaluate(model, pairs, {
      ...defined({ maxNewTokens: o.maxNewTokens as number | undefined, batchSize: o.batchSize as number | undefined }), refusal,
      signal: ctx.signal, onProgress: ctx.progress,
    });
    ctx.checkAborted();
    const doc = { model: model.dir, pairs: path.resolve(o.pairs as string), seconds: seconds(t0), ...report };
    if (out) writeFileAtomic(out, JSON.stringify(doc, null, 2) + '\n');
    ctx.emit(doc, [evaluationText(report), '', `refusals matched by ${report.matcher.name} (${report.matcher.mode} mode)`, ...(out ? [`wrote ${out}`] : [])].join('\n'));
  } finally {
    model.dispose();
  }
}

async function locateCommand(ctx: Context, o: Record<string, unknown>): Promise<void> {
  const refusal = matcherOf(o);
  const train = await readPairs(ctx, o.train as string, 'training pairs file');
  const val = await readPairs(ctx, o.val as string, 'validation pairs file');
  const model = await openModel(ctx, o as ModelOpts);
  try {
    const t0 = Date.now();
    const filled = (await withBenignAnswers(ctx, model, train)).pairs;
    const search = (o.search as [number, number] | undefined) ?? [3, 19];
    ctx.log(`single-layer masks on layers ${search[0]}–${Math.min(search[1], model.config.numLayers - 1)}, then single-layer edits within radius ${o.radius ?? 3} of the centre`);
    const res = await locateLayer(model, filled, val, {
      searchLayers: search, ...defined({ radius: o.radius as number | undefined, threshold: o.threshold as number | undefined }),
      mask: defined({ steps: o.steps as number | undefined, lr: o.maskLr as number | undefined, l1: o.l1 as number | undefined, alpha: o.alpha as number | undefined }),
      edit: { ...defined({ epochs: o.epochs as number | undefined, lr: o.lr as number | undefined, alpha: o.alpha as number | undefined }), gated: o.gate !== false },
      evaluate: { ...defined({ maxNewTokens: o.maxNewTokens as number | undefined }), refusal },
      signal: ctx.signal, onProgress: ctx.progress,
    });
    ctx.emit({ model: model.dir, seconds: seconds(t0), ...res }, [
      textTable(['layer', 'strong share', 'EtA', 'RtA(sens)', '1−RtA(benign)', 'note'],
        res.table.map((r) => [String(r.layer), `${(100 * r.strongShare).toFixed(1)}%`, fmt(r.eta), fmt(r.rtaSensitive), fmt(r.nonRefusalBenign),
          [r.layer === res.centre ? 'centre' : '', r.layer === res.best.layer ? 'best' : ''].filter(Boolean).join(', ')])),
      '', `search centre ${res.centre}, radius ${res.radius}; best layer ${res.best.layer} (EtA ${fmt(res.best.eta)})`,
    ].join('\n'));
  } finally {
    model.dispose();
  }
}

// ---------------------------------------------------------------------------
// inspect: whatever the file is.

interface Inspection { kind: string; path: string; [k: string]: unknown }

function bytesText(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0, v = n;
  while (v >= 1000 && i < units.length - 1) { v /= 1000; i++; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

function tensorStats(headers: SafetensorsHeader[]): { parameters: number; tensors: number; dtypes: Record<string, { tensors: number; parameters: number }> } {
  let parameters = 0, tensors = 0;
  const dtypes: Record<string, { tensors: number; parameters: number }> = {};
  for (const h of headers) {
    for (const e of h.tensors.values()) {
      const n = e.shape.reduce((a, b) => a * b, 1);
      parameters += n; tensors++;
      const d = (dtypes[e.dtype] ??= { tensors: 0, parameters: 0 });
      d.tensors++; d.parameters += n;
    }
  }
  return { parameters, tensors, dtypes };
}

function inspectCheckpoint(dir: string): { doc: Inspection; text: string } {
  const modelConfig = readModelConfig(dir);
  const llava = modelConfig.modelType === 'llava' ? modelConfig : null;
  const config: LlamaConfig = llava ? llava.text : (modelConfig as LlamaConfig);
  const index = path.join(dir, 'model.safetensors.index.json');
  let shardNames: string[];
  if (fs.existsSync(index)) {
    const map = (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map?: Record<string, string> }).weight_map ?? {};
    shardNames = [...new Set(Object.values(map))].sort();
  } else {
    shardNames = ['model.safetensors'];
  }
  const headers = shardNames.map((f) => readSafetensorsHeader(path.join(dir, f)));
  const stats = tensorStats(headers);
  const shards = headers.map((h) => ({ file: path.basename(h.file), bytes: h.fileSize, tensors: h.tensors.size }));
  const has = (f: string) => fs.existsSync(path.join(dir, f));
  let chatTemplate = has('chat_template.jinja') || has('chat_template.json');
  if (!chatTemplate && has('tokenizer_config.json')) {
    try { chatTemplate = typeof (JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8')) as { chat_template?: unknown }).chat_template !== 'undefined'; } catch { /* reported by loadModel, not here */ }
  }
  const c = config;
  const summary = {
    modelType: c.modelType, numLayers: c.numLayers, hiddenSize: c.hiddenSize, intermediateSize: c.intermediateSize,
    numHeads: c.numHeads, numKvHeads: c.numKvHeads, headDim: c.headDim, vocabSize: c.vocabSize,
    maxPositionEmbeddings: c.maxPositionEmbeddings, tieWordEmbeddings: c.tieWordEmbeddings, ropeTheta: c.ropeTheta, dtype: c.dtype,
  };
  const doc: Inspection = {
    kind: 'checkpoint', path: dir, config: summary, parameters: stats.parameters, tensors: stats.tensors, dtypes: stats.dtypes, shards,
    tokenizer: has('tokenizer.json'), chatTemplate,
  };
  const text = [
    `checkpoint ${dir}`,
    ...(llava ? [`  llava: CLIP vision tower of ${llava.vision.numLayers} layers, hidden ${llava.vision.hiddenSize}, ${llava.vision.imageSize}px images in ${llava.vision.patchSize}px patches, ${llava.imageTokens} image tokens (id ${llava.imageTokenId}); language model:`] : []),
    `  ${c.modelType}: ${c.numLayers} layers, hidden ${c.hiddenSize}, FFN ${c.intermediateSize}, ${c.numHeads} heads (${c.numKvHeads} key-value, head dim ${c.headDim}), vocabulary ${c.vocabSize}${c.tieWordEmbeddings ? ', tied embeddings' : ''}`,
    `  ${stats.parameters.toLocaleString('en-US')} parameters in ${stats.tensors} tensors; ${Object.entries(stats.dtypes).map(([k, v]) => `${k} ${v.tensors} tensors`).join(', ')}; config dtype ${c.dtype ?? 'not given'}`,
    `  ${shards.length === 1 ? 'one weights file' : `${shards.length} shards`}: ${shards.map((s) => `${s.file} (${bytesText(s.bytes)})`).join(', ')}`,
    `  tokenizer.json ${doc.tokenizer ? 'present' : 'missing'}, chat template ${chatTemplate ? 'present' : 'not given (Vicuna format is used)'}`,
  ].join('\n');
  return { doc, text };
}

function inspectGate(file: string, gate: Gate): { doc: Inspection; text: string } {
  const doc: Inspection = { kind: 'gate', path: file, layers: gate.layers, hiddenSize: gate.hiddenSize, threshold: gate.threshold, pairCount: gate.pairCount, counts: gate.counts };
  return { doc, text: [`gate ${file}: τ = ${gate.threshold}, N = ${gate.pairCount} pairs, hidden size ${gate.hiddenSize}`, gateCountsText(gate.counts, gate.hiddenSize)].join('\n') };
}

function inspectMasks(file: string, masks: MaskSet): { doc: Inspection; text: string } {
  const stats = maskStats(masks);
  const loss = meanLoss(masks);
  const doc: Inspection = {
    kind: 'masks', path: file, layers: masks.layers, hiddenSize: masks.hiddenSize, pairCount: masks.pairIds.length,
    hookPoint: masks.hookPoint ?? null, options: masks.options ?? null, layerStats: stats, meanLoss: loss,
  };
  return {
    doc, text: [
      `masks ${file}: ${masks.pairIds.length} pairs, layer${masks.layers.length > 1 ? 's' : ''} ${masks.layers.join(', ')}, hidden size ${masks.hiddenSize}, hook point ${masks.hookPoint ?? 'ffn'}`,
      ...(masks.options ? [`  learned with ${Object.entries(masks.options).map(([k, v]) => `${k} ${v}`).join(', ')}`] : []),
      maskStatsText(masks, stats),
      `mean loss at the last step: L_sen ${fmt(loss.sensitive)}, L_benign ${fmt(loss.benign)}, L1 ${fmt(loss.l1, 4)}`,
    ].join('\n'),
  };
}

function inspectPairs(file: string, pairs: PrivacyPair[]): { doc: Inspection; text: string } {
  const byCategory: Record<string, number> = {};
  for (const p of pairs) byCategory[p.category] = (byCategory[p.category] ?? 0) + 1;
  const withAnswer = pairs.filter((p) => p.benignAnswer !== undefined).length;
  const withImage = pairs.filter((p) => p.image !== undefined).length;
  const doc: Inspection = { kind: 'pairs', path: file, pairCount: pairs.length, byCategory, withBenignAnswer: withAnswer, withImage, example: pairs[0] ?? null };
  const ex = pairs[0];
  return {
    doc, text: [
      `pairs ${file}: ${pairs.length} pairs, ${withAnswer} with r_org${withImage ? `, ${withImage} with an image` : ''}`,
      textTable(['category', 'pairs'], Object.keys(byCategory).sort().map((c) => [c, String(byCategory[c])])),
      ...(ex ? ['', `e.g. ${ex.id} (subject "${ex.subject}")`, `  sensitive: ${ex.sensitive}`, `  benign:    ${ex.benign}`, ...(ex.benignAnswer !== undefined ? [`  r_org:     ${ex.benignAnswer}`] : [])] : []),
    ].join('\n'),
  };
}

function inspectReport(file: string): { doc: Inspection; text: string } {
  const r = readReport(file);
  return {
    doc: { kind: 'demo-report', path: file, createdAt: r.createdAt, model: r.model, settings: r.settings, scores: Object.fromEntries(r.runs.map((x) => [x.name, { seen: x.seen.scores.overall, heldOut: x.heldOut.scores.overall }])), timings: r.timings },
    text: [`demo report ${file} (${r.createdAt}), model ${r.model.dir}, edited layers ${r.settings.editLayers.join(', ')}`, scoresText(r)].join('\n'),
  };
}

async function inspectPath(target: string): Promise<{ doc: Inspection; text: string }> {
  const abs = path.resolve(target);
  if (!fs.existsSync(abs)) throw new UsageError(`not found: ${abs}`);
  if (fs.statSync(abs).isDirectory()) {
    if (fs.existsSync(path.join(abs, 'config.json'))) return inspectCheckpoint(abs);
    if (fs.existsSync(path.join(abs, 'report.json'))) return inspectReport(path.join(abs, 'report.json'));
    const jsonl = fs.readdirSync(abs).filter((f) => f.endsWith('.jsonl')).sort();
    if (jsonl.length > 0) {
      const parts = await Promise.all(jsonl.map(async (f) => inspectPairs(path.join(abs, f), await readPairsFile(path.join(abs, f)))));
      return { doc: { kind: 'pairs-folder', path: abs, files: parts.map((p) => p.doc) }, text: parts.map((p) => p.text).join('\n\n') };
    }
    throw new UsageError(`cannot tell what this folder is (no config.json, report.json or *.jsonl): ${abs}`);
  }
  if (abs.endsWith('.jsonl')) return inspectPairs(abs, await readPairsFile(abs));
  if (abs.endsWith('.safetensors')) {
    const header = readSafetensorsHeader(abs);
    if (header.metadata.format === 'ngate.gate') return inspectGate(abs, loadGate(abs));
    if (header.metadata.format === 'ngate.masks') return inspectMasks(abs, loadMasks(abs));
    const stats = tensorStats([header]);
    const names = [...header.tensors.values()];
    return {
      doc: { kind: 'safetensors', path: abs, metadata: header.metadata, ...stats, bytes: header.fileSize, tensorList: names.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape })) },
      text: [`safetensors ${abs}: ${stats.tensors} tensors, ${stats.parameters.toLocaleString('en-US')} values, ${bytesText(header.fileSize)}`,
        textTable(['tensor', 'dtype', 'shape'], names.slice(0, 40).map((e) => [e.name, e.dtype, `[${e.shape.join(', ')}]`])),
        ...(names.length > 40 ? [`… and ${names.length - 40} more`] : [])].join('\n'),
    };
  }
  if (abs.endsWith('.json')) {
    let v: { format?: unknown; architectures?: unknown } | null = null;
    try { v = JSON.parse(fs.readFileSync(abs, 'utf8')); } catch (e) { throw new NgateError('ERR_INPUT', `not valid JSON: ${(e as Error).message}`, { file: abs }); }
    if (v?.format === REPORT_FORMAT) return inspectReport(abs);
    if (v?.format === 'ngate.gate') {
      const sibling = abs.slice(0, -'.json'.length) + '.safetensors';
      if (fs.existsSync(sibling)) return inspectGate(sibling, loadGate(sibling));
    }
    if (path.basename(abs) === 'config.json') return inspectCheckpoint(path.dirname(abs));
  }
  throw new UsageError(`cannot tell what this file is (expected a checkpoint folder, a masks or gate .safetensors, a pairs .jsonl or a demo report): ${abs}`);
}

async function inspectCommand(ctx: Context, _o: Record<string, unknown>, args: string[]): Promise<void> {
  const { doc, text } = await inspectPath(args[0]);
  ctx.emit(doc, text);
}

// ---------------------------------------------------------------------------
// The program.

function buildProgram(io: CliIo, signal: AbortSignal): Command {
  const program = new Command('ngate')
    .description('Neural Gate: neuron-level privacy editing of LLaMA-family models.\nRun `ngate demo` to see it work end to end on the embedded demo model.')
    .version(packageVersion(), '-V, --version')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride()
    .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) });

  const sub = (name: string, description: string, action: Action): Command => {
    const cmd = program.command(name).description(description).exitOverride()
      .configureOutput({ writeOut: (s) => io.stdout.write(s), writeErr: (s) => io.stderr.write(s) })
      .showHelpAfterError('(run with --help for usage)');
    // parseAsync awaits the action, so its errors reach main's catch.
    cmd.action(async (...a: unknown[]) => {
      const c = a[a.length - 1] as Command;
      const ctx = new Context(io, signal, c.opts() as CommonOpts);
      try {
        await action(ctx, c.opts(), c.args);
      } finally {
        ctx.stopBar();
      }
    });
    return cmd;
  };

  addOutputOptions(addModelOptions(sub('demo', 'the whole method on the demo model: pairs, masks, gate, gated and ungated edit, scores, report folder', demoCommand)
    .option('--out <dir>', 'report folder', 'ngate-demo')
    .option('--seed <n>', 'seed of the pair builder', parseSeed, DEMO_DEFAULTS.seed)
    .option('--layers <list>', 'edit these layers (default: the scanned layer with the most strongly active neurons)', parseLayers)
    .option('--no-scan', 'learn masks on the edited layers only (no per-layer scan for figure 2d)')
    .option('--train-pairs <n>', 'training (seen) pairs', parsePositiveInt, DEMO_DEFAULTS.trainPairs)
    .option('--held-out-pairs <n>', 'held-out pairs', parsePositiveInt, DEMO_DEFAULTS.heldOutPairs)
    .option('--steps <n>', 'mask steps', parsePositiveInt)
    .option('--mask-lr <x>', 'mask learning rate', parseNonNegative)
    .option('--epochs <n>', 'edit epochs', parsePositiveInt)
    .option('--lr <x>', 'edit learning rate', parseNonNegative)
    .option('--max-new-tokens <n>', 'tokens per answer when scoring', parsePositiveInt)));

  addOutputOptions(sub('data', 'write PrivacyPair train / test / held-out splits as JSONL', dataCommand)
    .requiredOption('--out <dir>', 'folder for train.jsonl, test.jsonl, held-out.jsonl and summary.json')
    .option('--seed <n>', 'seed of the builder', parseSeed)
    .option('--context-share <x>', 'share of queries with an added context sentence, in [0, 1]', parseShare)
    .option('--overwrite', 'replace existing split files'));

  addOutputOptions(addModelOptions(sub('learn-mask', 'learn the vectors m_l per pair (eq. 2–5; several layers jointly, eq. 8)', learnMaskCommand)
    .requiredOption('--pairs <file>', 'pairs JSONL (r_org is generated where missing)')
    .requiredOption('--layers <list>', 'decoder layers, e.g. 2,3 or 2-4', parseLayers)
    .requiredOption('--out <file>', 'masks .safetensors')
    .option('--steps <n>', `Adam steps (default ${MASK_DEFAULTS.steps})`, parsePositiveInt)
    .option('--lr <x>', `mask learning rate (default ${MASK_DEFAULTS.lr})`, parseNonNegative)
    .option('--l1 <x>', `λ of ‖m − 1‖₁ (default ${MASK_DEFAULTS.l1})`, parseNonNegative)
    .option('--alpha <x>', `α, weight of L_benign (default ${MASK_DEFAULTS.alpha})`, parseNonNegative)
    .option('--batch-size <n>', `pairs per batch (default ${MASK_DEFAULTS.batchSize}; does not change the result)`, parsePositiveInt)
    .addOption(new Option('--hook-point <where>', 'where m_l scales the features (default ffn)').choices(['ffn', 'block']))
    .option('--seed <n>', 'recorded with the masks', parseSeed)
    .option('--pairs-out <file>', 'also write the pairs with the generated r_org, to reuse them')));

  addOutputOptions(sub('build-gate', 'aggregate masks into the neural gate M_l (eq. 6) and print the per-layer neuron counts', buildGateCommand)
    .requiredOption('--masks <files...>', 'one or more masks files (shards of one run: same layers, distinct pairs)')
    .requiredOption('--out <file>', 'gate .safetensors (a .json summary is written beside it)')
    .option('--threshold <x>', `τ: M_l > τ is strongly active (default ${DEFAULT_GATE_THRESHOLD})`, parseShare));

  addOutputOptions(addModelOptions(sub('edit', 'fine-tune the FFN of the gate\'s layers with the gated gradient (eq. 7) and save the checkpoint', editCommand)
    .requiredOption('--pairs <file>', 'training pairs JSONL')
    .option('--gate <file>', 'gate .safetensors from build-gate')
    .option('--no-gate', 'the same edit without the gate (the paper\'s "w/o gate" ablation); needs --layers')
    .option('--layers <list>', 'layers to edit (default: the gate\'s)', parseLayers)
    .option('--epochs <n>', `epochs (default ${EDIT_DEFAULTS.epochs})`, parsePositiveInt)
    .option('--lr <x>', `Adam learning rate (default ${EDIT_DEFAULTS.lr})`, parseNonNegative)
    .option('--alpha <x>', `α, weight of L_benign (default ${EDIT_DEFAULTS.alpha})`, parseNonNegative)
    .option('--batch-size <n>', `pairs per step (default ${EDIT_DEFAULTS.batchSize})`, parsePositiveInt)
    .option('--params <list>', 'FFN weights to train (default gate_proj,up_proj,down_proj)', parseParams)
    .requiredOption('--out <dir>', 'folder for the edited checkpoint (never the model folder)')
    .option('--overwrite', 'replace a non-empty output folder')));

  const refusalOptions = (cmd: Command) => cmd
    .addOption(new Option('--refusal-mode <mode>', 'a refusal starts with (prefix) or contains (substring) a phrase').choices(['prefix', 'substring']))
    .option('--refusal-list <file>', 'refusal phrases: one per line, or a JSON array (default: the paper\'s appendix 8.2 list)')
    .option('--no-case-fold', 'match refusal phrases with letter case');

  addOutputOptions(addModelOptions(refusalOptions(sub('eval', 'answer both queries of every pair and score RtA, 1 − RtA and EtA', evalCommand)
    .requiredOption('--pairs <file>', 'pairs JSONL')
    .option('--max-new-tokens <n>', 'tokens per answer (default 32)', parsePositiveInt)
    .option('--batch-size <n>', 'queries decoded together (default 16)', parsePositiveInt)
    .option('--out <file>', 'also write the full report (with every raw response) as JSON'))));

  addOutputOptions(addModelOptions(refusalOptions(sub('locate', 'find the layer to edit: centre by strong share, then edit each layer within the radius (appendix 10.1)', locateCommand)
    .requiredOption('--train <file>', 'pairs to learn masks and edit on')
    .requiredOption('--val <file>', 'pairs to score each trial edit on')
    .option('--search <first,last>', 'layers searched for the centre (default 3,19, clamped to the model)', parseSearch)
    .option('--radius <n>', 'search radius r (default 3)', parseNonNegativeInt)
    .option('--threshold <x>', `τ (default ${DEFAULT_GATE_THRESHOLD})`, parseShare)
    .option('--steps <n>', `mask steps (default ${MASK_DEFAULTS.steps})`, parsePositiveInt)
    .option('--mask-lr <x>', `mask learning rate (default ${MASK_DEFAULTS.lr})`, parseNonNegative)
    .option('--l1 <x>', `λ (default ${MASK_DEFAULTS.l1})`, parseNonNegative)
    .option('--alpha <x>', `α (default ${EDIT_DEFAULTS.alpha})`, parseNonNegative)
    .option('--epochs <n>', `edit epochs (default ${EDIT_DEFAULTS.epochs})`, parsePositiveInt)
    .option('--lr <x>', `edit learning rate (default ${EDIT_DEFAULTS.lr})`, parseNonNegative)
    .option('--no-gate', 'trial edits without the gate')
    .option('--max-new-tokens <n>', 'tokens per answer (default 32)', parsePositiveInt))));

  addOutputOptions(sub('inspect', 'describe a checkpoint folder, masks or gate file, pairs file or demo report', inspectCommand)
    .argument('<path>', 'file or folder'));

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
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts === 1) {
      io.stderr.write('\nngate: interrupted; stopping after the current step (Ctrl-C again to quit at once)\n');
      controller.abort();
    } else {
      process.exit(EXIT.interrupted);
    }
  };
  if (io.handleSignals) process.on('SIGINT', onSigint);
  const json = argv.includes('--json');
  try {
    await buildProgram(io, controller.signal).parseAsync(argv, { from: 'user' });
    return controller.signal.aborted ? EXIT.interrupted : EXIT.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version') return EXIT.ok;
      // commander has printed its message on stderr already.
      if (json) io.stdout.write(JSON.stringify({ error: { code: 'ERR_USAGE', message: e.message.replace(/^error:\s*/, ''), exitCode: EXIT.usage } }, null, 2) + '\n');
      return EXIT.usage;
    }
    const code = exitCodeOf(e, controller.signal.aborted);
    const message = code === EXIT.interrupted ? 'interrupted; no output was written for the step that was stopped' : (e as Error)?.message ?? String(e);
    io.stderr.write(`ngate: ${message}\n`);
    if (code === EXIT.failure && process.env.NGATE_DEBUG && (e as Error)?.stack) io.stderr.write(`${(e as Error).stack}\n`);
    if (json) {
      const err = e as NgateError;
      io.stdout.write(JSON.stringify({ error: { code: err?.code ?? 'ERR_UNKNOWN', message, ...(err?.file ? { file: err.file } : {}), exitCode: code } }, null, 2) + '\n');
    }
    return code;
  } finally {
    io.signal?.removeEventListener('abort', forward);
    if (io.handleSignals) process.removeListener('SIGINT', onSigint);
  }
}

/** The binary's entry: process arguments and streams, SIGINT handled, exit code set. */
export async function run(argv: string[] = process.argv.slice(2)): Promise<void> {
  process.exitCode = await main(argv, { handleSignals: true });
}
