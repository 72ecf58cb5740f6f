// ngate inspect: what a file or folder is and what it holds, read without a model.
import { Command } from 'commander';
import * as fs from 'fs';
import * as path from 'path';
import type { Gate, MaskSet } from '../../types/results';
import { LlamaConfig, readModelConfig } from '../model/config';
import { readSafetensorsHeader, SafetensorsHeader } from '../model/safetensors';
import { readTorchCheckpoint } from '../model/torch-checkpoint';
import { torchEntries } from '../model/model';
import { findMiniGpt4Config, MINIGPT4_DESCRIPTOR } from '../model/minigpt4';
import type { PrivacyPair } from '../data/prepare';
import { readPairsFile } from '../data/pairs-file';
import { loadGate, loadMasks } from '../method/gate';
import { readCompareReport, readReport } from '../report/folder';
import { demoTables } from '../demo/run';
import { COMPARE_REPORT_FORMAT, REPORT_FORMAT } from '../report/format';
import { evaluationText, fmt, gateCountsText, protocolTable, protocolText, setScore, textTable } from '../report/tables';
import type { EvaluationReport } from '../method/evaluate';
import { DATA_SUMMARY_FORMAT } from './data';
import { EVAL_REPORT_FORMAT } from './eval';
import { BENCH_REPORT_FORMAT, benchText } from './bench';
import type { BenchmarkReport } from '../eval/types';
import { NgateError } from '../util/errors';
import { readTextBounded, regularFile } from '../util/files';
import { addOutputOptions, Context, Define, UsageError } from './shared';
import { maskStats, maskStatsText, meanLoss } from './learn-mask';
import { parseJson } from '../util/json';

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
  // safetensors (one file or an index), else torch.save files (pytorch_model.bin or an index), read without their pickles running.
  const torchSaved = !fs.existsSync(path.join(dir, 'model.safetensors')) && !fs.existsSync(path.join(dir, 'model.safetensors.index.json'))
    && (fs.existsSync(path.join(dir, 'pytorch_model.bin')) || fs.existsSync(path.join(dir, 'pytorch_model.bin.index.json')));
  const index = path.join(dir, torchSaved ? 'pytorch_model.bin.index.json' : 'model.safetensors.index.json');
  let shardNames: string[];
  if (fs.existsSync(index)) {
    const map = (parseJson(readTextBounded(index, 'ERR_CHECKPOINT')) as { weight_map?: Record<string, string> }).weight_map ?? {};
    shardNames = [...new Set(Object.values(map))].sort();
  } else {
    shardNames = [torchSaved ? 'pytorch_model.bin' : 'model.safetensors'];
  }
  const headers: SafetensorsHeader[] = shardNames.map((f) => {
    const file = path.join(dir, f);
    if (!torchSaved) return readSafetensorsHeader(file);
    return { file, fileSize: fs.statSync(file).size, dataStart: 0, metadata: {}, tensors: torchEntries(file) };
  });
  const stats = tensorStats(headers);
  const shards = headers.map((h) => ({ file: path.basename(h.file), bytes: h.fileSize, tensors: h.tensors.size }));
  const has = (f: string) => fs.existsSync(path.join(dir, f));
  let chatTemplate = has('chat_template.jinja') || has('chat_template.json');
  if (!chatTemplate && has('tokenizer_config.json')) {
    try { chatTemplate = typeof (parseJson(readTextBounded(path.join(dir, 'tokenizer_config.json'), 'ERR_TOKENIZER')) as { chat_template?: unknown }).chat_template !== 'undefined'; } catch { /* reported by loadModel, not here */ }
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
  const s = r.settings;
  return {
    doc: {
      kind: 'demo-report', path: file, createdAt: r.createdAt, model: r.model, settings: s,
      scores: Object.fromEntries(r.rows.map((x) => [x.id, Object.fromEntries(Object.entries(x.results).map(([k, v]) => [k, setScore(v)]))])), timings: r.timings,
    },
    text: [`demo report ${file} (${r.createdAt}), model ${r.model.dir}, layers: single ${s.singleLayer}, multi ${s.multiLayers.join(', ')}` +
      `${s.dinmLayer !== null ? `, DINM ${s.dinmLayer}` : ''}`, demoTables(r)].join('\n'),
  };
}

function inspectCompareReport(file: string): { doc: Inspection; text: string } {
  const r = readCompareReport(file);
  const t1 = protocolTable(r.rows, r.settings.sets, 1), t2 = protocolTable(r.rows, r.settings.sets, 2);
  return {
    doc: { kind: 'compare-report', path: file, createdAt: r.createdAt, model: r.model, layers: r.layers, table1: t1, table2: t2, timings: r.timings },
    text: [`compare report ${file} (${r.createdAt}), model ${r.model.dir}, layers: single ${r.layers.single}, multi ${r.layers.multi.join(', ')}`,
      ...(t1.values.length ? ['Table 1', protocolText(t1)] : []), ...(t2.values.length ? ['Table 2', protocolText(t2)] : [])].join('\n'),
  };
}

interface EvalReportFile extends EvaluationReport { model?: string; pairs?: string; seconds?: number }

function inspectEvalReport(file: string, r: EvalReportFile): { doc: Inspection; text: string } {
  if (!r.scores?.overall || !Array.isArray(r.outcomes)) throw new NgateError('ERR_INPUT', 'is an eval report without scores or outcomes', { file });
  return {
    doc: { kind: 'eval-report', path: file, model: r.model ?? null, pairs: r.pairs ?? null, matcher: r.matcher ?? null, responses: r.outcomes.length, scores: r.scores },
    text: [`eval report ${file}: ${r.outcomes.length} responses of ${r.model ?? 'a model'} to ${r.pairs ?? 'a pairs file'}` +
      `${r.matcher ? `, refusals matched by ${r.matcher.name} (${r.matcher.mode})` : ''}`, evaluationText(r)].join('\n'),
  };
}

function inspectBenchReport(file: string, r: BenchmarkReport & { model?: string }): { doc: Inspection; text: string } {
  if (typeof r.kind !== 'string' || !Array.isArray(r.outcomes) || !r.counts) {
    throw new NgateError('ERR_INPUT', 'is a bench report without its kind, counts or outcomes', { file });
  }
  return {
    doc: { kind: 'bench-report', path: file, benchmark: r.kind, model: r.model ?? null, metric: r.metric, score: r.score,
      counts: r.counts, parsingRule: r.parsingRule, source: r.source ?? null, answers: r.outcomes.length },
    text: [`bench report ${file}${r.model ? ` of ${r.model}` : ''}`, benchText(r)].join('\n'),
  };
}

interface DataSummaryFile { counts?: Record<string, number>; byCategory?: Record<string, Record<string, number>>; options?: Record<string, unknown>; files?: Record<string, string> }

function inspectDataSummary(file: string, d: DataSummaryFile): { doc: Inspection; text: string } {
  const counts = d.counts ?? {};
  return {
    doc: { kind: 'data-summary', path: file, options: d.options ?? {}, counts, byCategory: d.byCategory ?? {}, files: d.files ?? {} },
    text: [`PrivacyPair splits ${path.dirname(file)}: ${Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(', ')}` +
      `${d.options && Object.keys(d.options).length ? ` (built with ${Object.entries(d.options).map(([k, v]) => `${k} ${JSON.stringify(v)}`).join(', ')})` : ''}`].join('\n'),
  };
}

/** A torch.save file: its tensors and the globals its pickle names, without loading it into a model. */
function inspectPth(file: string): { doc: Inspection; text: string } {
  const ckpt = readTorchCheckpoint(file);
  const list = [...ckpt.tensors].map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape }));
  const values = list.reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
  const bytes = fs.statSync(file).size;
  return {
    doc: { kind: 'torch-save', path: file, archive: ckpt.prefix, globals: ckpt.globals, tensors: list.length, values, bytes, tensorList: list },
    text: [`torch.save file ${file}: ${list.length} tensors, ${values.toLocaleString('en-US')} values, ${bytesText(bytes)} (archive "${ckpt.prefix}")`,
      `  pickle globals: ${ckpt.globals.join(', ') || 'none'}`,
      textTable(['tensor', 'dtype', 'shape'], list.slice(0, 40).map((e) => [e.name, e.dtype, `[${e.shape.join(', ')}]`])),
      ...(list.length > 40 ? [`… and ${list.length - 40} more`] : [])].join('\n'),
  };
}

function inspectMiniGpt4(file: string): { doc: Inspection; text: string } {
  const c = findMiniGpt4Config(file)!;
  const v = c.vision;
  const llama = inspectCheckpoint(c.llamaDir);
  return {
    doc: { kind: 'minigpt4', path: file, llamaModel: c.llamaDir, ckpt: c.ckpt, vitCheckpoint: c.vitCheckpoint, vision: v, numImageTokens: c.numImageTokens, llama: llama.doc },
    text: [`MiniGPT-4 (Llama-2) ${file}`,
      `  EVA ViT: ${v.depth} blocks, width ${v.embedDim}, ${v.numHeads} heads, MLP ${v.mlpHidden}, ${v.imageSize}px images in ${v.patchSize}px patches, ${v.tokensPerEmbedding} patches per embedding: ${c.numImageTokens} image embeddings`,
      `  ViT file ${c.vitCheckpoint}`, `  stage-2 file ${c.ckpt}`, llama.text].join('\n'),
  };
}

async function inspectPath(target: string): Promise<{ doc: Inspection; text: string }> {
  const abs = path.resolve(target);
  if (!fs.existsSync(abs)) throw new UsageError(`not found: ${abs}`);
  if (fs.statSync(abs).isDirectory()) {
    if (fs.existsSync(path.join(abs, MINIGPT4_DESCRIPTOR))) return inspectMiniGpt4(abs);
    if (fs.existsSync(path.join(abs, 'config.json'))) return inspectCheckpoint(abs);
    if (fs.existsSync(path.join(abs, 'report.json'))) return inspectReport(path.join(abs, 'report.json'));
    const jsonl = fs.readdirSync(abs).filter((f) => f.endsWith('.jsonl')).sort();
    if (jsonl.length > 0) {
      const parts = await Promise.all(jsonl.map(async (f) => inspectPairs(path.join(abs, f), await readPairsFile(path.join(abs, f)))));
      return { doc: { kind: 'pairs-folder', path: abs, files: parts.map((p) => p.doc) }, text: parts.map((p) => p.text).join('\n\n') };
    }
    throw new UsageError(`cannot tell what this folder is (no config.json, report.json or *.jsonl): ${abs}`);
  }
  regularFile(abs, 'ERR_INPUT', null);  // a FIFO or device is refused before anything opens it
  if (abs.endsWith('.jsonl')) return inspectPairs(abs, await readPairsFile(abs));
  if (/\.(pth|pt|bin|ckpt)$/.test(abs)) return inspectPth(abs);
  if (/\.ya?ml$/.test(abs) || path.basename(abs) === MINIGPT4_DESCRIPTOR) return inspectMiniGpt4(abs);
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
    try { v = parseJson(readTextBounded(abs, 'ERR_INPUT')) as { format?: unknown; architectures?: unknown } | null; } catch (e) { throw new NgateError('ERR_INPUT', `not valid JSON: ${(e as Error).message}`, { file: abs }); }
    if (v?.format === REPORT_FORMAT) return inspectReport(abs);
    if (v?.format === COMPARE_REPORT_FORMAT) return inspectCompareReport(abs);
    if (v?.format === EVAL_REPORT_FORMAT) return inspectEvalReport(abs, v as unknown as EvalReportFile);
    if (v?.format === BENCH_REPORT_FORMAT) return inspectBenchReport(abs, v as unknown as BenchmarkReport & { model?: string });
    if (v?.format === DATA_SUMMARY_FORMAT) return inspectDataSummary(abs, v as unknown as DataSummaryFile);
    if (v?.format === 'ngate.gate') {
      const sibling = abs.slice(0, -'.json'.length) + '.safetensors';
      if (fs.existsSync(sibling)) return inspectGate(sibling, loadGate(sibling));
    }
    if (path.basename(abs) === 'config.json') return inspectCheckpoint(path.dirname(abs));
  }
  throw new UsageError(`cannot tell what this file is (expected a checkpoint folder, a MiniGPT-4 descriptor, a .pth, a masks or gate .safetensors, a pairs .jsonl, a data summary.json, an eval report or a demo report): ${abs}`);
}

async function inspectCommand(ctx: Context, _o: Record<string, unknown>, args: string[]): Promise<void> {
  const { doc, text } = await inspectPath(args[0]);
  ctx.emit(doc, text);
}

export function addInspectCommand(define: Define): Command {
  return addOutputOptions(define('inspect', 'describe any file ngate reads or writes: a checkpoint folder, MiniGPT-4 descriptor, .pth file, masks or gate file, pairs file, data summary, eval report or demo report', inspectCommand)
    .argument('<path>', 'file or folder'));
}
